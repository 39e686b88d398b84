//! The catalog in effect, and the one way to change it: [`LiveCatalog::refresh`].
//!
//! Initialize and the `__reload` job both read the store and both used to swap their result in
//! when their read ended, so two overlapping reads could end in the wrong order and the older
//! one win (a handler saved in between vanished again, and the reload "reconciled" its
//! schedules away). Here every read takes a ticket when it starts, and its result is applied
//! under one lock only if no read that started later has been applied already; a superseded
//! read changes nothing (no catalog, no schedules, no faults recorded) and its caller gets the
//! newer catalog. Reads themselves do not hold the lock, so an Initialize never waits behind a
//! slow reload's read (the host allows Initialize 10 s).
//!
//! A reload then brings the host's schedules from the catalog it replaced to the new one.
//! Those calls can be slow, so they run after the lock is released, each waiting for the
//! previous reload's to finish (a chain handed on under the lock): reconciliations happen one
//! at a time and in the order their catalogs were applied, while Initialize, which leaves
//! schedules to the host, never waits for them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use tokio::sync::oneshot;

use serde_json::json;

use super::{discovery, schedules, Catalog, CatalogError};
use crate::environments::Environments;
use crate::host::HostLink;
use crate::identity::VERSION;
use crate::proto::AttestationCommand;

/// Who asks for a refresh, which decides what follows a successful read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The host makes schedules and watchers from Initialize's answer itself.
    Initialize,
    /// After Initialize, the plugin keeps the host's schedules in step itself.
    Reload,
}

/// The outcome of a successful read.
#[derive(Debug)]
pub struct Refreshed {
    /// The catalog in effect now: this read's, or a newer one that superseded it.
    pub catalog: Arc<Catalog>,
    /// False when a read that started later had already been applied.
    pub applied: bool,
    /// What a reload changed in the host's schedules.
    pub schedules: Option<schedules::Changes>,
}

#[derive(Default)]
pub struct LiveCatalog {
    current: RwLock<Arc<Catalog>>,
    /// Tickets handed to reads, in the order they start.
    tickets: AtomicU64,
    /// The lock every swap happens under (never held across an await).
    applied: Mutex<Applied>,
    /// Schedule ids learned by reconciliations (one at a time, see the module doc).
    schedule_ids: tokio::sync::Mutex<HashMap<String, String>>,
    read_once: AtomicBool,
}

#[derive(Default)]
struct Applied {
    /// The ticket of the read in effect (0: none yet).
    ticket: u64,
    /// Closed when the last applied reload has reconciled its schedules.
    reconciled: Option<oneshot::Receiver<()>>,
}

impl LiveCatalog {
    /// The catalog in effect (never waits).
    pub fn current(&self) -> Arc<Catalog> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Whether any read has succeeded (until then, a failed read must fail Initialize:
    /// declaring nothing would make the host prune every schedule and watcher).
    pub fn has_been_read(&self) -> bool {
        self.read_once.load(Ordering::Acquire)
    }

    /// Reads the catalog and applies it unless a later read already was; on failure the
    /// catalog in effect stays. Handlers found faulty are recorded in the store (in the
    /// background) only when this read is applied.
    pub async fn refresh(
        &self,
        plugin: &str,
        link: &HostLink,
        environments: &Environments,
        purpose: Purpose,
    ) -> Result<Refreshed, CatalogError> {
        let ticket = self.tickets.fetch_add(1, Ordering::SeqCst) + 1;
        let discovered = Catalog::discover(plugin, link, environments).await?;

        let catalog = Arc::new(discovered.catalog);
        let (replaced, previous, _done) = {
            let mut applied = self.applied.lock().unwrap_or_else(PoisonError::into_inner);
            if applied.ticket > ticket {
                tracing::debug!(
                    ticket,
                    newer = applied.ticket,
                    "a catalog read finished after a later one; discarded"
                );
                return Ok(Refreshed {
                    catalog: self.current(),
                    applied: false,
                    schedules: None,
                });
            }
            let replaced = std::mem::replace(
                &mut *self.current.write().unwrap_or_else(PoisonError::into_inner),
                Arc::clone(&catalog),
            );
            applied.ticket = ticket;
            self.read_once.store(true, Ordering::Release);
            record_faults(link.clone(), plugin.to_owned(), discovered.new_faults);
            if purpose == Purpose::Initialize {
                return Ok(Refreshed {
                    catalog,
                    applied: true,
                    schedules: None,
                });
            }
            // Take the previous reload's place in the chain; `_done` closes ours when this
            // reload ends, however it ends.
            let (done, reconciled) = oneshot::channel::<()>();
            (replaced, applied.reconciled.replace(reconciled), done)
        };
        if let Some(previous) = previous {
            let _ = previous.await; // closed, not sent: only the order matters
        }
        let mut ids = self.schedule_ids.lock().await;
        let changes = schedules::reconcile(
            link,
            plugin,
            &replaced.schedules(plugin),
            &catalog.schedules(plugin),
            &mut ids,
        )
        .await;
        Ok(Refreshed {
            catalog,
            applied: true,
            schedules: Some(changes),
        })
    }
}

/// Writes `handler:faulted` for handlers whose declarations cannot be read, in the background:
/// a slow host must not hold up Initialize or a reload.
fn record_faults(link: HostLink, plugin: String, faults: Vec<(String, String)>) {
    if faults.is_empty() {
        return;
    }
    tokio::spawn(async move {
        for (key, reason) in faults {
            let attributes = json!({"plugin": plugin, "handler": key, "reason": reason});
            let command = AttestationCommand {
                subjects: vec![key.clone()],
                predicates: vec![discovery::FAULTED.into()],
                contexts: vec![plugin.clone()],
                attributes: attributes.as_object().map(crate::host::values::to_struct),
                source: plugin.clone(),
                source_version: VERSION.into(),
                ..Default::default()
            };
            match link.attest(command).await {
                Ok(_) => tracing::warn!(handler = %key, %reason, "handler faulted"),
                Err(error) => {
                    tracing::warn!(handler = %key, %error, "could not record the handler's fault")
                }
            }
        }
    });
}
