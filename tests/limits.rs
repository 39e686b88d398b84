//! Limits on everything a run starts: its subprocesses count against the memory limit, their
//! number is capped, and none outlives the run, not even one that leaves its session.

#[path = "support/fake_host.rs"]
mod fake_host;
#[path = "support/plugin.rs"]
mod plugin;

use std::time::{Duration, Instant};

use plugin::{execute, health_detail, result_object, wait_ready, Plugin};
use serde_json::json;

/// Sets the plugin's config through Initialize, as the host does.
async fn configure(plugin: &Plugin, pairs: &[(&str, &str)]) {
    let host = fake_host::FakeHost::start("token").await;
    let request = plugin::initialize_request(&host.endpoints(), pairs);
    plugin
        .domain()
        .await
        .initialize(request)
        .await
        .expect("Initialize");
}

async fn one_worker() -> Plugin {
    let plugin = Plugin::start(&["--workers", "1"]);
    wait_ready(&plugin).await;
    plugin
}

/// Alive and not a zombie.
#[cfg(target_os = "linux")]
fn is_running(pid: i64) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit(')').next().unwrap_or_default().trim_start();
    !state.is_empty() && !state.starts_with('Z')
}

/// Polls until `pid` is gone, for up to `patience`; true if it went.
#[cfg(target_os = "linux")]
async fn gone_within(pid: i64, patience: Duration) -> bool {
    let deadline = Instant::now() + patience;
    while Instant::now() < deadline {
        if !is_running(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    !is_running(pid)
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread")]
async fn a_grandchild_that_leaves_the_session_and_ignores_sigterm_ends_with_its_run() {
    let plugin = one_worker().await;
    let mut client = plugin.python().await;

    // Daemonised: its parent exits at once, and it has its own session and ignores SIGTERM.
    let code = "import os, signal, time\nr, w = os.pipe()\nif os.fork() == 0:\n    os.setsid()\n    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n    if os.fork() == 0:\n        os.write(w, str(os.getpid()).encode())\n        os.close(w)\n        time.sleep(600)\n    os._exit(0)\nos.close(w)\nint(os.read(r, 32))";
    let response = execute(&mut client, code).await;
    assert!(response.success, "{}", response.error);
    let pid = result_object(&response)["result"].as_i64().expect("a pid");
    let gone = gone_within(pid, Duration::from_secs(3)).await;
    if !gone {
        // SAFETY: only signals the test's own leftover.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    assert!(gone, "the daemonised grandchild {pid} outlived its run");

    let response = execute(&mut client, "1 + 1").await;
    assert_eq!(result_object(&response)["result"], json!(2));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_memory_limit_covers_the_runs_subprocesses() {
    let plugin = one_worker().await;
    configure(&plugin, &[("memory_limit_mb", "256")]).await;
    let mut client = plugin.python().await;

    // 900 MiB in a forked subprocess, in steps; the program itself stays small.
    let code = "import os, time\npid = os.fork()\nif pid == 0:\n    blocks = []\n    for _ in range(90):\n        blocks.append(b'x' * (10 * 1024 * 1024))\n        time.sleep(0.005)\n    os._exit(0)\nos.waitpid(pid, 0)\n'survived'";
    let response = execute(&mut client, code).await;
    assert!(
        !response.success,
        "the run survived: {}",
        String::from_utf8_lossy(&response.result)
    );
    assert!(
        response.error.contains("memory limit of 256 MiB"),
        "{}",
        response.error
    );

    let response = execute(&mut client, "6 * 7").await;
    assert_eq!(result_object(&response)["result"], json!(42));
    assert_eq!(health_detail(&plugin, "worker_restarts").await, "1");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bounded_fork_bomb_fails_its_run_at_the_process_limit() {
    let plugin = one_worker().await;
    configure(&plugin, &[("max_processes", "16")]).await;
    let mut client = plugin.python().await;

    let code = "import os, time\nfor _ in range(200):\n    if os.fork() == 0:\n        time.sleep(30)\n        os._exit(0)\ntime.sleep(5)\n'all started'";
    let started = Instant::now();
    let response = execute(&mut client, code).await;
    assert!(
        !response.success,
        "the fork bomb succeeded after {:?}",
        started.elapsed()
    );
    assert!(
        response.error.contains("limit of 16 (max_processes)"),
        "{}",
        response.error
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );

    // Nothing of it is left, and the plugin serves.
    let response = execute(&mut client, "6 * 7").await;
    assert_eq!(result_object(&response)["result"], json!(42));
    assert_eq!(health_detail(&plugin, "worker_restarts").await, "1");
}
