//! The caller's gRPC deadline (the `grpc-timeout` header), and how a run fits inside it.
//!
//! A run bounded by the caller's deadline must end early enough that its answer — success =
//! false, the timeout named, the output so far — reaches the caller before the deadline;
//! otherwise the caller sees DEADLINE_EXCEEDED (tonic's server enforces the header too) and
//! loses both. Counted from the moment the call arrived, with `D` the caller's deadline:
//!
//! * the run's own time limit is `D - margin`, with `margin = min(G + A, D / 2)`: `G` is the
//!   interrupt grace (a program gets that long to stop after its interrupt before its worker is
//!   killed), `A` ([`ANSWER_TIME`]) the time to collect its output, build the answer and send
//!   it. A short deadline still leaves half of it to the program, at the cost of the guarantee
//!   for a program that ignores its interrupt.
//! * whatever the pool is doing at `D - min(A, D / 4)` ([`CallDeadline::answer_by`]) — the run
//!   waited for a worker, or it ignored the interrupt and is still being killed — the caller is
//!   answered then with a timeout, and the run is cancelled (a queued run never starts).

use std::time::{Duration, Instant};

use crate::config::{INTERRUPT_GRACE, MAX_TIMEOUT};

/// Time to take a stopped run's output from the worker, build the answer (up to twice
/// `max_output_bytes` of text) and send it.
pub const ANSWER_TIME: Duration = Duration::from_millis(250);

/// The deadline a caller set on its call.
#[derive(Debug, Clone, Copy)]
pub struct CallDeadline {
    /// When the call arrived.
    arrived: Instant,
    /// The caller's `grpc-timeout`, as it was when the call arrived.
    within: Duration,
}

impl CallDeadline {
    pub fn from_metadata(metadata: &tonic::metadata::MetadataMap) -> Option<Self> {
        let header = metadata.get("grpc-timeout")?.to_str().ok()?;
        Some(Self::new(Instant::now(), parse_grpc_timeout(header)?))
    }

    fn new(arrived: Instant, within: Duration) -> Self {
        Self {
            arrived,
            within: within.min(MAX_TIMEOUT),
        }
    }

    /// The caller's deadline, for messages.
    pub fn within(&self) -> Duration {
        self.within
    }

    /// What the deadline leaves for stopping a run and answering.
    pub fn margin(&self) -> Duration {
        (INTERRUPT_GRACE + ANSWER_TIME).min(self.within / 2)
    }

    /// The longest time limit a run of this call may have if it starts now: what is left of
    /// `D - margin` after the time already spent (a handler's freshness check, for one).
    pub fn run_limit(&self) -> Duration {
        self.run_limit_at(Instant::now())
    }

    fn run_limit_at(&self, now: Instant) -> Duration {
        self.stop_by().saturating_duration_since(now)
    }

    /// When a run of this call must stop at the latest, `D - margin`: also what a run that
    /// waited for a worker has left once it starts.
    pub fn stop_by(&self) -> Instant {
        self.arrived + self.within - self.margin()
    }

    /// The latest moment at which the call is answered, whatever the run is doing.
    pub fn answer_by(&self) -> Instant {
        self.arrived + self.within - ANSWER_TIME.min(self.within / 4)
    }
}

fn parse_grpc_timeout(header: &str) -> Option<Duration> {
    if header.len() < 2 {
        return None;
    }
    let (digits, unit) = header.split_at(header.len() - 1);
    let value: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(value.saturating_mul(3600)),
        "M" => Duration::from_secs(value.saturating_mul(60)),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(
            parse_grpc_timeout("1500m"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("5x"), None);
        assert_eq!(parse_grpc_timeout("S"), None);
    }

    #[test]
    fn the_run_leaves_time_to_stop_and_answer() {
        let now = Instant::now();
        let long = CallDeadline::new(now, Duration::from_secs(300));
        assert_eq!(long.margin(), INTERRUPT_GRACE + ANSWER_TIME);
        assert_eq!(
            long.run_limit_at(now),
            Duration::from_secs(300) - long.margin()
        );
        assert_eq!(
            long.answer_by(),
            now + Duration::from_secs(300) - ANSWER_TIME
        );
        // The run's stop (limit + grace) and its answer fit before the deadline.
        assert!(long.run_limit_at(now) + INTERRUPT_GRACE + ANSWER_TIME <= long.within());
        // Time spent before the run starts comes off its limit.
        let later = now + Duration::from_secs(100);
        assert_eq!(
            long.run_limit_at(later),
            long.run_limit_at(now) - Duration::from_secs(100)
        );
        assert_eq!(
            long.run_limit_at(now + Duration::from_secs(400)),
            Duration::ZERO
        );

        // A short deadline still leaves half to the program.
        let short = CallDeadline::new(now, Duration::from_secs(2));
        assert_eq!(short.run_limit_at(now), Duration::from_secs(1));
        assert_eq!(short.answer_by(), now + Duration::from_millis(1750));
        let tiny = CallDeadline::new(now, Duration::from_millis(100));
        assert_eq!(tiny.run_limit_at(now), Duration::from_millis(50));
        assert_eq!(tiny.answer_by(), now + Duration::from_millis(75));
        assert!(tiny.answer_by() > now + tiny.run_limit_at(now));

        let huge = CallDeadline::new(now, Duration::from_secs(u64::MAX / 2));
        assert_eq!(huge.within(), MAX_TIMEOUT);
    }
}
