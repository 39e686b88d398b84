//! The gRPC services and the state they share.

mod deadline;
pub mod domain;
pub mod execution;
pub mod http;
mod jobs;
pub mod python;

use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::config::Settings;
use crate::pool::{Pool, PoolError, RunSpec};
use execution::Execution;

/// What Initialize stored: where the host's services are, and the token for them.
#[derive(Debug, Clone, Default)]
pub struct HostEndpoints {
    pub ats_store: String,
    pub queue: String,
    pub schedule: String,
    pub fetch: String,
    pub auth_token: String,
}

/// Packages the variant declares and how their import went (for Health).
#[derive(Debug, Clone, Default)]
pub struct EnvironmentReport {
    pub packages: usize,
    pub failures: Vec<String>,
}

pub struct Plugin {
    pub name: String,
    pub started: Instant,
    pub pool: Arc<Pool>,
    pub settings: RwLock<Settings>,
    pub host: RwLock<Option<HostEndpoints>>,
    pub environment: RwLock<Option<EnvironmentReport>>,
    pub initialized: std::sync::atomic::AtomicBool,
    pub shutdown: CancellationToken,
}

/// A program and where it came from, before limits are applied.
pub struct Program {
    pub code: String,
    pub filename: String,
    pub upstream_json: Option<String>,
    pub glyph_id: String,
}

impl Plugin {
    pub fn new(name: String, pool: Arc<Pool>, shutdown: CancellationToken) -> Arc<Self> {
        Arc::new(Self {
            name,
            started: Instant::now(),
            pool,
            settings: RwLock::new(Settings::default()),
            host: RwLock::new(None),
            environment: RwLock::new(None),
            initialized: std::sync::atomic::AtomicBool::new(false),
            shutdown,
        })
    }

    pub fn settings(&self) -> Settings {
        self.settings
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Runs a program under the current settings, with `timeout` or the configured default.
    pub async fn execute(
        &self,
        program: Program,
        timeout: Option<Duration>,
    ) -> Result<Execution, PoolError> {
        let settings = self.settings();
        let spec = RunSpec {
            code: program.code,
            filename: program.filename,
            upstream_json: program.upstream_json,
            glyph_id: program.glyph_id,
            max_output_bytes: settings.max_output_bytes,
            timeout: timeout.unwrap_or(settings.timeout),
            memory_limit_bytes: settings.memory_limit_bytes,
            python_paths: settings.python_paths.clone(),
        };
        let started = Instant::now();
        let outcome = self.pool.run(spec).await?;
        Ok(Execution::from_outcome(
            outcome,
            started.elapsed(),
            settings.max_output_bytes,
        ))
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
