//! HandleHTTP: the routes under `/api/<name>/`. Every answer is JSON; a route that did work
//! never answers 404 (the host retries 404s, protocol.md §7.1).

use serde::Deserialize;
use serde_json::{json, Value};

use super::{upstream_from_value, Plugin, Program};
use crate::identity::VERSION;
use crate::proto::{HttpHeader, HttpRequest, HttpResponse, RouteInfo};

pub fn routes() -> Vec<RouteInfo> {
    [
        ("GET", "/version", "Python and plugin versions"),
        (
            "POST",
            "/execute",
            "Run Python: {content, timeout_secs?, glyph_id?, upstream_attestation?}",
        ),
        ("POST", "/evaluate", "Evaluate one expression: {expr}"),
    ]
    .into_iter()
    .map(|(method, path, description)| RouteInfo {
        method: method.into(),
        path: path.into(),
        description: description.into(),
    })
    .collect()
}

#[derive(Deserialize)]
struct ExecuteBody {
    content: Option<String>,
    timeout_secs: Option<f64>,
    #[serde(default)]
    glyph_id: String,
    upstream_attestation: Option<Value>,
    /// The environment to run in; a `# py:<name>` line in `content` must agree.
    env: Option<String>,
}

#[derive(Deserialize)]
struct EvaluateBody {
    expr: Option<String>,
}

fn respond(status: i32, body: &Value) -> HttpResponse {
    HttpResponse {
        status_code: status,
        headers: vec![HttpHeader {
            name: "Content-Type".into(),
            values: vec!["application/json".into()],
        }],
        body: serde_json::to_vec(body).unwrap_or_default(),
    }
}

fn error(status: i32, message: impl Into<String>) -> HttpResponse {
    respond(status, &json!({ "error": message.into() }))
}

pub async fn handle(plugin: &Plugin, request: HttpRequest) -> HttpResponse {
    // The host keeps the query string on the path; routes match on the path alone.
    let path = request.path.split('?').next().unwrap_or_default();
    // The host's third try sends the full path; answer it as an alias of the stripped one.
    let prefix = format!("/api/{}", plugin.name);
    let path = path
        .strip_prefix(prefix.as_str())
        .filter(|p| p.is_empty() || p.starts_with('/'))
        .unwrap_or(path);
    let path = path.trim_end_matches('/');
    match (request.method.as_str(), path) {
        ("GET", "/version") => {
            let python = plugin.environments.embedded_python();
            respond(
                200,
                &json!({ "python_version": python, "plugin_version": VERSION }),
            )
        }
        ("POST", "/execute") => execute(plugin, &request.body).await,
        ("POST", "/evaluate") => evaluate(plugin, &request.body).await,
        (method, _) => error(404, format!("Unknown endpoint: {method} {}", request.path)),
    }
}

fn parse_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, HttpResponse> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"null".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| error(400, format!("Invalid request: {e}")))
}

async fn execute(plugin: &Plugin, body: &[u8]) -> HttpResponse {
    let body: ExecuteBody = match parse_body::<Option<ExecuteBody>>(body) {
        Ok(Some(body)) => body,
        Ok(None) => return error(400, "Invalid request: the body must be a JSON object"),
        Err(response) => return response,
    };
    let Some(code) = body.content.filter(|c| !c.trim().is_empty()) else {
        return error(400, "Missing 'content' field");
    };
    let upstream_json = upstream_from_value(body.upstream_attestation);
    let max = crate::config::MAX_TIMEOUT.as_secs_f64();
    let timeout = match body.timeout_secs {
        Some(secs) if !(secs > 0.0 && secs <= max) => {
            return error(
                400,
                format!("Invalid request: timeout_secs must be between 0 and {max}, got {secs}"),
            )
        }
        Some(secs) => Some(std::time::Duration::from_secs_f64(secs)),
        None => None,
    };
    let program = Program {
        code,
        filename: "<execute>".into(),
        upstream_json,
        glyph_id: body.glyph_id,
        handler: None,
        env: body.env,
    };
    run(plugin, program, timeout).await
}

async fn evaluate(plugin: &Plugin, body: &[u8]) -> HttpResponse {
    let expr = match parse_body::<Option<EvaluateBody>>(body) {
        Ok(Some(EvaluateBody { expr: Some(expr) })) if !expr.trim().is_empty() => expr,
        Ok(_) => return error(400, "Missing 'expr' field"),
        Err(response) => return response,
    };
    // A lone expression is the run's value, as in a notebook cell.
    let program = Program {
        code: expr,
        filename: "<evaluate>".into(),
        upstream_json: None,
        glyph_id: String::new(),
        handler: None,
        env: None,
    };
    run(plugin, program, None).await
}

async fn run(
    plugin: &Plugin,
    program: Program,
    timeout: Option<std::time::Duration>,
) -> HttpResponse {
    match plugin.execute(program, timeout).await {
        Ok(execution) => {
            let status = if execution.success { 200 } else { 400 };
            respond(
                status,
                &serde_json::to_value(&execution).unwrap_or(Value::Null),
            )
        }
        Err(e) => error(503, e.to_string()),
    }
}
