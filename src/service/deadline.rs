//! The caller's gRPC deadline, from the `grpc-timeout` header.

use std::time::Duration;

/// The run gets most of the caller's deadline, leaving it time to receive our answer.
const SHARE_OF_DEADLINE: f64 = 0.9;

pub fn from_metadata(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let header = metadata.get("grpc-timeout")?.to_str().ok()?;
    parse_grpc_timeout(header).map(|d| d.min(crate::config::MAX_TIMEOUT).mul_f64(SHARE_OF_DEADLINE))
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
    use super::parse_grpc_timeout;
    use std::time::Duration;

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
}
