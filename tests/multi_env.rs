//! One provider, several environments: routing by `# py:<name>` at every door, separation of
//! packages, a shared worker budget, lazy start and idle release, refusal of an environment
//! made for another Python, and what Health says. Two small venvs, each with a marker module.

#[path = "support/plugin.rs"]
mod plugin;
#[path = "support/venv.rs"]
mod venv;

use std::time::Duration;

use plugin::{execute, health_detail, result_object, wait_for_detail, Plugin};
use qntx_python_plugin::proto::{Empty, ExecuteJobRequest, HttpRequest, PythonExecuteRequest};
use serde_json::{json, Value};
use venv::Venv;

struct Setup {
    plugin: Plugin,
    bio: Venv,
    data: Venv,
}

/// `bio` (default) and `data`, each with its marker module.
fn two_environments(extra: &[&str]) -> Setup {
    let bio = venv::with_marker("bio");
    let data = venv::with_marker("data");
    let mut args = vec![
        "--env".to_owned(),
        bio.arg("bio"),
        "--env".to_owned(),
        data.arg("data"),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Setup {
        plugin: Plugin::start(&args),
        bio,
        data,
    }
}

/// A program that waits until `flag` exists, then answers `answer` (a Python literal); the
/// test decides when a run ends without sleeping itself.
fn waits_for(flag: &std::path::Path, answer: &str) -> String {
    format!(
        "import os, time\nwhile not os.path.exists({:?}):\n    time.sleep(0.01)\n{answer}",
        flag.display().to_string()
    )
}

/// The marker modules a program can import, and whether each environment's site-packages is
/// on its path.
const WHERE_AM_I: &str = r#"
import importlib.util, site, sys
{
    "markers": [m for m in ("bio_marker", "data_marker") if importlib.util.find_spec(m)],
    "path": [p for p in sys.path if p.endswith("site-packages") and "-env" in p],
    "base": [p for p in site.getsitepackages() if p in sys.path],
}
"#;

async fn run(plugin: &Plugin, code: &str) -> (bool, Value, String) {
    let response = execute(&mut plugin.python().await, code).await;
    let object = result_object(&response);
    (response.success, object["result"].clone(), response.error)
}

/// The error of a run that must fail.
async fn run_error(plugin: &Plugin, code: &str) -> String {
    let (ok, result, error) = run(plugin, code).await;
    assert!(!ok, "{code:?} succeeded with {result}");
    error
}

async fn job(plugin: &Plugin, code: &str) -> (bool, Value, String) {
    let payload = serde_json::to_vec(&json!({ "content": code })).unwrap();
    let response = plugin
        .domain()
        .await
        .execute_job(ExecuteJobRequest {
            job_id: "JB1".into(),
            handler_name: "python.script".into(),
            payload,
            timeout_secs: Some(60),
        })
        .await
        .expect("ExecuteJob answered")
        .into_inner();
    let result = serde_json::from_slice::<Value>(&response.result)
        .map(|object| object["result"].clone())
        .unwrap_or(Value::Null);
    (response.success, result, response.error)
}

async fn http_execute(plugin: &Plugin, body: Value) -> (i32, Value) {
    let response = plugin
        .domain()
        .await
        .handle_http(HttpRequest {
            method: "POST".into(),
            path: "/execute".into(),
            body: serde_json::to_vec(&body).unwrap(),
            ..Default::default()
        })
        .await
        .expect("HandleHTTP answered")
        .into_inner();
    (
        response.status_code,
        serde_json::from_slice(&response.body).expect("JSON body"),
    )
}

/// Worker processes of the plugin (its direct children).
fn worker_processes(plugin: &Plugin) -> usize {
    let tasks = std::fs::read_dir(format!("/proc/{}/task", plugin.pid())).expect("tasks");
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .map(|children| children.split_whitespace().count())
        .sum()
}

fn markers(result: &Value) -> Vec<&str> {
    result["markers"]
        .as_array()
        .expect("markers")
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_directive_routes_the_run_and_nothing_else_is_seen() {
    let setup = two_environments(&["--workers", "2"]);
    let plugin = &setup.plugin;

    let (ok, result, error) = run(plugin, WHERE_AM_I).await;
    assert!(ok, "{error}");
    assert_eq!(
        markers(&result),
        ["bio_marker"],
        "no directive: the default"
    );
    let bio_site = venv::site_packages(&setup.bio.path);
    assert_eq!(result["path"], json!([bio_site.display().to_string()]));
    assert_eq!(
        result["base"],
        json!([]),
        "a venv does not see the packages of the Python it was made from"
    );

    let (ok, result, error) = run(plugin, &format!("# py:data\n{WHERE_AM_I}")).await;
    assert!(ok, "{error}");
    assert_eq!(markers(&result), ["data_marker"]);
    let data_site = venv::site_packages(&setup.data.path);
    assert_eq!(result["path"], json!([data_site.display().to_string()]));

    // A module only in `data` does not exist in `bio`.
    let error = run_error(plugin, "# py:bio\nimport data_marker").await;
    assert!(
        error.contains("ModuleNotFoundError: No module named 'data_marker'"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_declared_environment_the_machines_python_is_used_as_is() {
    let plugin = Plugin::start(&[]);
    let (ok, result, error) = run(&plugin, WHERE_AM_I).await;
    assert!(ok, "{error}");
    assert!(
        !result["base"].as_array().unwrap().is_empty(),
        "the embedded interpreter's own site-packages: {result}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_directive_is_found_after_a_host_style_preamble() {
    let setup = two_environments(&[]);
    // What the host builds for a `python` watcher action (protocol.md §4.2).
    let code = "import json\n_attestation_json = '{\"subjects\": [\"pump-12\"]}'\nattestation = json.loads(_attestation_json)\n# py:data\nimport data_marker\n[data_marker.VALUE, attestation['subjects'][0]]";
    let (ok, result, error) = run(&setup.plugin, code).await;
    assert!(ok, "{error}");
    assert_eq!(result, json!(["data", "pump-12"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn every_door_routes_jobs_and_http_included() {
    let setup = two_environments(&[]);
    let plugin = &setup.plugin;

    let (ok, result, error) = job(plugin, "#py:data\nimport data_marker\ndata_marker.VALUE").await;
    assert!(ok, "{error}");
    assert_eq!(result, json!("data"));
    let (ok, result, _) = job(plugin, "import bio_marker\nbio_marker.VALUE").await;
    assert!(ok);
    assert_eq!(result, json!("bio"));

    // HTTP: the body's `env`, or the directive; both must agree.
    let (status, body) = http_execute(
        plugin,
        json!({"content": "import data_marker\ndata_marker.VALUE", "env": "data"}),
    )
    .await;
    assert_eq!((status, &body["result"]), (200, &json!("data")), "{body}");
    let (status, body) = http_execute(
        plugin,
        json!({"content": "# py:data\nimport data_marker\ndata_marker.VALUE"}),
    )
    .await;
    assert_eq!((status, &body["result"]), (200, &json!("data")), "{body}");
    let (status, body) =
        http_execute(plugin, json!({"content": "# py:data\n1", "env": "bio"})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["success"], json!(false));
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("the request asks for environment 'bio' but the program's `# py:data` (line 1) names 'data'"),
        "{body}"
    );
    let (status, body) = http_execute(plugin, json!({"content": "1", "env": "nope"})).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains(
            "no Python environment named 'nope' (asked for by the request's 'env'); this plugin has bio, data (default: bio)"
        ),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_and_conflicting_directives_fail_the_run_with_the_reason() {
    let setup = two_environments(&[]);
    let plugin = &setup.plugin;

    let error = run_error(plugin, "x = 1\n# py:ml\nx").await;
    assert_eq!(
        error,
        "no Python environment named 'ml' (asked for by `# py:ml` on line 2); this plugin has bio, data (default: bio)"
    );
    let (ok, _, error) = job(plugin, "# py:ml\n1").await;
    assert!(!ok);
    assert!(
        error.contains("no Python environment named 'ml'"),
        "{error}"
    );

    let error = run_error(plugin, "# py:bio\nx = 1\n# py:data\n").await;
    assert_eq!(
        error,
        "the program names two environments, `# py:bio` (line 1) and `# py:data` (line 3); keep one"
    );
    let error = run_error(plugin, "# py:Data\n1").await;
    assert!(
        error.contains("line 1: `# py:Data` does not name an environment"),
        "{error}"
    );
    // The plugin is unharmed.
    let (ok, result, _) = run(plugin, "# py:data\n6 * 7").await;
    assert!(ok);
    assert_eq!(result, json!(42));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_in_one_environment_leaves_a_run_in_the_other_alone() {
    let setup = two_environments(&["--workers", "2"]);
    let plugin = &setup.plugin;
    let flag = tempfile::tempdir().unwrap();
    let go = flag.path().join("go");
    let waiting = waits_for(&go, "'bio done'");
    let mut client = plugin.python().await;
    let bio_run = tokio::spawn(async move { execute(&mut client, &waiting).await });
    wait_for_detail(plugin, "env.bio.busy", "1").await;

    let error = run_error(plugin, "# py:data\nimport os\nos._exit(3)").await;
    assert!(error.contains("exited with status 3"), "{error}");
    assert_eq!(health_detail(plugin, "env.bio.busy").await, "1");

    std::fs::write(&go, b"").unwrap();
    let response = bio_run.await.unwrap();
    assert!(response.success, "{}", response.error);
    assert_eq!(result_object(&response)["result"], json!("bio done"));
    assert_eq!(health_detail(plugin, "env.bio.restarts").await, "0");

    let (ok, result, _) = run(plugin, "# py:data\n'recovered'").await;
    assert!(ok);
    assert_eq!(result, json!("recovered"));
    assert_eq!(health_detail(plugin, "env.data.restarts").await, "1");
}

#[tokio::test(flavor = "multi_thread")]
async fn pools_start_on_first_use_and_give_idle_workers_back() {
    let setup = two_environments(&["--workers", "2", "--worker-idle-timeout", "0.5"]);
    let plugin = &setup.plugin;
    assert_eq!(health_detail(plugin, "env.bio.state").await, "cold");
    assert_eq!(health_detail(plugin, "env.data.state").await, "cold");
    assert_eq!(worker_processes(plugin), 0, "no environment used yet");

    let (ok, _, _) = run(plugin, "# py:data\n1").await;
    assert!(ok);
    assert_eq!(health_detail(plugin, "env.data.state").await, "ready");
    assert_eq!(health_detail(plugin, "env.data.workers").await, "1");
    assert_eq!(health_detail(plugin, "env.bio.state").await, "cold");
    assert_eq!(
        worker_processes(plugin),
        1,
        "only the used environment has a worker"
    );

    // Idle for longer than --worker-idle-timeout: the worker stops.
    wait_for_detail(plugin, "env.data.workers", "0").await;
    assert_eq!(health_detail(plugin, "env.data.state").await, "cold");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while worker_processes(plugin) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the worker process stays"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // And comes back on the next run, which is not a restart.
    let (ok, _, _) = run(plugin, "# py:data\n2").await;
    assert!(ok);
    assert_eq!(health_detail(plugin, "env.data.restarts").await, "0");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_worker_budget_is_shared_across_environments() {
    let setup = two_environments(&["--workers", "1"]);
    let plugin = &setup.plugin;
    let flag = tempfile::tempdir().unwrap();
    let go = flag.path().join("go");

    // bio's idle worker is stopped for data's run.
    assert!(run(plugin, "1").await.0);
    assert_eq!(health_detail(plugin, "env.bio.workers").await, "1");
    let (ok, result, _) = run(plugin, "# py:data\nimport data_marker\ndata_marker.VALUE").await;
    assert!(ok);
    assert_eq!(result, json!("data"));
    assert_eq!(health_detail(plugin, "env.bio.workers").await, "0");
    assert_eq!(worker_processes(plugin), 1);

    // A busy data worker hands its permit to bio once its run ends.
    let waiting = format!("# py:data\n{}", waits_for(&go, "'data done'"));
    let mut client = plugin.python().await;
    let data_run = tokio::spawn(async move { execute(&mut client, &waiting).await });
    wait_for_detail(plugin, "env.data.busy", "1").await;
    let mut client = plugin.python().await;
    let bio_run = tokio::spawn(async move { execute(&mut client, "'bio done'").await });
    wait_for_detail(plugin, "env.bio.state", "starting").await;
    std::fs::write(&go, b"").unwrap();
    let data = data_run.await.unwrap();
    let bio = bio_run.await.unwrap();
    assert_eq!(result_object(&data)["result"], json!("data done"));
    assert_eq!(result_object(&bio)["result"], json!("bio done"));
    assert_eq!(health_detail(plugin, "env.data.workers").await, "0");
    assert_eq!(health_detail(plugin, "env.bio.workers").await, "1");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_environment_for_another_python_is_refused_and_the_others_serve() {
    let bio = venv::with_marker("bio");
    let other = venv::for_another_python();
    let (major, minor) = venv::embedded_minor();
    let plugin = Plugin::start(&["--env", &bio.arg("bio"), "--env", &other.arg("old")]);

    let health = plugin
        .domain()
        .await
        .health(Empty {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        health.healthy,
        "one good environment keeps the plugin healthy"
    );
    assert_eq!(health.details["env.old.state"], "failed");
    let reason = &health.details["env.old.error"];
    assert!(
        reason.contains(&format!("environment 'old' ({})", other.path.display()))
            && reason.contains(&format!("is for Python {major}.{}", minor + 1))
            && reason.contains(&format!("this plugin embeds Python {major}.{minor}.")),
        "{reason}"
    );

    let status = plugin
        .python()
        .await
        .execute(PythonExecuteRequest {
            code: "# py:old\n1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(
        status.message().contains("environment 'old'"),
        "{}",
        status.message()
    );

    let (ok, result, _) = run(&plugin, "import bio_marker\nbio_marker.VALUE").await;
    assert!(ok);
    assert_eq!(result, json!("bio"));
}

#[tokio::test(flavor = "multi_thread")]
async fn health_names_every_environment_and_its_state() {
    let setup = two_environments(&["--workers", "3", "--default-env", "data"]);
    let plugin = &setup.plugin;
    let health = plugin
        .domain()
        .await
        .health(Empty {})
        .await
        .unwrap()
        .into_inner();
    assert!(health.healthy);
    assert_eq!(health.details["environments"], "bio, data");
    assert_eq!(health.details["default_environment"], "data");
    assert_eq!(health.details["workers_total"], "3");
    assert_eq!(
        health.details["env.bio"],
        "cold: no workers (they start on first use); 0 runs, 0 restarts"
    );
    assert!(
        health.message.contains("environments: bio cold, data cold"),
        "{}",
        health.message
    );

    let (ok, result, _) = run(plugin, "import data_marker\ndata_marker.VALUE").await;
    assert!(ok);
    assert_eq!(result, json!("data"), "--default-env data");
    let health = plugin
        .domain()
        .await
        .health(Empty {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.details["env.data.state"], "ready");
    assert_eq!(health.details["env.data.runs"], "1");
    assert_eq!(
        health.details["env.data"],
        "ready: 1 workers (0 busy), 0 queued; 1 runs, 0 restarts"
    );
    assert_eq!(health.details["runs_completed"], "1");
    assert_eq!(health.details["workers_ready"], "1");
}

#[test]
fn bad_declarations_stop_the_plugin_before_it_announces_a_port() {
    let bio = venv::with_marker("bio");
    for (args, expected) in [
        (vec!["--env", "bio"], "--env bio: expected NAME=PATH"),
        (
            vec!["--env", "Bio=/x"],
            "'Bio' is not a valid environment name",
        ),
        (
            vec!["--env", &bio.arg("bio"), "--env", "bio=/y"],
            "environment 'bio' is declared twice",
        ),
        (
            vec!["--env", &bio.arg("bio"), "--default-env", "data"],
            "--default-env data: no such environment (declared: bio)",
        ),
    ] {
        let (_dir, path) = plugin::installed_copy("qntx-python-plugin");
        let output = std::process::Command::new(path)
            .args(["--port", "0"])
            .args(&args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?}");
        assert!(!stdout.contains("QNTX_PLUGIN_PORT"), "{args:?}: {stdout}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}
