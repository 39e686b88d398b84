//! Linux: `pipe2`, `PR_SET_PDEATHSIG`, `sigtimedwait` and `/proc`.

use std::os::fd::OwnedFd;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::signal::{SigSet, Signal};

pub fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (read_end, write_end) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
    // pipe2 sets the status flags on both ends; writers must block when the pipe is full.
    let flags = OFlag::from_bits_truncate(fcntl(&write_end, FcntlArg::F_GETFL)?);
    fcntl(&write_end, FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK))?;
    Ok((read_end, write_end))
}

pub fn in_child_before_exec() -> std::io::Result<()> {
    // An extra on top of the interrupt socket: the kernel kills the worker if the supervisor
    // dies, even before the worker's listener runs. (Strictly: when the thread that forked it
    // ends; the supervisor spawns from tokio's long-lived worker threads.) It cannot fail for
    // SIGKILL, and if it did, the socket would still end the worker.
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    Ok(())
}

/// Sockets are created close-on-exec atomically (`SOCK_CLOEXEC`): nothing to hold.
pub struct SpawnGuard;

pub fn hold_spawns() -> SpawnGuard {
    SpawnGuard
}

pub fn discard_pending(signal: Signal) {
    let mut set = SigSet::empty();
    set.add(signal);
    let no_wait = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: takes a pending signal of `set` (if any) without running its handler; every
    // pointer is to a value that lives for the call, and a null siginfo is allowed.
    while unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &no_wait) }
        == signal as libc::c_int
    {}
}

pub fn memory_bytes(pid: i32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok()??;
    Some(pages * page.max(0) as u64)
}

pub fn thread_count(pid: i32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))?
        .trim()
        .parse()
        .ok()
}

pub fn running_children() -> Vec<u32> {
    running_children_of(std::process::id())
}

/// Running children of `pid`: each of its threads' (a child belongs to the thread that forked
/// it), zombies left out.
pub fn running_children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let children = tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|pid| pid.parse::<u32>().ok())
                .collect::<Vec<_>>()
        });
    children.filter(|pid| is_running(*pid)).collect()
}

pub fn die_with_parent() {
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    // The parent may have died before the signal was asked for.
    // SAFETY: as above.
    if unsafe { libc::getppid() } != parent {
        // SAFETY: _exit ends the process at once.
        unsafe { libc::_exit(0) };
    }
}

/// Makes this process the reaper of every orphan among its descendants, so a program's process
/// that leaves its session with `setsid()` and loses its parent stays in the worker's tree,
/// where the supervisor finds and kills it.
pub fn become_subreaper() {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag and touches no memory of ours; a
    // kernel too old for it returns EINVAL, and then orphans go to init as before.
    let _ = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
}

/// Alive and not a zombie.
fn is_running(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state follows the command name, which is in parentheses and may contain anything.
    let state = stat.rsplit(')').next().unwrap_or_default().trim_start();
    !state.is_empty() && !state.starts_with('Z')
}
