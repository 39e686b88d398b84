//! What the plugin's environments are: `GET /environments`, `GET /version`, and the names the
//! glyph offers. Everything the routes know about environments comes through `statuses`.

use serde::Serialize;
use serde_json::json;

use super::Reply;
use crate::identity::VERSION;
use crate::service::Plugin;

/// One environment as the routes and the glyph see it (the shape of the environments module's
/// `EnvironmentStatus`).
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub name: String,
    pub default: bool,
    pub python_version: Option<String>,
    /// "cold", "starting", "ready" or "failed".
    pub state: String,
    pub error: Option<String>,
    pub workers: usize,
    pub busy: usize,
    pub queued: usize,
    pub runs: u64,
    pub restarts: u64,
    pub path: Option<String>,
    pub packages: Vec<Package>,
    /// Built by Nix (under /nix/store): packages are added through the variant file.
    pub read_only: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Package {
    pub module: String,
    pub version: Option<String>,
    pub error: Option<String>,
}

/// Every environment the plugin serves, the default first.
pub fn statuses(plugin: &Plugin) -> Vec<Status> {
    use std::sync::atomic::Ordering;
    let stats = plugin.pool.stats();
    let ready = stats.workers_ready.load(Ordering::Relaxed);
    let start_error = stats.start_error().filter(|_| ready == 0);
    let state = match (&start_error, ready) {
        (Some(_), _) => "failed",
        (None, 0) => "starting",
        _ => "ready",
    };
    vec![Status {
        name: plugin.name.clone(),
        default: true,
        python_version: stats.python_version.get().cloned(),
        state: state.into(),
        error: start_error,
        workers: stats.workers_total.load(Ordering::Relaxed),
        busy: stats.workers_busy.load(Ordering::Relaxed),
        queued: plugin.pool.queue_depth(),
        runs: stats.runs_completed.load(Ordering::Relaxed),
        restarts: stats.worker_restarts.load(Ordering::Relaxed),
        path: None,
        packages: Vec::new(),
        read_only: false,
    }]
}

/// The environment a request names, else the default; an unknown name lists the known ones.
pub fn select(plugin: &Plugin, env: Option<&str>) -> Result<Status, Reply> {
    let all = statuses(plugin);
    let found = match env.map(str::trim).filter(|e| !e.is_empty()) {
        Some(name) => all.iter().find(|s| s.name == name),
        None => all.iter().find(|s| s.default).or(all.first()),
    };
    found.cloned().ok_or_else(|| {
        let names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
        Reply::error(
            400,
            format!(
                "unknown environment '{}': this plugin serves {}",
                env.unwrap_or_default(),
                names.join(", ")
            ),
        )
    })
}

/// `GET /environments`.
pub fn list(plugin: &Plugin) -> Reply {
    let environments = statuses(plugin);
    let default = environments
        .iter()
        .find(|s| s.default)
        .map(|s| s.name.clone());
    Reply::json(
        200,
        &json!({
            "plugin": plugin.name,
            "plugin_version": VERSION,
            "default": default,
            "environments": environments,
        }),
    )
}

/// `GET /version`: the default environment's Python (the full version string).
pub fn version(plugin: &Plugin) -> Reply {
    let python = statuses(plugin)
        .into_iter()
        .find(|s| s.default)
        .and_then(|s| s.python_version)
        .unwrap_or_default();
    Reply::json(
        200,
        &json!({ "python_version": python, "plugin_version": VERSION }),
    )
}

/// The environments' names, the default first.
pub fn names(plugin: &Plugin) -> Vec<String> {
    let mut all = statuses(plugin);
    all.sort_by_key(|s| !s.default);
    all.into_iter().map(|s| s.name).collect()
}
