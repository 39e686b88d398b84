//! The portable parent-death guarantee: a worker whose supervisor goes away ends itself (and its
//! template), even while its program spins in Python. On Linux the kernel's parent-death signal also does this;
//! here the worker is started by the test without one (and the test stays alive), so only the
//! mechanism that macOS relies on, the worker's interrupt socket closing, can end it.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use qntx_python_plugin::ipc::{self, FromWorker, Program, Run, ToWorker};

const BINARY: &str = env!("CARGO_BIN_EXE_qntx-python-plugin");

#[test]
fn a_worker_ends_itself_when_its_supervisor_goes_away_mid_run() {
    let (mut work, their_work) = UnixStream::pair().unwrap();
    let (interrupts, their_interrupts) = UnixStream::pair().unwrap();
    let (control, their_control) = UnixStream::pair().unwrap();
    let sources = [
        their_work.as_raw_fd(),
        their_interrupts.as_raw_fd(),
        their_control.as_raw_fd(),
    ];
    let mut command = Command::new(BINARY);
    command
        .args(["worker", "--log-level", "error"])
        .env(ipc::WORKER_FD_ENV, "3,4,5")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            // Above 10 first, so placing one cannot overwrite another; dup2 then clears
            // close-on-exec on 3, 4 and 5.
            for (source, target) in sources.into_iter().zip([3, 4, 5]) {
                let high = libc::fcntl(source, libc::F_DUPFD_CLOEXEC, 10);
                if high < 0 || libc::dup2(high, target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut worker = command.spawn().unwrap();
    drop((their_work, their_interrupts, their_control));

    let ready: FromWorker = ipc::read_blocking(&mut work).unwrap();
    let FromWorker::Ready { pid: serving, .. } = ready else {
        panic!("{ready:?}");
    };
    let spin = Run {
        run_id: 1,
        program: Box::new(Program {
            max_output_bytes: 1024,
            ..Program::new("while True: pass".into(), "<spin>")
        }),
    };
    ipc::write_blocking(&mut work, &ToWorker::from(spin)).unwrap();

    // The supervisor "dies": all its ends close. The worker's main thread never reads again.
    drop((work, interrupts, control));
    let pid = worker.id() as libc::pid_t;
    let (sender, exited) = mpsc::channel();
    std::thread::spawn(move || sender.send(worker.wait()));
    let status = match exited.recv_timeout(Duration::from_secs(20)) {
        Ok(status) => status.unwrap(),
        Err(_) => {
            // SAFETY: our own unreaped child (the waiting thread has not reaped it).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("the worker still ran 20 s after its supervisor went away");
        }
    };
    // Exit status 0: the template ended normally, not by a crash or a signal.
    assert_eq!(
        (status.code(), status.signal()),
        (Some(0), None),
        "{status}"
    );
    // And the worker it forked, which was spinning, is gone too.
    // SAFETY: signal 0 only checks for existence.
    let alive = unsafe { libc::kill(serving, 0) } == 0;
    assert!(!alive, "the worker {serving} outlived its template");
}
