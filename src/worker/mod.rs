//! Worker mode: the processes that embed CPython and run programs, one at a time.
//!
//! The supervisor starts one process per worker slot, the **template** (`template.rs`): it
//! loads Python and the environment's preloaded modules once and then only forks. What it forks
//! waits as a **standby** (its Python warmed up and its [`PythonBaseline`] taken) until woken as
//! the **worker**, which serves requests on the work socket. After each answer it checks
//! whether the request left anything behind that a later one could see (`residue.rs`,
//! `platform::ProcessState`): if so it says `Retiring` with what it left and exits, and the
//! standby takes over; if not it reads the next request. So every run sees the interpreter as a
//! fresh worker has it, and a run that changes nothing costs no fork.
//!
//! A worker reads work on its main thread (no thread hop on the way to Python); a small thread
//! reads interrupts from the second socket, since the main thread is busy in Python exactly when
//! one arrives, and ends the worker when the supervisor goes away (the socket closing is how a
//! worker notices its supervisor's death on every OS, see `platform`). Two more threads drain
//! fds 1 and 2 (output capture). All of them start only once a standby is woken: the template
//! and the standby stay single-threaded, so forking them is safe.

mod capture;
mod host_bridge;
mod interpreter;
mod interrupt;
mod residue;
mod runtime;
mod template;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::ipc::{self, CheckModules, Declare, FromWorker, Request, Run, ToWorker};
use crate::platform::{self, ProcessState};
use capture::StreamCapture;
use interrupt::Interrupter;
use residue::PythonBaseline;
use runtime::Runtime;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(
        "{} is not set; workers are started by the plugin itself",
        ipc::WORKER_FD_ENV
    )]
    NoChannel,
    #[error("cannot capture output: {0}")]
    Capture(std::io::Error),
    #[error("Python failed to start: {0}")]
    Python(String),
    #[error("the worker template failed: {0}")]
    Template(std::io::Error),
    #[error(transparent)]
    Frame(#[from] ipc::FrameError),
}

pub struct WorkerOptions {
    pub python_env: Option<PathBuf>,
    /// Modules the template imports once, so every worker has them warm.
    pub preload: Vec<String>,
    /// How long a worker keeps polling for the next request after an answer before it sleeps.
    pub spin: Duration,
}

/// The three sockets the supervisor gave this process: work (requests and answers),
/// interrupts, and control (the template's, see `template.rs`).
pub struct Channels {
    work: UnixStream,
    interrupts: UnixStream,
    control: UnixStream,
    /// How long an idle worker polls `work` before it sleeps ([`WorkerOptions::spin`]).
    work_spin: Duration,
}

pub fn run(options: WorkerOptions) -> Result<(), WorkerError> {
    let mut channels = open_channels(options.spin)?;
    let env = options
        .python_env
        .as_deref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let runtime = match Runtime::start(&env, &options.preload) {
        Ok(runtime) => runtime,
        Err(error) => {
            // Tell the supervisor why, so the caller sees the reason and not just an exit code.
            let failed = FromWorker::StartupFailed {
                error: error.clone(),
            };
            let _ = ipc::write_blocking(&mut channels.work, &failed);
            return Err(WorkerError::Python(error));
        }
    };
    template::serve(&runtime, channels)
}

/// A process just forked from the template: warms up, records its baseline, and waits to be
/// woken (a byte on `wake`) to serve as the worker. Never returns.
fn standby(
    runtime: &Runtime,
    wake: OwnedFd,
    channels: &Channels,
    baseline: &mut PythonBaseline,
) -> ! {
    // Its own process group, so killing the worker's group spares the template; and it dies
    // with the template.
    // SAFETY: setpgid on ourselves.
    unsafe { libc::setpgid(0, 0) };
    platform::die_with_parent();
    // Orphans of its programs stay below it, where limits and kills reach them.
    platform::become_subreaper();
    let interrupter = Interrupter::for_main_thread();
    match runtime.prepare_worker(&interrupter, baseline) {
        Ok(()) => {}
        Err(error) => {
            tracing::error!(%error, "a forked worker could not prepare");
            exit(1)
        }
    }
    if !wait_for_wake(&wake) {
        exit(0); // the template is stopping
    }
    drop(wake);
    let outcome = serve(runtime, channels, interrupter, baseline);
    if let Err(error) = outcome {
        tracing::error!(%error, "worker stopped");
        exit(1)
    }
    exit(0)
}

/// Ends this process without Python's or Rust's teardown: the template owns the interpreter's
/// shared state, and every answer has been written.
fn exit(code: i32) -> ! {
    // SAFETY: _exit ends the process at once.
    unsafe { libc::_exit(code) }
}

/// Blocks until the template writes a byte (true) or goes away (false).
fn wait_for_wake(wake: &OwnedFd) -> bool {
    loop {
        let mut fds = [libc::pollfd {
            fd: wake.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: one valid pollfd for the duration of the call.
        if unsafe { libc::poll(fds.as_mut_ptr(), 1, -1) } < 0 {
            continue; // EINTR
        }
        let mut byte = [0u8; 1];
        match nix::unistd::read(wake, &mut byte) {
            Ok(1) => return true,
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => continue,
            _ => return false,
        }
    }
}

/// Serves requests until one leaves residue (then returns after saying so) or the supervisor
/// goes away.
fn serve(
    runtime: &Runtime,
    channels: &Channels,
    interrupter: Interrupter,
    baseline: &PythonBaseline,
) -> Result<(), WorkerError> {
    let interrupter = Arc::new(interrupter);
    let mut work = channels.work.try_clone().map_err(ipc::FrameError::Io)?;
    let interrupts = channels
        .interrupts
        .try_clone()
        .map_err(ipc::FrameError::Io)?;
    let stdout = StreamCapture::install(1).map_err(WorkerError::Capture)?;
    let stderr = StreamCapture::install(2).map_err(WorkerError::Capture)?;
    spawn_interrupt_listener(interrupts, Arc::clone(&interrupter))?;
    // After the threads above: they belong to every worker.
    let process = process_state();
    let ready = FromWorker::Ready {
        python_version: runtime.python_version().to_owned(),
        pid: std::process::id() as i32,
    };
    ipc::write_blocking(&mut work, &ready)?;

    loop {
        wait_for_request(&work, channels.work_spin);
        let task = match ipc::read_blocking::<ToWorker>(&mut work) {
            Ok(task) => task,
            Err(ipc::FrameError::Closed) => return Ok(()),
            Err(error) => return Err(error.into()),
        };
        let answer = match task {
            ToWorker::Run(run) => {
                stdout.begin(run.program.max_output_bytes);
                stderr.begin(run.program.max_output_bytes);
                let mut output = runtime.run(&run, &interrupter);
                output.stdout = stdout.finish();
                output.stderr = stderr.finish();
                Run::answer(output)
            }
            ToWorker::CheckModules(check) => {
                CheckModules::answer(runtime.check_modules(&check.modules))
            }
            ToWorker::Declare(declare) => Declare::answer(runtime.declare(&declare.scripts)),
            // Interrupts come on their own socket; one sent here would be for a finished run.
            ToWorker::Interrupt { .. } => continue,
        };
        ipc::write_blocking(&mut work, &FromWorker::Answer(answer))?;
        // If the supervisor's thread was woken onto this CPU, let it take the answer now; the
        // check below can wait for it (a no-op when nothing else is runnable here).
        std::thread::yield_now();
        // After the answer, so the caller never waits for the check.
        if let Some(retiring) = verdict(runtime, baseline, &process) {
            ipc::write_blocking(&mut work, &retiring)?;
            return Ok(());
        }
    }
}

/// Polls the work socket for up to `window` (yielding the CPU to anything runnable between
/// polls) before the blocking read sleeps. A caller's next request typically arrives one round
/// trip after the answer; if the worker is awake then, nobody has to wake its CPU, which on a
/// VM costs tens of microseconds per run (see docs/benchmark.md). Costs at most `window` of CPU
/// per answer.
fn wait_for_request(work: &UnixStream, window: Duration) {
    let started = Instant::now();
    let mut poll = libc::pollfd {
        fd: work.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    while started.elapsed() < window {
        // SAFETY: one valid pollfd for the duration of the call; a zero timeout returns at once.
        if unsafe { libc::poll(&mut poll, 1, 0) } != 0 {
            return; // a request, a closed socket, or an error the read will report
        }
        std::thread::yield_now();
    }
}

fn process_state() -> ProcessState {
    ProcessState::capture_without(host_bridge::own_threads())
}

/// What differs in the process. A thread a program joined may still be counted for a moment
/// while the kernel finishes it, so a difference in the thread count alone is looked at again.
fn process_changes(fresh: &ProcessState) -> Vec<String> {
    let changes = fresh.changes_since(&process_state());
    let threads_only = changes.len() == 1 && changes[0].contains(" more thread");
    if !threads_only {
        return changes;
    }
    std::thread::yield_now();
    fresh.changes_since(&process_state())
}

/// Whether this worker may take another request (None) or must retire (`Retiring`): nothing
/// the last one did may be visible to the next.
fn verdict(
    runtime: &Runtime,
    baseline: &PythonBaseline,
    process: &ProcessState,
) -> Option<FromWorker> {
    let children = platform::running_children();
    let mut residue: Vec<String> = children
        .iter()
        .take(3)
        .map(|pid| format!("process {pid} it started is still running"))
        .collect();
    residue.extend(process_changes(process));
    residue.extend(runtime.residue(baseline));
    if residue.is_empty() {
        return None;
    }
    // Only for the supervisor's counters (restart or refresh): not worth a count per clean run.
    let running = !children.is_empty() || runtime.python_threads() > 1;
    Some(FromWorker::Retiring { residue, running })
}

/// The three sockets the supervisor placed on the descriptors named by `QNTX_WORKER_FD`
/// (`<work>,<interrupts>,<control>`).
fn open_channels(work_spin: Duration) -> Result<Channels, WorkerError> {
    let value = std::env::var(ipc::WORKER_FD_ENV).map_err(|_| WorkerError::NoChannel)?;
    // The variable must not leak into programs' subprocesses.
    std::env::remove_var(ipc::WORKER_FD_ENV);
    let open = |fd: &str| -> Result<UnixStream, WorkerError> {
        let fd: i32 = fd.parse().map_err(|_| WorkerError::NoChannel)?;
        // SAFETY: mark it close-on-exec so subprocesses started by programs do not inherit it;
        // the supervisor placed the socket on this descriptor for us alone.
        unsafe {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            Ok(UnixStream::from_raw_fd(fd))
        }
    };
    let fds: Vec<&str> = value.split(',').collect();
    let [work, interrupts, control] = fds[..] else {
        return Err(WorkerError::NoChannel);
    };
    Ok(Channels {
        work: open(work)?,
        interrupts: open(interrupts)?,
        control: open(control)?,
        work_spin,
    })
}

fn spawn_interrupt_listener(
    mut interrupts: UnixStream,
    interrupter: Arc<Interrupter>,
) -> Result<(), WorkerError> {
    std::thread::Builder::new()
        .name("interrupts".into())
        .spawn(move || loop {
            match ipc::read_blocking::<ToWorker>(&mut interrupts) {
                Ok(ToWorker::Interrupt { run_id }) => interrupter.interrupt(run_id),
                Ok(other) => {
                    tracing::error!(?other, "only interrupts belong on the interrupt channel")
                }
                Err(error) => {
                    // The supervisor is gone (or spoke nonsense): nothing may outlive it, and a
                    // program stuck in the main thread must not keep the process alive.
                    if !matches!(error, ipc::FrameError::Closed) {
                        tracing::error!(%error, "worker interrupt channel failed");
                    }
                    // SAFETY: _exit ends the process without running Python or Rust teardown
                    // from this non-main thread.
                    unsafe { libc::_exit(0) };
                }
            }
        })
        .map_err(|e| WorkerError::Frame(ipc::FrameError::Io(e)))?;
    Ok(())
}
