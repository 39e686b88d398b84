//! Jobs for saved handlers: finding the code to run (always the newest saved version) and
//! reloading the catalog.

use serde_json::json;

use super::jobs::{failure, succeeded};
use super::{parse_upstream, Plugin};
use crate::catalog::discovery::{self, Version};
use crate::catalog::{handler_filter, Catalog, Purpose, Refreshed};
use crate::host::HostLink;
use crate::ipc::{HandlerEntry, Program};
use crate::proto::{AttestationFilter, ExecuteJobResponse};

/// Attestations the freshness check reads to find a handler's newest version.
const FRESHNESS_WINDOW: i32 = 50;

/// The program for `<name>.<key>[@function]`.
///
/// A cheap freshness check asks the store for the handler's newest version, so an edit runs
/// at once even before the reload watcher fires, and a handler saved after Initialize is found.
/// If the host cannot answer, the catalog's copy runs.
pub async fn program(
    plugin: &Plugin,
    catalog: &Catalog,
    key: &str,
    function: Option<&str>,
    payload: &[u8],
) -> Result<Program, String> {
    let cached = catalog.handlers.get(key);
    let newest = match plugin.host() {
        Some(link) => newest_version(&link, &plugin.name, key).await,
        None => Err("the plugin has not been initialized".to_owned()),
    };
    let code = match newest {
        Ok(Some(Version::Code {
            attestation_id,
            code,
        })) => {
            // The very version the catalog found faulty: fail with its reason. A newer one runs.
            match catalog.faulted.get(key) {
                Some(fault) if fault.attestation_id.as_deref() == Some(attestation_id.as_str()) => {
                    return Err(faulted(key, &fault.reason))
                }
                _ => code,
            }
        }
        Ok(Some(Version::Faulted { reason })) => return Err(faulted(key, &reason)),
        Ok(Some(Version::NoCode)) => {
            return Err(format!(
                "handler '{key}' has no code: its newest version has no 'code' attribute"
            ))
        }
        Ok(None) => match cached {
            // Only possible when namesakes differing in case fill the window.
            Some(handler) => handler.code.clone(),
            None => {
                return Err(format!(
                "unknown handler '{key}': no handler attestation with that subject in context '{}'",
                plugin.name
            ))
            }
        },
        Err(reason) => match (cached, catalog.faulted.get(key)) {
            (Some(handler), _) => {
                tracing::debug!(%key, %reason, "freshness check failed; running the catalog's copy");
                handler.code.clone()
            }
            (None, Some(fault)) => return Err(faulted(key, &fault.reason)),
            (None, None) => {
                return Err(format!(
                    "unknown handler '{key}' (and the store could not be asked: {reason})"
                ))
            }
        },
    };
    let upstream_json = parse_upstream(payload, "the job payload")?;
    Ok(Program {
        upstream_json,
        handler: Some(HandlerEntry {
            key: key.to_owned(),
            function: function.map(str::to_owned),
        }),
        ..Program::new(code, format!("<handler {key}>"))
    })
}

fn faulted(key: &str, reason: &str) -> String {
    format!("handler '{key}' is faulted until it is saved again: {reason}")
}

async fn newest_version(
    link: &HostLink,
    plugin: &str,
    key: &str,
) -> Result<Option<Version>, String> {
    let filter = AttestationFilter {
        subjects: vec![key.to_owned()],
        // Newest first; a few, because the host's matching may ignore case and another
        // handler's versions can come first.
        limit: Some(FRESHNESS_WINDOW),
        ..handler_filter(plugin)
    };
    let found = link.query(filter).await.map_err(|e| e.to_string())?;

    Ok(found
        .iter()
        .find(|a| a.subjects.first().map(String::as_str) == Some(key))
        .map(discovery::version_of))
}

/// `<name>.__reload`, fired by the plugin's own watcher when a handler is saved.
pub async fn reload(plugin: &Plugin) -> ExecuteJobResponse {
    let Some(link) = plugin.host() else {
        return failure("reload: the plugin has not been initialized".into());
    };
    let refreshed = plugin
        .catalog
        .refresh(&plugin.name, &link, &plugin.environments, Purpose::Reload)
        .await;
    match refreshed {
        Ok(Refreshed {
            catalog,
            applied,
            schedules,
        }) => {
            tracing::info!(
                handlers = catalog.len(),
                faulted = catalog.faulted.len(),
                applied,
                ?schedules,
                "catalog reloaded"
            );
            let result = json!({
                "reloaded": catalog.len(),
                "faulted": catalog.faulted.keys().collect::<Vec<_>>(),
                "schedules": schedules.unwrap_or_default(),
                "superseded": !applied,
                "environments": catalog
                    .handlers
                    .iter()
                    .map(|(key, handler)| (key.clone(), handler.environment.clone()))
                    .collect::<std::collections::BTreeMap<_, _>>(),
            });
            let mut summary = format!(
                "reloaded {} handlers ({} faulted)",
                catalog.len(),
                catalog.faulted.len()
            );
            if !applied {
                summary.push_str("; a read that started later was already in effect");
            }
            succeeded(result, summary)
        }
        Err(error) => {
            tracing::warn!(%error, "reload failed; keeping the last good catalog");
            failure(format!(
                "reload failed, the last good catalog stays: {error}"
            ))
        }
    }
}
