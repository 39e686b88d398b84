//! Keeping the host's schedules in step with the catalog after Initialize (hot reload).
//!
//! At Initialize the host creates and prunes schedules itself from the declarations. After a
//! reload the plugin does it: a new schedule is created, one whose interval changed is
//! replaced, one whose handler or decorator is gone is deleted. Unchanged schedules are not
//! touched, so a schedule a user paused stays paused and is never duplicated.
//!
//! The host only tells a schedule's id to whoever creates it (`CreateSchedule` returns the id
//! of an existing *active* schedule of that name). Ids learned that way are remembered; for a
//! schedule the host created at boot, `CreateSchedule` is how its id is learned.

use std::collections::HashMap;

use super::naming;
use crate::host::{HostError, HostLink};
use crate::proto::ScheduleInfo;

/// What a reconciliation did, for the reload's answer and the log.
#[derive(Debug, Default, serde::Serialize)]
pub struct Changes {
    pub created: Vec<String>,
    pub replaced: Vec<String>,
    pub deleted: Vec<String>,
    pub errors: Vec<String>,
}

fn metadata(plugin: &str, description: &str) -> HashMap<String, String> {
    HashMap::from([
        ("plugin".to_owned(), plugin.to_owned()),
        ("description".to_owned(), description.to_owned()),
    ])
}

/// Creates a schedule as the host does for a declaration: paused when declared disabled.
async fn create(
    link: &HostLink,
    plugin: &str,
    schedule: &ScheduleInfo,
) -> Result<String, HostError> {
    let name = naming::host_key(plugin, &schedule.handler_name);
    let metadata = metadata(plugin, &schedule.description);
    let id = link
        .create_schedule(&name, schedule.interval_seconds, Vec::new(), metadata)
        .await?;
    if !schedule.enabled_by_default {
        link.pause_schedule(&id).await?;
    }
    Ok(id)
}

/// Brings the host from `old` to `new` declarations; `ids` maps raw handler names to the
/// schedule ids known so far and is kept up to date.
pub async fn reconcile(
    link: &HostLink,
    plugin: &str,
    old: &[ScheduleInfo],
    new: &[ScheduleInfo],
    ids: &mut HashMap<String, String>,
) -> Changes {
    let mut changes = Changes::default();
    let old_by_name: HashMap<&str, &ScheduleInfo> =
        old.iter().map(|s| (s.handler_name.as_str(), s)).collect();
    let new_by_name: HashMap<&str, &ScheduleInfo> =
        new.iter().map(|s| (s.handler_name.as_str(), s)).collect();

    for schedule in new {
        let name = schedule.handler_name.clone();
        let outcome = match old_by_name.get(name.as_str()) {
            None => create(link, plugin, schedule).await.map(|id| {
                ids.insert(name.clone(), id);
                changes.created.push(name.clone());
            }),
            Some(previous) if previous.interval_seconds != schedule.interval_seconds => {
                replace(link, plugin, schedule, ids)
                    .await
                    .map(|()| changes.replaced.push(name.clone()))
            }
            Some(_) => Ok(()),
        };
        if let Err(error) = outcome {
            changes.errors.push(format!("{name}: {error}"));
        }
    }
    for schedule in old
        .iter()
        .filter(|s| !new_by_name.contains_key(s.handler_name.as_str()))
    {
        let name = schedule.handler_name.clone();
        let id = match ids.remove(&name) {
            Some(id) => Ok(id),
            None => create(link, plugin, schedule).await,
        };
        match id {
            Ok(id) => match link.delete_schedule(&id).await {
                Ok(()) => changes.deleted.push(name),
                Err(error) => changes.errors.push(format!("{name}: {error}")),
            },
            Err(error) => changes.errors.push(format!("{name}: {error}")),
        }
    }
    changes
}

/// A changed interval: the host keeps an existing schedule's interval on create, so the old
/// schedule is deleted and a new one created.
async fn replace(
    link: &HostLink,
    plugin: &str,
    schedule: &ScheduleInfo,
    ids: &mut HashMap<String, String>,
) -> Result<(), HostError> {
    let id = match ids.get(&schedule.handler_name) {
        Some(id) => id.clone(),
        None => create(link, plugin, schedule).await?,
    };
    let current = link.get_schedule(&id).await?;
    if current.interval_seconds != schedule.interval_seconds {
        link.delete_schedule(&id).await?;
        let id = create(link, plugin, schedule).await?;
        ids.insert(schedule.handler_name.clone(), id);
    } else {
        ids.insert(schedule.handler_name.clone(), id);
    }
    Ok(())
}
