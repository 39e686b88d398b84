//! Initialize and the `__reload` job read the catalog concurrently; whichever read started
//! later wins, whatever order they finish in. The fake host holds one read's answer back so
//! the earlier read ends last.

#[path = "support/fake_host.rs"]
mod fake_host;
#[path = "support/plugin.rs"]
mod plugin;

use fake_host::FakeHost;
use plugin::{initialize_request, Plugin};
use prost_types::{value::Kind, Struct, Value};
use qntx_python_plugin::host::HostLink;
use qntx_python_plugin::proto::*;
use serde_json::json;
use tonic::transport::Channel;

const TOKEN: &str = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";

fn saved(key: &str, code: &str, created_at: i64) -> Attestation {
    let code = Value {
        kind: Some(Kind::StringValue(code.into())),
    };
    Attestation {
        subjects: vec![key.into()],
        predicates: vec!["handler".into()],
        contexts: vec!["python".into()],
        created_at,
        attributes: Some(Struct {
            fields: [("code".to_string(), code)].into(),
        }),
        ..Default::default()
    }
}

const ALPHA: &str = "def main():\n    return 'alpha'\n";
const BETA: &str = "@schedule(every=60)\ndef tick():\n    return 'beta'\n";

async fn initialize(
    client: &mut domain_plugin_service_client::DomainPluginServiceClient<Channel>,
    host: &FakeHost,
) -> InitializeResponse {
    client
        .initialize(initialize_request(&host.endpoints(), &[]))
        .await
        .expect("Initialize")
        .into_inner()
}

async fn reload(
    client: &mut domain_plugin_service_client::DomainPluginServiceClient<Channel>,
) -> serde_json::Value {
    let response = client
        .execute_job(ExecuteJobRequest {
            job_id: "reload".into(),
            handler_name: "python.__reload".into(),
            ..Default::default()
        })
        .await
        .expect("ExecuteJob answered")
        .into_inner();
    assert!(response.success, "reload failed: {}", response.error);
    serde_json::from_slice(&response.result).expect("result JSON")
}

fn active_schedules(host: &FakeHost) -> Vec<String> {
    host.schedules()
        .into_iter()
        .filter(|s| s.state == "active")
        .map(|s| s.handler_name)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_that_read_before_an_initialize_never_undoes_it() {
    let host = FakeHost::start(TOKEN).await;
    host.insert(saved("alpha", ALPHA, 1));
    let plugin = Plugin::start(&["--workers", "1"]);
    let mut client = plugin.domain().await;
    let first = initialize(&mut client, &host).await;
    assert!(first.handler_names.contains(&"python.alpha".to_owned()));

    // A reload reads the store (alpha only), and its answer is held back.
    let mut held = host.hold_next_stream();
    let reloading = tokio::spawn({
        let mut client = client.clone();
        async move { reload(&mut client).await }
    });
    held.arrived().await;

    // Meanwhile beta is saved and the host calls Initialize again, which reads it, and then
    // makes beta's schedule from the answer (the fake host stands in for the real one).
    host.insert(saved("beta", BETA, 2));
    let second = initialize(&mut client, &host).await;
    assert!(
        second
            .handler_names
            .contains(&"python.beta@tick".to_owned()),
        "{:?}",
        second.handler_names
    );
    let link = HostLink::connect(&host.endpoints());
    link.create_schedule("python/python.beta@tick", 60, vec![], Default::default())
        .await
        .unwrap();

    // Now the older read ends: it must neither replace the catalog nor reconcile beta away.
    held.release();
    let result = reloading.await.unwrap();
    assert_eq!(result["reloaded"], json!(2), "{result}");
    assert_eq!(result["superseded"], json!(true), "{result}");
    assert_eq!(
        active_schedules(&host),
        vec!["python/python.beta@tick".to_owned()]
    );

    // The catalog in effect is the newer one: a fresh reload finds nothing to change.
    let result = reload(&mut client).await;
    assert_eq!(result["superseded"], json!(false), "{result}");
    assert_eq!(
        result["schedules"],
        json!({"created": [], "replaced": [], "deleted": [], "errors": []})
    );
    assert_eq!(
        active_schedules(&host),
        vec!["python/python.beta@tick".to_owned()]
    );
    host.assert_no_crash();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_initialize_that_read_before_a_reload_answers_with_the_newer_catalog() {
    let host = FakeHost::start(TOKEN).await;
    host.insert(saved("alpha", ALPHA, 1));
    let plugin = Plugin::start(&["--workers", "1"]);
    let mut client = plugin.domain().await;
    initialize(&mut client, &host).await;

    // The host calls Initialize again; its read (alpha only) is held back.
    let mut held = host.hold_next_stream();
    let initializing = tokio::spawn({
        let mut client = client.clone();
        let request = initialize_request(&host.endpoints(), &[]);
        async move {
            client
                .initialize(request)
                .await
                .expect("Initialize")
                .into_inner()
        }
    });
    held.arrived().await;

    // Beta is saved; its reload reads and applies it, creating beta's schedule.
    host.insert(saved("beta", BETA, 2));
    let result = reload(&mut client).await;
    assert_eq!(result["reloaded"], json!(2), "{result}");
    assert_eq!(
        result["schedules"]["created"],
        json!(["python.beta@tick"]),
        "{result}"
    );

    // The older read ends last: Initialize answers with the catalog in effect, beta included.
    held.release();
    let answer = initializing.await.unwrap();
    assert!(
        answer
            .handler_names
            .contains(&"python.beta@tick".to_owned()),
        "{:?}",
        answer.handler_names
    );
    assert_eq!(answer.schedules.len(), 1, "{:?}", answer.schedules);
    let result = reload(&mut client).await;
    assert_eq!(result["schedules"]["created"], json!([]), "{result}");
    assert_eq!(result["schedules"]["deleted"], json!([]), "{result}");
    host.assert_no_crash();
}
