//! `_qntx_host`: the Rust module behind the `qntx` Python API.
//!
//! Programs call `_qntx_host.call(method, request_json)`. The call releases the GIL and runs on
//! a small Tokio runtime of its own, so a program waiting on the host stalls nothing else (its
//! own threads keep running, and the supervisor is never involved). The link to the host comes
//! with each run, so a new token from a later Initialize applies to the next run; connections
//! are kept while the endpoints stay the same.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

use pyo3::prelude::*;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::host::values::{attestation_to_json, to_struct};
use crate::host::{Endpoints, HostError as LinkError, HostLink};
use crate::ipc::HostAccess;
use crate::proto::{AttestationCommand, AttestationFilter, FetchRequest};

// Shown to users as `qntx.HostError`.
pyo3::create_exception!(qntx, HostError, pyo3::exceptions::PyRuntimeError);

struct Session {
    access: HostAccess,
    link: HostLink,
}

static SESSION: Mutex<Option<Session>> = Mutex::new(None);
static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
/// Threads of the runtime below that are alive: the worker's own, not a program's, so the
/// residue check leaves them out of its thread count.
static OWN_THREADS: AtomicUsize = AtomicUsize::new(0);

/// Threads the host link runs right now.
pub fn own_threads() -> usize {
    OWN_THREADS.load(Ordering::SeqCst)
}

fn runtime() -> Result<&'static tokio::runtime::Runtime, String> {
    RUNTIME
        .get_or_init(|| {
            // Created on the first host call only: an idle worker stays small.
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("host-link")
                .on_thread_start(|| {
                    OWN_THREADS.fetch_add(1, Ordering::SeqCst);
                })
                .on_thread_stop(|| {
                    OWN_THREADS.fetch_sub(1, Ordering::SeqCst);
                })
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the host link runtime: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Called before each run with what the supervisor knows of the host (None before Initialize).
pub fn set_access(access: Option<HostAccess>) {
    let mut session = SESSION.lock().unwrap_or_else(PoisonError::into_inner);
    match (access, session.as_ref()) {
        (None, _) => *session = None,
        (Some(access), Some(current)) if current.access == access => {}
        (Some(access), _) => {
            let Ok(runtime) = runtime() else {
                *session = None;
                return;
            };
            let _entered = runtime.enter();
            let link = HostLink::connect(&Endpoints {
                ats_store: access.ats_store.clone(),
                queue: access.queue.clone(),
                schedule: access.schedule.clone(),
                fetch: access.fetch.clone(),
                auth_token: access.auth_token.clone(),
            });
            *session = Some(Session { access, link });
        }
    }
}

/// Registers `_qntx_host` in `sys.modules`, before `qntx.py` imports it.
pub fn register(py: Python<'_>) -> PyResult<()> {
    let module = PyModule::new(py, "_qntx_host")?;
    module.add_function(wrap_pyfunction!(call, &module)?)?;
    module.add("HostError", py.get_type::<HostError>())?;
    py.import("sys")?
        .getattr("modules")?
        .set_item("_qntx_host", module)?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("{0}: no QNTX host connected: the plugin has not been initialized by a host (it may be running standalone, e.g. the --http page)")]
    NoHost(String),
    #[error("{method}: bad request: {reason}")]
    Request { method: String, reason: String },
    #[error("{0}")]
    Host(#[from] LinkError),
    #[error("{0}")]
    Runtime(String),
}

/// `call(method, request_json) -> response_json`; raises `HostError` naming the call.
#[pyfunction]
fn call(py: Python<'_>, method: &str, request: &str) -> PyResult<String> {
    let session = {
        let session = SESSION.lock().unwrap_or_else(PoisonError::into_inner);
        session.as_ref().map(|s| (s.access.clone(), s.link.clone()))
    };
    let method = method.to_owned();
    let request = request.to_owned();
    let outcome = py.detach(move || -> Result<Value, CallError> {
        let (access, link) = session.ok_or_else(|| CallError::NoHost(method.clone()))?;
        let runtime = runtime().map_err(CallError::Runtime)?;
        runtime.block_on(dispatch(&access, &link, &method, &request))
    });
    match outcome {
        Ok(value) => Ok(value.to_string()),
        Err(error) => Err(HostError::new_err(error.to_string())),
    }
}

fn parse<T: for<'de> Deserialize<'de>>(method: &str, request: &str) -> Result<T, CallError> {
    serde_json::from_str(request).map_err(|e| CallError::Request {
        method: method.into(),
        reason: e.to_string(),
    })
}

#[derive(Deserialize)]
struct Command {
    subjects: Vec<String>,
    predicates: Vec<String>,
    contexts: Vec<String>,
    actors: Vec<String>,
    attributes: Option<Value>,
    #[serde(default)]
    glyph_id: String,
}

impl Command {
    fn into_proto(
        self,
        method: &str,
        access: &HostAccess,
    ) -> Result<AttestationCommand, CallError> {
        let attributes = match self.attributes {
            None | Some(Value::Null) => None,
            Some(Value::Object(map)) => Some(to_struct(&map)),
            Some(_) => {
                return Err(CallError::Request {
                    method: method.into(),
                    reason: "attributes must be an object".into(),
                })
            }
        };
        // The host overwrites actors with the new id; glyph:<id> is sent for parity with the
        // existing plugin, for hosts that may keep it.
        let actors = if self.actors.is_empty() && !self.glyph_id.is_empty() {
            vec![format!("glyph:{}", self.glyph_id)]
        } else {
            self.actors
        };
        Ok(AttestationCommand {
            subjects: self.subjects,
            predicates: self.predicates,
            contexts: self.contexts,
            actors,
            timestamp: None,
            attributes,
            source: access.plugin_name.clone(),
            source_version: access.plugin_version.clone(),
        })
    }
}

#[derive(Deserialize)]
struct Filter {
    subjects: Vec<String>,
    predicates: Vec<String>,
    contexts: Vec<String>,
    actors: Vec<String>,
    limit: Option<i32>,
    time_start: Option<i64>,
    time_end: Option<i64>,
}

#[derive(Deserialize)]
struct Fetch {
    url: String,
    subjects: Vec<String>,
    predicate: String,
    context: String,
    fresh: bool,
}

#[derive(Deserialize)]
struct Enqueue {
    handler: String,
    payload: Value,
}

#[derive(Deserialize)]
struct CreateSchedule {
    handler: String,
    interval_seconds: i32,
    payload: Value,
    #[serde(default)]
    description: String,
}

#[derive(Deserialize)]
struct ScheduleId {
    schedule_id: String,
}

/// A handler name as the plugin announces it: `<plugin>.<handler>` unless already prefixed.
fn raw_handler_name(plugin: &str, handler: &str) -> String {
    if handler.starts_with(&format!("{plugin}.")) {
        handler.to_owned()
    } else {
        format!("{plugin}.{handler}")
    }
}

fn payload_bytes(payload: Value) -> Vec<u8> {
    if payload.is_null() {
        Vec::new()
    } else {
        payload.to_string().into_bytes()
    }
}

async fn dispatch(
    access: &HostAccess,
    link: &HostLink,
    method: &str,
    request: &str,
) -> Result<Value, CallError> {
    let plugin = access.plugin_name.as_str();
    Ok(match method {
        "attest" => {
            let command = parse::<Command>(method, request)?.into_proto(method, access)?;
            attestation_to_json(&link.attest(command).await?)
        }
        "attest_many" => {
            #[derive(Deserialize)]
            struct Many {
                commands: Vec<Command>,
            }
            let many: Many = parse(method, request)?;
            let commands = many
                .commands
                .into_iter()
                .map(|c| c.into_proto(method, access))
                .collect::<Result<Vec<_>, _>>()?;
            json!(link.attest_many(commands).await?)
        }
        "query" => {
            let filter: Filter = parse(method, request)?;
            let filter = AttestationFilter {
                subjects: filter.subjects,
                predicates: filter.predicates,
                contexts: filter.contexts,
                actors: filter.actors,
                time_start: filter.time_start,
                time_end: filter.time_end,
                limit: filter.limit.filter(|l| *l > 0),
            };
            // Without a limit the answer can be large: the stream has no message-size cap.
            let found = match filter.limit {
                Some(_) => link.query(filter).await?,
                None => link.stream_all(filter).await?,
            };
            Value::Array(found.iter().map(attestation_to_json).collect())
        }
        "fetch" => {
            let fetch: Fetch = parse(method, request)?;
            let reply = link
                .fetch(FetchRequest {
                    url: fetch.url,
                    subjects: fetch.subjects,
                    predicate: fetch.predicate,
                    context: fetch.context,
                    fresh: fetch.fresh,
                    source: plugin.to_owned(),
                    ..Default::default()
                })
                .await?;
            json!({"body": reply.body, "status_code": reply.status_code, "attestation_id": reply.attestation_id})
        }
        "enqueue" => {
            let enqueue: Enqueue = parse(method, request)?;
            let key = format!("{plugin}/{}", raw_handler_name(plugin, &enqueue.handler));
            json!(
                link.enqueue(&key, payload_bytes(enqueue.payload), plugin)
                    .await?
            )
        }
        "create_schedule" => {
            let create: CreateSchedule = parse(method, request)?;
            let name = format!("{plugin}/{}", raw_handler_name(plugin, &create.handler));
            let metadata = HashMap::from([
                ("plugin".to_owned(), plugin.to_owned()),
                ("description".to_owned(), create.description),
            ]);
            json!(
                link.create_schedule(
                    &name,
                    create.interval_seconds,
                    payload_bytes(create.payload),
                    metadata
                )
                .await?
            )
        }
        "pause_schedule" | "resume_schedule" | "delete_schedule" => {
            let ScheduleId { schedule_id } = parse(method, request)?;
            match method {
                "pause_schedule" => link.pause_schedule(&schedule_id).await?,
                "resume_schedule" => link.resume_schedule(&schedule_id).await?,
                _ => link.delete_schedule(&schedule_id).await?,
            }
            Value::Null
        }
        other => {
            return Err(CallError::Request {
                method: other.into(),
                reason: "no such host call".into(),
            })
        }
    })
}
