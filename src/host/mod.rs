//! The host link: clients for the services the host runs for its plugins (protocol §2).
//!
//! [`HostLink::connect`] opens one lazily connected channel per service from the endpoints
//! Initialize gave; the channels are long-lived, reconnect on their own and are shared by every
//! clone of the link, so a call never dials anew. Every call:
//!
//! * carries the token in the request's `auth_token` field (never a header, §2.1);
//! * has a deadline ([`DEFAULT_TIMEOUT`], or [`HostLink::with_timeout`]), sent to the host as
//!   `grpc-timeout` and enforced here as well;
//! * always sets the sub-messages the host dereferences without a check (§2.6);
//! * stays under the host's 4 MiB receive limit (batches are split, a single oversized request
//!   is refused before sending);
//! * turns `success = false` into [`HostError::Refused`] with the host's text verbatim.
//!
//! One file per service family: `ats.rs`, `queue.rs`, `schedule.rs`, `fetch.rs`. Value and
//! attestation conversions for Python live in `values.rs`.

mod ats;
mod error;
mod fetch;
mod queue;
mod schedule;
mod token;
pub mod values;

use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};

pub use error::HostError;
pub use token::{AuthToken, REDACTED};

/// Deadline of every host call unless configured otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline of `Fetch`: the host's own HTTP timeout is 30 s, plus its rate-limit waits.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(40);
/// The host's servers keep gRPC's default receive limit: a larger request is rejected.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;
/// Replies are not capped on the host's side; ours accepts up to this much per message.
pub const MAX_REPLY_BYTES: usize = 64 * 1024 * 1024;
/// How long dialling a host service may take (part of the first call's deadline anyway).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the host's services are (`host:port`, no scheme; empty = the host did not start that
/// service) and the token every request carries. Filled from `InitializeRequest`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoints {
    pub ats_store: String,
    pub queue: String,
    pub schedule: String,
    pub fetch: String,
    pub auth_token: AuthToken,
}

/// The host service families, by the names the protocol uses.
#[derive(Debug, Clone, Copy)]
enum Service {
    AtsStore,
    Queue,
    Schedule,
    Fetch,
}

impl Service {
    fn name(self) -> &'static str {
        match self {
            Self::AtsStore => "ATSStore",
            Self::Queue => "Queue",
            Self::Schedule => "Schedule",
            Self::Fetch => "Fetch",
        }
    }
}

/// A channel to one host service, or why there is none.
#[derive(Clone)]
enum Link {
    Missing,
    Unusable { endpoint: String, reason: String },
    Ready(Channel),
}

impl Link {
    /// Builds the channel without connecting: the first call dials, later calls reuse it.
    /// Must run inside a Tokio runtime.
    fn open(endpoint: &str) -> Self {
        let endpoint = endpoint.trim();
        if endpoint.is_empty() {
            return Self::Missing;
        }
        let uri = if endpoint.contains("://") {
            endpoint.to_owned()
        } else {
            format!("http://{endpoint}")
        };
        match Endpoint::from_shared(uri) {
            // No HTTP/2 keepalive pings: the host's Go servers answer frequent pings with
            // GOAWAY, and the channel reconnects by itself when a connection drops.
            Ok(builder) => Self::Ready(builder.connect_timeout(CONNECT_TIMEOUT).connect_lazy()),
            Err(err) => Self::Unusable {
                endpoint: endpoint.to_owned(),
                reason: err.to_string(),
            },
        }
    }
}

/// Clients for the host's services. Cheap to clone; clones share the connections.
#[derive(Clone)]
pub struct HostLink {
    endpoints: Endpoints,
    ats_store: Link,
    queue: Link,
    schedule: Link,
    fetch: Link,
    timeout: Duration,
    fetch_timeout: Duration,
}

impl fmt::Debug for HostLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostLink")
            .field("endpoints", &self.endpoints)
            .field("timeout", &self.timeout)
            .field("fetch_timeout", &self.fetch_timeout)
            .finish_non_exhaustive()
    }
}

impl HostLink {
    /// Prepares a channel per non-empty endpoint. Never blocks and never fails: a missing or
    /// unusable endpoint is reported by the calls that need it. Must run inside a Tokio runtime.
    pub fn connect(endpoints: &Endpoints) -> Self {
        Self {
            endpoints: endpoints.clone(),
            ats_store: Link::open(&endpoints.ats_store),
            queue: Link::open(&endpoints.queue),
            schedule: Link::open(&endpoints.schedule),
            fetch: Link::open(&endpoints.fetch),
            timeout: DEFAULT_TIMEOUT,
            fetch_timeout: DEFAULT_FETCH_TIMEOUT,
        }
    }

    /// Sets the deadline of every call except `Fetch`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the deadline of `Fetch`, which waits on the host's own HTTP request.
    pub fn with_fetch_timeout(mut self, timeout: Duration) -> Self {
        self.fetch_timeout = timeout;
        self
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn fetch_timeout(&self) -> Duration {
        self.fetch_timeout
    }

    /// The endpoints and token this link was made from.
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    fn token(&self) -> String {
        self.endpoints.auth_token.expose().to_owned()
    }

    fn channel(&self, service: Service, call: &'static str) -> Result<Channel, HostError> {
        let link = match service {
            Service::AtsStore => &self.ats_store,
            Service::Queue => &self.queue,
            Service::Schedule => &self.schedule,
            Service::Fetch => &self.fetch,
        };
        match link {
            Link::Ready(channel) => Ok(channel.clone()),
            Link::Missing => Err(HostError::NoEndpoint {
                call,
                service: service.name(),
            }),
            Link::Unusable { endpoint, reason } => Err(HostError::BadEndpoint {
                call,
                service: service.name(),
                endpoint: endpoint.clone(),
                reason: reason.clone(),
            }),
        }
    }
}

/// Wraps a message for sending: refuses it when the host would reject its size, and tells the
/// host the deadline (`deadline: None` for streams, whose deadline is per message).
fn request<M: prost::Message>(
    call: &'static str,
    message: M,
    deadline: Option<Duration>,
) -> Result<tonic::Request<M>, HostError> {
    let bytes = message.encoded_len();
    if bytes > MAX_REQUEST_BYTES {
        return Err(HostError::TooLarge {
            call,
            bytes,
            limit: MAX_REQUEST_BYTES,
        });
    }
    let mut request = tonic::Request::new(message);
    if let Some(deadline) = deadline {
        request.set_timeout(deadline);
    }
    Ok(request)
}

/// Awaits one unary call (or a stream's next message) under `deadline`.
async fn within<T>(
    call: &'static str,
    deadline: Duration,
    pending: impl Future<Output = Result<T, tonic::Status>>,
) -> Result<T, HostError> {
    let started = Instant::now();
    match tokio::time::timeout(deadline, pending).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(status)) => {
            let expired = started.elapsed() >= deadline;
            tracing::debug!(call, code = ?status.code(), "host call failed");
            Err(HostError::from_status(call, status, expired, deadline))
        }
        Err(_) => {
            tracing::debug!(call, ?deadline, "host call timed out");
            Err(HostError::Timeout {
                call,
                after: deadline,
            })
        }
    }
}

/// `success = false` becomes a refusal carrying the host's text.
fn check(call: &'static str, success: bool, error: &str) -> Result<(), HostError> {
    if success {
        return Ok(());
    }
    let error = if error.is_empty() {
        "no reason given".to_owned()
    } else {
        error.to_owned()
    };
    Err(HostError::Refused { call, error })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_token() {
        let endpoints = Endpoints {
            auth_token: "secret-token".into(),
            ..Endpoints::default()
        };
        assert!(!format!("{endpoints:?}").contains("secret-token"));
    }

    #[test]
    fn refusal_keeps_the_hosts_text() {
        let err = check("GetAttestations", false, "invalid authentication token");
        let text = err.map_err(|e| e.to_string()).unwrap_err();
        assert_eq!(
            text,
            "GetAttestations: the host refused: invalid authentication token"
        );
    }

    #[test]
    fn oversized_requests_are_not_sent() {
        let message = crate::proto::GetScheduleRequest {
            auth_token: "x".repeat(MAX_REQUEST_BYTES),
            schedule_id: String::new(),
        };
        let err = request("GetSchedule", message, None).unwrap_err();
        assert!(matches!(err, HostError::TooLarge { .. }), "{err}");
    }
}
