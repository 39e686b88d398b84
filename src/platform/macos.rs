//! macOS: no `pipe2`, no `SOCK_CLOEXEC`, no parent-death signal, no `sigtimedwait`, no `/proc`.
//! Compiled and clippy-checked in CI from Linux (`.ci/run`); not run on a Mac there.

use std::sync::{Mutex, MutexGuard, PoisonError};

pub use super::posix::{discard_pending, pipe};

use super::posix;
use super::process_state::{disposition, Descriptor, Signals, Summary};

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

// What a later run could observe (`process_state`).

/// A system call for each: one `sigaction` per signal among them.
pub fn summary() -> Summary {
    Summary {
        threads: thread_count(nix::unistd::getpid().as_raw()),
        umask: Some(posix::umask()),
        signals: Signals::from_fn(disposition),
        blocked: posix::blocked_signals(),
        credentials: posix::credentials(),
        os: OsState,
    }
}

/// Descriptors open in this process, ascending, each with the file it refers to and its
/// close-on-exec flag.
pub fn open_fds() -> Option<Vec<Descriptor>> {
    let me = nix::unistd::getpid().as_raw();
    let empty = libc::proc_fdinfo {
        proc_fd: 0,
        proc_fdtype: 0,
    };
    let mut infos = vec![empty; 64];
    loop {
        let bytes = std::mem::size_of_val(infos.as_slice()) as libc::c_int;
        // SAFETY: the kernel writes at most `bytes` bytes of records into the buffer and
        // returns how many it wrote (0 on error).
        let written = unsafe {
            libc::proc_pidinfo(
                me,
                libc::PROC_PIDLISTFDS,
                0,
                infos.as_mut_ptr().cast(),
                bytes,
            )
        };
        if written <= 0 {
            return None;
        }
        let count = written as usize / std::mem::size_of::<libc::proc_fdinfo>();
        if count < infos.len() {
            infos.truncate(count);
            break;
        }
        // Full: there may be more.
        infos.resize(infos.len() * 2, empty);
    }
    infos.sort_unstable_by_key(|info| info.proc_fd);
    Some(
        infos
            .iter()
            .map(|info| posix::describe(info.proc_fd))
            .collect(),
    )
}

/// Every signal: macOS has no realtime ones.
pub fn signals() -> impl Iterator<Item = libc::c_int> {
    1..=31
}

/// A name for a signal nix has none for.
pub fn unnamed_signal(signal: libc::c_int) -> String {
    format!("signal {signal}")
}

/// The C environment, a null-terminated array of `NAME=value` strings (or null). Through
/// `_NSGetEnviron`: `environ` itself is not reachable from a shared library on macOS.
pub fn environ() -> *const *const libc::c_char {
    // SAFETY: _NSGetEnviron returns the address of the process's `environ`, which lives as
    // long as the process; what it points to is the caller's to read under its conditions.
    unsafe { (*libc::_NSGetEnviron()).cast_const().cast() }
}

pub type Resource = libc::c_int;

/// Every resource limit macOS has (RLIMIT_RSS is another name for RLIMIT_AS there).
pub const RESOURCE_LIMITS: [(Resource, &str); 9] = [
    (libc::RLIMIT_AS, "RLIMIT_AS"),
    (libc::RLIMIT_CORE, "RLIMIT_CORE"),
    (libc::RLIMIT_CPU, "RLIMIT_CPU"),
    (libc::RLIMIT_DATA, "RLIMIT_DATA"),
    (libc::RLIMIT_FSIZE, "RLIMIT_FSIZE"),
    (libc::RLIMIT_MEMLOCK, "RLIMIT_MEMLOCK"),
    (libc::RLIMIT_NOFILE, "RLIMIT_NOFILE"),
    (libc::RLIMIT_NPROC, "RLIMIT_NPROC"),
    (libc::RLIMIT_STACK, "RLIMIT_STACK"),
];

/// Nothing beyond what POSIX has.
#[derive(Debug, PartialEq, Eq)]
pub struct OsState;

impl OsState {
    pub fn changes(&self, _now: &OsState, _found: &mut [String]) {}
}
