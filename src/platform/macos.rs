//! macOS: no `pipe2`, no `SOCK_CLOEXEC`, no parent-death signal, no `sigtimedwait`, no `/proc`.
//! Compiled and clippy-checked in CI from Linux (`.ci/run`); not run on a Mac there.

use std::os::fd::OwnedFd;
use std::sync::{Mutex, MutexGuard, PoisonError};

use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::sys::signal::{SigSet, Signal};

pub fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (read_end, write_end) = nix::unistd::pipe()?;
    for end in [&read_end, &write_end] {
        fcntl(end, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    }
    let flags = OFlag::from_bits_truncate(fcntl(&read_end, FcntlArg::F_GETFL)?);
    fcntl(&read_end, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok((read_end, write_end))
}

pub fn in_child_before_exec() -> std::io::Result<()> {
    // No parent-death signal on macOS: the worker notices through its interrupt socket.
    Ok(())
}

/// Serialises worker spawns. A socket pair is made close-on-exec only after it exists; a fork
/// by a concurrent spawn in between would hand our end of the pair to another worker, which
/// would then hold it open and keep this worker from noticing the supervisor's death.
pub struct SpawnGuard(#[allow(dead_code)] MutexGuard<'static, ()>);

static SPAWNS: Mutex<()> = Mutex::new(());

pub fn hold_spawns() -> SpawnGuard {
    SpawnGuard(SPAWNS.lock().unwrap_or_else(PoisonError::into_inner))
}

pub fn discard_pending(signal: Signal) {
    let mut set = SigSet::empty();
    set.add(signal);
    // sigwait never waits here: it is only called while the signal is pending, and the calling
    // thread has it blocked, so no other thread can take it in between.
    while pending().is_some_and(|pending| pending.contains(signal)) {
        if set.wait().is_err() {
            return;
        }
    }
}

fn pending() -> Option<SigSet> {
    // SAFETY: sigpending fills the set we own, and a filled set is a valid sigset_t.
    unsafe {
        let mut raw: libc::sigset_t = std::mem::zeroed();
        (libc::sigpending(&mut raw) == 0).then(|| SigSet::from_sigset_t_unchecked(raw))
    }
}

/// `proc_pidinfo` for one fixed-size record; `None` if the process is gone (or a zombie).
fn pid_info<T>(pid: i32, flavor: libc::c_int) -> Option<T> {
    let size = std::mem::size_of::<T>() as libc::c_int;
    let mut info = std::mem::MaybeUninit::<T>::zeroed();
    // SAFETY: the kernel writes at most `size` bytes into `info`; T is a plain C record.
    let written = unsafe { libc::proc_pidinfo(pid, flavor, 0, info.as_mut_ptr().cast(), size) };
    // SAFETY: a complete record was written (and zeroed memory is valid for these records).
    (written == size).then(|| unsafe { info.assume_init() })
}

pub fn memory_bytes(pid: i32) -> Option<u64> {
    // SAFETY: zeroed memory is a valid rusage_info_v2 (integers only).
    let mut usage: libc::rusage_info_v2 = unsafe { std::mem::zeroed() };
    // SAFETY: the kernel fills one rusage_info_v2, the record RUSAGE_INFO_V2 names.
    let ok = unsafe {
        libc::proc_pid_rusage(
            pid,
            libc::RUSAGE_INFO_V2,
            (&mut usage as *mut libc::rusage_info_v2).cast(),
        )
    } == 0;
    ok.then_some(usage.ri_phys_footprint)
}

pub fn thread_count(pid: i32) -> Option<u32> {
    let task: libc::proc_taskinfo = pid_info(pid, libc::PROC_PIDTASKINFO)?;
    u32::try_from(task.pti_threadnum).ok()
}

pub fn running_children() -> Vec<u32> {
    let me = std::process::id() as libc::pid_t;
    let mut pids: Vec<libc::pid_t> = vec![0; 64];
    loop {
        let bytes = std::mem::size_of_val(pids.as_slice()) as libc::c_int;
        // SAFETY: the kernel writes at most `bytes` bytes of pids into the buffer; the call
        // returns how many pids it wrote (0 on error).
        let count = unsafe { libc::proc_listchildpids(me, pids.as_mut_ptr().cast(), bytes) }.max(0);
        let count = count as usize;
        if count < pids.len() {
            pids.truncate(count);
            break;
        }
        // Full: there may be more.
        pids.resize(pids.len() * 2, 0);
    }
    pids.into_iter()
        .filter(|pid| *pid > 0 && is_running(*pid))
        .filter_map(|pid| u32::try_from(pid).ok())
        .collect()
}

/// Alive and not a zombie (`proc_pidinfo` also fails for zombies).
fn is_running(pid: libc::pid_t) -> bool {
    pid_info::<libc::proc_bsdinfo>(pid, libc::PROC_PIDTBSDINFO)
        .is_some_and(|info| info.pbi_status != libc::SZOMB)
}
