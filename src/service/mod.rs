//! The gRPC services and the state they share.

mod deadline;
pub mod domain;
pub mod execution;
mod handler_jobs;
pub mod http;
mod jobs;
pub mod python;

use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::catalog::{Catalog, LiveCatalog};
use crate::config::Settings;
use crate::environments::{Environments, RouteError};
use crate::host::HostLink;
use crate::ipc::{HostAccess, Program};
use crate::pool::{Limits, PoolError, RunOutcome};
use deadline::CallDeadline;
use execution::{seconds, Execution};

pub struct Plugin {
    pub name: String,
    pub started: Instant,
    pub environments: Arc<Environments>,
    pub settings: RwLock<Settings>,
    /// The link to the host's services, from the latest Initialize.
    pub host: RwLock<Option<HostLink>>,
    /// The handler catalog in effect; Initialize and reloads change it only through
    /// `LiveCatalog::refresh`.
    pub catalog: LiveCatalog,
    pub shutdown: CancellationToken,
}

impl Plugin {
    pub fn new(
        name: String,
        environments: Arc<Environments>,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            name,
            started: Instant::now(),
            environments,
            settings: RwLock::new(Settings::default()),
            host: RwLock::new(None),
            catalog: LiveCatalog::default(),
            shutdown,
        })
    }

    pub fn settings(&self) -> Settings {
        self.settings
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn host(&self) -> Option<HostLink> {
        self.host
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.current()
    }

    /// What a worker needs to reach the host for the `qntx` API.
    fn host_access(&self) -> Option<HostAccess> {
        let link = self.host()?;
        let endpoints = link.endpoints();
        Some(HostAccess {
            ats_store: endpoints.ats_store.clone(),
            queue: endpoints.queue.clone(),
            schedule: endpoints.schedule.clone(),
            fetch: endpoints.fetch.clone(),
            auth_token: endpoints.auth_token.clone(),
            plugin_name: self.name.clone(),
            plugin_version: crate::identity::VERSION.into(),
        })
    }

    /// Runs a program in the environment it is routed to, under the current settings, with
    /// `timeout` or the configured default. `env` is the environment the caller asked for (an
    /// HTTP body's `env`, a glyph's picker); the program's own `# py:<name>` line must agree
    /// with it. A program that cannot be routed (an unknown name, two directives) fails as a
    /// run, with the reason; an environment that cannot start is unavailable, like a pool
    /// without workers.
    pub async fn execute(
        &self,
        program: Program,
        env: Option<&str>,
        timeout: Option<Duration>,
    ) -> Result<Execution, PoolError> {
        self.execute_within(program, env, timeout, None).await
    }

    /// [`Plugin::execute`] for a caller with a gRPC deadline: the run's limit is `timeout` or
    /// what the deadline leaves it, whichever is less (the deadline alone replaces the default),
    /// and the caller is answered by the deadline whatever the run is doing (see deadline.rs).
    pub async fn execute_within(
        &self,
        mut program: Program,
        env: Option<&str>,
        timeout: Option<Duration>,
        deadline: Option<CallDeadline>,
    ) -> Result<Execution, PoolError> {
        let environment = match self.environments.route(&program.code, env) {
            Ok(environment) => environment,
            Err(RouteError::Refused(reason)) => return Err(PoolError::WorkerUnavailable(reason)),
            Err(error) => return Ok(Execution::failed(error.to_string())),
        };
        let settings = self.settings();
        let (limit, binding) = match (timeout, deadline.map(|d| (d, d.run_limit()))) {
            (Some(timeout), Some((deadline, left))) if left < timeout => (left, Some(deadline)),
            (Some(timeout), _) => (timeout, None),
            (None, Some((deadline, left))) => (left, Some(deadline)),
            (None, None) => (settings.timeout, None),
        };
        program.python_paths = settings.python_paths.clone();
        program.max_output_bytes = settings.max_output_bytes;
        program.host = self.host_access();
        let limits = Limits {
            timeout: limit,
            stop_by: deadline.map(|d| d.stop_by()),
            memory_limit_bytes: settings.memory_limit_bytes,
            max_processes: settings.max_processes,
        };
        let started = Instant::now();
        let run = environment.pool.run(program, limits);
        let outcome = match deadline {
            None => run.await?,
            // Dropping the run cancels it: a queued one never starts, a running one is stopped.
            Some(deadline) => match tokio::time::timeout_at(deadline.answer_by().into(), run).await
            {
                Ok(outcome) => outcome?,
                Err(_) => {
                    let mut execution = Execution::failed(format!(
                        "no answer within the caller's gRPC deadline of {}: the run was still \
                         waiting for a worker, or had not stopped after its interrupt; it was \
                         cancelled",
                        seconds(deadline.within())
                    ));
                    execution.duration_ms = started.elapsed().as_millis() as u64;
                    return Ok(execution);
                }
            },
        };
        environment.pool.check_packages_once();
        let timed_out = matches!(outcome, RunOutcome::TimedOut { .. });
        let mut execution =
            Execution::from_outcome(outcome, started.elapsed(), settings.max_output_bytes);
        if let (true, Some(deadline), Some(error)) = (timed_out, binding, &mut execution.error) {
            error.push_str(&format!(
                " (the limit is the caller's gRPC deadline of {}, less {} to stop the program \
                 and answer in time)",
                seconds(deadline.within()),
                seconds(deadline.margin())
            ));
        }
        Ok(execution)
    }
}

impl From<PoolError> for Status {
    fn from(error: PoolError) -> Self {
        match error {
            PoolError::QueueFull { .. } => Status::resource_exhausted(error.to_string()),
            PoolError::ShuttingDown | PoolError::WorkerUnavailable(_) => {
                Status::unavailable(error.to_string())
            }
        }
    }
}

/// `upstream` given inside a JSON body (a job payload, an HTTP request): already valid JSON,
/// so it only needs its text; `null` means no upstream.
pub fn upstream_from_value(value: Option<serde_json::Value>) -> Option<String> {
    value.filter(|v| !v.is_null()).map(|v| v.to_string())
}

/// Checks a program's `upstream` JSON; the error names what is wrong.
pub fn parse_upstream(bytes: &[u8], field: &str) -> Result<Option<String>, String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let text = std::str::from_utf8(bytes).map_err(|e| format!("{field} is not UTF-8: {e}"))?;
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map_err(|e| format!("{field} is not valid JSON: {e}"))?;
    Ok(Some(text.to_owned()))
}
