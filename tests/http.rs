//! The HTTP routes through both doors: `--http` (plain HTTP, the page) and the host's
//! `HandleHTTP` (gRPC); the router is one, so each door checks what only it can get wrong.

#[path = "support/http_client.rs"]
mod http_client;
#[path = "support/plugin.rs"]
mod plugin;

use http_client::{http_address, request};
use plugin::Plugin;
use qntx_python_plugin::proto::{Empty, HttpRequest};
use serde_json::json;

fn standalone() -> (Plugin, String) {
    let plugin = Plugin::start(&["--workers", "1", "--http", "127.0.0.1:0"]);
    let address = http_address(&plugin);
    (plugin, address)
}

#[test]
fn execute_evaluate_and_execute_file_answer_the_execution_response() {
    let (_plugin, address) = standalone();
    let answer = request(
        &address,
        "POST",
        "/execute",
        br#"{"content": "print('hi')\n6 * 7", "glyph_id": "g-1"}"#,
    );
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    let body = answer.json();
    assert_eq!(
        (&body["success"], &body["stdout"], &body["result"]),
        (&json!(true), &json!("hi\n"), &json!(42))
    );
    assert!(body["duration_ms"].is_u64());
    assert!(
        body.get("figures").is_none() && body.get("table").is_none(),
        "no rich fields for a plain run: {body}"
    );

    let answer = request(
        &address,
        "POST",
        "/execute",
        b"{\"content\": \"x = 1\\ny = 0\\nx / y\"}",
    );
    assert_eq!(answer.status, 400, "a failed run is 400");
    let body = answer.json();
    assert_eq!(body["success"], json!(false));
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("line 3") && error.contains("ZeroDivisionError"),
        "{error}"
    );

    let answer = request(&address, "POST", "/evaluate", br#"{"expr": "2 ** 10"}"#);
    assert_eq!(
        (answer.status, &answer.json()["result"]),
        (200, &json!(1024))
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("job.py");
    std::fs::write(
        &file,
        "import sys\nprint('from a file')\nraise ValueError('on line 3')\n",
    )
    .unwrap();
    let body = json!({ "path": file }).to_string();
    let answer = request(&address, "POST", "/execute-file", body.as_bytes());
    assert_eq!(answer.status, 400);
    let body = answer.json();
    assert_eq!(body["stdout"], json!("from a file\n"));
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("File \"{}\", line 3", file.display())),
        "tracebacks name the file: {error}"
    );
    let missing = json!({ "path": dir.path().join("absent.py") }).to_string();
    let answer = request(&address, "POST", "/execute-file", missing.as_bytes());
    let body = answer.json();
    assert_eq!((answer.status, &body["success"]), (400, &json!(false)));
    assert!(body["error"].as_str().unwrap().contains("cannot read"));
}

#[test]
fn bad_requests_are_400_with_a_message() {
    let (_plugin, address) = standalone();
    let cases: &[(&str, &str, &[u8], &str)] = &[
        ("POST", "/execute", b"{not json", "Invalid request"),
        ("POST", "/execute", b"\xff\xfe binary", "Invalid request"),
        (
            "POST",
            "/execute",
            b"",
            "Invalid request: the body must be a JSON object",
        ),
        ("POST", "/execute", b"[1, 2]", "Invalid request"),
        ("POST", "/execute", b"{}", "Missing 'content' field"),
        (
            "POST",
            "/execute",
            br#"{"content": "   "}"#,
            "Missing 'content' field",
        ),
        (
            "POST",
            "/execute",
            br#"{"content": "1", "timeout_secs": -1}"#,
            "timeout_secs must be between",
        ),
        (
            "POST",
            "/evaluate",
            br#"{"exp": "1"}"#,
            "Missing 'expr' field",
        ),
        ("POST", "/execute-file", b"{}", "Missing 'path' field"),
        ("POST", "/uv/install", b"{}", "Missing 'package' field"),
        ("POST", "/pip/install", b"nope", "Invalid request"),
        ("GET", "/uv/check", b"", "Missing 'module' field"),
    ];
    for (method, path, body, expected) in cases {
        let answer = request(&address, method, path, body);
        assert_eq!(
            answer.status,
            400,
            "{method} {path} {body:?}: {}",
            answer.text()
        );
        let error = answer.json()["error"].as_str().unwrap().to_owned();
        assert!(
            error.contains(expected),
            "{method} {path} {body:?}: {error}"
        );
    }
}

#[test]
fn unknown_paths_are_404_and_wrong_methods_405() {
    let (_plugin, address) = standalone();
    let answer = request(&address, "GET", "/nowhere?x=1", b"");
    assert_eq!(answer.status, 404);
    assert_eq!(
        answer.json()["error"],
        json!("Unknown endpoint: GET /nowhere?x=1")
    );
    let answer = request(&address, "POST", "/execute/more", br#"{"content": "1"}"#);
    assert_eq!(answer.status, 404);
    let answer = request(&address, "GET", "/execute", b"");
    assert_eq!(answer.status, 405, "a known route never answers 404");
    assert_eq!(answer.header("allow"), Some("POST"));
    let answer = request(&address, "DELETE", "/environments", b"");
    assert_eq!(answer.status, 405);
}

#[test]
fn version_environments_modules_and_packages() {
    let (_plugin, address) = standalone();
    let answer = request(
        &address,
        "GET",
        "/modules",
        br#"{"modules": ["json", "no_such_module_here"]}"#,
    );
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.json()["modules"],
        json!({"json": true, "no_such_module_here": false})
    );
    let answer = request(&address, "GET", "/modules", b"{unparsable");
    assert_eq!(answer.status, 200, "an unreadable body means the defaults");
    assert!(answer.json()["modules"].get("numpy").is_some());

    // After a run, so a worker has reported its Python.
    let body = request(&address, "GET", "/version", b"").json();
    assert!(body["python_version"].as_str().unwrap().starts_with("3."));
    assert_eq!(body["plugin_version"], json!(env!("CARGO_PKG_VERSION")));

    let body = request(&address, "GET", "/environments", b"").json();
    let environments = body["environments"].as_array().unwrap();
    assert_eq!(environments.len(), 1);
    assert_eq!(body["default"], environments[0]["name"]);
    for key in [
        "name",
        "default",
        "python_version",
        "state",
        "packages",
        "read_only",
    ] {
        assert!(environments[0].get(key).is_some(), "{key} missing: {body}");
    }

    let answer = request(&address, "GET", "/uv/check?module=json", b"");
    let body = answer.json();
    assert_eq!((answer.status, &body["available"]), (200, &json!(true)));
    let body = request(
        &address,
        "GET",
        "/pip/check",
        br#"{"module": "no_such_mod"}"#,
    )
    .json();
    assert_eq!(body["available"], json!(false));
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("ModuleNotFoundError"));

    let answer = request(&address, "POST", "/uv/install", br#"{"package": "rich"}"#);
    assert_eq!(answer.status, 400);
    let body = answer.json();
    assert_eq!(body["success"], json!(false));
    assert_eq!(body["result"]["installed"], json!(false));
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("variants/") && error.contains("rich"),
        "says how to add it: {error}"
    );
    let answer = request(
        &address,
        "POST",
        "/uv/install",
        br#"{"package": "rich", "env": "nope"}"#,
    );
    assert_eq!(answer.status, 400);
    assert!(answer.json()["error"]
        .as_str()
        .unwrap()
        .contains("unknown environment 'nope'"));
}

#[test]
fn the_page_and_the_glyph_module_are_served_from_the_binary() {
    let (_plugin, address) = standalone();
    let page = request(&address, "GET", "/", b"");
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(page.text().contains("./glyph/module.js"));
    let module = request(&address, "GET", "/glyph/module.js", b"");
    assert_eq!(module.status, 200);
    assert!(module
        .header("content-type")
        .unwrap()
        .starts_with("text/javascript"));
    assert!(module
        .text()
        .contains("export async function render(glyph, ui)"));
    for asset in [page.text(), module.text()] {
        assert!(
            !asset.contains("http://") && !asset.contains("https://"),
            "no network: everything ships in the binary"
        );
    }
    let probe = request(&address, "GET", "/glyph-module.js", b"");
    assert_eq!(probe.status, 410, "a deliberate answer, never a 404");
    assert_eq!(probe.json()["module_path"], json!("/glyph/module.js"));
    let head = request(&address, "HEAD", "/glyph/module.js", b"");
    assert_eq!((head.status, head.body.len()), (200, 0));
}

#[test]
fn without_pandas_or_numpy_a_result_has_no_table() {
    // Without pandas/numpy imported nothing changes: an object that converts like one is not a
    // table (figures and tables from the real packages: tests/environments.rs).
    let (_plugin, address) = standalone();
    let code = "class Frame:\n    def tolist(self):\n        return [1]\nFrame()";
    let body = json!({ "content": code }).to_string();
    let answer = request(&address, "POST", "/execute", body.as_bytes());
    let body = answer.json();
    assert_eq!(body["result"], json!([1]));
    assert!(body.get("table").is_none(), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_host_door_shares_the_router_and_registers_one_glyph() {
    let plugin = Plugin::start(&["--workers", "1"]);
    let mut client = plugin.domain().await;
    let glyphs = client
        .register_glyphs(Empty {})
        .await
        .unwrap()
        .into_inner()
        .glyphs;
    assert_eq!(
        glyphs.len(),
        1,
        "only a plugin's first def reaches the canvas"
    );
    let glyph = &glyphs[0];
    assert_eq!(glyph.symbol, "py:python");
    assert_eq!(glyph.label, "py:python");
    assert_ne!(glyph.symbol, "py", "the host's own symbol");
    assert_eq!(glyph.module_path, "/glyph/module.js");

    let call = |method: &str, path: &str, body: &str| {
        let request = HttpRequest {
            method: method.into(),
            path: path.into(),
            headers: vec![],
            body: body.as_bytes().to_vec(),
        };
        let mut client = client.clone();
        async move { client.handle_http(request).await.unwrap().into_inner() }
    };
    let module = call("GET", &glyph.module_path, "").await;
    assert_eq!(module.status_code, 200);
    let content_type = &module
        .headers
        .iter()
        .find(|h| h.name == "Content-Type")
        .unwrap()
        .values[0];
    assert!(
        content_type.starts_with("text/javascript"),
        "{content_type}"
    );
    let module = call("GET", "/api/python/glyph/module.js?v=1", "").await;
    assert_eq!(
        module.status_code, 200,
        "the host's full-path retry is an alias"
    );
    assert_eq!(call("GET", "/glyph-module.js", "").await.status_code, 410);
    let page = call("GET", "/", "").await;
    assert_eq!(
        page.status_code, 404,
        "the stand-in page exists only with --http"
    );
    let answer = call("POST", "/execute", "{not json").await;
    assert_eq!(
        answer.status_code, 400,
        "bad JSON is 400, never a gRPC error"
    );
    let answer = call(
        "POST",
        "/api/python/glyph/execute",
        r#"{"content": "upstream['subjects']", "upstream_attestation": {"subjects": ["s"]}}"#,
    )
    .await;
    let body: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(
        (answer.status_code, &body["result"]),
        (200, &json!(["s"])),
        "the glyph's run path is /execute with everything the body carries"
    );
    let answer = call("POST", "/execute", r#"{"content": "1 + 1", "env": ""}"#).await;
    let body: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!((answer.status_code, &body["result"]), (200, &json!(2)));
}

/// A minimal environment: a prefix whose site-packages holds one marker module.
fn marker_env(root: &std::path::Path, name: &str) -> String {
    let version = qntx_python_plugin::environments::embedded_python();
    let minor: Vec<&str> = version.split('.').take(2).collect();
    let site = root
        .join(name)
        .join("lib")
        .join(format!("python{}", minor.join(".")))
        .join("site-packages");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(
        site.join(format!("marker_{name}.py")),
        format!("NAME = {name:?}\n"),
    )
    .unwrap();
    format!("{name}={}", root.join(name).display())
}

#[tokio::test(flavor = "multi_thread")]
async fn two_environments_through_the_routes_and_the_glyph() {
    let dir = tempfile::tempdir().unwrap();
    let (alpha, beta) = (
        marker_env(dir.path(), "alpha"),
        marker_env(dir.path(), "beta"),
    );
    let plugin = Plugin::start(&[
        "--workers",
        "2",
        "--http",
        "127.0.0.1:0",
        "--env",
        &alpha,
        "--env",
        &beta,
    ]);
    let address = http_address(&plugin);

    let body = request(&address, "GET", "/environments", b"").json();
    let names: Vec<&str> = body["environments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha", "beta"]);
    assert_eq!(body["default"], json!("alpha"));

    let run = |body: serde_json::Value| {
        let answer = request(&address, "POST", "/execute", body.to_string().as_bytes());
        (answer.status, answer.json())
    };
    let code = "import marker_beta\nmarker_beta.NAME";
    let (status, body) = run(json!({"content": code, "env": "beta"}));
    assert_eq!((status, &body["result"]), (200, &json!("beta")), "{body}");
    let (status, body) = run(json!({"content": code}));
    assert_eq!(status, 400, "the default environment has no marker_beta");
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("ModuleNotFoundError"));
    let (status, body) = run(json!({"content": "# py:alpha\nimport marker_alpha", "env": "beta"}));
    assert_eq!(status, 400);
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("alpha") && error.contains("beta"),
        "names both: {error}"
    );
    let (status, body) = run(json!({"content": "1", "env": "gamma"}));
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("gamma"));

    let answer = request(
        &address,
        "GET",
        "/uv/check?module=marker_beta&env=beta",
        b"",
    );
    assert_eq!(answer.json()["available"], json!(true));
    let answer = request(
        &address,
        "GET",
        "/uv/check?module=marker_beta&env=alpha",
        b"",
    );
    assert_eq!(answer.json()["available"], json!(false));
    let answer = request(
        &address,
        "POST",
        "/pip/install",
        br#"{"package": "rich", "env": "beta"}"#,
    );
    let error = answer.json()["error"].as_str().unwrap().to_owned();
    assert!(
        error.contains("variants/beta.toml") && error.contains("/beta"),
        "names the venv and its variant file: {error}"
    );

    let glyphs = plugin
        .domain()
        .await
        .register_glyphs(Empty {})
        .await
        .unwrap()
        .into_inner()
        .glyphs;
    assert_eq!(glyphs.len(), 1);
    assert_eq!(
        (glyphs[0].symbol.as_str(), glyphs[0].title.as_str()),
        ("py:*", "Python · alpha · beta")
    );
}
