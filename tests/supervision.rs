//! Deadlines, crashes, output limits, load limits and isolation: what no program may break.

#[path = "support/fake_host.rs"]
mod fake_host;
#[path = "support/plugin.rs"]
mod plugin;

use std::time::{Duration, Instant};

use plugin::{
    execute, health_detail, one_worker, result_object, wait_for_detail, wait_ready, Plugin,
};
use qntx_python_plugin::proto::{Empty, ExecuteJobRequest, PythonExecuteRequest};
use serde_json::json;
use tonic::Code;

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

#[tokio::test(flavor = "multi_thread")]
async fn an_endless_loop_is_interrupted_at_its_deadline_and_the_worker_is_kept() {
    let plugin = Plugin::start(&["--workers", "1"]);
    wait_ready(&plugin).await;
    configure(&plugin, &[("timeout_secs", "1")]).await;
    let mut client = plugin.python().await;

    let started = Instant::now();
    let response = execute(
        &mut client,
        "print('spinning', flush=True)\nwhile True:\n    pass",
    )
    .await;
    let took = started.elapsed();
    assert!(!response.success);
    assert!(
        response.error.contains("timed out after 1 s"),
        "{}",
        response.error
    );
    assert!(response.error.contains("interrupted"), "{}", response.error);
    assert_eq!(
        response.output, "spinning\n",
        "output before the deadline is kept"
    );
    assert!(
        took < Duration::from_secs(3),
        "answered {took:?} after the call"
    );

    let response = execute(&mut client, "'still serving'").await;
    assert_eq!(result_object(&response)["result"], json!("still serving"));
    assert_eq!(
        health_detail(&plugin, "worker_restarts").await,
        "0",
        "a plain interrupt keeps the worker"
    );

    // time.sleep is woken by the interrupt too.
    let response = execute(&mut client, "import time\ntime.sleep(60)").await;
    assert!(
        response.error.contains("timed out after 1 s"),
        "{}",
        response.error
    );
    assert_eq!(health_detail(&plugin, "worker_restarts").await, "0");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_program_that_ignores_the_interrupt_is_killed_and_replaced() {
    let plugin = Plugin::start(&["--workers", "1"]);
    wait_ready(&plugin).await;
    configure(&plugin, &[("timeout_secs", "1")]).await;
    let mut client = plugin.python().await;

    // C code with SIGINT blocked: the interrupt cannot reach it, only the kill path can.
    let code = "import ctypes, signal\nsignal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})\nctypes.CDLL(None).sleep(30)";
    let started = Instant::now();
    let response = execute(&mut client, code).await;
    assert!(!response.success);
    assert!(
        response.error.contains("timed out after 1 s"),
        "{}",
        response.error
    );
    assert!(response.error.contains("killed"), "{}", response.error);
    assert!(started.elapsed() < Duration::from_secs(5));

    // And one that swallows KeyboardInterrupt.
    let code = "import time\nwhile True:\n    try:\n        time.sleep(10)\n    except KeyboardInterrupt:\n        pass";
    let response = execute(&mut client, code).await;
    assert!(response.error.contains("killed"), "{}", response.error);

    let response = execute(&mut client, "6 * 7").await;
    assert_eq!(result_object(&response)["result"], json!(42));
    assert_eq!(health_detail(&plugin, "worker_restarts").await, "2");
}

#[tokio::test(flavor = "multi_thread")]
async fn job_timeout_secs_wins_over_the_configured_default() {
    let plugin = Plugin::start(&["--workers", "1"]);
    let mut client = plugin.domain().await;
    let payload = serde_json::to_vec(&json!({"content": "while True: pass"})).unwrap();
    let started = Instant::now();
    let response = client
        .execute_job(ExecuteJobRequest {
            job_id: "JB1".into(),
            handler_name: "python.script".into(),
            payload,
            timeout_secs: Some(1),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!response.success);
    assert!(
        response.error.contains("timed out after 1 s"),
        "{}",
        response.error
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_grpc_deadline_bounds_a_run() {
    let plugin = Plugin::start(&["--workers", "1"]);
    let mut client = plugin.python().await;
    let mut request = tonic::Request::new(PythonExecuteRequest {
        code: "while True: pass".into(),
        ..Default::default()
    });
    request.set_timeout(Duration::from_secs(2));
    let started = Instant::now();
    // Our timeout answer, before the deadline: never the client's DEADLINE_EXCEEDED (nor
    // tonic's server-side CANCELLED), which would lose the explanation (tests/deadlines.rs).
    let response = client
        .execute(request)
        .await
        .expect("answered before the deadline")
        .into_inner();
    assert!(response.error.contains("timed out"), "{}", response.error);
    assert!(started.elapsed() < Duration::from_secs(2));
    let response = execute(&mut client, "'next'").await;
    assert_eq!(result_object(&response)["result"], json!("next"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_caller_that_goes_away_cancels_its_run() {
    let plugin = Plugin::start(&["--workers", "1"]);
    wait_ready(&plugin).await;
    let mut client = plugin.python().await;
    let call = tokio::spawn({
        let mut client = client.clone();
        async move { execute(&mut client, "while True: pass").await }
    });
    // Wait until the run occupies the only worker, then walk away.
    wait_for_detail(&plugin, "workers_busy", "1").await;
    call.abort();
    // The only worker is free again long before the 30 s default deadline.
    let started = Instant::now();
    let response = execute(&mut client, "'free'").await;
    assert_eq!(result_object(&response)["result"], json!("free"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn crashes_name_their_cause_and_the_pool_recovers() {
    let plugin = Plugin::start(&["--workers", "1"]);
    wait_ready(&plugin).await;
    let mut client = plugin.python().await;

    let response = execute(&mut client, "import os\nos._exit(7)").await;
    assert!(!response.success);
    assert!(
        response.error.contains("exited with status 7"),
        "{}",
        response.error
    );

    let response = execute(&mut client, "import ctypes\nctypes.string_at(0)").await;
    assert!(!response.success);
    assert!(response.error.contains("SIGSEGV"), "{}", response.error);

    let response = execute(&mut client, "import os\nos.getpid()").await;
    assert!(response.success, "{response:?}");
    assert_eq!(health_detail(&plugin, "worker_restarts").await, "2");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_over_the_memory_limit_is_killed_with_a_clear_error() {
    let plugin = Plugin::start(&["--workers", "1"]);
    wait_ready(&plugin).await;
    configure(&plugin, &[("memory_limit_mb", "200")]).await;
    let mut client = plugin.python().await;

    let code = "import time\nblocks = []\nwhile True:\n    blocks.append(b'x' * (16 * 1024 * 1024))\n    time.sleep(0.01)";
    let response = execute(&mut client, code).await;
    assert!(!response.success);
    assert!(
        response.error.contains("memory limit of 200 MiB"),
        "{}",
        response.error
    );

    let response = execute(&mut client, "len(b'x' * (50 * 1024 * 1024))").await;
    assert_eq!(result_object(&response)["result"], json!(52428800));
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_megabytes_of_output_are_capped_with_a_marker() {
    let plugin = Plugin::start(&["--workers", "1"]);
    let mut client = plugin.python().await;

    let code = "import sys, os\nchunk = 'y' * 1023 + '\\n'\nfor _ in range(25 * 1024):\n    sys.stdout.write(chunk)\nos.write(1, b'z' * (25 * 1024 * 1024))\n'done'";
    let response = execute(&mut client, code).await;
    assert!(response.success, "{}", response.error);
    let limit = 1024 * 1024;
    assert!(response.output.starts_with(&"y".repeat(1023)));
    assert!(
        response.output.len() < limit + 200,
        "output is {} bytes",
        response.output.len()
    );
    assert!(
        response.output.ends_with(&format!(
            "[output truncated: {} more bytes not shown (max_output_bytes = {limit})]\n",
            50 * 1024 * 1024 - limit
        )),
        "marker: {}",
        &response.output[response.output.len() - 120..]
    );
    assert_eq!(result_object(&response)["result"], json!("done"));

    // The next run starts clean.
    let response = execute(&mut client, "print('small')").await;
    assert_eq!(response.output, "small\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_runs_never_see_each_others_output() {
    let plugin = Plugin::start(&["--workers", "2"]);
    wait_ready(&plugin).await;
    let client = plugin.python().await;
    let mut calls = Vec::new();
    for run in 0..8 {
        let mut client = client.clone();
        calls.push(tokio::spawn(async move {
            let code = format!("import time\nfor i in range(50):\n    print('run-{run}', i)\n    time.sleep(0.001)\n'{run}'");
            (run, execute(&mut client, &code).await)
        }));
    }
    for call in calls {
        let (run, response) = call.await.unwrap();
        let expected: String = (0..50).map(|i| format!("run-{run} {i}\n")).collect();
        assert_eq!(response.output, expected);
        assert_eq!(result_object(&response)["result"], json!(run.to_string()));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_queue_answers_resource_exhausted() {
    let plugin = Plugin::start(&["--workers", "1", "--queue-capacity", "1"]);
    wait_ready(&plugin).await;
    configure(&plugin, &[("timeout_secs", "3")]).await;
    let client = plugin.python().await;

    let busy = tokio::spawn({
        let mut client = client.clone();
        async move { execute(&mut client, "while True: pass").await }
    });
    wait_for_detail(&plugin, "workers_busy", "1").await;
    let queued = tokio::spawn({
        let mut client = client.clone();
        async move { execute(&mut client, "'queued'").await }
    });
    wait_for_detail(&plugin, "queue_depth", "1").await;
    let status = client
        .clone()
        .execute(PythonExecuteRequest {
            code: "1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status.message().contains("runs are already waiting"),
        "{}",
        status.message()
    );

    assert!(busy.await.unwrap().error.contains("timed out"));
    assert_eq!(
        result_object(&queued.await.unwrap())["result"],
        json!("queued")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn health_answers_in_milliseconds_while_every_worker_spins() {
    let plugin = Plugin::start(&["--workers", "2"]);
    wait_ready(&plugin).await;
    let client = plugin.python().await;
    let mut domain = plugin.domain().await;
    let spinners: Vec<_> = (0..2)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move { execute(&mut client, "while True: pass").await })
        })
        .collect();
    wait_for_detail(&plugin, "workers_busy", "2").await;
    let mut took = Vec::new();
    for _ in 0..51 {
        let started = Instant::now();
        let health = domain.health(Empty {}).await.unwrap().into_inner();
        took.push(started.elapsed());
        assert!(health.healthy);
        assert_eq!(health.details["workers_busy"], "2");
    }
    took.sort();
    // Functional bounds, not a benchmark: an answer that waited on Python would take seconds,
    // and one that waited on TCP's delayed ACK (no TCP_NODELAY) 40 ms every time.
    let (median, slowest) = (took[took.len() / 2], took[took.len() - 1]);
    assert!(
        median < Duration::from_millis(20),
        "median Health took {median:?}"
    );
    assert!(
        slowest < Duration::from_millis(500),
        "slowest Health took {slowest:?}"
    );
    for spinner in spinners {
        spinner.abort();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn threads_and_processes_left_running_never_reach_later_runs() {
    let plugin = Plugin::start(&["--workers", "1"]);
    wait_ready(&plugin).await;
    let mut client = plugin.python().await;

    let code = "import threading, time\ndef chatter():\n    while True:\n        print('leaked', flush=True)\ntime.sleep(0)\nthreading.Thread(target=chatter, name='chatter', daemon=True).start()\ntime.sleep(0.05)\n'started'";
    let response = execute(&mut client, code).await;
    assert_eq!(result_object(&response)["result"], json!("started"));
    let stderr = result_object(&response)["stderr"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(stderr.contains("left thread 'chatter' running"), "{stderr}");

    let response = execute(&mut client, "print('clean')").await;
    assert_eq!(
        response.output, "clean\n",
        "no output from the earlier run's thread"
    );
    assert_eq!(health_detail(&plugin, "worker_restarts").await, "1");

    let response = execute(
        &mut client,
        "import subprocess\nsubprocess.Popen(['sleep', '60'])\n'spawned'",
    )
    .await;
    let stderr = result_object(&response)["stderr"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(stderr.contains("process "), "{stderr}");
    let response = execute(
        &mut client,
        "import subprocess\nsubprocess.run(['true'])\n'waited for'",
    )
    .await;
    assert!(
        !result_object(&response)["stderr"]
            .as_str()
            .unwrap()
            .contains("left"),
        "a finished child is fine"
    );
    assert_eq!(health_detail(&plugin, "worker_restarts").await, "2");
}

// Limits on everything a run starts: its subprocesses count against the memory limit, their
// number is capped, and none outlives the run, not even one that leaves its session.

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

/// Two runs submitted at once to a pool with one idle worker and room for another both start:
/// a run queued just behind the one the idle worker takes must get a worker of its own, not
/// wait for the first to end (a race, so it is tried on several fresh plugins).
#[tokio::test(flavor = "multi_thread")]
async fn runs_submitted_together_run_together() {
    for attempt in 0..12 {
        let plugin = Plugin::start(&["--workers", "2"]);
        wait_ready(&plugin).await; // one worker up, one more allowed
        let barrier = tempfile::tempdir().unwrap();
        // Each run marks itself, then waits (at most 10 s) until both have.
        let code = format!(
            "import os, time, uuid\nd = {:?}\nopen(os.path.join(d, uuid.uuid4().hex), 'w').close()\nend = time.time() + 10\nwhile len(os.listdir(d)) < 2 and time.time() < end:\n    time.sleep(0.005)\nlen(os.listdir(d)) == 2 and time.time() < end",
            barrier.path().display().to_string()
        );
        let client = plugin.python().await;
        let runs: Vec<_> = (0..2)
            .map(|_| {
                let mut client = client.clone();
                let code = code.clone();
                tokio::spawn(async move { execute(&mut client, &code).await })
            })
            .collect();
        for run in runs {
            let response = run.await.unwrap();
            assert_eq!(
                result_object(&response)["result"],
                json!(true),
                "attempt {attempt}: a run waited for the other instead of getting a worker: {}",
                response.error
            );
        }
    }
}
