//! `QueueService`: handing a job to the host's Pulse queue (protocol §2.3, §2.6).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{check, request, within, HostError, HostLink, Service, MAX_REPLY_BYTES};
use crate::proto::queue_service_client::QueueServiceClient;
use crate::proto::{EnqueueRequest, Job, Progress};

const ENQUEUE: &str = "Enqueue";

impl HostLink {
    /// Queues a job for the handler registered under `handler_key` (the host's registry key,
    /// `<plugin>/<raw>` to reach a plugin handler). The host does not make job ids, so we do
    /// (`JB…`); the job is `queued`, has an empty progress (the host dereferences it) and its
    /// creation time in Unix seconds. Returns the job id.
    pub async fn enqueue(
        &self,
        handler_key: &str,
        payload: Vec<u8>,
        source: &str,
    ) -> Result<String, HostError> {
        if handler_key.is_empty() {
            return Err(HostError::Invalid {
                call: ENQUEUE,
                reason: "the handler name is empty".into(),
            });
        }
        let channel = self.channel(Service::Queue, ENQUEUE)?;
        let mut client =
            QueueServiceClient::new(channel).max_decoding_message_size(MAX_REPLY_BYTES);
        let id = new_job_id();
        let job = Job {
            id: id.clone(),
            handler_name: handler_key.to_owned(),
            payload,
            source: source.to_owned(),
            status: "queued".into(),
            progress: Some(Progress::default()),
            created_at: unix_now().as_secs().try_into().unwrap_or(i64::MAX),
            ..Job::default()
        };
        let message = EnqueueRequest {
            auth_token: self.token(),
            job: Some(job),
        };
        let pending = client.enqueue(request(ENQUEUE, message, Some(self.timeout))?);
        let reply = within(ENQUEUE, self.timeout, pending).await?.into_inner();
        check(ENQUEUE, reply.success, &reply.error)?;
        Ok(if reply.job_id.is_empty() {
            id
        } else {
            reply.job_id
        })
    }
}

fn unix_now() -> std::time::Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// `JB` followed by upper-case hex of the time in microseconds, the process id and a
/// per-process counter: unique across calls, processes and restarts without a random source.
fn new_job_id() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "JB{:X}{:06X}{:06X}",
        unix_now().as_micros(),
        std::process::id() & 0xFF_FFFF,
        count & 0xFF_FFFF
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_are_unique_and_marked() {
        let ids: std::collections::HashSet<String> = (0..10_000).map(|_| new_job_id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids.iter().all(|id| id.starts_with("JB")));
    }
}
