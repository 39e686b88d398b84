//! The routes that run Python: `/execute`, `/evaluate`, `/execute-file`. They answer the
//! execution response (protocol.md §7.2): 200 when the run succeeded, 400 when it failed.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::{parse_object, Reply};
use crate::ipc::Program;
use crate::service::deadline::CallDeadline;
use crate::service::execution::Execution;
use crate::service::{upstream_from_value, Plugin};

/// A file given to `/execute-file` larger than this is refused rather than read.
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Deserialize)]
struct ExecuteBody {
    content: Option<String>,
    timeout_secs: Option<f64>,
    #[serde(default)]
    glyph_id: String,
    upstream_attestation: Option<Value>,
    env: Option<String>,
}

#[derive(Deserialize)]
struct EvaluateBody {
    expr: Option<String>,
    env: Option<String>,
}

#[derive(Deserialize)]
struct ExecuteFileBody {
    path: Option<String>,
    timeout_secs: Option<f64>,
    env: Option<String>,
}

/// An empty `env` is the same as none: the glyph sends "" before an environment is chosen.
fn chosen(env: Option<String>) -> Option<String> {
    env.map(|e| e.trim().to_owned()).filter(|e| !e.is_empty())
}

fn timeout(secs: Option<f64>) -> Result<Option<Duration>, Reply> {
    let max = crate::config::MAX_TIMEOUT.as_secs_f64();
    match secs {
        Some(secs) if !(secs > 0.0 && secs <= max) => Err(Reply::error(
            400,
            format!("Invalid request: timeout_secs must be between 0 and {max}, got {secs}"),
        )),
        Some(secs) => Ok(Some(Duration::from_secs_f64(secs))),
        None => Ok(None),
    }
}

pub async fn execute(plugin: &Plugin, body: &[u8], deadline: Option<CallDeadline>) -> Reply {
    let body: ExecuteBody = match parse_object(body) {
        Ok(body) => body,
        Err(reply) => return reply,
    };
    let Some(code) = body.content.filter(|c| !c.trim().is_empty()) else {
        return Reply::error(400, "Missing 'content' field");
    };
    let timeout = match timeout(body.timeout_secs) {
        Ok(timeout) => timeout,
        Err(reply) => return reply,
    };
    let program = Program {
        upstream_json: upstream_from_value(body.upstream_attestation),
        glyph_id: body.glyph_id,
        ..Program::new(code, "<execute>")
    };
    run(plugin, program, body.env, timeout, deadline).await
}

pub async fn evaluate(plugin: &Plugin, body: &[u8], deadline: Option<CallDeadline>) -> Reply {
    let (expr, env) = match parse_object::<EvaluateBody>(body) {
        Ok(EvaluateBody {
            expr: Some(expr),
            env,
        }) if !expr.trim().is_empty() => (expr, env),
        Ok(_) => return Reply::error(400, "Missing 'expr' field"),
        Err(reply) => return reply,
    };
    // A lone expression is the run's value, as in a notebook cell.
    let program = Program::new(expr, "<evaluate>");
    run(plugin, program, env, None, deadline).await
}

/// Runs a file on the plugin's machine as it is. This gives a caller nothing `/execute` does
/// not (any code can read any file the plugin can), so it needs no extra guard; tracebacks name
/// the file, and a `# py:<env>` line in it routes it like any program.
pub async fn execute_file(plugin: &Plugin, body: &[u8], deadline: Option<CallDeadline>) -> Reply {
    let body: ExecuteFileBody = match parse_object(body) {
        Ok(body) => body,
        Err(reply) => return reply,
    };
    let Some(path) = body.path.filter(|p| !p.trim().is_empty()) else {
        return Reply::error(400, "Missing 'path' field");
    };
    let timeout = match timeout(body.timeout_secs) {
        Ok(timeout) => timeout,
        Err(reply) => return reply,
    };
    let code = match read_program(&path).await {
        Ok(code) => code,
        // An unreadable file is a failed run (protocol.md §7.2), not a broken request.
        Err(reason) => return answer(&Execution::failed(reason)),
    };
    let program = Program::new(code, path);
    run(plugin, program, body.env, timeout, deadline).await
}

async fn read_program(path: &str) -> Result<String, String> {
    let metadata = tokio::fs::metadata(path)
        .await
        .map_err(|e| format!("cannot read {path}: {e}"))?;
    if !metadata.is_file() {
        return Err(format!("cannot read {path}: not a regular file"));
    }
    if metadata.len() > MAX_FILE_BYTES {
        return Err(format!(
            "cannot run {path}: {} bytes, over the limit of {MAX_FILE_BYTES}",
            metadata.len()
        ));
    }
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|e| format!("cannot read {path}: {e}"))?;
    String::from_utf8(bytes).map_err(|e| format!("cannot run {path}: not UTF-8 text ({e})"))
}

async fn run(
    plugin: &Plugin,
    program: Program,
    env: Option<String>,
    timeout: Option<Duration>,
    deadline: Option<CallDeadline>,
) -> Reply {
    let env = chosen(env);
    match plugin
        .execute_within(program, env.as_deref(), timeout, deadline)
        .await
    {
        Ok(execution) => answer(&execution),
        Err(e) => Reply::error(503, e.to_string()),
    }
}

/// The execution response of protocol.md §7.2: 200 when the run succeeded, else 400.
fn answer(execution: &Execution) -> Reply {
    let status = if execution.success { 200 } else { 400 };
    Reply::json(
        status,
        &serde_json::to_value(execution).unwrap_or(Value::Null),
    )
}
