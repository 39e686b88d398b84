//! One worker slot's processes: spawning the template, talking to its worker, and killing
//! them. The only place that starts or signals workers.
//!
//! The process spawned is the worker's template (`worker/template.rs`); the worker that serves
//! requests is forked from it and is replaced by a fresh fork whenever it ends: after a run
//! left residue (it says `Retiring`), or after it crashed or was killed. The template reports
//! each end on its control socket; the successor says `Ready` on the work socket.

use std::os::fd::{AsRawFd, OwnedFd};
use std::process::ExitStatus;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use tokio::net::UnixStream;
use tokio::process::{Child, Command};

use crate::ipc::{self, FrameError, FromTemplate, FromWorker, ToTemplate, ToWorker};
use crate::platform::{self, ProcessTree};

use super::work_socket::WorkSocket;

/// How long the supervisor waits awake for an answer after a quick one.
const ANSWER_SPIN: Duration = Duration::from_micros(50);
/// An answer read this soon after its request counts as quick. It is measured to when the
/// answer was read, so it includes the wake-up an answer that came while asleep paid: a quick
/// run read after a sleep still counts, and the next is waited for awake again.
const QUICK_ANSWER: Duration = Duration::from_micros(200);
/// Waiting awake on one CPU could only keep the worker from it.
static SINGLE_CPU: LazyLock<bool> =
    LazyLock::new(|| std::thread::available_parallelism().is_ok_and(|n| n.get() == 1));

/// Smallest read from a worker's socket.
const READ_CHUNK: usize = 64 * 1024;

/// Where the child's ends of its socket pairs sit: work, interrupts, control.
const CHILD_FDS: [i32; 3] = [3, 4, 5];

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
    /// The template and everything below it: killed as one when the slot lets it go.
    template: ProcessTree,
    /// The current worker and what its programs started: what a run's limits measure and kill.
    worker: ProcessTree,
    work: WorkSocket,
    /// Bytes read from the worker that do not yet make a whole frame.
    received: Vec<u8>,
    /// Interrupts travel apart from work: the worker's main thread is busy when they arrive.
    interrupts: UnixStream,
    control: UnixStream,
    control_received: Vec<u8>,
    /// When the request now being answered was sent.
    sent_at: Option<Instant>,
    /// Whether the last answer was read within [`QUICK_ANSWER`] of its request: then the next
    /// is waited for awake ([`WorkerProcess::wait_awake_for_answer`]).
    answers_quickly: bool,
    /// A worker end reported by the template (its pid and cause), given out after the worker's
    /// last whole frame.
    ended: Option<(i32, String)>,
    pub python_version: String,
}

/// What arrives from a worker slot's processes.
#[derive(Debug)]
pub enum Incoming {
    Message(FromWorker),
    /// The worker ended (the cause, as the template saw it); a successor's `Ready` follows.
    WorkerEnded(String),
}

/// How to start workers: this same binary, in worker mode.
#[derive(Debug, Clone)]
pub struct WorkerCommand {
    pub executable: std::path::PathBuf,
    pub args: Vec<String>,
}

impl WorkerCommand {
    fn command(&self, ends: &[OwnedFd; 3]) -> Command {
        let mut command = Command::new(&self.executable);
        command.arg("worker").args(&self.args);
        command.env(
            ipc::WORKER_FD_ENV,
            format!("{},{},{}", CHILD_FDS[0], CHILD_FDS[1], CHILD_FDS[2]),
        );
        command.stdin(std::process::Stdio::null());
        command.kill_on_drop(true);
        let sources = ends.each_ref().map(|end| end.as_raw_fd());
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(move || {
                // Move each out of the way first (close-on-exec copies above 10), so placing
                // one cannot overwrite another; dup2 then clears close-on-exec on 3, 4 and 5.
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
        let (ours, child) = {
            let _spawning = platform::hold_spawns();
            let mut ours = Vec::new();
            let mut theirs = Vec::new();
            for _ in CHILD_FDS {
                let (our_end, their_end) = std::os::unix::net::UnixStream::pair()?;
                ours.push(our_end);
                theirs.push(OwnedFd::from(their_end));
            }
            let theirs: [OwnedFd; 3] = theirs.try_into().map_err(|_| SpawnError::Protocol)?;
            let child = how.command(&theirs).spawn()?;
            // Their ends now live in the child only.
            drop(theirs);
            (ours, child)
        };
        let [work, interrupts, control]: [std::os::unix::net::UnixStream; 3] =
            ours.try_into().map_err(|_| SpawnError::Protocol)?;
        let into_tokio = |socket: std::os::unix::net::UnixStream| {
            socket.set_nonblocking(true)?;
            UnixStream::from_std(socket)
        };
        // A child that already ended has no id; a tree led by 0 is never signalled.
        let template = ProcessTree::led_by(child.id().unwrap_or(0));
        let mut worker = Self {
            child,
            template,
            worker: ProcessTree::led_by(0),
            work: WorkSocket::new(work)?,
            received: Vec::new(),
            interrupts: into_tokio(interrupts)?,
            control: into_tokio(control)?,
            control_received: Vec::new(),
            sent_at: None,
            answers_quickly: false,
            ended: None,
            python_version: String::new(),
        };
        match tokio::time::timeout(startup_timeout, worker.next()).await {
            Ok(Ok(Incoming::Message(FromWorker::Ready { python_version, .. }))) => {
                worker.python_version = python_version;
            }
            Ok(Ok(Incoming::Message(FromWorker::StartupFailed { error }))) => {
                return Err(SpawnError::PythonFailed(error))
            }
            Ok(Ok(Incoming::WorkerEnded(cause))) => {
                return Err(SpawnError::DiedDuringStartup(cause))
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

    /// The current worker's pid (not the template's).
    pub fn pid(&self) -> i32 {
        self.worker.leader()
    }

    /// Sends a request. A worker that is not reading (its buffer is full) may be retiring: it
    /// never reads again, and its template waits for our `Continue` before it discards what
    /// was sent and wakes the successor. So while waiting for room this also follows the
    /// control socket; once the worker has ended, the rest of the frame is not written, and
    /// the request goes to the successor like any request a retired worker left unread. Not
    /// cancel-safe (a frame may be left half-written); nothing selects on it.
    pub async fn send(&mut self, message: &ToWorker) -> Result<(), FrameError> {
        use tokio::io::AsyncReadExt;
        let frame = ipc::encode(message)?;
        let mut rest = &frame[..];
        loop {
            rest = &rest[self.work.write_some(rest)?..];
            if rest.is_empty() {
                break;
            }
            tokio::select! {
                room = self.work.writable() => room?,
                read = self.control.read_buf(&mut self.control_received) => {
                    if read? == 0 {
                        return Err(FrameError::Closed);
                    }
                    if self.follow_worker_ends()? {
                        break;
                    }
                }
            }
        }
        self.sent_at = Some(Instant::now());
        Ok(())
    }

    /// Reads the answer to the request just sent without sleeping, for up to [`ANSWER_SPIN`],
    /// if the last answer was quick. A trivial run answers in 10–20 µs; sleeping for it lets
    /// this CPU go idle, and waking an idle CPU costs more than the run itself on a VM (30–40 µs
    /// here, see docs/benchmark.md). The runtime's one thread is held meanwhile, so the wait is
    /// short, made only after a quick answer, and never on a single CPU (where it could only
    /// delay the worker). It ends at a read error (the reads after it report it), and when a
    /// yield kept the CPU from it for longer than the whole wait.
    ///
    /// Measured, it also pays with several slots busy: trivial runs from 4 clients went from
    /// 9 100–11 200 to 14 400–17 600 per second with it. Making it only while no other slot
    /// awaited an answer, or backing off after waits that missed, lost that.
    fn wait_awake_for_answer(&mut self) {
        let Some(sent_at) = self
            .sent_at
            .filter(|_| self.answers_quickly && !*SINGLE_CPU)
        else {
            return;
        };
        while sent_at.elapsed() < ANSWER_SPIN {
            if self.work.drain_into(&mut self.received).is_err()
                || ipc::whole_frames_len(&self.received) > 0
            {
                return;
            }
            // Lets the worker have this CPU if it shares it.
            let yielded = Instant::now();
            std::thread::yield_now();
            if yielded.elapsed() > ANSWER_SPIN {
                return;
            }
        }
    }

    /// Handles the template's reports of worker ends waiting in `control_received`: the
    /// ended worker's whole frames are kept, a half-written one is dropped, and the template
    /// may then let the successor speak. Whether there was one.
    fn follow_worker_ends(&mut self) -> Result<bool, FrameError> {
        let mut any = false;
        while let Some(FromTemplate::Exited { pid, cause }) =
            ipc::take_frame(&mut self.control_received)?
        {
            // All it wrote is in the socket by now.
            self.work.drain_into(&mut self.received)?;
            self.received
                .truncate(ipc::whole_frames_len(&self.received));
            let frame = ipc::encode(&ToTemplate::Continue)?;
            self.control.try_write(&frame)?;
            self.ended = Some((pid, cause));
            any = true;
        }
        Ok(any)
    }

    /// Asks the worker to raise KeyboardInterrupt in run `run_id` (if it is still running).
    pub async fn interrupt(&mut self, run_id: u64) -> Result<(), FrameError> {
        ipc::write_async(&mut self.interrupts, &ToWorker::Interrupt { run_id }).await
    }

    /// The next message from the worker or the template, or an error once the template is gone.
    /// Cancel-safe: bytes are only ever moved from a socket into its buffer (`read_buf` reads
    /// nothing when cancelled), and a frame leaves a buffer only once it is whole, so the run
    /// loop can select on it.
    ///
    /// A worker's end comes after every whole frame it wrote (they were in the socket before
    /// the template could see it end); a frame it left half-written is dropped.
    pub async fn next(&mut self) -> Result<Incoming, FrameError> {
        use tokio::io::AsyncReadExt;
        self.wait_awake_for_answer();
        loop {
            if let Some(message) = ipc::take_frame(&mut self.received)? {
                if let (FromWorker::Answer(_), Some(sent_at)) = (&message, self.sent_at.take()) {
                    self.answers_quickly = sent_at.elapsed() < QUICK_ANSWER;
                }
                if let FromWorker::Ready { pid, .. } = &message {
                    // A successor: what the limits measure and kill from now on.
                    self.worker = ProcessTree::led_by(*pid as u32);
                }
                return Ok(Incoming::Message(message));
            }
            match self.ended.take() {
                Some((pid, cause)) if pid == self.worker.leader() => {
                    return Ok(Incoming::WorkerEnded(cause))
                }
                _ => {} // a worker already succeeded
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
            tokio::select! {
                read = self.work.read_buf(&mut self.received) => {
                    if read? == 0 {
                        return Err(FrameError::Closed);
                    }
                }
                read = self.control.read_buf(&mut self.control_received) => {
                    if read? == 0 {
                        return Err(FrameError::Closed);
                    }
                    self.follow_worker_ends()?;
                }
            }
        }
    }

    /// The current worker and everything it started, as a run's limits count them.
    pub fn tree(&self) -> ProcessTree {
        self.worker
    }

    /// Kills the worker and everything its programs started; the template forks a successor.
    pub fn kill_worker(&mut self) {
        self.worker.kill();
    }

    /// After the channel closed: why the worker died. Kills it if it is somehow still alive.
    pub async fn exit_cause(mut self) -> String {
        // Kill what the program left behind while the leader is still unreaped, so the group id
        // cannot have been reused by then.
        self.template.kill();
        match tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await {
            Ok(Ok(status)) => describe_exit(status),
            _ => "the worker closed its channel and was killed".to_owned(),
        }
    }
}

/// Kills the template, its worker and everything below them, unless `exit_cause` already did
/// and reaped the template: its process group id may belong to someone else by then.
impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if self.child.id().is_some() {
            self.template.kill();
        }
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
