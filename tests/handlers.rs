//! Saved handlers against a fake host: discovery, declarations, routing, the Python API, hot
//! reload and schedule reconciliation.

#[path = "support/fake_host.rs"]
mod fake_host;
#[path = "support/plugin.rs"]
mod plugin;
#[path = "support/venv.rs"]
mod venv;

use std::time::{Duration, Instant};

use fake_host::FakeHost;
use plugin::Plugin;
use prost_types::{value::Kind, Struct, Value};
use qntx_python_plugin::proto::*;
use serde_json::json;

const TOKEN: &str = "7f3a9c0e5b1d2468ace13579bdf02468ace13579bdf02468ace13579bdf02468";

fn text(value: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(value.into())),
    }
}

/// A handler attestation as `qntx handler create` writes it (context = the plugin name).
fn saved(key: &str, code: &str, created_at: i64) -> Attestation {
    Attestation {
        subjects: vec![key.into()],
        predicates: vec!["handler".into()],
        contexts: vec!["python".into()],
        actors: vec![key.into()],
        source: "qntx-cli".into(),
        created_at,
        attributes: Some(Struct {
            fields: [("code".to_string(), text(code))].into(),
        }),
        ..Default::default()
    }
}

fn faulted(key: &str, reason: &str, created_at: i64) -> Attestation {
    Attestation {
        subjects: vec![key.into()],
        predicates: vec!["handler:faulted".into()],
        contexts: vec!["python".into()],
        created_at,
        attributes: Some(Struct {
            fields: [("reason".to_string(), text(reason))].into(),
        }),
        ..Default::default()
    }
}

fn initialize_request(host: &FakeHost) -> InitializeRequest {
    let endpoints = host.endpoints();
    InitializeRequest {
        ats_store_endpoint: endpoints.ats_store,
        queue_endpoint: endpoints.queue,
        schedule_endpoint: endpoints.schedule,
        fetch_endpoint: endpoints.fetch,
        auth_token: TOKEN.into(),
        ..Default::default()
    }
}

async fn initialize(plugin: &Plugin, host: &FakeHost) -> InitializeResponse {
    plugin
        .domain()
        .await
        .initialize(initialize_request(host))
        .await
        .expect("Initialize")
        .into_inner()
}

async fn job(plugin: &Plugin, handler: &str, payload: &[u8]) -> ExecuteJobResponse {
    let request = ExecuteJobRequest {
        job_id: "JB1".into(),
        handler_name: handler.into(),
        payload: payload.to_vec(),
        timeout_secs: Some(300),
    };
    plugin
        .domain()
        .await
        .execute_job(request)
        .await
        .expect("ExecuteJob answered")
        .into_inner()
}

fn job_result(response: &ExecuteJobResponse) -> serde_json::Value {
    assert!(response.success, "job failed: {}", response.error);
    serde_json::from_slice::<serde_json::Value>(&response.result).expect("result JSON")["result"]
        .clone()
}

const READER: &str = r#"
"""Reads the plant."""
import qntx

@watch("reading", context="plant-north")
def on_reading(attestation):
    return ["reading", attestation["subjects"][0]]

@watch(["alarm", "alert"], contexts=["plant-north", "plant-south"], subjects="pump-12", max_fires_per_second=5)
def on_alarm(attestation):
    return ["alarm", attestation["predicates"][0]]

@schedule(every=90.0, description="sweep")
def sweep():
    return "swept"

@qntx.schedule(every=3600)
def hourly():
    """Every hour."""
    return "hourly"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn discovery_announces_each_handler_its_watchers_and_schedules() {
    let host = FakeHost::start(TOKEN).await;
    host.insert_many(vec![
        saved("cleanup", "def main():\n    return 'old'", 1_000),
        saved(
            "cleanup",
            "@handler(name='cleanup', description='tidy')\ndef run():\n    return 'new'",
            2_000,
        ),
        saved("reader", READER, 1_000),
        saved("broken", "def f(:\n    pass", 1_000),
        saved("bad_decorator", "@watch()\ndef f(a):\n    pass", 1_000),
        saved("gone", "def main(): pass", 1_000),
        Attestation {
            created_at: 2_000,
            ..saved("gone", "", 2_000)
        },
        saved("blocked", "def main(): pass", 1_000),
        faulted("blocked", "SyntaxError: earlier", 2_000),
        saved("script", "def main(): pass", 1_000),
        // Another plugin's handler is not ours.
        Attestation {
            contexts: vec!["bio".into()],
            ..saved("elsewhere", "def main(): pass", 1_000)
        },
    ]);
    let plugin = Plugin::start(&["--workers", "1"]);
    let response = initialize(&plugin, &host).await;

    assert_eq!(
        response.handler_names,
        [
            "python.script",
            "python.__reload",
            "python.cleanup",
            "python.reader",
            "python.reader@on_reading",
            "python.reader@on_alarm",
            "python.reader@sweep",
            "python.reader@hourly",
        ]
    );
    let watchers: Vec<_> = response
        .watchers
        .iter()
        .map(|w| {
            (
                w.id.as_str(),
                w.handler_name.as_str(),
                w.predicates.clone(),
                w.contexts.clone(),
                w.subjects.clone(),
                w.max_fires_per_second,
            )
        })
        .collect();
    assert_eq!(
        watchers,
        [
            (
                "python-handler-reload",
                "python.__reload",
                vec!["handler".to_string()],
                vec!["python".to_string()],
                vec![],
                1
            ),
            (
                "reader-on_reading",
                "python.reader@on_reading",
                vec!["reading".into()],
                vec!["plant-north".into()],
                vec![],
                1
            ),
            (
                "reader-on_alarm",
                "python.reader@on_alarm",
                vec!["alarm".into(), "alert".into()],
                vec!["plant-north".into(), "plant-south".into()],
                vec!["pump-12".into()],
                5
            ),
        ]
    );
    let schedules: Vec<_> = response
        .schedules
        .iter()
        .map(|s| {
            (
                s.handler_name.as_str(),
                s.interval_seconds,
                s.enabled_by_default,
                s.description.as_str(),
            )
        })
        .collect();
    assert_eq!(
        schedules,
        [
            ("python.reader@sweep", 90, true, "sweep"),
            ("python.reader@hourly", 3600, true, "Every hour.")
        ]
    );

    // The two scripts whose declarations cannot be read are recorded as faulted, once.
    let deadline = Instant::now() + Duration::from_secs(10);
    let faults = loop {
        let faults: Vec<(String, String)> = host
            .attestations()
            .into_iter()
            .filter(|a| a.predicates.iter().any(|p| p == "handler:faulted") && a.source == "python")
            .map(|a| {
                let reason = match a
                    .attributes
                    .as_ref()
                    .and_then(|s| s.fields.get("reason"))
                    .and_then(|v| v.kind.clone())
                {
                    Some(Kind::StringValue(reason)) => reason,
                    _ => String::new(),
                };
                (a.subjects[0].clone(), reason)
            })
            .collect();
        if faults.len() >= 3 || Instant::now() > deadline {
            break faults;
        }
        tokio::task::yield_now().await;
    };
    let mut keys: Vec<_> = faults.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort();
    assert_eq!(keys, ["bad_decorator", "broken", "script"]);
    for (key, reason) in &faults {
        let expected = match key.as_str() {
            "broken" => "SyntaxError",
            "bad_decorator" => "@watch needs at least one filter",
            _ => "taken by the built-in python.script",
        };
        assert!(reason.contains(expected), "{key}: {reason}");
    }

    // Jobs of faulted or code-less handlers fail with the reason.
    let failed = job(&plugin, "python.broken", b"").await;
    assert!(
        !failed.success && failed.error.contains("SyntaxError"),
        "{}",
        failed.error
    );
    let failed = job(&plugin, "python.blocked", b"").await;
    assert!(
        !failed.success && failed.error.contains("faulted"),
        "{}",
        failed.error
    );
    let failed = job(&plugin, "python.gone", b"").await;
    assert!(
        !failed.success && failed.error.contains("no code"),
        "{}",
        failed.error
    );
    assert_eq!(
        job_result(&job(&plugin, "python.cleanup", b"").await),
        json!("new")
    );
    host.assert_no_crash();
}

#[tokio::test(flavor = "multi_thread")]
async fn each_trigger_runs_the_function_that_declared_it() {
    let host = FakeHost::start(TOKEN).await;
    host.insert(saved("reader", READER, 1_000));
    let plugin = Plugin::start(&["--workers", "1"]);
    initialize(&plugin, &host).await;

    let reading = br#"{"id":"AS1","subjects":["pump-7"],"predicates":["reading"],"contexts":["plant-north"],"timestamp":"2026-05-02T07:41:09Z"}"#;
    let alarm =
        br#"{"id":"AS2","subjects":["pump-12"],"predicates":["alert"],"contexts":["plant-south"]}"#;
    assert_eq!(
        job_result(&job(&plugin, "python.reader@on_reading", reading).await),
        json!(["reading", "pump-7"])
    );
    assert_eq!(
        job_result(&job(&plugin, "python.reader@on_alarm", alarm).await),
        json!(["alarm", "alert"])
    );
    assert_eq!(
        job_result(&job(&plugin, "python.reader@sweep", b"").await),
        json!("swept")
    );
    assert_eq!(
        job_result(&job(&plugin, "python.reader@hourly", b"").await),
        json!("hourly")
    );
    // The plain name dispatches by trigger: an attestation goes to the watcher it matches.
    assert_eq!(
        job_result(&job(&plugin, "python.reader", alarm).await),
        json!(["alarm", "alert"])
    );

    let bad = job(&plugin, "python.reader@on_reading", b"{not json").await;
    assert!(
        !bad.success && bad.error.contains("the job payload is not valid JSON"),
        "{}",
        bad.error
    );
    let missing = job(&plugin, "python.reader@nowhere", b"").await;
    assert!(
        !missing.success && missing.error.contains("no function nowhere()"),
        "{}",
        missing.error
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn handlers_get_upstream_and_return_values_and_log_what_they_print() {
    let host = FakeHost::start(TOKEN).await;
    host.insert(saved(
        "echo",
        "print('top level runs once')\n\ndef main(payload):\n    print('got', payload)\n    return {'seen': payload, 'n': (1, 2)}\n",
        1_000,
    ));
    let plugin = Plugin::start(&["--workers", "1"]);
    initialize(&plugin, &host).await;

    let response = job(&plugin, "python.echo", br#"{"k": 1}"#).await;
    assert_eq!(
        job_result(&response),
        json!({"seen": {"k": 1}, "n": [1, 2]})
    );
    assert_eq!(response.plugin_version, env!("CARGO_PKG_VERSION"));
    let lines: Vec<_> = response
        .log_entries
        .iter()
        .map(|e| e.message.as_str())
        .collect();
    assert_eq!(lines, ["top level runs once", "got {'k': 1}"]);

    let response = job(&plugin, "python.echo", b"").await;
    assert_eq!(job_result(&response)["seen"], json!(null));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_python_api_reaches_the_host_with_the_token() {
    let host = FakeHost::start(TOKEN).await;
    host.set_fetch_reply("https://example.org/data", 200, "payload");
    let code = r#"
import qntx, threading
written = attest(["pump-12"], ["pressure"], attributes={"bar": 3, "pair": (1, 2), "tags": {"b", "a"}})
again = last(subjects=["pump-12"], predicates=["pressure"])
count = qntx.attest_many([
    {"subjects": ["a"], "predicates": ["p"]},
    {"subjects": ["b"], "predicates": ["p"], "contexts": ["explicit"]},
])
hist = history(predicates=["p"], limit=10)
page = fetch("https://example.org/data", subjects=["example"], predicate="http:get")
job_id = enqueue("api", {"again": True})
schedule_id = create_schedule("api", every=30, payload={"x": 1}, description="half-minute")
pause_schedule(schedule_id)
resume_schedule(schedule_id)
delete_schedule(schedule_id)
from_thread = []
t = threading.Thread(target=lambda: from_thread.append(last(predicates=["pressure"])["id"]))
t.start(); t.join()
def main():
    return {
        "contexts": written["contexts"], "source": written["source"], "attributes": written["attributes"],
        "same": again["id"] == written["id"], "bar_is_int": isinstance(again["attributes"]["bar"], int),
        "count": count, "history": sorted(h["subjects"][0] for h in hist),
        "history_contexts": sorted(c for h in hist for c in h["contexts"]),
        "page": page["body"], "status": page["status_code"], "job": job_id.startswith("JB"),
        "thread": from_thread == [written["id"]],
    }
"#;
    host.insert(saved("api", code, 1_000));
    let plugin = Plugin::start(&["--workers", "1"]);
    initialize(&plugin, &host).await;

    let result = job_result(&job(&plugin, "python.api", b"").await);
    assert_eq!(
        result["contexts"],
        json!(["api"]),
        "a handler's writes carry its name"
    );
    assert_eq!(result["source"], json!("python"));
    assert_eq!(result["attributes"]["bar"], json!(3));
    assert_eq!(result["attributes"]["pair"], json!([1, 2]));
    assert_eq!(result["attributes"]["tags"], json!(["a", "b"]));
    assert_eq!(
        result["attributes"]["source_version"],
        json!(env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(result["same"], json!(true));
    assert_eq!(result["bar_is_int"], json!(true));
    assert_eq!(result["count"], json!(2));
    assert_eq!(result["history"], json!(["a", "b"]));
    assert_eq!(
        result["history_contexts"],
        json!(["api", "api", "explicit"])
    );
    assert_eq!(
        (&result["page"], &result["status"], &result["job"]),
        (&json!("payload"), &json!(200), &json!(true))
    );
    assert_eq!(
        result["thread"],
        json!(true),
        "the API works from threads a program starts"
    );

    let jobs = host.jobs();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].handler_name, "python/python.api");
    assert_eq!(jobs[0].status, "queued");
    assert_eq!(jobs[0].payload, br#"{"again":true}"#);
    let schedules = host.schedules();
    assert_eq!(schedules.len(), 1);
    assert_eq!(
        (
            schedules[0].handler_name.as_str(),
            schedules[0].interval_seconds
        ),
        ("python/python.api", 30)
    );
    assert_eq!(schedules[0].state, "deleted");

    let requests = host.requests();
    assert!(requests.len() >= 10, "{requests:?}");
    for request in &requests {
        assert_eq!(request.token, TOKEN, "{} without the token", request.method);
    }
    host.assert_no_crash();
}

#[tokio::test(flavor = "multi_thread")]
async fn api_errors_name_the_call_and_the_hosts_reason() {
    let host = FakeHost::start(TOKEN).await;
    let plugin = Plugin::start(&["--workers", "1"]);
    let mut python = plugin.python().await;

    let response = plugin::execute(&mut python, "attest(['x'], ['p'], contexts=['c'])").await;
    assert!(
        response.error.contains("has not been initialized"),
        "{}",
        response.error
    );

    initialize(&plugin, &host).await;
    let response = plugin::execute(&mut python, "attest(['x'], ['p'])").await;
    assert!(
        response
            .error
            .contains("contexts are required outside a handler"),
        "{}",
        response.error
    );

    host.set_token("another-token");
    let code = "try:\n    attest(['x'], ['p'], contexts=['c'])\nexcept qntx.HostError as e:\n    _result = [str(e), isinstance(e, RuntimeError)]";
    let response = plugin::execute(&mut python, code).await;
    let result = plugin::result_object(&response)["result"].clone();
    assert!(
        result[0]
            .as_str()
            .unwrap()
            .contains("GenerateAndCreateAttestation"),
        "{result}"
    );
    assert!(
        result[0]
            .as_str()
            .unwrap()
            .contains("invalid authentication token"),
        "{result}"
    );
    assert_eq!(result[1], json!(true));

    // The next Initialize's token is used from the next run on.
    host.set_token(TOKEN);
    let response = plugin::execute(
        &mut python,
        "attest(['x'], ['p'], contexts=['c'])['subjects']",
    )
    .await;
    assert_eq!(
        plugin::result_object(&response)["result"],
        json!(["x"]),
        "{}",
        response.error
    );
    host.assert_no_crash();
}

#[tokio::test(flavor = "multi_thread")]
async fn changed_and_new_handlers_run_without_a_restart() {
    let host = FakeHost::start(TOKEN).await;
    host.insert(saved("greet", "def main():\n    return 'v1'", 1_000));
    let plugin = Plugin::start(&["--workers", "1"]);
    initialize(&plugin, &host).await;
    assert_eq!(
        job_result(&job(&plugin, "python.greet", b"").await),
        json!("v1")
    );

    host.insert(saved("greet", "def main():\n    return 'v2'", 2_000));
    assert_eq!(
        job_result(&job(&plugin, "python.greet", b"").await),
        json!("v2"),
        "the newest code runs"
    );

    host.insert(saved(
        "later",
        "def main():\n    return 'added after Initialize'",
        3_000,
    ));
    assert_eq!(
        job_result(&job(&plugin, "python.later", b"").await),
        json!("added after Initialize")
    );

    let reload = job(&plugin, "python.__reload", b"").await;
    assert!(reload.success, "{}", reload.error);
    let result: serde_json::Value = serde_json::from_slice(&reload.result).unwrap();
    assert_eq!(result["reloaded"], json!(2));
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_reconciles_schedules_and_a_failed_reload_keeps_the_catalog() {
    let host = FakeHost::start(TOKEN).await;
    let with = |every: u32, extra: &str| {
        format!("@schedule(every={every})\ndef tick():\n    return 'tick'\n{extra}")
    };
    host.insert(saved("a", &with(60, ""), 1_000));
    host.insert(saved("b", &with(60, ""), 1_000));
    host.insert(saved("c", &with(60, ""), 1_000));
    let plugin = Plugin::start(&["--workers", "1"]);
    initialize(&plugin, &host).await;
    // At boot the host makes schedules from the declarations; the fake host stands in for it.
    let mut schedules = host.endpoints();
    schedules.auth_token = TOKEN.into();
    let link =
        tokio::task::block_in_place(|| qntx_python_plugin::host::HostLink::connect(&schedules));
    let mut ids = std::collections::HashMap::new();
    for key in ["a", "b", "c"] {
        let name = format!("python/python.{key}@tick");
        ids.insert(
            key,
            link.create_schedule(&name, 60, vec![], Default::default())
                .await
                .unwrap(),
        );
    }
    link.pause_schedule(&ids["c"]).await.unwrap();

    host.insert(saved("a", &with(120, ""), 2_000)); // interval changed
    host.insert(saved("b", "def main():\n    pass", 2_000)); // decorator gone
    host.insert(saved("c", &with(60, "# edited, same interval"), 2_000)); // paused, unchanged
    host.insert(saved("d", &with(30, ""), 2_000)); // new
    let reload = job(&plugin, "python.__reload", b"").await;
    assert!(reload.success, "{}", reload.error);

    let state: Vec<(String, i32, String)> = host
        .schedules()
        .into_iter()
        .map(|s| (s.handler_name, s.interval_seconds, s.state))
        .collect();
    let live = |name: &str| {
        state
            .iter()
            .filter(|(n, _, s)| n == name && s != "deleted")
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        live("python/python.a@tick"),
        [("python/python.a@tick".into(), 120, "active".into())]
    );
    assert_eq!(live("python/python.b@tick"), []);
    assert_eq!(
        live("python/python.c@tick"),
        [("python/python.c@tick".into(), 60, "paused".into())],
        "not duplicated"
    );
    assert_eq!(
        live("python/python.d@tick"),
        [("python/python.d@tick".into(), 30, "active".into())]
    );

    // A reload that cannot read the store keeps the last good catalog.
    host.set_token("rotated");
    let failed = job(&plugin, "python.__reload", b"").await;
    assert!(
        !failed.success && failed.error.contains("last good catalog"),
        "{}",
        failed.error
    );
    host.set_token(TOKEN);
    let names = initialize(&plugin, &host).await.handler_names;
    assert!(names.contains(&"python.d@tick".to_string()), "{names:?}");
    host.assert_no_crash();
}

#[tokio::test(flavor = "multi_thread")]
async fn initialize_again_gives_the_same_declarations_and_a_failed_read_keeps_them() {
    let host = FakeHost::start(TOKEN).await;
    host.insert(saved("reader", READER, 1_000));
    let plugin = Plugin::start(&["--workers", "1"]);
    let first = initialize(&plugin, &host).await;
    let mut request = initialize_request(&host);
    request
        .config
        .insert("timeout_secs".into(), "45.000000".into());
    let second = plugin
        .domain()
        .await
        .initialize(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.handler_names, second.handler_names);
    assert_eq!(first.watchers, second.watchers);
    assert_eq!(first.schedules, second.schedules);
    let unique: std::collections::BTreeSet<_> = second.handler_names.iter().collect();
    assert_eq!(
        unique.len(),
        second.handler_names.len(),
        "no duplicate names"
    );

    host.set_token("rotated");
    let third = plugin
        .domain()
        .await
        .initialize(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        third.schedules, first.schedules,
        "a read failure never declares an empty set"
    );

    // A plugin that never read its catalog fails Initialize rather than declare nothing.
    let fresh = Plugin::start(&["--workers", "1"]);
    let status = fresh
        .domain()
        .await
        .initialize(initialize_request(&host))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(
        status.message().contains("invalid authentication token"),
        "{}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn discovery_reads_thousands_of_handlers() {
    for count in [1_500usize, 10_000] {
        let host = FakeHost::start(TOKEN).await;
        let handlers = (0..count)
            .map(|i| {
                saved(
                    &format!("h{i:05}"),
                    &format!("@schedule(every={})\ndef tick():\n    return {i}", 60 + i),
                    1_000 + i as i64,
                )
            })
            .collect();
        host.insert_many(handlers);
        let plugin = Plugin::start(&["--workers", "1"]);
        let started = Instant::now();
        let response = initialize(&plugin, &host).await;
        let took = started.elapsed();
        println!("discovery of {count} handlers: {took:?}");
        assert_eq!(response.handler_names.len(), 2 + 2 * count);
        assert_eq!(response.schedules.len(), count);
        assert!(
            response
                .handler_names
                .contains(&"python.h00000@tick".to_string()),
            "the oldest is there too"
        );
        assert_eq!(
            job_result(&job(&plugin, &format!("python.h{:05}@tick", count - 1), b"").await),
            json!(count - 1)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn decorator_edge_cases_are_read_or_refused_clearly() {
    let plugin = Plugin::start(&["--workers", "1"]);
    let mut python = plugin.python().await;
    let code = r##"
import json, qntx_handlers
cases = {
    "set": "@watch({'b', 'a'})\ndef f(x): pass",
    "every_twice": "@schedule(60, every=5)\ndef f(): pass",
    "rate": "@watch('p', max_fires_per_second=1099511627776)\ndef f(x): pass",
    "two_schedules": "@schedule(every=5)\n@schedule(every=6)\ndef f(): pass",
    "not_literal": "N = 5\n@schedule(every=N)\ndef f(): pass",
    "bare_handler": "@handler\ndef go(): pass",
    "comment": "# Cleans the cache.\n# Twice a day.\n@schedule(every=43200)\ndef f(): pass",
}
answers = {}
for name, source in cases.items():
    ok, text = qntx_handlers.declarations_json(source, "<case>")
    answers[name] = json.loads(text) if ok else "ERROR: " + text
answers
"##;
    let response = plugin::execute(&mut python, code).await;
    let answers = plugin::result_object(&response)["result"].clone();
    assert_eq!(
        answers["set"]["watchers"][0]["predicates"],
        json!(["a", "b"])
    );
    assert!(
        answers["every_twice"]
            .as_str()
            .unwrap()
            .contains("every given twice"),
        "{answers}"
    );
    assert!(
        answers["rate"]
            .as_str()
            .unwrap()
            .contains("max_fires_per_second"),
        "{answers}"
    );
    assert!(
        answers["two_schedules"]
            .as_str()
            .unwrap()
            .contains("more than one @schedule"),
        "{answers}"
    );
    assert!(
        answers["not_literal"]
            .as_str()
            .unwrap()
            .contains("must be literal values"),
        "{answers}"
    );
    assert_eq!(answers["bare_handler"]["entry"], json!("go"));
    assert_eq!(
        answers["comment"]["schedules"][0]["description"],
        json!("Cleans the cache. Twice a day.")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn async_entry_functions_run_and_host_errors_read_well() {
    let host = FakeHost::start(TOKEN).await;
    host.insert(saved(
        "aio",
        "import asyncio\nasync def main():\n    await asyncio.sleep(0)\n    return 'awaited'",
        1_000,
    ));
    let plugin = Plugin::start(&["--workers", "1"]);
    initialize(&plugin, &host).await;
    assert_eq!(
        job_result(&job(&plugin, "python.aio", b"").await),
        json!("awaited")
    );

    host.set_token("another");
    let mut python = plugin.python().await;
    let response =
        plugin::execute(&mut python, "x = 1\nattest(['x'], ['p'], contexts=['c'])").await;
    assert!(
        response
            .error
            .contains("qntx.HostError: GenerateAndCreateAttestation"),
        "{}",
        response.error
    );
    assert!(response.error.contains("line 2"), "{}", response.error);
    assert!(
        !response.error.contains("qntx.py"),
        "no plugin frames: {}",
        response.error
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_handler_runs_in_the_environment_its_directive_names() {
    let bio = venv::with_marker("bio");
    let data = venv::with_marker("data");
    let host = FakeHost::start(TOKEN).await;
    let in_data = "# py:data\nimport data_marker\n\ndef main():\n    return data_marker.VALUE\n\n@watch('reading')\ndef on_reading(attestation):\n    return [data_marker.VALUE, attestation['subjects'][0]]\n";
    host.insert_many(vec![
        saved("in_data", in_data, 1_000),
        saved(
            "in_default",
            "import bio_marker\ndef main():\n    return bio_marker.VALUE",
            1_000,
        ),
        saved("lost", "# py:ml\ndef main():\n    return 1", 1_000),
    ]);
    let plugin = Plugin::start(&["--env", &bio.arg("bio"), "--env", &data.arg("data")]);
    let response = initialize(&plugin, &host).await;
    assert_eq!(
        response.handler_names,
        [
            "python.script",
            "python.__reload",
            "python.in_data",
            "python.in_data@on_reading",
            "python.in_default"
        ]
    );

    assert_eq!(
        job_result(&job(&plugin, "python.in_data", b"").await),
        json!("data")
    );
    assert_eq!(
        job_result(&job(&plugin, "python.in_default", b"").await),
        json!("bio")
    );
    let upstream = serde_json::to_vec(&json!({"subjects": ["pump-12"]})).unwrap();
    assert_eq!(
        job_result(&job(&plugin, "python.in_data@on_reading", &upstream).await),
        json!(["data", "pump-12"])
    );
    // The catalog records each handler's environment.
    let reload = job(&plugin, "python.__reload", b"").await;
    assert!(reload.success, "{}", reload.error);
    let result: serde_json::Value = serde_json::from_slice(&reload.result).unwrap();
    assert_eq!(
        result["environments"],
        json!({"in_data": "data", "in_default": "bio"})
    );

    // An unknown environment faults the handler, recorded in the store, and its jobs fail.
    let deadline = Instant::now() + Duration::from_secs(10);
    let reason = loop {
        let fault = host.attestations().into_iter().find(|a| {
            a.subjects == ["lost"] && a.predicates.iter().any(|p| p == "handler:faulted")
        });
        if let Some(fault) = fault {
            break format!("{:?}", fault.attributes);
        }
        assert!(Instant::now() < deadline, "no handler:faulted for 'lost'");
        tokio::task::yield_now().await;
    };
    assert!(
        reason.contains("no Python environment named 'ml'") && reason.contains("bio, data"),
        "{reason}"
    );
    let failed = job(&plugin, "python.lost", b"").await;
    assert!(
        !failed.success && failed.error.contains("no Python environment named 'ml'"),
        "{}",
        failed.error
    );
}
