//! What Health and `GET /environments` say about one environment, read from counters only.

use std::sync::atomic::Ordering;

use serde::Serialize;

use super::Environment;
use crate::ipc::ModuleCheck;

#[derive(Debug, Clone, Serialize)]
pub struct EnvironmentStatus {
    pub name: String,
    pub default: bool,
    pub python_version: Option<String>,
    /// `cold` (no worker: starts on first use), `starting`, `ready` or `failed`.
    pub state: String,
    pub error: Option<String>,
    pub workers: usize,
    pub busy: usize,
    pub queued: usize,
    pub runs: u64,
    pub restarts: u64,
    /// Workers replaced because a run left state behind (see `worker/residue.rs`).
    pub refreshes: u64,
    pub path: Option<String>,
    /// The variant's packages, once the environment's first run has imported them.
    pub packages: Vec<ModuleCheck>,
    /// Built by Nix (in the store): packages are added in the variant file, not installed.
    pub read_only: bool,
}

impl EnvironmentStatus {
    pub(super) fn of(env: &Environment, default: bool, embedded: &str) -> Self {
        let stats = env.pool.stats();
        let workers = stats.workers_ready.load(Ordering::Relaxed);
        let starting = env.pool.starting();
        let error = env
            .refused
            .clone()
            .or_else(|| stats.start_error().filter(|_| workers == 0));
        let state = if error.is_some() {
            "failed"
        } else if workers > 0 {
            "ready"
        } else if starting > 0 {
            "starting"
        } else {
            "cold"
        };
        let python_version = match &env.refused {
            Some(_) => None,
            None => Some(
                stats
                    .python_version
                    .get()
                    .cloned()
                    .unwrap_or_else(|| embedded.to_owned()),
            ),
        };
        Self {
            name: env.name.clone(),
            default,
            python_version,
            state: state.into(),
            error,
            workers,
            busy: stats.workers_busy.load(Ordering::Relaxed),
            queued: env.pool.queue_depth(),
            runs: stats.runs_completed.load(Ordering::Relaxed),
            restarts: stats.worker_restarts.load(Ordering::Relaxed),
            refreshes: stats.worker_refreshes.load(Ordering::Relaxed),
            path: env.path.as_ref().map(|p| p.display().to_string()),
            packages: stats.packages().unwrap_or_default(),
            read_only: env
                .path
                .as_ref()
                .is_some_and(|p| p.starts_with("/nix/store")),
        }
    }

    /// Packages that did not import, as `module: error`.
    pub fn package_failures(&self) -> Vec<String> {
        self.packages
            .iter()
            .filter_map(|m| m.error.as_ref().map(|e| format!("{}: {e}", m.module)))
            .collect()
    }

    /// One line for Health: `ready: 2 workers (1 busy), 0 queued, 14 runs, 0 restarts`.
    pub fn summary(&self) -> String {
        let mut line = match (&self.error, self.state.as_str()) {
            (Some(error), _) => format!("failed: {error}"),
            (None, "cold") => "cold: no workers (they start on first use)".to_owned(),
            (None, state) => format!(
                "{state}: {} workers ({} busy), {} queued",
                self.workers, self.busy, self.queued
            ),
        };
        line.push_str(&format!("; {} runs, {} restarts", self.runs, self.restarts));
        if !self.packages.is_empty() {
            let failures = self.package_failures();
            line.push_str(&format!(
                "; {} packages, {}",
                self.packages.len(),
                if failures.is_empty() {
                    "all import".to_owned()
                } else {
                    format!("failing: {}", failures.join(", "))
                }
            ));
        }
        line
    }
}
