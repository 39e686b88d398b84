//! One worker process: spawning it, talking to it, and killing it. The only place that starts
//! or signals workers.

use std::os::fd::{AsRawFd, OwnedFd};
use std::process::ExitStatus;
use std::time::Duration;

use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};

use crate::ipc::{self, FrameError, FromWorker, ToWorker};
use crate::platform::{self, ProcessTree};

/// Smallest read from a worker's socket.
const READ_CHUNK: usize = 64 * 1024;

/// Where a worker's ends of its two socket pairs sit in the child: work, then interrupts.
const CHILD_FDS: [i32; 2] = [3, 4];

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot start a worker process: {0}")]
    Io(#[from] std::io::Error),
    #[error("the worker exited during start-up ({0})")]
    DiedDuringStartup(String),
    #[error("the worker did not become ready within {0:?}")]
    StartupTimeout(Duration),
    #[error("Python could not start in the worker: {0}")]
    PythonFailed(String),
    #[error("the worker sent an unexpected first message")]
    Protocol,
}

pub struct WorkerProcess {
    child: Child,
    /// The worker and what its programs started: measured and killed as one.
    tree: ProcessTree,
    reader: OwnedReadHalf,
    /// Bytes read from the worker that do not yet make a whole frame.
    received: Vec<u8>,
    writer: OwnedWriteHalf,
    /// Interrupts travel apart from work: the worker's main thread is busy when they arrive.
    interrupts: UnixStream,
    pub python_version: String,
}

/// How to start workers: this same binary, in worker mode.
#[derive(Debug, Clone)]
pub struct WorkerCommand {
    pub executable: std::path::PathBuf,
    pub args: Vec<String>,
}

impl WorkerCommand {
    fn command(&self, work: &OwnedFd, interrupts: &OwnedFd) -> Command {
        let mut command = Command::new(&self.executable);
        command.arg("worker").args(&self.args);
        command.env(
            ipc::WORKER_FD_ENV,
            format!("{},{}", CHILD_FDS[0], CHILD_FDS[1]),
        );
        command.stdin(std::process::Stdio::null());
        command.kill_on_drop(true);
        let sources = [work.as_raw_fd(), interrupts.as_raw_fd()];
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(move || {
                // Move both out of the way first (close-on-exec copies above 10), so placing
                // one cannot overwrite the other; dup2 then clears close-on-exec on 3 and 4.
                for (source, target) in sources.into_iter().zip(CHILD_FDS) {
                    let high = libc::fcntl(source, libc::F_DUPFD_CLOEXEC, 10);
                    if high < 0 || libc::dup2(high, target) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                // Own process group: terminal Ctrl-C does not reach workers, and killpg reaches
                // everything a program started.
                libc::setpgid(0, 0);
                platform::in_child_before_exec()
            });
        }
        command
    }
}

impl WorkerProcess {
    pub async fn spawn(how: &WorkerCommand, startup_timeout: Duration) -> Result<Self, SpawnError> {
        let (ours, interrupts, child) = {
            let _spawning = platform::hold_spawns();
            let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
            let (interrupts, their_interrupts) = std::os::unix::net::UnixStream::pair()?;
            let (theirs, their_interrupts) =
                (OwnedFd::from(theirs), OwnedFd::from(their_interrupts));
            let child = how.command(&theirs, &their_interrupts).spawn()?;
            // The worker's ends now live in the worker only.
            drop((theirs, their_interrupts));
            (ours, interrupts, child)
        };
        interrupts.set_nonblocking(true)?;
        let interrupts = UnixStream::from_std(interrupts)?;
        // A child that already ended has no id; a tree led by 0 is never signalled.
        let tree = ProcessTree::led_by(child.id().unwrap_or(0));

        ours.set_nonblocking(true)?;
        let (reader, writer) = UnixStream::from_std(ours)?.into_split();
        let mut worker = Self {
            child,
            tree,
            reader,
            received: Vec::new(),
            writer,
            interrupts,
            python_version: String::new(),
        };
        match tokio::time::timeout(startup_timeout, worker.next()).await {
            Ok(Ok(FromWorker::Ready { python_version })) => worker.python_version = python_version,
            Ok(Ok(FromWorker::StartupFailed { error })) => {
                return Err(SpawnError::PythonFailed(error))
            }
            Ok(Ok(_)) => return Err(SpawnError::Protocol),
            Ok(Err(_)) => {
                let status =
                    tokio::time::timeout(Duration::from_secs(5), worker.child.wait()).await;
                let cause = match status {
                    Ok(Ok(status)) => describe_exit(status),
                    _ => "no exit status".to_owned(),
                };
                return Err(SpawnError::DiedDuringStartup(cause));
            }
            Err(_) => return Err(SpawnError::StartupTimeout(startup_timeout)), // Drop kills it
        }
        Ok(worker)
    }

    pub fn pid(&self) -> i32 {
        self.tree.leader()
    }

    pub async fn send(&mut self, message: &ToWorker) -> Result<(), FrameError> {
        ipc::write_async(&mut self.writer, message).await
    }

    /// Asks the worker to raise KeyboardInterrupt in run `run_id` (if it is still running).
    pub async fn interrupt(&mut self, run_id: u64) -> Result<(), FrameError> {
        ipc::write_async(&mut self.interrupts, &ToWorker::Interrupt { run_id }).await
    }

    /// The next message, or an error once the worker is gone. Cancel-safe: bytes are only
    /// ever moved from the socket into `received` (`read_buf` reads nothing when cancelled),
    /// and a frame leaves `received` only once it is whole, so the run loop can select on it.
    pub async fn next(&mut self) -> Result<FromWorker, FrameError> {
        use tokio::io::AsyncReadExt;
        loop {
            if let Some(message) = ipc::take_frame(&mut self.received)? {
                return Ok(message);
            }
            // Room for the rest of the frame being read (a run's output can be megabytes).
            let needed = match self.received.first_chunk::<4>() {
                Some(header) => {
                    (u32::from_be_bytes(*header) as usize + 4).saturating_sub(self.received.len())
                }
                None => 0,
            };
            self.received
                .reserve(needed.clamp(READ_CHUNK, ipc::MAX_FRAME_BYTES));
            if self.reader.read_buf(&mut self.received).await? == 0 {
                return Err(FrameError::Closed);
            }
        }
    }

    /// Memory and processes of the worker and everything it started, as a run's limits count
    /// them ([`ProcessTree::usage`]).
    pub fn usage(&self) -> Option<crate::platform::TreeUsage> {
        self.tree.usage()
    }

    /// Kills the worker and everything it started.
    pub fn kill(&mut self) {
        self.tree.kill();
    }

    /// After the channel closed: why the worker died. Kills it if it is somehow still alive.
    pub async fn exit_cause(mut self) -> String {
        // Kill what the program left behind while the leader is still unreaped, so the group id
        // cannot have been reused by then.
        self.tree.kill();
        match tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await {
            Ok(Ok(status)) => describe_exit(status),
            _ => "the worker closed its channel and was killed".to_owned(),
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.tree.kill();
    }
}

pub fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        format!("the worker process exited with status {code} (os._exit or a fatal error in native code)")
    } else if let Some(signal) = status.signal() {
        format!(
            "the worker process was killed by signal {} ({})",
            signal,
            signal_name(signal)
        )
    } else {
        format!("the worker process ended: {status}")
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGSEGV => "SIGSEGV: segmentation fault in native code",
        libc::SIGABRT => "SIGABRT: aborted",
        libc::SIGBUS => "SIGBUS: bus error in native code",
        libc::SIGFPE => "SIGFPE: arithmetic error in native code",
        libc::SIGILL => "SIGILL: illegal instruction",
        libc::SIGKILL => "SIGKILL: killed, possibly by the out-of-memory killer",
        libc::SIGTERM => "SIGTERM",
        _ => "signal",
    }
}
