//! Hostile programs against run isolation: nothing one run leaves in its worker's interpreter or
//! process may reach a later run. Every test uses one worker, so each later run lands where the
//! hostile one ran, and compares what the later run sees with what a fresh worker shows.
//!
//! The tests check behaviour only: how the plugin keeps runs apart (resetting the worker or
//! replacing it) is its own business, but a worker whose runs leave nothing is kept.

#[path = "support/plugin.rs"]
mod plugin;

use plugin::{execute, one_worker, result_object, wait_ready, Plugin};
use qntx_python_plugin::proto::python_service_client::PythonServiceClient;
use serde_json::{json, Value};
use tonic::transport::Channel;

/// A program from its lines.
fn program(lines: &[&str]) -> String {
    lines.join("\n")
}

/// Runs `code`, which must succeed, and returns its value.
async fn value_of(client: &mut PythonServiceClient<Channel>, code: &str) -> Value {
    let response = execute(client, code).await;
    assert!(
        response.success,
        "the run failed: {}\n--- program ---\n{code}",
        response.error
    );
    result_object(&response)["result"].clone()
}

/// The items of a list value.
fn items(value: &Value) -> &[Value] {
    value.as_array().expect("a list")
}

/// The pid of the worker that runs the next program.
async fn worker_pid(client: &mut PythonServiceClient<Channel>) -> i64 {
    value_of(client, "import os\nos.getpid()")
        .await
        .as_i64()
        .expect("a pid")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_raw_thread_never_prints_into_later_runs() {
    let plugin = one_worker().await;
    let mut client = plugin.python().await;

    // `_thread` threads are invisible to `threading`, so no thread count of Python's sees it.
    let code = program(&[
        "import _thread, os, time",
        "def chatter():",
        "    while True:",
        "        os.write(1, b'leaked\\n')",
        "        time.sleep(0.001)",
        "_thread.start_new_thread(chatter, ())",
        "time.sleep(0.02)",
        "'started'",
    ]);
    let response = execute(&mut client, &code).await;
    assert!(response.success, "{}", response.error);
    assert_eq!(result_object(&response)["result"], json!("started"));
    assert!(response.output.contains("leaked"), "{}", response.output);

    for _ in 0..3 {
        let response = execute(&mut client, "import time\ntime.sleep(0.02)\nprint('clean')").await;
        assert!(response.success, "{}", response.error);
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

    let code = program(&[
        "import json, builtins",
        "print('before')",
        "json.dumps = lambda *a, **k: 'garbage'",
        "json.JSONEncoder.encode = lambda *a, **k: 'garbage'",
        "builtins.print = lambda *a, **k: None",
        "print('swallowed')",
        "{'a': [1, 2], 'patched': json.dumps(1)}",
    ]);
    let response = execute(&mut client, &code).await;
    assert!(response.success, "{}", response.error);
    assert_eq!(response.output, "before\n");
    assert_eq!(
        result_object(&response)["result"],
        json!({"a": [1, 2], "patched": "garbage"}),
        "the run's own answer is encoded by the runtime's json, not the patched one"
    );

    let code = program(&[
        "import json",
        "print('visible')",
        "[json.dumps({'b': 2}), json.JSONEncoder().encode([1])]",
    ]);
    let response = execute(&mut client, &code).await;
    assert!(response.success, "{}", response.error);
    assert_eq!(response.output, "visible\n");
    assert_eq!(
        result_object(&response)["result"],
        json!(["{\"b\": 2}", "[1]"])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn builtins_sys_environ_and_cwd_set_by_one_run_are_not_seen_by_the_next() {
    let plugin = one_worker().await;
    let mut client = plugin.python().await;

    let probe = program(&[
        "import builtins, sys, os, json",
        "[hasattr(builtins, 'marker'), hasattr(sys, 'marker'), sys.getrecursionlimit(),",
        " 'QNTX_ISOLATION_MARK' in os.environ, hasattr(json, 'marker'), os.getcwd()]",
    ]);
    let fresh = value_of(&mut client, &probe).await;
    for unmarked in [0, 1, 3, 4] {
        assert_eq!(fresh[unmarked], json!(false), "{fresh}");
    }

    let code = program(&[
        "import builtins, sys, os, tempfile, json",
        "builtins.marker = 1",
        "sys.marker = 2",
        "sys.setrecursionlimit(123)",
        "os.environ['QNTX_ISOLATION_MARK'] = '3'",
        "os.chdir(tempfile.mkdtemp())",
        "json.marker = 4",
        "[sys.getrecursionlimit(), os.getcwd()]",
    ]);
    let hostile = value_of(&mut client, &code).await;
    assert_eq!(hostile[0], json!(123));
    assert_ne!(hostile[1], fresh[5], "the run moved to another directory");

    let later = value_of(&mut client, &probe).await;
    let _ = std::fs::remove_dir(hostile[1].as_str().unwrap());
    assert_eq!(later, fresh);
}

#[tokio::test(flavor = "multi_thread")]
async fn patched_stdlib_classes_are_not_seen_by_later_runs() {
    let plugin = one_worker().await;
    let mut client = plugin.python().await;

    let code = program(&[
        "import collections, json",
        "collections.Counter.qntx_marker = 1",
        "json.JSONDecoder.decode = lambda self, s, *a, **k: 'garbage'",
        "[collections.Counter().qntx_marker, json.loads('[1]')]",
    ]);
    assert_eq!(value_of(&mut client, &code).await, json!([1, "garbage"]));

    let code = "import collections, json\n[hasattr(collections.Counter, 'qntx_marker'), json.loads('[1]')]";
    assert_eq!(value_of(&mut client, code).await, json!([false, [1]]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_builtin_types_dict_written_through_gc_is_not_seen_by_later_runs() {
    let plugin = one_worker().await;
    let mut client = plugin.python().await;

    // `int.x = 1` is refused, but gc hands out the dict behind int's read-only mappingproxy.
    let code = program(&[
        "import gc",
        "gc.get_referents(int.__dict__)[0]['qntx_marker'] = 'patched'",
        "(5).qntx_marker",
    ]);
    assert_eq!(value_of(&mut client, &code).await, json!("patched"));

    let code = "hasattr(int, 'qntx_marker')";
    assert_eq!(value_of(&mut client, code).await, json!(false));
}

#[tokio::test(flavor = "multi_thread")]
async fn import_hooks_and_fake_modules_do_not_reach_later_imports() {
    let plugin = one_worker().await;
    let mut client = plugin.python().await;

    let probe = program(&[
        "import sys",
        "def importable(name):",
        "    try:",
        "        __import__(name)",
        "        return True",
        "    except ImportError:",
        "        return False",
        "before = 'colorsys' in sys.modules",
        "import colorsys",
        "[before, importable('qntx_fake'), importable('qntx_hooked'),",
        " getattr(colorsys, 'faked', False), hasattr(colorsys, 'rgb_to_hsv'),",
        " [type(finder).__name__ for finder in sys.meta_path]]",
    ]);
    let fresh = value_of(&mut client, &probe).await;
    assert_eq!(
        items(&fresh)[1..5],
        [json!(false), json!(false), json!(false), json!(true)]
    );

    // The finder answers for a module of its own and for a stdlib module not imported yet.
    let code = program(&[
        "import importlib.util, sys, types",
        "class Loader:",
        "    def create_module(self, spec):",
        "        return None",
        "    def exec_module(self, module):",
        "        module.faked = True",
        "class Finder:",
        "    def find_spec(self, name, path=None, target=None):",
        "        if name in ('qntx_hooked', 'colorsys'):",
        "            return importlib.util.spec_from_loader(name, Loader())",
        "        return None",
        "sys.meta_path.insert(0, Finder())",
        "sys.modules.pop('colorsys', None)",
        "sys.modules['qntx_fake'] = types.ModuleType('qntx_fake')",
        "import qntx_hooked, qntx_fake",
        "qntx_hooked.faked",
    ]);
    assert_eq!(value_of(&mut client, &code).await, json!(true));

    let later = value_of(&mut client, &probe).await;
    assert_eq!(items(&later)[1..], items(&fresh)[1..]);
}

#[tokio::test(flavor = "multi_thread")]
async fn warning_filters_logging_handlers_and_atexit_callbacks_do_not_reach_later_runs() {
    let plugin = one_worker().await;
    let mut client = plugin.python().await;

    let probe = program(&[
        "import atexit, logging, warnings",
        "root = logging.getLogger()",
        "[[str(f) for f in warnings.filters], len(root.handlers), root.level, atexit._ncallbacks()]",
    ]);
    let fresh = value_of(&mut client, &probe).await;

    let code = program(&[
        "import atexit, logging, warnings",
        "warnings.simplefilter('error')",
        "logging.basicConfig(level=logging.DEBUG)",
        "logging.getLogger().addHandler(logging.StreamHandler())",
        "atexit.register(print, 'bye')",
        "[warnings.filters[0][0], len(logging.getLogger().handlers)]",
    ]);
    let hostile = value_of(&mut client, &code).await;
    assert_eq!(hostile[0], json!("error"));
    assert!(hostile[1].as_i64() > fresh[1].as_i64(), "{hostile} {fresh}");

    assert_eq!(value_of(&mut client, &probe).await, fresh);
}

#[tokio::test(flavor = "multi_thread")]
async fn tracing_profiling_gc_and_interpreter_settings_are_back_to_fresh_in_later_runs() {
    let plugin = one_worker().await;
    let mut client = plugin.python().await;

    let probe = program(&[
        "import gc, sys, threading",
        "[sys.gettrace() is None, sys.getprofile() is None, threading.gettrace() is None,",
        " gc.isenabled(), list(gc.get_threshold()),",
        " sys.getswitchinterval(), sys.get_int_max_str_digits()]",
    ]);
    let fresh = value_of(&mut client, &probe).await;
    assert_eq!(
        items(&fresh)[..4],
        [json!(true), json!(true), json!(true), json!(true)]
    );

    let code = program(&[
        "import gc, sys, threading",
        "def tracer(*args):",
        "    return None",
        "sys.settrace(tracer)",
        "sys.setprofile(tracer)",
        "threading.settrace(tracer)",
        "gc.disable()",
        "gc.set_threshold(1)",
        "sys.setswitchinterval(0.5)",
        "sys.set_int_max_str_digits(640)",
        "[sys.gettrace() is tracer, gc.isenabled(), gc.get_threshold()[0]]",
    ]);
    assert_eq!(value_of(&mut client, &code).await, json!([true, false, 1]));

    assert_eq!(value_of(&mut client, &probe).await, fresh);
}

#[tokio::test(flavor = "multi_thread")]
async fn signal_handlers_masks_and_timers_are_back_to_fresh_in_later_runs() {
    let plugin = one_worker().await;
    let mut client = plugin.python().await;

    let probe = program(&[
        "import signal",
        "[repr(signal.getsignal(signal.SIGUSR1)), repr(signal.getsignal(signal.SIGALRM)),",
        " list(signal.getitimer(signal.ITIMER_REAL)),",
        " sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, []))]",
    ]);
    let fresh = value_of(&mut client, &probe).await;
    assert_eq!(fresh[2], json!([0.0, 0.0]));

    // The alarm is pending when the run ends; it must not go off in a later one.
    let code = program(&[
        "import os, signal",
        "def handler(signum, frame):",
        "    os.write(1, b'signalled\\n')",
        "signal.signal(signal.SIGUSR1, handler)",
        "signal.signal(signal.SIGALRM, handler)",
        "signal.setitimer(signal.ITIMER_REAL, 30)",
        "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})",
        "signal.getitimer(signal.ITIMER_REAL)[0] > 0",
    ]);
    assert_eq!(value_of(&mut client, &code).await, json!(true));

    assert_eq!(value_of(&mut client, &probe).await, fresh);
}

#[tokio::test(flavor = "multi_thread")]
async fn process_attributes_and_open_files_are_back_to_fresh_in_later_runs() {
    let plugin = one_worker().await;
    let mut client = plugin.python().await;

    // `os.putenv` changes the C environment (what subprocesses inherit) but not os.environ.
    let probe = program(&[
        "import os, resource, subprocess",
        "mask = os.umask(0)",
        "os.umask(mask)",
        "child = ['sh', '-c', 'echo ${QNTX_PUTENV_MARK-unset}']",
        "state = [mask, list(resource.getrlimit(resource.RLIMIT_NOFILE)), os.nice(0),",
        "         subprocess.run(child, capture_output=True, text=True).stdout]",
    ]);
    let fresh = value_of(&mut client, &format!("{probe}\nstate")).await;
    assert_eq!(fresh[3], json!("unset\n"));

    let code = program(&[
        "import os, resource, tempfile",
        "os.umask(0o077)",
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)",
        "resource.setrlimit(resource.RLIMIT_NOFILE, (max(64, soft // 2), hard))",
        "os.nice(1)",
        "os.putenv('QNTX_PUTENV_MARK', 'set')",
        "fd, path = tempfile.mkstemp()",
        "[fd, path]",
    ]);
    let hostile = value_of(&mut client, &code).await;
    let (fd, path) = (&hostile[0], &hostile[1]);

    // The later run also removes the file the hostile one left.
    let code = program(&[
        &probe,
        &format!("fd, path = {fd}, {path}"),
        "try:",
        "    still_open = os.path.samestat(os.fstat(fd), os.stat(path))",
        "except OSError:",
        "    still_open = False",
        "os.remove(path)",
        "state + [still_open]",
    ]);
    let mut expected = items(&fresh).to_vec();
    expected.push(json!(false));
    assert_eq!(value_of(&mut client, &code).await, json!(expected));
}

#[tokio::test(flavor = "multi_thread")]
async fn codec_registry_socket_timeout_and_decimal_context_are_back_to_fresh_in_later_runs() {
    let plugin = one_worker().await;
    let mut client = plugin.python().await;

    // Each lives in C (the interpreter's codec search path, the socket module's default, the
    // main thread's decimal context), not in any module's dict.
    let probe = program(&[
        "import codecs, decimal, socket",
        "try:",
        "    codec = codecs.lookup('qntx_fake_codec').name",
        "except LookupError:",
        "    codec = None",
        "[codec, socket.getdefaulttimeout(), str(decimal.Decimal(1) / 3)]",
    ]);
    let fresh = value_of(&mut client, &probe).await;
    assert_eq!(items(&fresh)[..2], [Value::Null, Value::Null]);

    let code = program(&[
        "import codecs, decimal, socket",
        "def search(name):",
        "    return codecs.lookup('utf-8') if name == 'qntx_fake_codec' else None",
        "codecs.register(search)",
        "socket.setdefaulttimeout(1.5)",
        "decimal.getcontext().prec = 3",
        "[codecs.lookup('qntx_fake_codec').name, socket.getdefaulttimeout(), str(decimal.Decimal(1) / 3)]",
    ]);
    assert_eq!(
        value_of(&mut client, &code).await,
        json!(["utf-8", 1.5, "0.333"])
    );

    assert_eq!(value_of(&mut client, &probe).await, fresh);
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_and_fork_hooks_added_by_one_run_never_fire_in_later_runs() {
    let plugin = one_worker().await;
    let mut client = plugin.python().await;

    // An audit hook can never be removed, and fork hooks run in whichever run forks next.
    let code = program(&[
        "import os, sys",
        "def audit(event, args):",
        "    if event == 'qntx.probe':",
        "        os.write(1, b'audited\\n')",
        "sys.addaudithook(audit)",
        "os.register_at_fork(before=lambda: os.write(1, b'forking\\n'))",
        "sys.audit('qntx.probe')",
        "'hooked'",
    ]);
    let response = execute(&mut client, &code).await;
    assert!(response.success, "{}", response.error);
    assert_eq!(response.output, "audited\n");

    let code = program(&[
        "import os, sys",
        "sys.audit('qntx.probe')",
        "pid = os.fork()",
        "if pid == 0:",
        "    os._exit(0)",
        "os.waitpid(pid, 0)",
        "print('clean')",
    ]);
    let response = execute(&mut client, &code).await;
    assert!(response.success, "{}", response.error);
    assert_eq!(response.output, "clean\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_finalizer_of_a_runs_objects_never_runs_in_a_later_run() {
    let plugin = one_worker().await;
    let mut client = plugin.python().await;

    // The ghost is kept alive by a cycle through the run's globals (Ghost.__del__.__globals__),
    // so only the cycle collector frees it, at some point after the run ended.
    let code = program(&[
        "import os",
        "class Ghost:",
        "    def __del__(self):",
        "        os.write(1, b'ghost\\n')",
        "ghost = Ghost()",
        "'haunted'",
    ]);
    assert_eq!(value_of(&mut client, &code).await, json!("haunted"));

    for _ in 0..2 {
        let response = execute(&mut client, "import gc\ngc.collect()\nprint('clean')").await;
        assert!(response.success, "{}", response.error);
        assert_eq!(response.output, "clean\n");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_seeded_random_generator_does_not_reach_later_runs_and_fresh_workers_draw_apart() {
    let plugin = one_worker().await;
    let mut client = plugin.python().await;

    // Each run leaves a marker behind, so each draws in a worker no earlier run touched; those
    // must not repeat one sequence (as copies of one template would, unless reseeded).
    let code = "import builtins, random\nbuiltins.qntx_marker = 1\nrandom.random()";
    let mut draws = Vec::new();
    for _ in 0..3 {
        draws.push(value_of(&mut client, code).await);
    }
    assert!(
        draws[0] != draws[1] && draws[1] != draws[2] && draws[0] != draws[2],
        "{draws:?}"
    );

    let code = program(&[
        "import random",
        "random.seed(1234)",
        "state = random.getstate()",
        "expected = random.random()",
        "random.setstate(state)",
        "expected",
    ]);
    let seeded = value_of(&mut client, &code).await;
    let later = value_of(&mut client, "import random\nrandom.random()").await;
    assert_ne!(
        later, seeded,
        "the later run drew from the seeded generator"
    );
    assert!(!draws.contains(&later), "{later} repeats {draws:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn values_stashed_in_module_level_containers_are_not_seen_by_later_runs() {
    let plugin = one_worker().await;
    let mut client = plugin.python().await;

    let probe = program(&[
        "import copyreg, json, pickle, sys",
        "[hasattr(json, '_stash'), len(sys.path_hooks), len(copyreg.dispatch_table),",
        " pickle.loads(pickle.dumps(1 + 2j)) == 1 + 2j, 'qntx_stash' in globals()]",
    ]);
    let fresh = value_of(&mut client, &probe).await;
    assert_eq!(fresh[3], json!(true));

    // The containers stay the same objects under the same names; only their contents change.
    // `API` is the plugin's own table of the globals every program gets.
    let code = program(&[
        "import copyreg, json, pickle, sys",
        "json.__dict__.setdefault('_stash', []).append(1)",
        "def hook(path):",
        "    raise ImportError(path)",
        "sys.path_hooks.insert(0, hook)",
        "copyreg.dispatch_table[complex] = lambda c: (str, ('hijacked',))",
        "sys.modules['qntx_runtime'].API['qntx_stash'] = 1",
        "pickle.loads(pickle.dumps(1 + 2j))",
    ]);
    assert_eq!(value_of(&mut client, &code).await, json!("hijacked"));

    assert_eq!(value_of(&mut client, &probe).await, fresh);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_whose_runs_leave_nothing_is_reused() {
    let plugin = one_worker().await;
    let mut client = plugin.python().await;

    let first = worker_pid(&mut client).await;
    value_of(&mut client, "x = 1 + 1").await;
    assert_eq!(worker_pid(&mut client).await, first);
    value_of(&mut client, "x = 1 + 1").await;
    assert_eq!(worker_pid(&mut client).await, first);
}

#[tokio::test(flavor = "multi_thread")]
async fn ordinary_programs_that_fill_the_runtimes_caches_keep_their_worker() {
    let plugin = one_worker().await;
    let mut client = plugin.python().await;

    // Functions, classes, a caught exception and json leave nothing a later run could see once
    // the run's namespace is gone (its class and function cycles are collected). A regex would:
    // `re` keeps compiled patterns in `re._cache`, which a later run can read (or find poisoned),
    // so a run using one is followed by a fresh worker.
    let code = program(&[
        "import json",
        "class Point:",
        "    def __init__(self, x):",
        "        self.x = x",
        "def total(points):",
        "    return sum(p.x for p in points)",
        "try:",
        "    {}['missing']",
        "except KeyError:",
        "    pass",
        "words = 'one two three'.split()",
        "json.loads(json.dumps({'n': total([Point(1), Point(2)]), 'words': words}))",
    ]);
    let first = worker_pid(&mut client).await;
    for _ in 0..2 {
        assert_eq!(
            value_of(&mut client, &code).await,
            json!({"n": 3, "words": ["one", "two", "three"]})
        );
        assert_eq!(worker_pid(&mut client).await, first);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_that_leaves_state_behind_gets_its_whole_answer_and_the_next_run_a_fresh_worker() {
    let plugin = one_worker().await;
    let mut client = plugin.python().await;

    let before = worker_pid(&mut client).await;
    let code = program(&[
        "import builtins, os, sys",
        "print('hostile output')",
        "builtins.marker = 1",
        "sys.setrecursionlimit(123)",
        "os.getpid()",
    ]);
    let response = execute(&mut client, &code).await;
    assert!(response.success, "{}", response.error);
    assert_eq!(response.output, "hostile output\n");
    assert_eq!(
        result_object(&response)["result"],
        json!(before),
        "the hostile run itself ran where the one before it did"
    );

    let after = worker_pid(&mut client).await;
    assert_ne!(after, before, "the next run got the hostile run's worker");
    assert_eq!(
        worker_pid(&mut client).await,
        after,
        "the fresh worker is kept"
    );
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
async fn preloaded_modules_are_warm_in_every_run_and_in_every_fresh_worker() {
    let (_dir, plugin) = with_preload("[\"colorsys\"]").await;
    wait_ready(&plugin).await;
    let mut client = plugin.python().await;
    let probe =
        "import sys\n['colorsys' in sys.modules, hasattr(sys.modules['colorsys'], 'marker')]";
    assert_eq!(value_of(&mut client, probe).await, json!([true, false]));

    // A run that changes the preloaded module: the next worker has it loaded, and unchanged.
    let before = worker_pid(&mut client).await;
    value_of(&mut client, "import colorsys\ncolorsys.marker = 1\n1").await;
    assert_eq!(value_of(&mut client, probe).await, json!([true, false]));
    assert_ne!(worker_pid(&mut client).await, before);

    let plain = one_worker().await;
    let mut client = plain.python().await;
    let response = execute(&mut client, "import sys\n'colorsys' in sys.modules").await;
    assert_eq!(result_object(&response)["result"], json!(false));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_preload_that_cannot_be_imported_is_named_and_the_environment_still_serves() {
    let (_dir, plugin) = with_preload("[\"no_such_module_here\", \"colorsys\"]").await;
    wait_ready(&plugin).await;
    let mut client = plugin.python().await;
    let response = execute(&mut client, "import sys\n'colorsys' in sys.modules").await;
    assert!(response.success, "{}", response.error);
    assert_eq!(result_object(&response)["result"], json!(true));
    let warned = plugin.log_lines_with("cannot preload module no_such_module_here");
    assert!(
        warned
            .iter()
            .any(|line| line.contains("\"level\":\"warn\"")),
        "{warned:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_sent_right_after_one_that_leaves_state_run_once_each_on_a_fresh_worker() {
    let plugin = one_worker().await;
    let mut client = plugin.python().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("runs.log");
    let log = log.display();

    // Back to back, so each benign run is usually sent while the worker before it is still
    // deciding to retire: it must run exactly once, on the fresh worker, and in order.
    for round in 0..15 {
        let hostile = format!(
            "import builtins\nbuiltins.qntx_marker = {round}\nopen('{log}', 'a').write('h{round}\\n')\n1"
        );
        assert_eq!(value_of(&mut client, &hostile).await, json!(1));
        let benign = format!(
            "import builtins\nopen('{log}', 'a').write('b{round}\\n')\nhasattr(builtins, 'qntx_marker')"
        );
        assert_eq!(
            value_of(&mut client, &benign).await,
            json!(false),
            "round {round}"
        );
    }
    let written = std::fs::read_to_string(dir.path().join("runs.log")).unwrap();
    let expected: String = (0..15).map(|r| format!("h{r}\nb{r}\n")).collect();
    assert_eq!(written, expected);
}

/// A program larger than the work socket's buffer, sent while the worker before it is deciding
/// to retire, cannot be written whole: that worker never reads again. It must reach the
/// fresh worker whole and run once, rather than leave the slot waiting forever for room.
#[tokio::test(flavor = "multi_thread")]
async fn a_large_program_sent_to_a_retiring_worker_runs_once_on_its_successor() {
    let plugin = one_worker().await;
    let mut client = plugin.python().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("runs.log");
    let log = log.display();
    // More than the socket's buffer: the supervisor asks for 1 MiB, which Linux doubles.
    let payload = "x".repeat(3_000_000);

    for round in 0..5 {
        // A thread left spinning: the worker's check then takes long enough (the thread has
        // the CPU too) for the next program to arrive before it retires.
        let hostile = format!(
            "import builtins, threading\nbuiltins.qntx_marker = {round}\nthreading.Thread(target=lambda: [0 for _ in iter(int, 1)], daemon=True).start()\nopen('{log}', 'a').write('h{round}\\n')\n1"
        );
        assert_eq!(value_of(&mut client, &hostile).await, json!(1));
        let large = format!(
            "import builtins\ndata = '{payload}'\nopen('{log}', 'a').write('b{round}\\n')\n[len(data), hasattr(builtins, 'qntx_marker')]"
        );
        let answer = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            value_of(&mut client, &large),
        )
        .await
        .unwrap_or_else(|_| panic!("round {round}: no answer within 60 s"));
        assert_eq!(answer, json!([3_000_000, false]), "round {round}");
    }
    let written = std::fs::read_to_string(dir.path().join("runs.log")).unwrap();
    let expected: String = (0..5).map(|r| format!("h{r}\nb{r}\n")).collect();
    assert_eq!(written, expected);
}
