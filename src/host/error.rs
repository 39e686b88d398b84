//! What can go wrong when the plugin calls the host. Every error names the host call (the gRPC
//! method, e.g. `GenerateAndCreateAttestation`) so a message shown to a Python user says which
//! call failed and why.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// Initialize gave an empty endpoint for the service: the host failed to start it.
    #[error("{call}: no {service} endpoint: the host did not start that service")]
    NoEndpoint {
        call: &'static str,
        service: &'static str,
    },
    /// Initialize gave an endpoint that is not a usable address.
    #[error("{call}: unusable {service} endpoint {endpoint:?}: {reason}")]
    BadEndpoint {
        call: &'static str,
        service: &'static str,
        endpoint: String,
        reason: String,
    },
    /// The call did not finish within its deadline.
    #[error("{call}: no answer from the host within {after:?}")]
    Timeout { call: &'static str, after: Duration },
    /// The call failed below the application: unreachable host, broken connection, or a gRPC
    /// error status from the host.
    #[error("{call}: transport failure ({code:?}): {message}")]
    Transport {
        call: &'static str,
        code: tonic::Code,
        message: String,
    },
    /// The host answered `success = false` (or refused the token with a gRPC status); `error`
    /// is the host's text, verbatim.
    #[error("{call}: the host refused: {error}")]
    Refused { call: &'static str, error: String },
    /// The request would exceed the host's 4 MiB receive limit; nothing was sent.
    #[error("{call}: the request would be {bytes} bytes, over the host's limit of {limit} bytes")]
    TooLarge {
        call: &'static str,
        bytes: usize,
        limit: usize,
    },
    /// The request was rejected before sending because the host could not use it.
    #[error("{call}: {reason}")]
    Invalid { call: &'static str, reason: String },
    /// The host reported success but left out part of the answer.
    #[error("{call}: the host's answer has no {missing}")]
    Incomplete {
        call: &'static str,
        missing: &'static str,
    },
    /// A batched write failed after some of it was stored.
    #[error("{source} ({created} written before the failure)")]
    Partial {
        created: i32,
        source: Box<HostError>,
    },
}

impl HostError {
    /// The host call this error is about.
    pub fn call(&self) -> &'static str {
        match self {
            Self::NoEndpoint { call, .. }
            | Self::BadEndpoint { call, .. }
            | Self::Timeout { call, .. }
            | Self::Transport { call, .. }
            | Self::Refused { call, .. }
            | Self::TooLarge { call, .. }
            | Self::Invalid { call, .. }
            | Self::Incomplete { call, .. } => call,
            Self::Partial { source, .. } => source.call(),
        }
    }

    /// Turns a gRPC status into an error. `expired` says the call's deadline has passed, so a
    /// status produced by the deadline (tonic's own or the host's) reads as a timeout.
    pub(crate) fn from_status(
        call: &'static str,
        status: tonic::Status,
        expired: bool,
        after: Duration,
    ) -> Self {
        match status.code() {
            tonic::Code::DeadlineExceeded => Self::Timeout { call, after },
            tonic::Code::Cancelled if expired => Self::Timeout { call, after },
            // The stream RPC refuses a bad token with a status instead of `success = false`;
            // report it like every other refusal.
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => Self::Refused {
                call,
                error: status.message().to_owned(),
            },
            code => Self::Transport {
                call,
                code,
                message: status.message().to_owned(),
            },
        }
    }
}
