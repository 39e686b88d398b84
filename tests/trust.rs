//! What the plugin tells its operator about trust: the host's token never reaches the log,
//! and listening where other machines can reach the plugin is warned about.

#[path = "support/fake_host.rs"]
mod fake_host;
#[path = "support/plugin.rs"]
mod plugin;

use std::time::{Duration, Instant};

use fake_host::FakeHost;
use plugin::{execute, initialize_request, Launch, Plugin};
use qntx_python_plugin::proto::{Empty, ExecuteJobRequest};

const TOKEN: &str = "5ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7";
const EXPOSED: &str = "non-loopback address";

/// Waits until a log line satisfies `found` (the log is read by a thread of the test).
fn wait_for_log(plugin: &Plugin, what: &str, found: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !plugin.log_lines().iter().any(|line| found(line)) {
        assert!(
            Instant::now() < deadline,
            "no log line with {what}: {:?}",
            plugin.log_lines()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn level_of(line: &str) -> String {
    serde_json::from_str::<serde_json::Value>(line).unwrap_or_default()["level"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn listening_beyond_loopback_is_warned_about() {
    let exposed = Plugin::launch(Launch::default().replace_args(&["--address", "0.0.0.0:0"]));
    wait_for_log(&exposed, "the warning", |line| {
        line.contains(EXPOSED) && level_of(line) == "warn"
    });

    for address in ["127.0.0.1:0", "localhost:0"] {
        let local = Plugin::launch(Launch::default().replace_args(&["--address", address]));
        // "serving" is logged after the address is checked.
        wait_for_log(&local, "serving", |line| line.contains("serving"));
        let lines = local.log_lines();
        assert!(
            !lines.iter().any(|line| line.contains(EXPOSED)),
            "{address}: {lines:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_hosts_token_never_reaches_the_log() {
    let host = FakeHost::start(TOKEN).await;
    // Debug everywhere, dependencies included: the most a log can show.
    let mut plugin = Plugin::launch(
        Launch::default()
            .args(&["--workers", "1", "--log-level", "debug"])
            .env("RUST_LOG", "debug"),
    );
    let mut domain = plugin.domain().await;
    domain
        .initialize(initialize_request(&host.endpoints(), &[]))
        .await
        .expect("Initialize");
    let mut python = plugin.python().await;
    let code = "attest(['s'], ['p'], contexts=['c'])\nlast(subjects=['s'])['id']";
    let response = execute(&mut python, code).await;
    assert!(response.success, "{}", response.error);
    let reload = ExecuteJobRequest {
        job_id: "J1".into(),
        handler_name: "python.__reload".into(),
        ..Default::default()
    };
    domain.execute_job(reload.clone()).await.expect("reload");

    // Refusals and failures are logged in more detail.
    host.set_token("a-new-host-run");
    let response = execute(&mut python, code).await;
    assert!(response.error.contains("invalid authentication token"));
    let failed = domain
        .execute_job(reload)
        .await
        .expect("reload")
        .into_inner();
    assert!(!failed.success);

    domain.shutdown(Empty {}).await.expect("Shutdown");
    assert!(plugin.wait_exit(Duration::from_secs(5)).is_some());
    wait_for_log(&plugin, "stopped", |line| line.contains("stopped"));
    let lines = plugin.log_lines();
    assert!(lines.len() > 20, "debug logging is on: {lines:?}");
    let leaks: Vec<&String> = lines.iter().filter(|line| line.contains(TOKEN)).collect();
    assert!(leaks.is_empty(), "the token is in the log: {leaks:?}");
}
