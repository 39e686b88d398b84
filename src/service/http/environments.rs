//! What the plugin's environments are: `GET /environments`, `GET /version`, and the names the
//! glyph offers. Everything the routes know about environments comes through `statuses`.

use serde_json::json;

use super::Reply;
use crate::identity::VERSION;
use crate::service::Plugin;

/// One environment as the routes and the glyph see it.
pub type Status = crate::environments::EnvironmentStatus;

/// Every environment the plugin serves.
pub fn statuses(plugin: &Plugin) -> Vec<Status> {
    plugin.environments.statuses()
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
        .unwrap_or_else(|| plugin.environments.embedded_python().to_owned());
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
