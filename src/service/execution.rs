//! One run, as every door reports it: the execution-result object of protocol.md §4.3, built
//! from the pool's outcome in one place.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ipc::{CapturedStream, RunStatus};
use crate::pool::RunOutcome;

#[derive(Debug, Clone, Serialize)]
pub struct Execution {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
    pub result: Value,
    pub error: Option<String>,
    pub duration_ms: u64,
    /// Matplotlib figures the run left open, as PNG (only when there are some).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub figures: Vec<Value>,
    /// A table view of a DataFrame, Series or numpy array result (only for those).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<Value>,
}

/// What a worker answers for a finished run (qntx_rich.py builds it): the value, and what a
/// person would rather look at than read.
#[derive(Debug, Default, Deserialize)]
struct Answer {
    #[serde(default)]
    value: Value,
    #[serde(default)]
    figures: Vec<Value>,
    table: Option<Value>,
}

/// The visible marker appended to a stream that went over its limit.
fn with_marker(stream: CapturedStream, limit: usize) -> String {
    let mut text = stream.text;
    if stream.dropped_bytes > 0 {
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!(
            "[output truncated: {} more bytes not shown (max_output_bytes = {limit})]\n",
            stream.dropped_bytes
        ));
    }
    text
}

/// `2 s`, `1.25 s`.
pub(super) fn seconds(duration: Duration) -> String {
    let secs = duration.as_secs_f64();
    if secs.fract() == 0.0 {
        format!("{secs:.0} s")
    } else {
        format!("{secs:.2} s")
    }
}

impl Execution {
    pub fn from_outcome(outcome: RunOutcome, elapsed: Duration, max_output_bytes: usize) -> Self {
        let duration_ms = elapsed.as_millis() as u64;
        match outcome {
            RunOutcome::Finished(output) => {
                let success = output.status == RunStatus::Ok;
                // A run the worker could not finish answers plain `null`: no value, nothing more.
                let answer: Answer = serde_json::from_str(&output.result_json).unwrap_or_default();
                let result = if success { answer.value } else { Value::Null };
                let error = match output.status {
                    RunStatus::Ok => None,
                    RunStatus::Interrupted => Some(format!(
                        "the run was cancelled (KeyboardInterrupt)\n{}",
                        output.error.unwrap_or_default()
                    )),
                    RunStatus::Error => {
                        Some(output.error.unwrap_or_else(|| "the program failed".into()))
                    }
                };
                let mut stderr = with_marker(output.stderr, max_output_bytes);
                if !output.leftovers.is_empty() {
                    stderr.push_str(&format!(
                        "[the program left {} running; its worker was replaced so they cannot affect later runs]\n",
                        output.leftovers.join(", ")
                    ));
                }
                Self {
                    success,
                    stdout: with_marker(output.stdout, max_output_bytes),
                    stderr,
                    result,
                    error,
                    duration_ms,
                    figures: answer.figures,
                    table: answer.table,
                }
            }
            RunOutcome::TimedOut { after, output } => {
                // A killed worker's output is lost with it.
                let (how, stdout, stderr) = match output {
                    Some(output) => ("it was interrupted", output.stdout, output.stderr),
                    None => (
                        "it did not stop when interrupted, so its worker was killed and replaced",
                        CapturedStream::default(),
                        CapturedStream::default(),
                    ),
                };
                Self {
                    success: false,
                    stdout: with_marker(stdout, max_output_bytes),
                    stderr: with_marker(stderr, max_output_bytes),
                    result: Value::Null,
                    error: Some(format!("timed out after {}: {how}", seconds(after))),
                    duration_ms,
                    figures: Vec::new(),
                    table: None,
                }
            }
            RunOutcome::WorkerDied { cause } => Self {
                success: false,
                stdout: String::new(),
                stderr: String::new(),
                result: Value::Null,
                error: Some(format!(
                    "the run crashed its worker: {cause}; the worker was replaced"
                )),
                duration_ms,
                figures: Vec::new(),
                table: None,
            },
        }
    }

    /// A run that failed before any program ran, with the reason.
    pub fn failed(error: String) -> Self {
        Self {
            success: false,
            stdout: String::new(),
            stderr: String::new(),
            result: Value::Null,
            error: Some(error),
            duration_ms: 0,
            figures: Vec::new(),
            table: None,
        }
    }

    pub fn to_json_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}
