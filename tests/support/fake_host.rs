//! A fake QNTX host for integration tests: the ATSStore, Queue, Schedule and Fetch services,
//! each on its own 127.0.0.1 port, with the host's semantics from the contract (protocol §2):
//!
//! * the token is a request field; a wrong one answers `success=false` with
//!   "invalid authentication token", `AttestationExists` answers `false`, and
//!   `GetAttestationsStream` fails with an `Unauthenticated` status;
//! * writes get an `AS…` id, actors overwritten with that id, `source` "plugin" when empty,
//!   `source_version` copied into the attributes, `["_"]` for empty predicates or contexts, and
//!   "now" (ms) for an unset timestamp; numbers are doubles because `Struct` has no other kind;
//! * reads are newest first (by `created_at`, then insertion order), exact-string matching that
//!   ignores ASCII case, OR within a list and AND across lists, inclusive time bounds, `limit`;
//! * schedules are idempotent per `handler_name` among active ones only; pause, resume and
//!   (soft) delete change the state;
//! * fetch answers a canned body per URL and attests when `subjects` and `predicate` are set.
//!
//! A request with an unset sub-message that the real host dereferences (`filter`, `job`,
//! `job.progress`, `attestation`) would kill the real host: here it is recorded as a crash
//! (`crashes()`, `assert_no_crash()`) and answered with an internal error. Every request is
//! recorded with its method, token and encoded size (`requests()`). The servers stop when the
//! `FakeHost` is dropped.
//!
//! Use from a test file with `#[path = "support/fake_host.rs"] mod fake_host;`. The services
//! themselves are in `fake_host_services.rs`.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;
use prost_types::value::Kind;
use prost_types::Value;
use qntx_python_plugin::host::Endpoints;
use qntx_python_plugin::proto::ats_store_service_server::AtsStoreServiceServer;
use qntx_python_plugin::proto::fetch_service_server::FetchServiceServer;
use qntx_python_plugin::proto::queue_service_server::QueueServiceServer;
use qntx_python_plugin::proto::schedule_service_server::ScheduleServiceServer;
use qntx_python_plugin::proto::{
    Attestation, AttestationCommand, AttestationFilter, Job, ScheduledJob,
};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::Status;

#[path = "fake_host_services.rs"]
mod services;
use services::{Ats, Fetch, Queue, Schedules};

pub const BAD_TOKEN: &str = "invalid authentication token";

/// One request as the fake host received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: &'static str,
    pub token: String,
    /// Encoded size of the request message.
    pub bytes: usize,
}

#[derive(Default)]
struct Store {
    token: String,
    /// `(insertion order, attestation)`.
    attestations: Vec<(u64, Attestation)>,
    next: u64,
    jobs: Vec<Job>,
    schedules: Vec<ScheduledJob>,
    fetch_replies: HashMap<String, (i32, String)>,
    received: Vec<Received>,
    crashes: Vec<String>,
    delay: Duration,
    /// Set by `hold_next_stream`: (tell the test it arrived, wait for the release).
    held_stream: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::sync::oneshot::Receiver<()>,
    )>,
}

impl Store {
    fn next(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    fn push(&mut self, attestation: Attestation) {
        let seq = self.next();
        self.attestations.push((seq, attestation));
    }

    /// Matching attestations, newest first.
    fn select(&self, filter: &AttestationFilter) -> Vec<Attestation> {
        let mut found: Vec<&(u64, Attestation)> = self
            .attestations
            .iter()
            .filter(|(_, a)| matches(filter, a))
            .collect();
        found.sort_by(|(sa, a), (sb, b)| (b.created_at, sb).cmp(&(a.created_at, sa)));
        let limit = filter
            .limit
            .filter(|l| *l > 0)
            .map_or(usize::MAX, |l| l as usize);
        found
            .into_iter()
            .take(limit)
            .map(|(_, a)| a.clone())
            .collect()
    }

    /// What `GenerateAndCreateAttestation` stores for a command.
    fn generate(&mut self, command: AttestationCommand) -> Attestation {
        let now = now_ms();
        let id = format!("AS{:010X}", self.next());
        let mut attributes = command.attributes.unwrap_or_default();
        if !command.source_version.is_empty() {
            attributes
                .fields
                .insert("source_version".into(), text(&command.source_version));
        }
        let underscore = |list: Vec<String>| {
            if list.is_empty() {
                vec!["_".into()]
            } else {
                list
            }
        };
        let attestation = Attestation {
            id: id.clone(),
            subjects: command.subjects,
            predicates: underscore(command.predicates),
            contexts: underscore(command.contexts),
            actors: vec![id],
            timestamp: command.timestamp.filter(|t| *t != 0).unwrap_or(now),
            source: if command.source.is_empty() {
                "plugin".into()
            } else {
                command.source
            },
            attributes: (!attributes.fields.is_empty()).then_some(attributes),
            created_at: now,
            ..Attestation::default()
        };
        self.push(attestation.clone());
        attestation
    }
}

fn matches(filter: &AttestationFilter, a: &Attestation) -> bool {
    let any = |wanted: &[String], have: &[String]| {
        wanted.is_empty()
            || wanted
                .iter()
                .any(|w| have.iter().any(|h| h.eq_ignore_ascii_case(w)))
    };
    any(&filter.subjects, &a.subjects)
        && any(&filter.predicates, &a.predicates)
        && any(&filter.contexts, &a.contexts)
        && any(&filter.actors, &a.actors)
        && filter.time_start.is_none_or(|t| a.timestamp >= t)
        && filter.time_end.is_none_or(|t| a.timestamp <= t)
}

pub fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    since.as_millis() as i64
}

fn text(value: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(value.to_owned())),
    }
}

fn rfc3339_in(seconds: i64) -> String {
    let at = time::OffsetDateTime::now_utc() + time::Duration::seconds(seconds);
    qntx_python_plugin::time::rfc3339(at)
}

/// The state every service shares.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Store>>);

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, Store> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a request, waits the configured delay, and says whether its token is right.
    async fn receive<M: Message>(&self, method: &'static str, token: &str, message: &M) -> bool {
        self.receive_bytes(method, token, message.encoded_len())
            .await
    }

    async fn receive_bytes(&self, method: &'static str, token: &str, bytes: usize) -> bool {
        let (valid, delay) = {
            let mut store = self.lock();
            store.received.push(Received {
                method,
                token: token.to_owned(),
                bytes,
            });
            (store.token == token, store.delay)
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        valid
    }

    /// The real host would die here.
    fn crash(&self, method: &str, missing: &str) -> Status {
        let what = format!("{method}: unset {missing}");
        self.lock().crashes.push(what.clone());
        Status::internal(format!("host crash: {what}"))
    }
}

pub struct FakeHost {
    shared: Shared,
    endpoints: Endpoints,
    stop: CancellationToken,
    servers: Vec<JoinHandle<()>>,
}

impl FakeHost {
    /// Starts the four services, each on its own port.
    pub async fn start(token: &str) -> FakeHost {
        let shared = Shared::default();
        shared.lock().token = token.to_owned();
        let stop = CancellationToken::new();
        let mut servers = Vec::new();
        let mut addresses = Vec::new();
        for routes in [
            Routes::new(AtsStoreServiceServer::new(Ats(shared.clone()))),
            Routes::new(QueueServiceServer::new(Queue(shared.clone()))),
            Routes::new(ScheduleServiceServer::new(Schedules(shared.clone()))),
            Routes::new(FetchServiceServer::new(Fetch(shared.clone()))),
        ] {
            let (address, server) = serve(routes, stop.clone()).await;
            addresses.push(address);
            servers.push(server);
        }
        let [ats_store, queue, schedule, fetch] = <[String; 4]>::try_from(addresses).expect("4");
        let endpoints = Endpoints {
            ats_store,
            queue,
            schedule,
            fetch,
            auth_token: token.into(),
        };
        FakeHost {
            shared,
            endpoints,
            stop,
            servers,
        }
    }

    /// The four `host:port` endpoints and the token the host was started with.
    pub fn endpoints(&self) -> Endpoints {
        self.endpoints.clone()
    }

    /// Makes the host expect another token from now on (as after a host restart).
    pub fn set_token(&self, token: &str) {
        self.shared.lock().token = token.to_owned();
    }

    /// Delays every answer (to exercise deadlines).
    pub fn set_delay(&self, delay: Duration) {
        self.shared.lock().delay = delay;
    }

    /// Holds the answer to the next `GetAttestationsStream` call: the store is read when the
    /// call arrives, as always, but nothing is sent until [`HeldStream::release`]. So a test can
    /// make a catalog read that started earlier end later.
    pub fn hold_next_stream(&self) -> HeldStream {
        let (arrived_tx, arrived) = tokio::sync::oneshot::channel();
        let (release, release_rx) = tokio::sync::oneshot::channel();
        self.shared.lock().held_stream = Some((arrived_tx, release_rx));
        HeldStream {
            arrived: Some(arrived),
            release,
        }
    }

    /// Stores an attestation as given (actors included). An empty id, `created_at` or
    /// `timestamp` is filled in (`AS…`, now, `created_at`). Returns the id.
    pub fn insert(&self, attestation: Attestation) -> String {
        self.insert_many(vec![attestation]).remove(0)
    }

    /// Like [`FakeHost::insert`] for many, under one lock.
    pub fn insert_many(&self, attestations: Vec<Attestation>) -> Vec<String> {
        let now = now_ms();
        let mut store = self.shared.lock();
        attestations
            .into_iter()
            .map(|mut a| {
                if a.id.is_empty() {
                    a.id = format!("AS{:010X}", store.next());
                }
                if a.created_at == 0 {
                    a.created_at = now;
                }
                if a.timestamp == 0 {
                    a.timestamp = a.created_at;
                }
                let id = a.id.clone();
                store.push(a);
                id
            })
            .collect()
    }

    /// Every stored attestation, newest first.
    pub fn attestations(&self) -> Vec<Attestation> {
        self.shared.lock().select(&AttestationFilter::default())
    }

    pub fn jobs(&self) -> Vec<Job> {
        self.shared.lock().jobs.clone()
    }

    pub fn schedules(&self) -> Vec<ScheduledJob> {
        self.shared.lock().schedules.clone()
    }

    /// What `Fetch` answers for `url` (otherwise 200 and `fake body of <url>`).
    pub fn set_fetch_reply(&self, url: &str, status: i32, body: &str) {
        self.shared
            .lock()
            .fetch_replies
            .insert(url.to_owned(), (status, body.to_owned()));
    }

    pub fn requests(&self) -> Vec<Received> {
        self.shared.lock().received.clone()
    }

    /// Requests received by one method (e.g. `"GetAttestations"`).
    pub fn requests_to(&self, method: &str) -> Vec<Received> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == method)
            .collect()
    }

    /// Requests that would have killed the real host.
    pub fn crashes(&self) -> Vec<String> {
        self.shared.lock().crashes.clone()
    }

    pub fn assert_no_crash(&self) {
        let crashes = self.crashes();
        assert!(
            crashes.is_empty(),
            "requests that crash the real host: {crashes:?}"
        );
    }
}

/// A `GetAttestationsStream` answer held back (see [`FakeHost::hold_next_stream`]).
pub struct HeldStream {
    arrived: Option<tokio::sync::oneshot::Receiver<()>>,
    release: tokio::sync::oneshot::Sender<()>,
}

impl HeldStream {
    /// Waits until the held call has arrived and its snapshot of the store is taken.
    pub async fn arrived(&mut self) {
        if let Some(arrived) = self.arrived.take() {
            tokio::time::timeout(Duration::from_secs(10), arrived)
                .await
                .expect("the held stream call arrives within 10 s")
                .expect("the fake host is running");
        }
    }

    /// Sends the held answer.
    pub fn release(self) {
        let _ = self.release.send(());
    }
}

/// Serves `routes` on a fresh 127.0.0.1 port until `stop`; returns the address.
async fn serve(routes: Routes, stop: CancellationToken) -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a port");
    let address = listener.local_addr().expect("local address").to_string();
    let server = tokio::spawn(async move {
        let router = tonic::transport::Server::builder().add_routes(routes);
        let incoming = TcpListenerStream::new(listener);
        if let Err(err) = router
            .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
            .await
        {
            eprintln!("fake host server failed: {err}");
        }
    });
    (address, server)
}

impl Drop for FakeHost {
    fn drop(&mut self) {
        self.stop.cancel();
        for server in &self.servers {
            server.abort();
        }
    }
}
