//! macOS: no `pipe2`, no `SOCK_CLOEXEC`, no parent-death signal, no `sigtimedwait`, no `/proc`.
//! Compiled and clippy-checked in CI from Linux (`.ci/run`); not run on a Mac there.

use std::sync::{Mutex, MutexGuard, PoisonError};

pub use super::posix::{discard_pending, pipe};

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

pub fn die_with_parent() {
    // No parent-death signal on macOS: a worker notices through its sockets.
}

pub fn thread_count(pid: i32) -> Option<u32> {
    let task: libc::proc_taskinfo = pid_info(pid, libc::PROC_PIDTASKINFO)?;
    u32::try_from(task.pti_threadnum).ok()
}

pub fn running_children() -> Vec<u32> {
    running_children_of(std::process::id())
}

/// macOS has no child subreaper: an orphan goes to launchd and leaves the worker's tree.
pub fn become_subreaper() {}

pub fn running_children_of(pid: u32) -> Vec<u32> {
    let me = pid as libc::pid_t;
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
