//! The plugin's HTTP routes, one router for both doors: the host's `HandleHTTP` (under
//! `/api/<name>/`) and the plain HTTP server of `--http` (the same routes at `/`, plus the page).
//!
//! Every answer but the glyph's assets is JSON. A route that did work never answers 404, because
//! the host retries a 404 up to three times (protocol.md §7.1); a known path with the wrong
//! method is 405, and only unknown paths are 404.

mod environments;
pub mod glyph;
mod packages;
mod run;
pub mod standalone;

use serde::Deserialize;
use serde_json::{json, Value};

use super::deadline::CallDeadline;
use super::Plugin;
use crate::proto::{HttpHeader, HttpRequest, HttpResponse, RouteInfo};

/// Which door a request came through: the page and its stand-in host exist only without a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    Host,
    Standalone,
}

/// A request as the router sees it, whichever door it came through.
pub struct Request<'a> {
    pub method: &'a str,
    /// The path, query string included (as the host forwards it).
    pub path: &'a str,
    pub body: &'a [u8],
    /// The caller's gRPC deadline on `HandleHTTP`, if it set one: runs end in time to answer.
    pub deadline: Option<CallDeadline>,
}

/// An answer, before it is turned into the door's own response type.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

const JSON: &str = "application/json";

impl Reply {
    fn json(status: u16, body: &Value) -> Self {
        Self {
            status,
            content_type: JSON,
            headers: Vec::new(),
            body: serde_json::to_vec(body).unwrap_or_default(),
        }
    }

    fn error(status: u16, message: impl Into<String>) -> Self {
        Self::json(status, &json!({ "error": message.into() }))
    }

    fn asset(content_type: &'static str, body: &'static str) -> Self {
        Self {
            status: 200,
            content_type,
            // Assets change only with the binary; a reload after an upgrade must see the new one.
            headers: vec![("Cache-Control", "no-cache".into())],
            body: body.as_bytes().to_vec(),
        }
    }

    fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// One route: its method, path and what it does (declared to the host in Initialize).
struct Route {
    method: &'static str,
    path: &'static str,
    description: &'static str,
}

const ROUTES: &[Route] = &[
    Route {
        method: "POST",
        path: "/execute",
        description: "Run Python: {content, env?, timeout_secs?, glyph_id?, upstream_attestation?}",
    },
    Route {
        method: "POST",
        path: "/evaluate",
        description: "Evaluate one expression: {expr, env?}",
    },
    Route {
        method: "POST",
        path: "/execute-file",
        description: "Run a file on the plugin's machine: {path, env?, timeout_secs?}",
    },
    Route {
        method: "GET",
        path: "/version",
        description: "Python and plugin versions",
    },
    Route {
        method: "GET",
        path: "/modules",
        description: "Which modules import: {modules?: [names], env?}",
    },
    Route {
        method: "GET",
        path: "/environments",
        description: "The plugin's Python environments: names, versions, packages, state",
    },
    Route {
        method: "POST",
        path: "/uv/install",
        description: "How to add a package to an environment (installs are not done over HTTP)",
    },
    Route {
        method: "POST",
        path: "/pip/install",
        description: "Alias of /uv/install",
    },
    Route {
        method: "GET",
        path: "/uv/check",
        description: "Whether a module imports: {module, env?} or ?module=",
    },
    Route {
        method: "GET",
        path: "/pip/check",
        description: "Alias of /uv/check",
    },
    Route {
        method: "POST",
        path: glyph::RUN_PATH,
        description: "Alias of /execute that the host never shadows (the glyph's runs)",
    },
    Route {
        method: "GET",
        path: glyph::MODULE_PATH,
        description: "The glyph's ES module",
    },
];

/// The routes declared to the host in Initialize.
pub fn routes() -> Vec<RouteInfo> {
    ROUTES
        .iter()
        .map(|route| RouteInfo {
            method: route.method.into(),
            path: route.path.into(),
            description: route.description.into(),
        })
        .collect()
}

/// The plugin's one canvas glyph (`RegisterGlyphs`).
pub fn glyph_definition(plugin: &Plugin) -> crate::proto::GlyphDef {
    glyph::definition(&plugin.name, &environments::names(plugin))
}

/// The path without its query string, with the host's full-path retry (`/api/<name>/x`)
/// answered as an alias of the stripped one, and without a trailing slash.
fn strip_route<'a>(name: &str, path: &'a str) -> &'a str {
    let path = path.split('?').next().unwrap_or_default();
    let prefix = format!("/api/{name}");
    let path = path
        .strip_prefix(prefix.as_str())
        .filter(|p| p.is_empty() || p.starts_with('/'))
        .unwrap_or(path);
    match path.trim_end_matches('/') {
        "" => "/",
        trimmed => trimmed,
    }
}

/// The value of `key` in the request's query string (`a=b&c=d`, percent-decoding `%XX` and `+`).
fn query_param(path: &str, key: &str) -> Option<String> {
    let (_, query) = path.split_once('?')?;
    query.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        (name == key).then(|| percent_decode(value))
    })
}

fn percent_decode(text: &str) -> String {
    let hex = |byte: u8| char::from(byte).to_digit(16);
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes.get(i..i + 3) {
            Some([b'%', high, low]) => hex(*high).zip(hex(*low)).map(|(h, l)| (h * 16 + l) as u8),
            _ => None,
        };
        match (escaped, bytes[i]) {
            (Some(byte), _) => {
                out.push(byte);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, byte) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Answers one request.
pub async fn route(plugin: &Plugin, door: Door, request: Request<'_>) -> Reply {
    let path = strip_route(&plugin.name, request.path);
    let method = request.method;
    // HEAD is GET without a body; the doors drop the body.
    let get = method == "GET" || method == "HEAD";
    match path {
        "/execute" | glyph::RUN_PATH if method == "POST" => {
            run::execute(plugin, request.body, request.deadline).await
        }
        "/evaluate" if method == "POST" => {
            run::evaluate(plugin, request.body, request.deadline).await
        }
        "/execute-file" if method == "POST" => {
            run::execute_file(plugin, request.body, request.deadline).await
        }
        "/version" if get => environments::version(plugin),
        "/modules" if get || method == "POST" => {
            packages::modules(plugin, request.path, request.body).await
        }
        "/environments" if get => environments::list(plugin),
        "/uv/install" | "/pip/install" if method == "POST" => {
            packages::install(plugin, request.body)
        }
        "/uv/check" | "/pip/check" if get || method == "POST" => {
            packages::check(plugin, request.path, request.body).await
        }
        glyph::MODULE_PATH if get => Reply::asset("text/javascript; charset=utf-8", glyph::MODULE),
        "/glyph-module.js" => glyph::self_describing_probe(),
        "/" if get && door == Door::Standalone => {
            Reply::asset("text/html; charset=utf-8", glyph::PAGE)
        }
        _ => match ROUTES.iter().filter(|r| r.path == path).collect::<Vec<_>>() {
            known if !known.is_empty() => {
                let allowed: Vec<&str> = known.iter().map(|r| r.method).collect();
                Reply::error(
                    405,
                    format!("{method} {path}: this route takes {}", allowed.join(" or ")),
                )
                .with_header("Allow", allowed.join(", "))
            }
            _ => Reply::error(404, format!("Unknown endpoint: {method} {}", request.path)),
        },
    }
}

/// `HandleHTTP`: the host's door.
pub async fn handle(
    plugin: &Plugin,
    request: HttpRequest,
    deadline: Option<CallDeadline>,
) -> HttpResponse {
    let reply = route(
        plugin,
        Door::Host,
        Request {
            method: &request.method,
            path: &request.path,
            body: &request.body,
            deadline,
        },
    )
    .await;
    let mut headers = vec![HttpHeader {
        name: "Content-Type".into(),
        values: vec![reply.content_type.into()],
    }];
    headers.extend(reply.headers.into_iter().map(|(name, value)| HttpHeader {
        name: name.into(),
        values: vec![value],
    }));
    HttpResponse {
        status_code: i32::from(reply.status),
        headers,
        body: if request.method == "HEAD" {
            Vec::new()
        } else {
            reply.body
        },
    }
}

/// A JSON body, where an empty body means `null` (protocol.md §7.2). Not JSON → 400.
fn parse_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, Reply> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"null".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| Reply::error(400, format!("Invalid request: {e}")))
}

/// A body that must be a JSON object (routes with required fields).
fn parse_object<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, Reply> {
    match parse_body::<Option<T>>(body)? {
        Some(value) => Ok(value),
        None => Err(Reply::error(
            400,
            "Invalid request: the body must be a JSON object",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::{percent_decode, query_param, strip_route};

    #[test]
    fn paths_route_without_query_prefix_or_trailing_slash() {
        assert_eq!(strip_route("python", "/execute?x=1"), "/execute");
        assert_eq!(strip_route("python", "/api/python/execute"), "/execute");
        assert_eq!(strip_route("python", "/api/python"), "/");
        assert_eq!(strip_route("python", "/api/pythonic/x"), "/api/pythonic/x");
        assert_eq!(strip_route("bio", "/environments/"), "/environments");
        assert_eq!(strip_route("bio", ""), "/");
    }

    #[test]
    fn query_strings() {
        assert_eq!(
            query_param("/x?module=numpy&env=bio", "env"),
            Some("bio".into())
        );
        assert_eq!(query_param("/x?a=1%2B1+2", "a"), Some("1+1 2".into()));
        assert_eq!(query_param("/x?flag", "flag"), Some(String::new()));
        assert_eq!(query_param("/x", "a"), None);
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
