//! Configuration the host sends in Initialize, and the schema that declares it.
//!
//! Every key declared in [`SCHEMA`] is honoured, and nothing else is read. Values arrive as
//! strings; numbers are parsed leniently because the host writes floats with six decimals.

use std::collections::HashMap;
use std::time::Duration;

use crate::proto::ConfigFieldSchema;

/// The longest time limit a run can have, whoever sets it.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(86_400);

/// How long an interrupted program gets to stop before its worker is killed. A caller's
/// deadline reserves it (service/deadline.rs), so it lives here rather than in the CLI.
pub const INTERRUPT_GRACE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Time limit of a run when neither the job nor the call sets one.
    pub timeout: Duration,
    /// Bytes kept per output stream per run.
    pub max_output_bytes: usize,
    /// Resident memory a run's processes (the worker and all it started) may use before they
    /// are killed (None = unlimited).
    pub memory_limit_bytes: Option<u64>,
    /// Processes a run may have besides its worker (None = unlimited).
    pub max_processes: Option<usize>,
    /// Directories put at the front of `sys.path` for each run, first listed searched first.
    pub python_paths: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            max_output_bytes: 1024 * 1024,
            memory_limit_bytes: Some(2048 * 1024 * 1024),
            max_processes: Some(64),
            python_paths: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("config key '{key}': '{value}' is not a number")]
    NotANumber { key: String, value: String },
    #[error("config key '{key}': {value} is outside {min}..={max}")]
    OutOfRange {
        key: String,
        value: f64,
        min: f64,
        max: f64,
    },
}

struct Field {
    key: &'static str,
    kind: &'static str,
    description: &'static str,
    default: &'static str,
    range: Option<(f64, f64)>,
}

const SCHEMA: &[Field] = &[
    Field {
        key: "timeout_secs",
        kind: "number",
        description: "Time limit of a run, in seconds, when neither the job (timeout_secs) nor the call's deadline sets one. At the limit the program is interrupted; if it does not stop within a second its worker is killed and replaced.",
        default: "30",
        range: Some((1.0, 86_400.0)),
    },
    Field {
        key: "max_output_bytes",
        kind: "number",
        description: "Bytes of stdout and of stderr kept per run; the rest is dropped and a truncation marker says how much.",
        default: "1048576",
        // Kept output travels twice (output and result), and an answer must stay under 100 MB.
        range: Some((1024.0, 16.0 * 1024.0 * 1024.0)),
    },
    Field {
        key: "memory_limit_mb",
        kind: "number",
        description: "Resident memory a run may use, in MiB: its worker and every process the run started, summed; over it they are killed and the run fails naming the limit. 0 means no limit.",
        default: "2048",
        range: Some((0.0, 1_048_576.0)),
    },
    Field {
        key: "max_processes",
        kind: "number",
        description: "Processes a run may start (all of its subprocesses together, at any one time); a run over it is stopped with its worker and fails naming the limit, so a fork bomb fails the run instead of the machine. 0 means no limit.",
        default: "64",
        range: Some((0.0, 65_536.0)),
    },
    Field {
        key: "python_paths",
        kind: "string",
        description: "Colon-separated directories put at the front of the module search path for every run, the first listed searched first.",
        default: "",
        range: None,
    },
];

/// The ConfigSchema answer: every key [`Settings::from_config`] reads.
pub fn schema() -> HashMap<String, ConfigFieldSchema> {
    SCHEMA
        .iter()
        .map(|field| {
            let (min_value, max_value) = field
                .range
                .map(|(min, max)| (min.to_string(), max.to_string()))
                .unwrap_or_default();
            let schema = ConfigFieldSchema {
                r#type: field.kind.into(),
                description: field.description.into(),
                default_value: field.default.into(),
                required: false,
                min_value,
                max_value,
                ..Default::default()
            };
            (field.key.to_owned(), schema)
        })
        .collect()
}

fn number(config: &HashMap<String, String>, key: &'static str) -> Result<Option<f64>, ConfigError> {
    let Some(raw) = config.get(key).map(|v| v.trim()).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let value: f64 = raw
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite())
        .ok_or_else(|| ConfigError::NotANumber {
            key: key.into(),
            value: raw.into(),
        })?;
    if let Some((min, max)) = SCHEMA.iter().find(|f| f.key == key).and_then(|f| f.range) {
        if value < min || value > max {
            return Err(ConfigError::OutOfRange {
                key: key.into(),
                value,
                min,
                max,
            });
        }
    }
    Ok(Some(value))
}

impl Settings {
    /// Reads the whole config or fails naming the first bad key; never half-applies.
    pub fn from_config(config: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let timeout = number(config, "timeout_secs")?
            .map(Duration::from_secs_f64)
            .unwrap_or(defaults.timeout);
        let max_output_bytes = number(config, "max_output_bytes")?
            .map(|v| v as usize)
            .unwrap_or(defaults.max_output_bytes);
        let memory_limit_bytes = match number(config, "memory_limit_mb")? {
            None => defaults.memory_limit_bytes,
            Some(0.0) => None,
            Some(mb) => Some((mb * 1024.0 * 1024.0) as u64),
        };
        let max_processes = match number(config, "max_processes")? {
            None => defaults.max_processes,
            Some(0.0) => None,
            Some(n) => Some(n as usize),
        };
        let python_paths = config
            .get("python_paths")
            .map(|paths| {
                paths
                    .split(':')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            timeout,
            max_output_bytes,
            memory_limit_bytes,
            max_processes,
            python_paths,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn host_float_format_is_accepted() {
        let settings = Settings::from_config(&config(&[("timeout_secs", "30.000000")])).unwrap();
        assert_eq!(settings.timeout, Duration::from_secs(30));
    }

    #[test]
    fn bad_values_name_the_key() {
        let error = Settings::from_config(&config(&[("timeout_secs", "soon")])).unwrap_err();
        assert_eq!(
            error.to_string(),
            "config key 'timeout_secs': 'soon' is not a number"
        );
        assert!(Settings::from_config(&config(&[("timeout_secs", "0")])).is_err());
    }

    #[test]
    fn every_declared_key_is_read() {
        let settings = Settings::from_config(&config(&[
            ("timeout_secs", "5"),
            ("max_output_bytes", "2048"),
            ("memory_limit_mb", "0"),
            ("max_processes", "16"),
            ("python_paths", "/a:/b"),
        ]))
        .unwrap();
        assert_eq!(
            settings,
            Settings {
                timeout: Duration::from_secs(5),
                max_output_bytes: 2048,
                memory_limit_bytes: None,
                max_processes: Some(16),
                python_paths: vec!["/a".into(), "/b".into()],
            }
        );
        assert_eq!(schema().len(), 5);
    }
}
