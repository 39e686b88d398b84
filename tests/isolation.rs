//! Hostile programs against run isolation and the limits on what a run starts: nothing one run
//! does may reach a later one, and nothing it starts may outlive it or take the machine.

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

/// One worker, so every run lands where the earlier ones ran.
async fn one_worker() -> Plugin {
    let plugin = Plugin::start(&["--workers", "1"]);
    wait_ready(&plugin).await;
    plugin
}

#[tokio::test(flavor = "multi_thread")]
async fn a_raw_thread_never_prints_into_later_runs() {
    let plugin = one_worker().await;
    let mut client = plugin.python().await;

    // `_thread` threads are invisible to `threading`, so no thread count of Python's sees it.
    let code = "import _thread, os, time\ndef chatter():\n    while True:\n        os.write(1, b'leaked\\n')\n        time.sleep(0.001)\n_thread.start_new_thread(chatter, ())\ntime.sleep(0.02)\n'started'";
    let response = execute(&mut client, code).await;
    assert_eq!(result_object(&response)["result"], json!("started"));
    assert!(response.output.contains("leaked"), "{}", response.output);

    for _ in 0..3 {
        let response = execute(&mut client, "import time\ntime.sleep(0.02)\nprint('clean')").await;
        assert_eq!(
            response.output, "clean\n",
            "no output from the earlier run's thread"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn patched_json_and_print_break_neither_this_run_nor_later_ones() {
    let plugin = one_worker().await;
    let mut client = plugin.python().await;

    let code = "import json, builtins\njson.dumps = lambda *a, **k: 'garbage'\njson.JSONEncoder.encode = lambda *a, **k: 'garbage'\nbuiltins.print = lambda *a, **k: None\n{'a': [1, 2]}";
    let response = execute(&mut client, code).await;
    assert!(response.success, "{}", response.error);
    assert_eq!(
        result_object(&response)["result"],
        json!({"a": [1, 2]}),
        "the run's own answer is encoded by the runtime's json, not the patched one"
    );

    let response = execute(
        &mut client,
        "import json\nprint('visible')\njson.dumps({'b': 2})",
    )
    .await;
    assert!(response.success, "{}", response.error);
    assert_eq!(response.output, "visible\n");
    assert_eq!(result_object(&response)["result"], json!("{\"b\": 2}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn builtins_sys_environ_and_cwd_set_by_one_run_are_not_seen_by_the_next() {
    let plugin = one_worker().await;
    let mut client = plugin.python().await;

    let response = execute(&mut client, "import os\nos.getcwd()").await;
    let cwd = result_object(&response)["result"].clone();

    let code = "import builtins, sys, os, tempfile\nbuiltins.marker = 1\nsys.marker = 2\nsys.setrecursionlimit(123)\nos.environ['QNTX_ISOLATION_MARK'] = '3'\nos.chdir(tempfile.gettempdir())\nsys.modules['json'].marker = 4\n'set'";
    let response = execute(&mut client, code).await;
    assert_eq!(result_object(&response)["result"], json!("set"));

    let code = "import builtins, sys, os, json\n[hasattr(builtins, 'marker'), hasattr(sys, 'marker'), sys.getrecursionlimit() == 123, 'QNTX_ISOLATION_MARK' in os.environ, hasattr(json, 'marker'), os.getcwd()]";
    let response = execute(&mut client, code).await;
    assert_eq!(
        result_object(&response)["result"],
        json!([false, false, false, false, false, cwd])
    );
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
    assert_eq!(health_detail(&plugin, "worker_restarts").await, "0");
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

    let response = execute(&mut client, "import os\nlen(os.listdir('/proc/self/task'))").await;
    assert_eq!(
        result_object(&response)["result"],
        json!(1),
        "{}",
        response.error
    );
    assert_eq!(health_detail(&plugin, "worker_restarts").await, "0");
}

/// A plugin whose default environment's variant file preloads `preload`.
async fn with_preload(preload: &str) -> (tempfile::TempDir, Plugin) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("warm.toml");
    std::fs::write(&file, format!("name = \"warm\"\npreload = {preload}\n")).unwrap();
    let plugin = Plugin::start(&["--workers", "1", "--variant", file.to_str().unwrap()]);
    (dir, plugin)
}

#[tokio::test(flavor = "multi_thread")]
async fn preloaded_modules_are_warm_in_every_run() {
    let (_dir, plugin) = with_preload("[\"colorsys\"]").await;
    wait_ready(&plugin).await;
    let mut client = plugin.python().await;
    for _ in 0..2 {
        let response = execute(&mut client, "import sys\n'colorsys' in sys.modules").await;
        assert_eq!(result_object(&response)["result"], json!(true));
    }

    let plain = one_worker().await;
    let mut client = plain.python().await;
    let response = execute(&mut client, "import sys\n'colorsys' in sys.modules").await;
    assert_eq!(result_object(&response)["result"], json!(false));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_preload_that_cannot_be_imported_is_named() {
    let (_dir, plugin) = with_preload("[\"no_such_module_here\"]").await;
    let mut client = plugin.python().await;
    let error = client
        .execute(qntx_python_plugin::proto::PythonExecuteRequest {
            code: "1".into(),
            ..Default::default()
        })
        .await
        .expect_err("no worker can start");
    assert!(
        error
            .message()
            .contains("cannot preload module no_such_module_here"),
        "{}",
        error.message()
    );
}
