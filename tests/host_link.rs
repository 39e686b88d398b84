//! The host link against the fake host: every call round-trips with the token, refusals and
//! missing services surface clearly, large reads stream, large writes are split, deadlines
//! hold, and no request would crash the real host.

#[path = "support/fake_host.rs"]
mod fake_host;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use fake_host::{now_ms, FakeHost, BAD_TOKEN};
use prost::Message;
use prost_types::value::Kind;
use qntx_python_plugin::host::{values, Endpoints, HostError, HostLink};
use qntx_python_plugin::proto::ats_store_service_client::AtsStoreServiceClient;
use qntx_python_plugin::proto::queue_service_client::QueueServiceClient;
use qntx_python_plugin::proto::{
    Attestation, AttestationCommand, AttestationFilter, EnqueueRequest, FetchRequest,
    GetAttestationsRequest, Job,
};
use serde_json::{json, Value};

const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

async fn start() -> (FakeHost, HostLink) {
    let fake = FakeHost::start(TOKEN).await;
    let link = HostLink::connect(&fake.endpoints());
    (fake, link)
}

fn object(value: Value) -> serde_json::Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// Every request the fake received carried `token`, and there was at least one.
fn assert_tokens(fake: &FakeHost, token: &str) {
    let requests = fake.requests();
    assert!(!requests.is_empty(), "no request reached the host");
    for request in requests {
        assert_eq!(request.token, token, "token of {}", request.method);
    }
}

fn handler(subject: &str, created_at: i64, code: &str) -> Attestation {
    let attributes = object(json!({"code": code}));
    Attestation {
        subjects: vec![subject.to_owned()],
        predicates: strings(&["handler"]),
        contexts: strings(&["python"]),
        actors: strings(&["cli"]),
        source: "qntx".into(),
        attributes: Some(values::to_struct(&attributes)),
        created_at,
        timestamp: created_at,
        ..Attestation::default()
    }
}

#[tokio::test]
async fn attest_round_trips_with_the_hosts_defaults() {
    let (fake, link) = start().await;
    let attributes = object(json!({"count": 42, "ratio": 0.5, "tags": ["a", "b"]}));
    let command = AttestationCommand {
        subjects: strings(&["pump-12"]),
        predicates: strings(&["pressure"]),
        contexts: strings(&["plant-north"]),
        actors: strings(&["glyph:g1"]),
        attributes: Some(values::to_struct(&attributes)),
        source: "python".into(),
        source_version: "1.2.3".into(),
        ..AttestationCommand::default()
    };
    let stored = link.attest(command).await.unwrap();
    assert!(stored.id.starts_with("AS"), "{}", stored.id);
    assert_eq!(
        stored.actors,
        std::slice::from_ref(&stored.id),
        "actors are overwritten"
    );
    assert_eq!(stored.source, "python");
    let count = &stored.attributes.as_ref().unwrap().fields["count"];
    assert_eq!(
        count.kind,
        Some(Kind::NumberValue(42.0)),
        "numbers come back as doubles"
    );

    let dict = values::attestation_to_json(&stored);
    assert_eq!(
        dict["attributes"],
        json!({"count": 42, "ratio": 0.5, "tags": ["a", "b"], "source_version": "1.2.3"})
    );
    assert!(dict["attributes"]["count"].is_i64());
    assert!(dict["timestamp"].as_str().unwrap().ends_with('Z'));

    let before = now_ms();
    let bare = AttestationCommand {
        subjects: strings(&["x"]),
        ..AttestationCommand::default()
    };
    let bare = link.attest(bare).await.unwrap();
    assert_eq!(
        (bare.predicates, bare.contexts),
        (strings(&["_"]), strings(&["_"]))
    );
    assert_eq!(bare.source, "plugin");
    assert!(bare.timestamp >= before && bare.timestamp <= now_ms() + 1);

    assert_eq!(fake.requests_to("GenerateAndCreateAttestation").len(), 2);
    assert_eq!(fake.attestations().len(), 2);
    assert_tokens(&fake, TOKEN);
    fake.assert_no_crash();
}

#[tokio::test]
async fn query_is_newest_first_with_the_hosts_matching() {
    let (fake, link) = start().await;
    let old = fake.insert(handler("cleanup", 1_000, "v1"));
    let middle = fake.insert(handler("cleanup", 2_000, "v2"));
    let new = fake.insert(handler("Cleanup", 3_000, "v3"));
    let other = fake.insert(handler("report", 2_500, "r1"));

    let ids = |found: Vec<Attestation>| found.into_iter().map(|a| a.id).collect::<Vec<_>>();
    let filter = AttestationFilter {
        subjects: strings(&["CLEANUP"]),
        predicates: strings(&["handler"]),
        ..AttestationFilter::default()
    };
    assert_eq!(
        ids(link.query(filter.clone()).await.unwrap()),
        [&new, &middle, &old].map(String::clone)
    );

    let newest = AttestationFilter {
        limit: Some(1),
        ..filter.clone()
    };
    assert_eq!(
        ids(link.query(newest).await.unwrap()),
        std::slice::from_ref(&new)
    );

    let window = AttestationFilter {
        time_start: Some(2_000),
        time_end: Some(2_500),
        ..Default::default()
    };
    assert_eq!(
        ids(link.query(window).await.unwrap()),
        [&other, &middle].map(String::clone)
    );

    let either = AttestationFilter {
        subjects: strings(&["report", "nothing"]),
        ..Default::default()
    };
    assert_eq!(
        ids(link.query(either).await.unwrap()),
        std::slice::from_ref(&other)
    );

    let mismatch = AttestationFilter {
        contexts: strings(&["elsewhere"]),
        ..filter
    };
    assert!(link.query(mismatch).await.unwrap().is_empty());

    // An empty filter is still sent as a message, never left unset.
    assert_eq!(
        link.query(AttestationFilter::default())
            .await
            .unwrap()
            .len(),
        4
    );
    assert_eq!(
        link.stream_all(AttestationFilter::default())
            .await
            .unwrap()
            .len(),
        4
    );
    assert_tokens(&fake, TOKEN);
    fake.assert_no_crash();
}

#[tokio::test]
async fn stream_all_reads_every_handler_without_a_cap() {
    let (fake, link) = start().await;
    let code = format!("def main():\n    return {}\n", "1 + ".repeat(150) + "1");
    for total in [1_000usize, 10_500] {
        // Each round in its own context (the plugin name), as discovery reads them.
        let plugin = format!("python{total}");
        let seeded: Vec<_> = (0..total)
            .map(|i| Attestation {
                contexts: vec![plugin.clone()],
                ..handler(&format!("h{i}"), 1_000 + i as i64, &code)
            })
            .collect();
        fake.insert_many(seeded);
        let filter = AttestationFilter {
            predicates: strings(&["handler", "handler:faulted"]),
            contexts: vec![plugin],
            ..AttestationFilter::default()
        };
        let started = Instant::now();
        let found = link.stream_all(filter).await.unwrap();
        let took = started.elapsed();
        eprintln!("stream_all: {total} handlers in {took:?}");
        assert_eq!(found.len(), total);
        assert!(
            found.windows(2).all(|w| w[0].created_at >= w[1].created_at),
            "newest first"
        );
    }

    // The same read in one unary reply exceeds gRPC's default 4 MiB; the link accepts it.
    let everything = AttestationFilter {
        predicates: strings(&["handler"]),
        ..Default::default()
    };
    let started = Instant::now();
    let all = link.query(everything).await.unwrap();
    let bytes: usize = all.iter().map(Message::encoded_len).sum();
    eprintln!(
        "query: {} handlers ({bytes} bytes) in {:?}",
        all.len(),
        started.elapsed()
    );
    assert_eq!(all.len(), 11_500);
    assert!(bytes > 4 * 1024 * 1024, "{bytes} bytes");
    fake.assert_no_crash();
}

#[tokio::test]
async fn attest_many_splits_batches_under_4_mb() {
    let (fake, link) = start().await;
    let big = "x".repeat(8 * 1024);
    let commands: Vec<_> = (0..1_200)
        .map(|i| AttestationCommand {
            subjects: vec![format!("item-{i}")],
            predicates: strings(&["bulk"]),
            attributes: Some(values::to_struct(&object(json!({"blob": big, "i": i})))),
            ..AttestationCommand::default()
        })
        .collect();
    let total: usize = commands.iter().map(Message::encoded_len).sum();
    assert!(
        total > 9_000_000,
        "the test needs more than two batches' worth: {total}"
    );

    assert_eq!(link.attest_many(commands).await.unwrap(), 1_200);
    let batches = fake.requests_to("BatchGenerateAndCreateAttestations");
    assert!(batches.len() >= 3, "{} batches", batches.len());
    for batch in &batches {
        assert!(batch.bytes < 4_000_000, "a batch of {} bytes", batch.bytes);
    }
    assert_eq!(fake.attestations().len(), 1_200);

    let small: Vec<_> = (0..3)
        .map(|i| AttestationCommand {
            subjects: vec![format!("s{i}")],
            ..Default::default()
        })
        .collect();
    assert_eq!(link.attest_many(small).await.unwrap(), 3);
    assert_eq!(link.attest_many(Vec::new()).await.unwrap(), 0);
    assert_eq!(
        fake.requests_to("BatchGenerateAndCreateAttestations").len(),
        batches.len() + 1
    );
    assert_tokens(&fake, TOKEN);
    fake.assert_no_crash();
}

#[tokio::test]
async fn enqueue_sends_a_job_the_host_can_run() {
    let (fake, link) = start().await;
    let before = now_ms() / 1000;
    let id = link
        .enqueue("python/python.cleanup", b"{\"x\": 1}".to_vec(), "test")
        .await
        .unwrap();
    let second = link
        .enqueue("python/python.cleanup", Vec::new(), "test")
        .await
        .unwrap();
    assert!(id.starts_with("JB"), "{id}");
    assert_ne!(id, second);

    let jobs = fake.jobs();
    let job = jobs.iter().find(|j| j.id == id).unwrap();
    assert_eq!(job.handler_name, "python/python.cleanup");
    assert_eq!(job.payload, b"{\"x\": 1}");
    assert_eq!(
        (job.status.as_str(), job.source.as_str()),
        ("queued", "test")
    );
    assert!(job.progress.is_some());
    assert!(job.created_at >= before && job.created_at <= now_ms() / 1000 + 1);

    let err = link.enqueue("", Vec::new(), "test").await.unwrap_err();
    assert!(matches!(err, HostError::Invalid { .. }), "{err}");
    assert_eq!(fake.requests_to("Enqueue").len(), 2);
    assert_tokens(&fake, TOKEN);
    fake.assert_no_crash();
}

#[tokio::test]
async fn schedules_follow_the_hosts_lifecycle() {
    let (fake, link) = start().await;
    let metadata = HashMap::from([("plugin".to_owned(), "python".to_owned())]);
    let name = "python/python.report";
    let id = link
        .create_schedule(name, 60, b"{}".to_vec(), metadata.clone())
        .await
        .unwrap();
    let again = link
        .create_schedule(name, 30, Vec::new(), metadata.clone())
        .await
        .unwrap();
    assert_eq!(id, again, "idempotent among active schedules");

    let schedule = link.get_schedule(&id).await.unwrap();
    assert_eq!(
        (schedule.state.as_str(), schedule.interval_seconds),
        ("active", 60)
    );
    assert_eq!(
        serde_json::from_str::<Value>(&schedule.metadata).unwrap(),
        json!({"plugin": "python"})
    );

    link.pause_schedule(&id).await.unwrap();
    assert_eq!(link.get_schedule(&id).await.unwrap().state, "paused");
    let fresh = link
        .create_schedule(name, 60, Vec::new(), HashMap::new())
        .await
        .unwrap();
    assert_ne!(fresh, id, "a paused schedule does not count");

    link.resume_schedule(&id).await.unwrap();
    assert_eq!(link.get_schedule(&id).await.unwrap().state, "active");
    link.delete_schedule(&id).await.unwrap();
    assert_eq!(link.get_schedule(&id).await.unwrap().state, "deleted");
    assert_eq!(fake.schedules().len(), 2);

    let err = link.pause_schedule("SCH-unknown").await.unwrap_err();
    assert!(err.to_string().contains("schedule not found"), "{err}");
    let err = link
        .create_schedule(name, 0, Vec::new(), HashMap::new())
        .await
        .unwrap_err();
    assert!(matches!(err, HostError::Invalid { .. }), "{err}");
    assert_tokens(&fake, TOKEN);
    fake.assert_no_crash();
}

#[tokio::test]
async fn fetch_returns_the_body_and_attests_when_asked() {
    let (fake, link) = start().await;
    fake.set_fetch_reply("https://example.test/missing", 404, "nope");
    let reply = link
        .fetch(FetchRequest {
            url: "https://example.test/missing".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((reply.status_code, reply.body.as_str()), (404, "nope"));
    assert!(reply.attestation_id.is_empty());
    assert!(fake.attestations().is_empty());

    let request = FetchRequest {
        url: "https://example.test/weather".into(),
        subjects: strings(&["berlin"]),
        predicate: "weather".into(),
        source: "python".into(),
        ..Default::default()
    };
    let first = link.fetch(request.clone()).await.unwrap();
    assert_eq!(first.body, "fake body of https://example.test/weather");
    let stored = fake.attestations();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].id, first.attestation_id);
    assert_eq!(stored[0].predicates, strings(&["http:get", "weather"]));
    assert_eq!(
        stored[0].contexts,
        strings(&["https://example.test/weather"])
    );

    let cached = link.fetch(request).await.unwrap();
    assert_eq!(
        cached.attestation_id, first.attestation_id,
        "answered from the host's cache"
    );
    assert_eq!(fake.requests_to("Fetch").len(), 3);
    assert_tokens(&fake, TOKEN);
    fake.assert_no_crash();
}

#[tokio::test]
async fn a_wrong_token_surfaces_as_the_hosts_refusal() {
    let (fake, link) = start().await;
    let schedule = link
        .create_schedule("python/python.x", 60, Vec::new(), HashMap::new())
        .await
        .unwrap();
    fake.set_token("a-new-host-run");

    let command = || AttestationCommand {
        subjects: strings(&["s"]),
        ..Default::default()
    };
    let errors: Vec<(&str, HostError)> = vec![
        (
            "GenerateAndCreateAttestation",
            link.attest(command()).await.unwrap_err(),
        ),
        (
            "BatchGenerateAndCreateAttestations",
            link.attest_many(vec![command()]).await.unwrap_err(),
        ),
        (
            "GetAttestations",
            link.query(AttestationFilter::default()).await.unwrap_err(),
        ),
        (
            "GetAttestationsStream",
            link.stream_all(AttestationFilter::default())
                .await
                .unwrap_err(),
        ),
        (
            "Enqueue",
            link.enqueue("python/python.x", Vec::new(), "t")
                .await
                .unwrap_err(),
        ),
        (
            "CreateSchedule",
            link.create_schedule("python/python.y", 5, Vec::new(), HashMap::new())
                .await
                .unwrap_err(),
        ),
        (
            "PauseSchedule",
            link.pause_schedule(&schedule).await.unwrap_err(),
        ),
        (
            "ResumeSchedule",
            link.resume_schedule(&schedule).await.unwrap_err(),
        ),
        (
            "DeleteSchedule",
            link.delete_schedule(&schedule).await.unwrap_err(),
        ),
        (
            "GetSchedule",
            link.get_schedule(&schedule).await.unwrap_err(),
        ),
        (
            "Fetch",
            link.fetch(FetchRequest {
                url: "https://a.test".into(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
        ),
    ];
    for (call, err) in errors {
        assert!(matches!(err, HostError::Refused { .. }), "{call}: {err:?}");
        assert_eq!(err.call(), call);
        assert_eq!(
            err.to_string(),
            format!("{call}: the host refused: {BAD_TOKEN}")
        );
    }

    // A link made with the latest token works again.
    let renewed = HostLink::connect(&Endpoints {
        auth_token: "a-new-host-run".into(),
        ..fake.endpoints()
    });
    renewed.attest(command()).await.unwrap();
    fake.assert_no_crash();
}

#[tokio::test]
async fn a_missing_endpoint_names_the_service_and_sends_nothing() {
    let fake = FakeHost::start(TOKEN).await;
    let endpoints = Endpoints {
        ats_store: String::new(),
        queue: String::new(),
        ..fake.endpoints()
    };
    let link = HostLink::connect(&endpoints);
    let command = AttestationCommand {
        subjects: strings(&["s"]),
        ..Default::default()
    };

    let err = link.attest(command).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "GenerateAndCreateAttestation: no ATSStore endpoint: the host did not start that service"
    );
    let err = link
        .stream_all(AttestationFilter::default())
        .await
        .unwrap_err();
    assert!(err
        .to_string()
        .contains("no ATSStore endpoint: the host did not start that service"));
    let err = link
        .enqueue("python/python.x", Vec::new(), "t")
        .await
        .unwrap_err();
    assert!(err
        .to_string()
        .contains("no Queue endpoint: the host did not start that service"));
    assert!(fake.requests().is_empty());

    // The services that are there still work.
    link.create_schedule("python/python.x", 60, Vec::new(), HashMap::new())
        .await
        .unwrap();
    assert_tokens(&fake, TOKEN);
}

#[tokio::test]
async fn every_call_has_a_deadline() {
    let (fake, link) = start().await;
    let link = link.with_timeout(Duration::from_millis(200));
    fake.set_delay(Duration::from_secs(3));

    let started = Instant::now();
    let err = link.query(AttestationFilter::default()).await.unwrap_err();
    assert!(
        matches!(
            err,
            HostError::Timeout {
                call: "GetAttestations",
                ..
            }
        ),
        "{err:?}"
    );
    let err = link
        .stream_all(AttestationFilter::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            HostError::Timeout {
                call: "GetAttestationsStream",
                ..
            }
        ),
        "{err:?}"
    );
    let err = link.pause_schedule("SCH1").await.unwrap_err();
    assert!(
        matches!(
            err,
            HostError::Timeout {
                call: "PauseSchedule",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert!(err
        .to_string()
        .starts_with("PauseSchedule: no answer from the host within"));
    fake.assert_no_crash();
}

#[tokio::test]
async fn an_unreachable_host_is_a_transport_failure_naming_the_call() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = closed.local_addr().unwrap().to_string();
    drop(closed);
    let endpoints = Endpoints {
        ats_store: address.clone(),
        queue: address.clone(),
        schedule: address.clone(),
        fetch: address,
        auth_token: TOKEN.into(),
    };
    let started = Instant::now();
    let link = HostLink::connect(&endpoints);
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "connect must not dial"
    );

    let err = link
        .attest(AttestationCommand::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            HostError::Transport {
                call: "GenerateAndCreateAttestation",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("GenerateAndCreateAttestation: transport failure"),
        "{err}"
    );
    let err = link.get_schedule("x").await.unwrap_err();
    assert_eq!(err.call(), "GetSchedule");
}

#[tokio::test]
async fn clones_share_the_link_across_concurrent_calls() {
    let (fake, link) = start().await;
    let calls = (0..64).map(|i| {
        let link = link.clone();
        tokio::spawn(async move {
            let command = AttestationCommand {
                subjects: vec![format!("c{i}")],
                ..Default::default()
            };
            link.attest(command).await
        })
    });
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(fake.attestations().len(), 64);
    fake.assert_no_crash();
}

/// The fake host notices the requests that would kill the real one, so the checks above can
/// fail.
#[tokio::test]
async fn the_fake_host_records_a_crash_for_an_unset_submessage() {
    let fake = FakeHost::start(TOKEN).await;
    let endpoints = fake.endpoints();
    let mut ats = AtsStoreServiceClient::connect(format!("http://{}", endpoints.ats_store))
        .await
        .unwrap();
    let unset = GetAttestationsRequest {
        auth_token: TOKEN.into(),
        filter: None,
    };
    assert!(ats.get_attestations(unset).await.is_err());

    let mut queue = QueueServiceClient::connect(format!("http://{}", endpoints.queue))
        .await
        .unwrap();
    let no_progress = EnqueueRequest {
        auth_token: TOKEN.into(),
        job: Some(Job {
            id: "JB1".into(),
            handler_name: "python/x".into(),
            ..Default::default()
        }),
    };
    assert!(queue.enqueue(no_progress).await.is_err());
    assert_eq!(
        fake.crashes(),
        [
            "GetAttestations: unset filter",
            "Enqueue: unset job.progress"
        ]
    );
}
