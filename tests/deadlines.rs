//! A caller's gRPC deadline bounds its run, and the caller still gets the answer: the run is
//! stopped early enough that `success = false`, the timeout and the output so far arrive
//! before the deadline, never DEADLINE_EXCEEDED.

#[path = "support/plugin.rs"]
mod plugin;

use std::time::{Duration, Instant};

use plugin::{execute, result_object, wait_for_detail, Plugin};
use qntx_python_plugin::proto::{ExecuteJobRequest, PythonExecuteRequest};
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(2);

/// Prints as fast as it can, forever.
const ENDLESS_PRINTER: &str =
    "import itertools\nfor i in itertools.count():\n    print('line', i)\n";

/// A plugin with one worker that is already running, so the runs below start at once.
async fn warm_plugin() -> Plugin {
    let plugin = Plugin::start(&["--workers", "1"]);
    let mut client = plugin.python().await;
    let response = execute(&mut client, "'warm'").await;
    assert!(response.success, "{}", response.error);
    plugin
}

#[tokio::test(flavor = "multi_thread")]
async fn execute_answers_a_timed_out_run_before_the_callers_deadline() {
    let plugin = warm_plugin().await;
    let mut client = plugin.python().await;
    let mut request = tonic::Request::new(PythonExecuteRequest {
        code: ENDLESS_PRINTER.into(),
        ..Default::default()
    });
    request.set_timeout(DEADLINE);
    let started = Instant::now();
    let response = client
        .execute(request)
        .await
        .expect("an answer before the deadline, not a gRPC error")
        .into_inner();
    assert!(started.elapsed() < DEADLINE, "{:?}", started.elapsed());
    assert!(!response.success);
    assert!(
        response.error.contains("timed out after") && response.error.contains("deadline of 2 s"),
        "the error names the timeout and why it came early: {}",
        response.error
    );
    assert!(
        response.output.starts_with("line 0\nline 1\n"),
        "the output so far: {:?}",
        &response.output[..response.output.len().min(200)]
    );
    let result = result_object(&response);
    assert_eq!(result["success"], json!(false));
    assert!(result["stdout"].as_str().unwrap().starts_with("line 0\n"));

    // The worker was interrupted, not lost.
    let response = execute(&mut client, "'next'").await;
    assert_eq!(result_object(&response)["result"], json!("next"));
}

#[tokio::test(flavor = "multi_thread")]
async fn execute_job_keeps_the_callers_deadline_over_a_longer_timeout_secs() {
    let plugin = warm_plugin().await;
    let mut client = plugin.domain().await;
    let payload = json!({ "content": ENDLESS_PRINTER }).to_string();
    let mut request = tonic::Request::new(ExecuteJobRequest {
        job_id: "job-1".into(),
        handler_name: "python.script".into(),
        payload: payload.into_bytes(),
        // The Pulse path always sends 300; the caller's 2 s deadline is what binds.
        timeout_secs: Some(300),
    });
    request.set_timeout(DEADLINE);
    let started = Instant::now();
    let response = client
        .execute_job(request)
        .await
        .expect("an answer before the deadline, not a gRPC error")
        .into_inner();
    assert!(started.elapsed() < DEADLINE, "{:?}", started.elapsed());
    assert!(!response.success);
    assert!(
        response.error.contains("timed out after") && response.error.contains("deadline of 2 s"),
        "{}",
        response.error
    );
    let logged: Vec<&str> = response
        .log_entries
        .iter()
        .filter(|e| e.stage == "stdout")
        .map(|e| e.message.as_str())
        .collect();
    assert_eq!(
        logged.first().copied(),
        Some("line 0"),
        "{:?}",
        &logged[..logged.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_whose_deadline_passes_while_queued_never_starts() {
    let plugin = warm_plugin().await;
    let mut client = plugin.python().await;
    // Occupy the only worker.
    let busy = tokio::spawn({
        let mut client = client.clone();
        async move { execute(&mut client, "while True: pass").await }
    });
    wait_for_detail(&plugin, "workers_busy", "1").await;

    let marker = tempfile::tempdir().unwrap();
    let ran = marker.path().join("ran");
    let mut request = tonic::Request::new(PythonExecuteRequest {
        code: format!("open({:?}, 'w').close()", ran.display().to_string()),
        ..Default::default()
    });
    request.set_timeout(Duration::from_secs(1));
    let started = Instant::now();
    let response = client
        .execute(request)
        .await
        .expect("an answer before the deadline, not a gRPC error")
        .into_inner();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(!response.success);
    assert!(
        response.error.contains("deadline of 1 s"),
        "{}",
        response.error
    );

    // Free the worker; the queued run must not run after its caller's deadline.
    busy.abort();
    let response = execute(&mut client, "'free'").await;
    assert_eq!(result_object(&response)["result"], json!("free"));
    assert!(!ran.exists(), "the queued run ran after its deadline");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_that_waited_for_a_worker_still_answers_before_the_deadline() {
    let plugin = warm_plugin().await;
    // The only worker is busy for 1.2 s of the next caller's 3 s.
    let mut busy = plugin.python().await;
    let blocker =
        tokio::spawn(async move { execute(&mut busy, "import time\ntime.sleep(1.2)").await });
    wait_for_detail(&plugin, "workers_busy", "1").await;
    let mut client = plugin.python().await;
    let mut request = tonic::Request::new(PythonExecuteRequest {
        code: ENDLESS_PRINTER.into(),
        ..Default::default()
    });
    let deadline = Duration::from_secs(3);
    request.set_timeout(deadline);
    let started = Instant::now();
    let response = client
        .execute(request)
        .await
        .expect("an answer before the deadline, not a gRPC error")
        .into_inner();
    assert!(started.elapsed() < deadline, "{:?}", started.elapsed());
    assert!(
        response.error.contains("timed out after"),
        "stopped by its own limit, not cancelled by the backstop: {}",
        response.error
    );
    assert!(
        response.output.starts_with("line 0\n"),
        "the output so far is kept"
    );
    assert!(blocker.await.unwrap().success);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_http_door_keeps_to_the_callers_deadline_too() {
    let plugin = warm_plugin().await;
    let mut request = tonic::Request::new(qntx_python_plugin::proto::HttpRequest {
        method: "POST".into(),
        path: "/execute".into(),
        body: serde_json::to_vec(&json!({ "content": ENDLESS_PRINTER })).unwrap(),
        ..Default::default()
    });
    request.set_timeout(DEADLINE);
    let started = Instant::now();
    let response = plugin
        .domain()
        .await
        .handle_http(request)
        .await
        .expect("an answer before the deadline, not a gRPC error")
        .into_inner();
    assert!(started.elapsed() < DEADLINE, "{:?}", started.elapsed());
    assert_eq!(response.status_code, 400);
    let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("timed out after"),
        "{body}"
    );
    assert!(body["stdout"].as_str().unwrap().starts_with("line 0\n"));
}
