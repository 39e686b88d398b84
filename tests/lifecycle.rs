//! Launch, identity, lifecycle RPCs, jobs and stopping, as the host drives them.

#[path = "support/fake_host.rs"]
mod fake_host;
#[path = "support/plugin.rs"]
mod plugin;

use std::time::{Duration, Instant};

use plugin::{execute, installed_copy, result_object, wait_for_detail, wait_ready, Launch, Plugin};
use qntx_python_plugin::proto::*;
use serde_json::json;
use tonic::Code;

async fn metadata_name(plugin: &Plugin) -> String {
    plugin
        .domain()
        .await
        .metadata(Empty {})
        .await
        .unwrap()
        .into_inner()
        .name
}

#[tokio::test(flavor = "multi_thread")]
async fn the_name_comes_from_the_flag_then_the_file_name_then_python() {
    let plugin = Plugin::launch(Launch::default().named("qntx-bio-plugin"));
    assert_eq!(metadata_name(&plugin).await, "bio");

    let plugin = Plugin::launch(
        Launch::default()
            .named("qntx-bio-plugin")
            .args(&["--name", "data"]),
    );
    assert_eq!(metadata_name(&plugin).await, "data");

    // A wrapper's flags can be overridden: the last value wins.
    let plugin = Plugin::launch(Launch::default().args(&["--name", "bio", "--name", "data"]));
    assert_eq!(metadata_name(&plugin).await, "data");

    let plugin = Plugin::launch(Launch::default().named("some-wrapper"));
    assert_eq!(metadata_name(&plugin).await, "python");

    let plugin = Plugin::start(&[]);
    let metadata = plugin
        .domain()
        .await
        .metadata(Empty {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(metadata.name, "python");
    assert_eq!(metadata.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(metadata.qntx_version, ">=0.1.0");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_taken_port_moves_to_the_next_one_and_host_names_work() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let plugin = Plugin::launch(Launch::default().replace_args(&["--port", &port.to_string()]));
    assert!(
        plugin.port > port && plugin.port <= port + 9,
        "bound {} after {port}",
        plugin.port
    );
    assert_eq!(metadata_name(&plugin).await, "python");

    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let plugin = Plugin::launch(
        Launch::default().replace_args(&["--address", &format!("localhost:{free}")]),
    );
    assert_eq!(plugin.port, free);
    assert_eq!(metadata_name(&plugin).await, "python");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_port_line_comes_first_and_logs_are_json_with_a_level() {
    let plugin = Plugin::start(&["--log-level", "debug"]);
    wait_ready(&plugin).await;
    // Worker logs reach stdout.
    let lines = plugin.log_lines_with("worker ready");
    for line in &lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        let level = value["level"].as_str().unwrap_or_default();
        assert!(
            ["debug", "info", "warn", "error"].contains(&level),
            "level {level:?} in {line}"
        );
        assert!(!line.contains('\u{1b}'), "ANSI codes in {line}");
    }
}

#[test]
fn version_flag_prints_the_version() {
    let (_dir, path) = installed_copy("qntx-python-plugin");
    let output = std::process::Command::new(path)
        .arg("--version")
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("qntx-python-plugin {}", env!("CARGO_PKG_VERSION"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn initialize_is_reentrant_and_applies_new_config() {
    let plugin = Plugin::start(&["--workers", "1"]);
    let mut client = plugin.domain().await;
    let mut python = plugin.python().await;
    let host = fake_host::FakeHost::start("token").await;
    let request = |config: &[(&str, &str)]| plugin::initialize_request(&host.endpoints(), config);

    let first = client.initialize(request(&[])).await.unwrap().into_inner();
    assert!(first.python_provider);
    assert_eq!(
        first.handler_names,
        vec!["python.script", "python.__reload"]
    );
    assert!(first.http_routes.iter().any(|r| r.path == "/execute"));

    let second = client
        .initialize(request(&[("max_output_bytes", "2048.000000")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        second.handler_names, first.handler_names,
        "same declarations, no duplicates"
    );
    let response = execute(&mut python, "print('x' * 5000)").await;
    assert!(
        response.output.contains("[output truncated"),
        "new config applies: {}",
        response.output.len()
    );

    let status = client
        .initialize(request(&[("timeout_secs", "soon")]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("timeout_secs"),
        "{}",
        status.message()
    );
    let response = execute(&mut python, "print('x' * 5000)").await;
    assert!(
        response.output.contains("[output truncated"),
        "a failed Initialize changes nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn health_schema_glyphs_and_unimplemented_rpcs() {
    let plugin = Plugin::start(&["--workers", "2"]);
    wait_ready(&plugin).await;
    let mut client = plugin.domain().await;

    let health = client.health(Empty {}).await.unwrap().into_inner();
    assert!(health.healthy);
    for key in [
        "python_version",
        "workers_total",
        "workers_busy",
        "queue_depth",
        "worker_restarts",
        "uptime_secs",
    ] {
        assert!(
            health.details.contains_key(key),
            "missing {key}: {:?}",
            health.details
        );
    }
    assert_eq!(health.details["workers_total"], "2");
    assert!(health.details["python_version"].starts_with("3."));
    assert!(
        health.message.starts_with("Python 3."),
        "{}",
        health.message
    );

    let schema = client.config_schema(Empty {}).await.unwrap().into_inner();
    let mut keys: Vec<_> = schema.fields.keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "max_output_bytes",
            "max_processes",
            "memory_limit_mb",
            "python_paths",
            "timeout_secs"
        ]
    );
    assert_eq!(schema.fields["timeout_secs"].r#type, "number");
    assert_eq!(schema.fields["timeout_secs"].default_value, "30");

    let glyphs = client
        .register_glyphs(Empty {})
        .await
        .unwrap()
        .into_inner()
        .glyphs;
    assert_eq!(glyphs.len(), 1, "one glyph type per plugin");
    let status = client
        .parse_ax_query(ParseAxQueryRequest { query: "x".into() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    let status = client
        .handle_web_socket(tokio_stream::iter(Vec::<WebSocketMessage>::new()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
}

#[tokio::test(flavor = "multi_thread")]
async fn initialize_without_an_attestation_store_fails_rather_than_declare_nothing() {
    let plugin = Plugin::start(&["--workers", "1"]);
    let status = plugin
        .domain()
        .await
        .initialize(InitializeRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().contains("no ATSStore endpoint"),
        "{}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn python_paths_apply_per_run_in_order() {
    let plugin = Plugin::start(&["--workers", "1"]);
    let host = fake_host::FakeHost::start("token").await;
    let first = tempfile::tempdir().unwrap();
    let second = tempfile::tempdir().unwrap();
    std::fs::write(first.path().join("shadow.py"), "WHERE = 'first'").unwrap();
    std::fs::write(second.path().join("shadow.py"), "WHERE = 'second'").unwrap();
    let paths = format!("{}:{}", first.path().display(), second.path().display());
    plugin
        .domain()
        .await
        .initialize(plugin::initialize_request(
            &host.endpoints(),
            &[("python_paths", &paths)],
        ))
        .await
        .unwrap();
    let mut python = plugin.python().await;
    let response = execute(
        &mut python,
        "import shadow, sys\n[shadow.WHERE, sys.path.count(shadow.__file__.rsplit('/', 1)[0])]",
    )
    .await;
    assert_eq!(
        result_object(&response)["result"],
        json!(["first", 1]),
        "{response:?}"
    );
    let response = execute(
        &mut python,
        "import sys\nsum(p.startswith('/tmp') for p in sys.path)",
    )
    .await;
    assert_eq!(
        result_object(&response)["result"],
        json!(2),
        "paths do not accumulate across runs"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn script_jobs_return_output_and_log_entries_on_success_and_failure() {
    let plugin = Plugin::start(&["--workers", "1"]);
    let mut client = plugin.domain().await;
    let job = |payload: serde_json::Value| ExecuteJobRequest {
        job_id: "JB42".into(),
        handler_name: "python.script".into(),
        payload: serde_json::to_vec(&payload).unwrap(),
        timeout_secs: Some(300),
    };

    let ok = client
        .execute_job(job(
            json!({"content": "print('one')\nprint('two')\n[upstream['k']]", "upstream": {"k": 5}}),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(ok.success, "{ok:?}");
    assert_eq!(ok.plugin_version, env!("CARGO_PKG_VERSION"));
    let result: serde_json::Value = serde_json::from_slice(&ok.result).unwrap();
    assert_eq!(result["stdout"], json!("one\ntwo\n"));
    assert_eq!(result["result"], json!([5]));
    let messages: Vec<_> = ok
        .log_entries
        .iter()
        .map(|e| (e.level.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(messages, [("info", "one"), ("info", "two")]);
    for entry in &ok.log_entries {
        assert!(time::OffsetDateTime::parse(
            &entry.timestamp,
            &time::format_description::well_known::Rfc3339
        )
        .is_ok());
    }

    let failed = client
        .execute_job(job(json!({"content": "import sys\nprint('partial')\nprint('warned', file=sys.stderr)\n1/0"})))
        .await
        .unwrap()
        .into_inner();
    assert!(!failed.success);
    assert!(failed.error.contains("ZeroDivisionError"));
    let result: serde_json::Value = serde_json::from_slice(&failed.result).unwrap();
    assert_eq!(result["stdout"], json!("partial\n"));
    assert_eq!(result["stderr"], json!("warned\n"));
    let levels: Vec<_> = failed
        .log_entries
        .iter()
        .map(|e| e.level.as_str())
        .collect();
    assert_eq!(levels, ["info", "warn", "error"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_jobs_fail_with_a_message_that_says_what_was_wrong() {
    let plugin = Plugin::start(&["--workers", "1"]);
    let mut client = plugin.domain().await;
    let cases: [(&str, &[u8], &str); 5] = [
        ("python.nope", b"{}", "unknown handler 'nope'"),
        (
            "bio.thing",
            b"{}",
            "unknown handler 'bio.thing': plugin 'python' handles python.script",
        ),
        (
            "python.script",
            b"not json",
            "payload must be a JSON object",
        ),
        (
            "python.script",
            b"{\"content\": \"\"}",
            "'content' is missing or empty",
        ),
        ("python.script", b"", "payload must be a JSON object"),
    ];
    for (handler, payload, expected) in cases {
        let response = client
            .execute_job(ExecuteJobRequest {
                handler_name: handler.into(),
                payload: payload.to_vec(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(!response.success);
        assert!(
            response.error.contains(expected),
            "{handler}: {}",
            response.error
        );
        assert_eq!(
            response.log_entries.len(),
            1,
            "the reason reaches the job log"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn http_routes_answer_json() {
    let plugin = Plugin::start(&["--workers", "1"]);
    let client = plugin.domain().await;
    let call = |method: &str, path: &str, body: &str| {
        let request = HttpRequest {
            method: method.into(),
            path: path.into(),
            headers: vec![],
            body: body.as_bytes().to_vec(),
        };
        let mut client = client.clone();
        async move {
            let response = client.handle_http(request).await.unwrap().into_inner();
            (
                response.status_code,
                serde_json::from_slice::<serde_json::Value>(&response.body).unwrap(),
            )
        }
    };
    let (status, body) = call("GET", "/version?verbose=1", "").await;
    assert_eq!(status, 200);
    assert_eq!(body["plugin_version"], json!(env!("CARGO_PKG_VERSION")));

    let (status, body) = call("POST", "/execute", r#"{"content": "print(1)\n2"}"#).await;
    assert_eq!(
        (status, &body["stdout"], &body["result"]),
        (200, &json!("1\n"), &json!(2))
    );
    let (status, _) = call("POST", "/api/python/execute", r#"{"content": "1/0"}"#).await;
    assert_eq!(
        status, 400,
        "the full path is an alias; failures answer 400"
    );
    let (status, body) = call("POST", "/execute", "{broken").await;
    assert_eq!(status, 400);
    assert!(body["error"]
        .as_str()
        .unwrap()
        .starts_with("Invalid request"));
    let (status, body) = call("POST", "/execute", "{}").await;
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (400, "Missing 'content' field")
    );
    let (status, body) = call("POST", "/evaluate", r#"{"expr": "6*7"}"#).await;
    assert_eq!((status, &body["result"]), (200, &json!(42)));
    let (status, body) = call("GET", "/nowhere", "").await;
    assert_eq!(status, 404);
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("Unknown endpoint: GET /nowhere"));
}

#[tokio::test(flavor = "multi_thread")]
async fn standard_health_and_reflection_services_are_served() {
    let plugin = Plugin::start(&["--workers", "1"]);
    let channel = plugin.channel().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let answer = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "protocol.PythonService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        answer.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("no service list");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for service in [
        "protocol.DomainPluginService",
        "protocol.PythonService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == service),
            "{service} missing from {names:?}"
        );
    }
}

async fn assert_exits_promptly_while_stuck(stop: impl FnOnce(&Plugin)) {
    let mut plugin = Plugin::start(&["--workers", "1"]);
    wait_ready(&plugin).await;
    let mut python = plugin.python().await;
    let stuck = tokio::spawn(async move {
        python
            .execute(PythonExecuteRequest {
                code: "while True: pass".into(),
                ..Default::default()
            })
            .await
    });
    wait_for_detail(&plugin, "workers_busy", "1").await;
    let workers = child_pids(plugin.pid());
    assert!(!workers.is_empty(), "workers are children of the plugin");
    let started = Instant::now();
    stop(&plugin);
    let status = tokio::task::block_in_place(|| plugin.wait_exit(Duration::from_secs(3)));
    assert!(status.is_some(), "still running 3 s after the stop request");
    assert!(started.elapsed() < Duration::from_secs(3));
    // The stuck call ends too (with an error), instead of hanging.
    let _ = tokio::time::timeout(Duration::from_secs(3), stuck)
        .await
        .expect("stuck call ended");
    // No worker outlives the supervisor.
    let deadline = Instant::now() + Duration::from_secs(2);
    while workers.iter().any(|pid| is_running(*pid)) {
        assert!(
            Instant::now() < deadline,
            "workers left running: {workers:?}"
        );
        tokio::task::yield_now().await;
    }
}

fn child_pids(parent: i32) -> Vec<i32> {
    let output = std::process::Command::new("pgrep")
        .args(["-P", &parent.to_string()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .map(|pid| pid.parse().unwrap())
        .collect()
}

/// Alive and not a zombie.
fn is_running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or_default()
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigint_stops_the_plugin_while_a_run_is_stuck() {
    assert_exits_promptly_while_stuck(|plugin| plugin.signal(libc::SIGINT)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_the_plugin_while_a_run_is_stuck() {
    assert_exits_promptly_while_stuck(|plugin| plugin.signal(libc::SIGTERM)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_shutdown_rpc_answers_then_stops_the_plugin() {
    let handle = tokio::runtime::Handle::current();
    assert_exits_promptly_while_stuck(move |plugin| {
        let mut client = tokio::task::block_in_place(|| handle.block_on(plugin.domain()));
        let answer = tokio::task::block_in_place(|| handle.block_on(client.shutdown(Empty {})));
        assert!(answer.is_ok(), "Shutdown answered: {answer:?}");
    })
    .await;
}
