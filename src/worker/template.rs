//! The template: hands each request to a fresh process forked from it, relays the answer with
//! the run's captured output, and cleans up everything the run started.
//!
//! The template is single-threaded by design (a fork copies only the forking thread, so a lock
//! held by any other thread would stay locked forever in the child): it waits with `poll` on
//! its sockets, the running process's socket and its output pipes, and checks its own thread
//! count at the OS level before each fork.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use super::capture::Capture;
use super::child::{self, Inherited};
use super::runtime::{Forked, Runtime};
use super::WorkerError;
use crate::ipc::{self, CapturedStream, FromWorker, ToWorker};
use crate::platform;

/// How often a busy template checks that the run's process is alive, for when its socket does
/// not close at its death (a process it forked still holds the socket).
const LIVENESS_CHECK: Duration = Duration::from_millis(20);

/// Longest the template spends killing what a run left behind before it gives up (a process
/// stuck in the kernel cannot be reaped); it logs what is left.
const CLEANUP_LIMIT: Duration = Duration::from_secs(5);

/// A process forked from the template, waiting for (or running) one request.
struct RunProcess {
    pid: i32,
    socket: UnixStream,
    stdout: Capture,
    stderr: Capture,
}

/// How a supervised request ended.
enum Ended {
    /// With the pid of the process if it is not reaped yet (else 0).
    Answered(FromWorker, i32),
    /// The process died first; it has been reaped.
    Died(String),
}

pub struct Template<'a> {
    runtime: &'a Runtime,
    work: UnixStream,
    interrupts: UnixStream,
    spare: Option<RunProcess>,
    /// The last run's process, killed but not yet reaped (0: none).
    finished: i32,
    /// Processes killed and left to the kernel to tear down; reaped when done.
    exiting: Vec<i32>,
    pid: i32,
}

fn poll_fd(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// Waits until one of `fds` is ready or `timeout` passes (None: no timeout).
fn wait(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> std::io::Result<()> {
    let timeout = timeout.map_or(-1, |t| t.as_millis() as libc::c_int);
    // SAFETY: `fds` is a valid, exclusively borrowed slice of pollfd for the call.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
    if ready < 0 {
        let error = std::io::Error::last_os_error();
        if error.kind() != ErrorKind::Interrupted {
            return Err(error);
        }
    }
    Ok(())
}

fn kill(pid: i32) {
    if pid > 0 {
        // SAFETY: kill only sends a signal; "no such process" is fine.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// The exit status of `pid` if it has ended (and reaps it).
fn try_reap(pid: i32) -> Option<std::process::ExitStatus> {
    let mut status = 0;
    // SAFETY: waitpid with WNOHANG on our own child; `status` is ours.
    let reaped = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    (reaped == pid).then(|| std::process::ExitStatus::from_raw(status))
}

fn died_cause(status: std::process::ExitStatus) -> String {
    crate::pool::describe_exit("the process running it", status)
}

impl<'a> Template<'a> {
    pub fn new(
        runtime: &'a Runtime,
        work: UnixStream,
        interrupts: UnixStream,
    ) -> std::io::Result<Self> {
        platform::become_subreaper()?;
        Ok(Self {
            runtime,
            work,
            interrupts,
            spare: None,
            finished: 0,
            exiting: Vec::new(),
            pid: std::process::id() as i32,
        })
    }

    pub fn ready(&mut self) -> Result<(), WorkerError> {
        let ready = FromWorker::Ready {
            python_version: self.runtime.python_version().to_owned(),
        };
        ipc::write_blocking(&mut self.work, &ready)?;
        Ok(())
    }

    /// Serves requests until the supervisor goes away.
    pub fn serve(&mut self) -> Result<(), WorkerError> {
        loop {
            if self.spare.is_none() {
                match self.fork() {
                    Ok(spare) => self.spare = Some(spare),
                    // Tried again when a request comes, which then fails with the reason.
                    Err(error) => tracing::error!(%error, "cannot fork a spare run process"),
                }
            }
            let mut fds = [
                poll_fd(self.work.as_raw_fd()),
                poll_fd(self.interrupts.as_raw_fd()),
            ];
            wait(&mut fds, None).map_err(WorkerError::Template)?;
            // A request first: an interrupt sent right after it is for that run, and is read
            // while the run is supervised.
            if fds[0].revents == 0 {
                if fds[1].revents != 0 {
                    match ipc::read_blocking::<ToWorker>(&mut self.interrupts) {
                        // For a run that has already ended.
                        Ok(ToWorker::Interrupt { .. } | ToWorker::Kill { .. }) => {}
                        Ok(other) => {
                            tracing::error!(?other, "only interrupts and kills belong there")
                        }
                        Err(_) => return Ok(()), // the supervisor is gone
                    }
                }
                continue;
            }
            let request = match ipc::read_blocking::<ToWorker>(&mut self.work) {
                Ok(request) => request,
                Err(ipc::FrameError::Closed) => return Ok(()),
                Err(error) => return Err(error.into()),
            };
            let reply = match self.handle(request) {
                Ok(Some(reply)) => reply,
                Ok(None) => continue,
                // The supervisor went away mid-run (the run's processes are killed): an
                // ordinary end.
                Err(WorkerError::Frame(ipc::FrameError::Closed)) => return Ok(()),
                Err(error) => return Err(error),
            };
            // Before the answer: when the supervisor has it, nothing of the run is left (and
            // nothing of it counts against the next run's limits).
            self.clean_up();
            ipc::write_blocking(&mut self.work, &reply)?;
            // The next spare is forked at the top of the loop, while the answer travels.
        }
    }

    /// Forks a process that waits for one request.
    fn fork(&self) -> std::io::Result<RunProcess> {
        // Only the forking thread exists in the child: any other thread's locks would stay
        // held there for good. Counted by the OS, so threads Python does not know of count.
        match platform::thread_count(self.pid) {
            Some(1) | None => {}
            Some(threads) => {
                return Err(std::io::Error::other(format!(
                    "the template has {threads} threads and cannot fork safely \
                     (a preloaded module started a thread?)"
                )))
            }
        }
        let (ours, theirs) = UnixStream::pair()?;
        let (stdout, stdout_end) = Capture::pipe()?;
        let (stderr, stderr_end) = Capture::pipe()?;
        match self.runtime.fork()? {
            Forked::Child => child::serve_one(
                self.runtime,
                Inherited {
                    socket: theirs,
                    stdout: stdout_end,
                    stderr: stderr_end,
                    template_only: vec![
                        self.work.as_raw_fd(),
                        self.interrupts.as_raw_fd(),
                        ours.as_raw_fd(),
                        stdout.fd(),
                        stderr.fd(),
                    ],
                    template_pid: self.pid,
                },
            ),
            Forked::Parent(pid) => {
                drop((theirs, stdout_end, stderr_end));
                ours.set_nonblocking(true)?;
                Ok(RunProcess {
                    pid,
                    socket: ours,
                    stdout,
                    stderr,
                })
            }
        }
    }

    /// Runs one request in the spare (or a new process) and returns the answer to relay.
    fn handle(&mut self, request: ToWorker) -> Result<Option<FromWorker>, WorkerError> {
        let (run_id, limit) = match &request {
            ToWorker::Run(run) => (run.run_id, run.max_output_bytes),
            ToWorker::CheckModules { .. } | ToWorker::Declare { .. } => (0, 0),
            ToWorker::Interrupt { .. } | ToWorker::Kill { .. } => return Ok(None),
        };
        let died = |cause: String| FromWorker::Died {
            run_id,
            cause,
            stdout: CapturedStream::default(),
            stderr: CapturedStream::default(),
        };
        // Torn down by now, usually: they must not count against this run's limits.
        self.exiting.retain(|pid| try_reap(*pid).is_none());
        // A spare that died while waiting (killed from outside) is replaced, not handed a run.
        let spare = self
            .spare
            .take()
            .filter(|spare| try_reap(spare.pid).is_none());
        let mut process = match spare {
            Some(process) => process,
            None => match self.fork() {
                Ok(process) => process,
                Err(error) => {
                    return Ok(Some(died(format!(
                        "no process could be started for it: {error}"
                    ))))
                }
            },
        };
        process.stdout.set_limit(limit);
        process.stderr.set_limit(limit);
        // A process that died while spare fails the write; supervising it reports the cause.
        if let Err(error) = send(&mut process.socket, &request) {
            tracing::debug!(%error, "could not hand the request over");
        }
        let pid = process.pid;
        Ok(Some(match self.supervise(process, run_id)? {
            Ended::Answered(answer, unreaped) => {
                self.finished = unreaped;
                answer
            }
            Ended::Died(cause) => {
                tracing::debug!(pid, %cause, "a run's process died");
                died(cause)
            }
        }))
    }

    /// Waits for the process's answer while draining its output and passing on interrupts.
    fn supervise(&mut self, mut process: RunProcess, run_id: u64) -> Result<Ended, WorkerError> {
        let mut received = Vec::new();
        let mut socket_open = true;
        loop {
            let mut fds = vec![
                poll_fd(self.interrupts.as_raw_fd()),
                poll_fd(process.socket.as_raw_fd()),
                poll_fd(process.stdout.fd()),
                poll_fd(process.stderr.fd()),
            ];
            // A closed socket or pipe stays readable (end of file): stop watching it.
            fds[1].fd = if socket_open { fds[1].fd } else { -1 };
            fds[2].fd = if process.stdout.is_open() {
                fds[2].fd
            } else {
                -1
            };
            fds[3].fd = if process.stderr.is_open() {
                fds[3].fd
            } else {
                -1
            };
            wait(&mut fds, Some(LIVENESS_CHECK)).map_err(WorkerError::Template)?;
            if fds[2].revents != 0 {
                process.stdout.drain();
            }
            if fds[3].revents != 0 {
                process.stderr.drain();
            }
            if fds[1].revents != 0 {
                socket_open = receive(&mut process.socket, &mut received);
                if let Some(answer) = self.take_answer(&mut process, &mut received, run_id) {
                    let pid = process.pid;
                    return Ok(Ended::Answered(self.with_output(process, answer), pid));
                }
            }
            if fds[0].revents != 0 {
                match ipc::read_blocking::<ToWorker>(&mut self.interrupts) {
                    Ok(ToWorker::Interrupt { run_id: id }) if id == run_id && id != 0 => {
                        platform::interrupt_main_thread(process.pid);
                    }
                    Ok(ToWorker::Kill { run_id: id }) if id == run_id && id != 0 => {
                        kill(process.pid);
                    }
                    Ok(_) => {} // for an earlier run
                    Err(error) => {
                        // The supervisor is gone: nothing of this run may outlive it.
                        kill(process.pid);
                        return Err(error.into());
                    }
                }
            }
            if let Some(status) = try_reap(process.pid) {
                // Reaped: its pid may be reused from now on, so it must not be signalled.
                process.pid = 0;
                // The answer may be in the socket still (written just before it exited). One
                // read until empty: processes it forked may hold the socket open.
                if socket_open {
                    receive(&mut process.socket, &mut received);
                }
                if let Some(answer) = self.take_answer(&mut process, &mut received, run_id) {
                    let pid = process.pid;
                    return Ok(Ended::Answered(self.with_output(process, answer), pid));
                }
                let cause = died_cause(status);
                return Ok(Ended::Died(cause));
            }
        }
    }

    /// The process's answer, once a whole one has arrived; a malformed one kills the process.
    fn take_answer(
        &self,
        process: &mut RunProcess,
        received: &mut Vec<u8>,
        run_id: u64,
    ) -> Option<FromWorker> {
        match ipc::take_frame::<FromWorker>(received) {
            Ok(answer) => answer,
            Err(error) => {
                kill(process.pid);
                Some(FromWorker::Died {
                    run_id,
                    cause: format!("the process running it sent a malformed answer ({error})"),
                    stdout: CapturedStream::default(),
                    stderr: CapturedStream::default(),
                })
            }
        }
    }

    /// Puts the run's captured output into its answer.
    fn with_output(&self, process: RunProcess, answer: FromWorker) -> FromWorker {
        let RunProcess {
            pid,
            stdout,
            stderr,
            ..
        } = process;
        // Its answer is written: nothing it does from here on belongs to the run.
        kill(pid);
        let (stdout, stderr) = (stdout.finish(), stderr.finish());
        match answer {
            FromWorker::Done(mut output) => {
                output.stdout = stdout;
                output.stderr = stderr;
                FromWorker::Done(output)
            }
            FromWorker::Died { run_id, cause, .. } => FromWorker::Died {
                run_id,
                cause,
                stdout,
                stderr,
            },
            other => other,
        }
    }

    /// Kills and reaps every process the last run left, including those that left its session
    /// (`setsid`): as the subreaper, the template inherits each orphan once its parent is
    /// reaped, so repeating "kill every child but the spare, reap them" until none is left
    /// reaches them all.
    ///
    /// The common case costs no wait: a run's own process that started nothing is killed (a
    /// process with a kill pending can no longer fork) and reaped later, once the kernel has
    /// torn it down, instead of the next run waiting for that.
    fn clean_up(&mut self) {
        let finished = std::mem::take(&mut self.finished);
        if finished > 0 {
            kill(finished);
            if platform::children(finished).is_empty() {
                self.exiting.push(finished);
            }
        }
        self.exiting.retain(|pid| try_reap(*pid).is_none());
        let started = Instant::now();
        loop {
            let spare = self.spare.as_ref().map_or(0, |s| s.pid);
            let left: Vec<i32> = platform::children(self.pid)
                .into_iter()
                .filter(|pid| *pid != spare && !self.exiting.contains(pid))
                .collect();
            if left.is_empty() {
                return;
            }
            for &pid in &left {
                for below in platform::descendants(pid) {
                    kill(below);
                }
                kill(pid);
            }
            for pid in left {
                let mut status = 0;
                // SAFETY: waits for a child of ours that was just killed; `status` is ours.
                while unsafe { libc::waitpid(pid, &mut status, 0) } < 0
                    && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
                {
                }
            }
            if started.elapsed() > CLEANUP_LIMIT {
                let left = platform::descendants(self.pid);
                tracing::error!(?left, "processes of a run could not be killed");
                return;
            }
        }
    }
}

/// Writes one frame to a run's (non-blocking) socket, waiting while it is full.
fn send(socket: &mut UnixStream, message: &ToWorker) -> Result<(), ipc::FrameError> {
    let frame = ipc::encode(message)?;
    socket.set_nonblocking(false)?;
    let written = socket.write_all(&frame);
    socket.set_nonblocking(true)?;
    Ok(written?)
}

/// Reads what the socket holds into `received`; false once it is closed.
fn receive(socket: &mut UnixStream, received: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 64 * 1024];
    loop {
        match socket.read(&mut chunk) {
            Ok(0) => return false,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
}
