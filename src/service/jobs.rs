//! ExecuteJob: routing a raw handler name to a program, and the job's answer with its log.

use std::time::Duration;

use serde::Deserialize;

use super::deadline::CallDeadline;
use super::execution::Execution;
use super::{handler_jobs, upstream_from_value, Plugin};
use crate::catalog::naming::{self, Route};
use crate::identity::VERSION;
use crate::ipc::Program;
use crate::proto::{ExecuteJobRequest, ExecuteJobResponse, JobLogEntry};

/// Lines per stream that become log entries; the rest is summarised in one entry.
const MAX_LOG_LINES_PER_STREAM: usize = 2000;

/// The payload of `<name>.script` jobs.
#[derive(Deserialize)]
struct ScriptPayload {
    content: Option<String>,
    #[serde(default)]
    upstream: Option<serde_json::Value>,
}

pub async fn execute_job(
    plugin: &Plugin,
    request: ExecuteJobRequest,
    call_deadline: Option<CallDeadline>,
) -> ExecuteJobResponse {
    // The job's own limit; the caller's deadline, when it leaves less, binds instead.
    let timeout = request
        .timeout_secs
        .filter(|secs| *secs > 0)
        .map(|secs| Duration::from_secs(secs as u64).min(crate::config::MAX_TIMEOUT));
    let catalog = plugin.catalog();
    let known = |key: &str| catalog.handlers.contains_key(key) || catalog.faulted.contains_key(key);
    let program = match naming::route(&plugin.name, &request.handler_name, known) {
        Route::Script => script_program(&request),
        Route::Reload => return handler_jobs::reload(plugin).await,
        Route::Handler { key, function } => {
            handler_jobs::program(plugin, &catalog, key, function, &request.payload).await
        }
        Route::Foreign => Err(format!(
            "unknown handler '{}': plugin '{}' handles {}, {} and {}.<handler>",
            request.handler_name,
            plugin.name,
            naming::builtin(&plugin.name, naming::SCRIPT),
            naming::builtin(&plugin.name, naming::RELOAD),
            plugin.name
        )),
    };
    let program = match program {
        Ok(program) => program,
        Err(error) => return failure(error),
    };
    match plugin
        .execute_within(program, None, timeout, call_deadline)
        .await
    {
        Ok(execution) => answer(execution),
        Err(error) => failure(error.to_string()),
    }
}

/// `<name>.script`: the payload carries the code.
fn script_program(request: &ExecuteJobRequest) -> Result<Program, String> {
    let handler = request.handler_name.as_str();
    let payload: ScriptPayload = serde_json::from_slice(&request.payload).map_err(|e| {
        format!(
            "{handler}: the payload must be a JSON object {{\"content\": \"<python code>\"}}: {e}"
        )
    })?;
    let code = payload
        .content
        .filter(|c| !c.trim().is_empty())
        .ok_or_else(|| {
            format!("{handler}: the payload has no code: 'content' is missing or empty")
        })?;
    let upstream_json = upstream_from_value(payload.upstream);
    Ok(Program {
        upstream_json,
        ..Program::new(code, format!("<job {}>", request.job_id))
    })
}

pub(super) fn failure(error: String) -> ExecuteJobResponse {
    let entry = log_entry(
        crate::time::now_rfc3339(),
        "error",
        error.clone(),
        "dispatch",
    );
    ExecuteJobResponse {
        success: false,
        error,
        log_entries: vec![entry],
        plugin_version: VERSION.into(),
        ..Default::default()
    }
}

/// A job the plugin itself answered (no program ran): `result` is the JSON given.
pub(super) fn succeeded(result: serde_json::Value, summary: String) -> ExecuteJobResponse {
    let entry = log_entry(crate::time::now_rfc3339(), "info", summary, "plugin");
    ExecuteJobResponse {
        success: true,
        result: result.to_string().into_bytes(),
        log_entries: vec![entry],
        plugin_version: VERSION.into(),
        ..Default::default()
    }
}

fn answer(execution: Execution) -> ExecuteJobResponse {
    let now = crate::time::now_rfc3339();
    let mut log_entries = Vec::new();
    for (text, level, stage) in [
        (&execution.stdout, "info", "stdout"),
        (&execution.stderr, "warn", "stderr"),
    ] {
        log_lines(text, level, stage, &now, &mut log_entries);
    }
    if let Some(error) = &execution.error {
        log_entries.push(log_entry(now.clone(), "error", error.clone(), "error"));
    }
    ExecuteJobResponse {
        success: execution.success,
        error: execution.error.clone().unwrap_or_default(),
        result: execution.to_json_bytes(),
        log_entries,
        plugin_version: VERSION.into(),
        ..Default::default()
    }
}

fn log_lines(text: &str, level: &str, stage: &str, timestamp: &str, into: &mut Vec<JobLogEntry>) {
    let mut lines = text.lines();
    for line in lines.by_ref().take(MAX_LOG_LINES_PER_STREAM) {
        into.push(log_entry(
            timestamp.to_owned(),
            level,
            line.to_owned(),
            stage,
        ));
    }
    let rest: Vec<&str> = lines.collect();
    if !rest.is_empty() {
        into.push(log_entry(
            timestamp.to_owned(),
            level,
            rest.join("\n"),
            stage,
        ));
    }
}

fn log_entry(timestamp: String, level: &str, message: String, stage: &str) -> JobLogEntry {
    JobLogEntry {
        timestamp,
        level: level.into(),
        message,
        stage: stage.into(),
        metadata: String::new(),
    }
}
