//! The typed messages between the supervisor and its worker processes, and their framing.
//!
//! Each message is one frame: a 4-byte big-endian length, then that many bytes of JSON. Frames
//! travel over a Unix socket pair; the worker keeps file descriptors 1 and 2 for user output.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

/// Upper bound on one frame, so a corrupt length can never make either side allocate wildly.
/// Programs and captured output are far below it (output is capped per run).
pub const MAX_FRAME_BYTES: usize = 256 * 1024 * 1024;

/// The environment variable that tells a worker which file descriptor is its end of the socket.
pub const WORKER_FD_ENV: &str = "QNTX_WORKER_FD";

/// What a worker's template tells the supervisor on its own socket (the third descriptor).
///
/// The template speaks only when the worker it forked has ended, so nothing it says can be cut
/// into a frame the worker was writing on the work socket when it died.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromTemplate {
    /// The worker process `pid` ended, for `cause`. The template wakes its successor (whose
    /// `Ready` follows) once the supervisor says [`ToTemplate::Continue`].
    Exited { pid: i32, cause: String },
}

/// What the supervisor tells a template.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToTemplate {
    /// Everything the ended worker wrote has been read (a frame it left half-written has been
    /// dropped): its successor may start writing.
    Continue,
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("worker channel closed")]
    Closed,
    #[error("frame of {0} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("worker channel I/O failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed frame: {0}")]
    Json(#[from] serde_json::Error),
}

/// What the supervisor asks of a worker.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToWorker {
    Run(Run),
    /// Raise KeyboardInterrupt in the run with this id, if it is still the current one.
    Interrupt {
        run_id: u64,
    },
    CheckModules(CheckModules),
    Declare(Declare),
}

/// A request a worker answers, tied to the one kind of [`Answer`] that replies to it. The
/// worker answers a request only through [`Request::answer`], which takes that request's reply,
/// and the supervisor takes an answer only through [`Request::reply`]: a request and a reply of
/// another kind cannot be paired.
pub trait Request: Into<ToWorker> {
    type Reply;
    /// The answer carrying `reply` (worker side).
    fn answer(reply: Self::Reply) -> Answer;
    /// The reply to this kind of request; None when the answer replies to another kind
    /// (supervisor side).
    fn reply(answer: Answer) -> Option<Self::Reply>;
}

/// Pairs a request with the message that carries it and the answer that replies to it.
macro_rules! request {
    ($request:ident => ToWorker::$message:ident, Answer::$answer:ident($reply:ty)) => {
        impl From<$request> for ToWorker {
            fn from(request: $request) -> Self {
                ToWorker::$message(request)
            }
        }

        impl Request for $request {
            type Reply = $reply;

            fn answer(reply: $reply) -> Answer {
                Answer::$answer(reply)
            }

            fn reply(answer: Answer) -> Option<$reply> {
                match answer {
                    Answer::$answer(reply) => Some(reply),
                    _ => None,
                }
            }
        }
    };
}

request!(Run => ToWorker::Run, Answer::Ran(RunOutput));
request!(CheckModules => ToWorker::CheckModules, Answer::ModulesChecked(Vec<ModuleCheck>));
request!(Declare => ToWorker::Declare, Answer::Declared(Vec<Result<String, String>>));

/// Run a program; the id names it to interrupts and in its answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct Run {
    pub run_id: u64,
    pub program: Box<Program>,
}

/// Import each module and report its version (`--check-environment`, Health).
#[derive(Debug, Serialize, Deserialize)]
pub struct CheckModules {
    pub modules: Vec<String>,
}

/// Read the declarations of handler scripts with `ast` (nothing is executed); one answer per
/// script, in order: JSON of its declarations, or why they cannot be read.
#[derive(Debug, Serialize, Deserialize)]
pub struct Declare {
    pub scripts: Vec<Script>,
}

/// What a worker needs to reach the host for a run's `qntx` API calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostAccess {
    pub ats_store: String,
    pub queue: String,
    pub schedule: String,
    pub fetch: String,
    pub auth_token: crate::host::AuthToken,
    pub plugin_name: String,
    pub plugin_version: String,
}

/// A saved handler to run: its key (the attestation subject) and, when a watcher or schedule
/// names one, the function to call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HandlerEntry {
    pub key: String,
    pub function: Option<String>,
}

/// One program to run in a fresh `__main__` namespace. A door builds it with
/// [`Program::new`] and what its caller gave; the plugin adds what its settings and the host
/// link say (`python_paths`, `max_output_bytes`, `host`) just before it runs.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Program {
    pub code: String,
    /// Shown in tracebacks, e.g. `<execute>` or `<handler cleanup>`.
    pub filename: String,
    /// JSON text of the `upstream` dict, or None for `upstream = None`.
    pub upstream_json: Option<String>,
    pub glyph_id: String,
    /// Set for saved handlers: after the module runs, its entry function is called.
    pub handler: Option<HandlerEntry>,
    /// Put at the front of `sys.path` for this run only, first listed searched first.
    pub python_paths: Vec<String>,
    /// Bytes kept per stream; the rest is counted and dropped.
    pub max_output_bytes: usize,
    pub host: Option<HostAccess>,
}

impl Program {
    pub fn new(code: String, filename: impl Into<String>) -> Self {
        Self {
            code,
            filename: filename.into(),
            ..Self::default()
        }
    }
}

/// What a worker reports.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromWorker {
    /// A worker is ready for requests: the first after start-up, and each successor forked
    /// after a worker ended.
    Ready { python_version: String, pid: i32 },
    /// After an answer: the request left `residue` behind (the first few things found), so this
    /// worker exits and a fresh one forked from the template takes the next request. A worker
    /// whose request left nothing says nothing and reads the next request: a message after
    /// every clean run cost the supervisor a wake-up just while it carried the answer out.
    Retiring {
        residue: Vec<String>,
        /// Something still runs (a thread or process it started), not just state it left.
        running: bool,
    },
    /// Python could not start (for example, an environment for another Python version).
    StartupFailed { error: String },
    /// The answer to the request the worker read last.
    Answer(Answer),
}

/// A worker's answer to a request; see [`Request`] for which answers which.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    Ran(RunOutput),
    ModulesChecked(Vec<ModuleCheck>),
    Declared(Vec<Result<String, String>>),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// The program finished (or called `sys.exit(0)`).
    Ok,
    /// The program raised; `error` holds the traceback.
    Error,
    /// KeyboardInterrupt reached the top of the program.
    Interrupted,
}

/// How a program ended, as its worker saw it.
#[derive(Debug, Serialize, Deserialize)]
pub struct RunOutput {
    pub run_id: u64,
    pub status: RunStatus,
    pub stdout: CapturedStream,
    pub stderr: CapturedStream,
    /// JSON text of the run's answer: `{"value": <result value or null>}`, plus `figures` and
    /// `table` when the run has them (see qntx_rich.py and `execution::Answer`).
    pub result_json: String,
    pub error: Option<String>,
    /// Threads and processes the program started that outlived it. The supervisor replaces
    /// such a worker, so they cannot write into, or slow down, later runs.
    #[serde(default)]
    pub leftovers: Vec<String>,
}

/// One captured output stream: the kept bytes (lossy UTF-8) and how many bytes were dropped.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CapturedStream {
    pub text: String,
    pub dropped_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Script {
    pub key: String,
    pub code: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModuleCheck {
    pub module: String,
    pub version: Option<String>,
    pub error: Option<String>,
}

pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    let body = serde_json::to_vec(message)?;
    if body.len() > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(body.len()));
    }
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

fn check_length(header: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(len));
    }
    Ok(len)
}

/// Blocking read of one frame (worker side).
pub fn read_blocking<T: for<'de> Deserialize<'de>>(
    reader: &mut impl Read,
) -> Result<T, FrameError> {
    let mut header = [0u8; 4];
    match reader.read_exact(&mut header) {
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        other => other?,
    }
    let mut body = vec![0u8; check_length(header)?];
    reader.read_exact(&mut body)?;
    Ok(serde_json::from_slice(&body)?)
}

/// Blocking write of one frame (worker side).
pub fn write_blocking<T: Serialize>(
    writer: &mut impl Write,
    message: &T,
) -> Result<(), FrameError> {
    writer.write_all(&encode(message)?)?;
    writer.flush()?;
    Ok(())
}

/// The length of the whole frames at the front of `buffer` (what follows is a partial one).
pub fn whole_frames_len(buffer: &[u8]) -> usize {
    let mut at = 0;
    while let Some(&header) = buffer[at..].first_chunk::<4>() {
        // An absurd length is a half-written frame's garbage, like a short one.
        match check_length(header) {
            Ok(len) if buffer.len() >= at + 4 + len => at += 4 + len,
            _ => break,
        }
    }
    at
}

/// Takes one whole frame from the front of `buffer`, if there is one (supervisor side).
pub fn take_frame<T: for<'de> Deserialize<'de>>(
    buffer: &mut Vec<u8>,
) -> Result<Option<T>, FrameError> {
    let Some(header) = buffer.first_chunk::<4>() else {
        return Ok(None);
    };
    let len = check_length(*header)?;
    if buffer.len() < 4 + len {
        return Ok(None);
    }
    let message = serde_json::from_slice(&buffer[4..4 + len]);
    buffer.drain(..4 + len);
    Ok(Some(message?))
}

/// Async write of one frame (supervisor side).
pub async fn write_async<T: Serialize>(
    writer: &mut (impl tokio::io::AsyncWrite + Unpin),
    message: &T,
) -> Result<(), FrameError> {
    use tokio::io::AsyncWriteExt;
    writer.write_all(&encode(message)?).await?;
    writer.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_request_shows_no_token_but_carries_it() {
        let secret = "ab".repeat(32);
        let run = ToWorker::from(Run {
            run_id: 1,
            program: Box::new(Program {
                max_output_bytes: 1024,
                host: Some(HostAccess {
                    ats_store: "127.0.0.1:1".into(),
                    queue: String::new(),
                    schedule: String::new(),
                    fetch: String::new(),
                    auth_token: secret.as_str().into(),
                    plugin_name: "python".into(),
                    plugin_version: "0".into(),
                }),
                ..Program::new("1".into(), "<execute>")
            }),
        });
        // The worker's interrupt thread logs unexpected messages with `?`.
        let shown = format!("{run:?}");
        assert!(
            !shown.contains(&secret) && shown.contains("127.0.0.1:1"),
            "{shown}"
        );
        // The worker still gets it.
        let frame = encode(&run).unwrap();
        let mut buffer = frame.to_vec();
        let Some(ToWorker::Run(received)) = take_frame::<ToWorker>(&mut buffer).unwrap() else {
            panic!("not a run");
        };
        assert_eq!(received.program.host.unwrap().auth_token.expose(), secret);
    }

    #[test]
    fn an_answer_is_taken_only_by_the_request_it_replies_to() {
        let checked = vec![ModuleCheck {
            module: "json".into(),
            version: Some("2".into()),
            error: None,
        }];
        let frame = encode(&FromWorker::Answer(CheckModules::answer(checked))).unwrap();
        let Some(FromWorker::Answer(answer)) = take_frame(&mut frame.to_vec()).unwrap() else {
            panic!("not an answer");
        };
        assert!(Declare::reply(answer).is_none());
        let Some(FromWorker::Answer(answer)) = take_frame(&mut frame.to_vec()).unwrap() else {
            panic!("not an answer");
        };
        let modules = CheckModules::reply(answer).unwrap();
        assert_eq!(modules[0].version.as_deref(), Some("2"));
    }

    #[test]
    fn frames_are_taken_only_when_whole() {
        let frame = encode(&ToWorker::Interrupt { run_id: 7 }).unwrap();
        let mut buffer = frame[..3].to_vec();
        assert!(take_frame::<ToWorker>(&mut buffer).unwrap().is_none());
        buffer.extend_from_slice(&frame[3..frame.len() - 1]);
        assert!(take_frame::<ToWorker>(&mut buffer).unwrap().is_none());
        buffer.extend_from_slice(&frame[frame.len() - 1..]);
        buffer.extend_from_slice(&frame); // and the start of the next one
        let taken = take_frame::<ToWorker>(&mut buffer).unwrap();
        assert!(matches!(taken, Some(ToWorker::Interrupt { run_id: 7 })));
        assert_eq!(buffer, frame, "the next frame stays");
    }

    #[test]
    fn absurd_lengths_are_refused() {
        let mut buffer = u32::MAX.to_be_bytes().to_vec();
        assert!(matches!(
            take_frame::<ToWorker>(&mut buffer),
            Err(FrameError::TooLarge(_))
        ));
    }
}
