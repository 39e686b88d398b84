//! The handler catalog: saved handler scripts (attestations in the host's store) turned into
//! job handlers, watchers and schedules.
//!
//! Reading is done in three steps, each in its own module: `discovery` picks the newest version
//! of each handler; a worker reads the decorators with `ast` (`Pool::declare`, nothing runs);
//! `naming` gives every handler and function its raw name. `schedules` reconciles the host's
//! schedules when the catalog changes after Initialize.

pub mod discovery;
mod live;
pub mod naming;
pub mod schedules;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Deserialize;

use crate::environments::{Environments, RouteError};
use crate::host::{HostError, HostLink};
use crate::ipc::Script;
use crate::pool::PoolError;
use crate::proto::{AttestationFilter, ScheduleInfo, WatcherRegistration};
use discovery::Version;
pub use live::{LiveCatalog, Purpose, Refreshed};

/// What a script declares, as `qntx_handlers.declarations` reports it.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Declarations {
    pub entry: Option<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub watchers: Vec<WatchDeclaration>,
    #[serde(default)]
    pub schedules: Vec<ScheduleDeclaration>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct WatchDeclaration {
    pub function: String,
    pub subjects: Vec<String>,
    pub predicates: Vec<String>,
    pub contexts: Vec<String>,
    pub actors: Vec<String>,
    pub max_fires_per_second: i32,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ScheduleDeclaration {
    pub function: String,
    pub interval_seconds: i32,
    pub description: String,
    pub enabled: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Handler {
    pub attestation_id: String,
    pub code: String,
    pub declarations: Declarations,
    /// The environment its `# py:<name>` line routes it to (else the default); its jobs,
    /// watchers and schedules run there.
    pub environment: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read the handler attestations: {0}")]
    Host(#[from] HostError),
    #[error("cannot read the handlers' declarations: {0}")]
    Declare(#[from] PoolError),
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
}

/// A catalog read must end well within the host's 10 s deadline for Initialize, and a reload
/// must not hold up a later Initialize for longer.
pub const DISCOVERY_BUDGET: Duration = Duration::from_secs(8);

#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub handlers: BTreeMap<String, Handler>,
    /// Handlers that cannot run, with the reason (their jobs fail with it).
    pub faulted: BTreeMap<String, Fault>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub reason: String,
    /// The version found faulty in this read; None when the store already marked it faulted.
    pub attestation_id: Option<String>,
}

/// A catalog just read, and the faults found in this read that the store does not know yet.
pub struct Discovered {
    pub catalog: Catalog,
    pub new_faults: Vec<(String, String)>,
}

/// The environment a handler's `# py:<name>` line routes it to. An unknown name or two names
/// fault the handler (its every run would fail); an environment that exists but cannot start
/// does not: that is the environment's fault, reported in Health, and fixed without a re-save.
fn environment_of(environments: &Environments, code: &str) -> Result<String, String> {
    match environments.route(code, None) {
        Ok(environment) => Ok(environment.name.clone()),
        Err(RouteError::Refused(_)) => Ok(crate::environments::directive::find(code)
            .ok()
            .flatten()
            .map_or_else(
                || environments.default_name().to_owned(),
                |d| d.name.to_owned(),
            )),
        Err(error) => Err(error.to_string()),
    }
}

/// The filter that finds this plugin's handler attestations.
pub fn handler_filter(plugin: &str) -> AttestationFilter {
    AttestationFilter {
        predicates: vec![discovery::HANDLER.into(), discovery::FAULTED.into()],
        contexts: vec![plugin.into()],
        ..Default::default()
    }
}

impl Catalog {
    /// Reads every handler of `plugin` (streamed: no cap on their number).
    pub async fn discover(
        plugin: &str,
        link: &HostLink,
        environments: &Environments,
    ) -> Result<Discovered, CatalogError> {
        tokio::time::timeout(DISCOVERY_BUDGET, Self::read(plugin, link, environments))
            .await
            .map_err(|_| CatalogError::Timeout(DISCOVERY_BUDGET))?
    }

    async fn read(
        plugin: &str,
        link: &HostLink,
        environments: &Environments,
    ) -> Result<Discovered, CatalogError> {
        // Also when the host has no attestation store (an empty endpoint): declaring nothing
        // then would make the host prune every schedule and watcher of this plugin.
        let attestations = link.stream_all(handler_filter(plugin)).await?;
        let mut catalog = Catalog::default();
        let mut scripts = Vec::new();
        let mut ids = Vec::new();
        for (key, version) in discovery::newest_versions(attestations) {
            match version {
                Version::Code {
                    attestation_id,
                    code,
                } => {
                    ids.push(attestation_id);
                    scripts.push(Script { key, code });
                }
                Version::Faulted { reason } => {
                    catalog.faulted.insert(
                        key,
                        Fault {
                            reason,
                            attestation_id: None,
                        },
                    );
                }
                Version::NoCode => {}
            }
        }
        let mut new_faults = Vec::new();
        let declared = if scripts.is_empty() {
            Vec::new()
        } else {
            let declaring = environments.any_usable().ok_or_else(|| {
                PoolError::WorkerUnavailable("no environment can start a worker".into())
            })?;
            declaring.pool.declare(scripts.clone()).await?
        };
        for ((script, attestation_id), answer) in scripts.into_iter().zip(ids).zip(declared) {
            let parsed = answer
                .and_then(|json| {
                    serde_json::from_str::<Declarations>(&json)
                        .map_err(|e| format!("unreadable declarations: {e}"))
                })
                .and_then(|declarations| {
                    Ok((declarations, environment_of(environments, &script.code)?))
                });
            match parsed {
                Ok((declarations, environment)) => {
                    catalog.handlers.insert(
                        script.key,
                        Handler {
                            attestation_id,
                            code: script.code,
                            declarations,
                            environment,
                        },
                    );
                }
                Err(reason) => {
                    new_faults.push((script.key.clone(), reason.clone()));
                    catalog.faulted.insert(
                        script.key,
                        Fault {
                            reason,
                            attestation_id: Some(attestation_id),
                        },
                    );
                }
            }
        }
        new_faults.extend(catalog.fault_builtin_collisions(plugin));
        Ok(Discovered {
            catalog,
            new_faults,
        })
    }

    /// A subject named like a built-in would announce the same name twice (which crashes the
    /// host): such a handler is faulted instead.
    fn fault_builtin_collisions(&mut self, plugin: &str) -> Vec<(String, String)> {
        let mut faults = Vec::new();
        for builtin in [naming::SCRIPT, naming::RELOAD] {
            if let Some(handler) = self.handlers.remove(builtin) {
                let reason = format!(
                    "the handler name '{builtin}' is taken by the built-in {}; save it under another name",
                    naming::builtin(plugin, builtin)
                );
                faults.push((builtin.to_owned(), reason.clone()));
                let fault = Fault {
                    reason,
                    attestation_id: Some(handler.attestation_id),
                };
                self.faulted.insert(builtin.to_owned(), fault);
            }
        }
        faults
    }

    pub fn len(&self) -> usize {
        self.handlers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.handlers.is_empty()
    }

    /// Raw handler names to announce: built-ins first, then each handler and each of its
    /// watcher and schedule functions. Never a duplicate.
    pub fn handler_names(&self, plugin: &str) -> Vec<String> {
        let mut seen = BTreeSet::new();
        let mut names = Vec::new();
        let mut add = |name: String| {
            if seen.insert(name.clone()) {
                names.push(name);
            }
        };
        add(naming::builtin(plugin, naming::SCRIPT));
        add(naming::builtin(plugin, naming::RELOAD));
        for (key, handler) in &self.handlers {
            add(naming::handler(plugin, key));
            let functions = handler.declarations.watchers.iter().map(|w| &w.function);
            for function in
                functions.chain(handler.declarations.schedules.iter().map(|s| &s.function))
            {
                add(naming::function(plugin, key, function));
            }
        }
        names
    }

    /// The plugin's own reload watcher, then one watcher per `@watch`.
    pub fn watchers(&self, plugin: &str) -> Vec<WatcherRegistration> {
        let mut watchers = vec![WatcherRegistration {
            id: naming::reload_watcher_id(plugin),
            handler_name: naming::builtin(plugin, naming::RELOAD),
            predicates: vec![discovery::HANDLER.into()],
            contexts: vec![plugin.into()],
            max_fires_per_second: 1,
            ..Default::default()
        }];
        let mut ids = BTreeSet::new();
        for (key, handler) in &self.handlers {
            for watch in &handler.declarations.watchers {
                // Two @watch on one function get distinct ids.
                let base = format!("{key}-{}", watch.function);
                let id = (1..)
                    .map(|n| {
                        if n == 1 {
                            base.clone()
                        } else {
                            format!("{base}-{n}")
                        }
                    })
                    .find(|id| ids.insert(id.clone()));
                watchers.push(WatcherRegistration {
                    id: id.unwrap_or(base),
                    handler_name: naming::function(plugin, key, &watch.function),
                    subjects: watch.subjects.clone(),
                    predicates: watch.predicates.clone(),
                    contexts: watch.contexts.clone(),
                    actors: watch.actors.clone(),
                    max_fires_per_second: watch.max_fires_per_second,
                });
            }
        }
        watchers
    }

    /// One schedule per `@schedule`, named after its function.
    pub fn schedules(&self, plugin: &str) -> Vec<ScheduleInfo> {
        self.handlers
            .iter()
            .flat_map(|(key, handler)| {
                handler
                    .declarations
                    .schedules
                    .iter()
                    .map(move |schedule| ScheduleInfo {
                        handler_name: naming::function(plugin, key, &schedule.function),
                        interval_seconds: schedule.interval_seconds,
                        enabled_by_default: schedule.enabled,
                        description: schedule.description.clone(),
                        ats_code: String::new(),
                    })
            })
            .collect()
    }
}
