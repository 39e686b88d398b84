//! Plain POSIX ways to do what Linux has a single call or a `/proc` summary for: a close-on-exec
//! pipe without `pipe2`, taking a pending signal without `sigtimedwait`, and the process-state
//! probes that Linux reads from `/proc/thread-self/status` (umask, signal mask, ids) or not at
//! all (what a descriptor refers to). macOS uses them; the unit tests run them on Linux too, so
//! they are tested somewhere even though CI has no Mac.

use std::os::fd::{OwnedFd, RawFd};

use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::sys::signal::{SigSet, Signal};

use super::process_state::{file_of, signal_set, Credentials, Descriptor};

pub fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (read_end, write_end) = nix::unistd::pipe()?;
    for end in [&read_end, &write_end] {
        fcntl(end, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    }
    let flags = OFlag::from_bits_truncate(fcntl(&read_end, FcntlArg::F_GETFL)?);
    fcntl(&read_end, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok((read_end, write_end))
}

pub fn discard_pending(signal: Signal) {
    let mut set = SigSet::empty();
    set.add(signal);
    // sigwait never waits here: it is only called while the signal is pending, and the caller
    // has it blocked (in a worker, every thread does), so nothing else takes it in between.
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

/// The umask, by setting one and putting it back (POSIX has no way to only read it). The one
/// set meanwhile is owner-only: a file another thread creates in between is private rather
/// than open to everyone.
pub fn umask() -> libc::mode_t {
    use nix::sys::stat::{umask, Mode};
    let current = umask(Mode::from_bits_truncate(0o077));
    umask(current);
    current.bits()
}

/// The calling thread's blocked signals, one bit per signal number.
pub fn blocked_signals() -> Option<u128> {
    // SAFETY: zeroed memory is a valid (empty) sigset_t.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: with a null new set, pthread_sigmask only writes the current mask into `set`.
    if unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut set) } != 0 {
        return None;
    }
    // SAFETY: `set` is an initialised sigset_t and `signal_set` asks only for valid signals.
    Some(signal_set(
        |signal| unsafe { libc::sigismember(&set, signal) } == 1,
    ))
}

pub fn credentials() -> Credentials {
    use nix::unistd::{getegid, geteuid, getgid, getuid};
    // SAFETY: with a size of 0, getgroups writes nothing and returns how many there are.
    let groups = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    Credentials {
        uid: Some(getuid().as_raw()),
        euid: Some(geteuid().as_raw()),
        gid: Some(getgid().as_raw()),
        egid: Some(getegid().as_raw()),
        groups: usize::try_from(groups).ok(),
    }
}

/// The descriptor with the file it refers to and its close-on-exec flag: two system calls.
pub fn describe(fd: RawFd) -> Descriptor {
    // A descriptor closed since it was listed has no file.
    let file = file_of(fd);
    // SAFETY: F_GETFD reads the descriptor's flags and touches no memory.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    Descriptor {
        fd,
        file,
        close_on_exec: (flags >= 0).then_some(flags & libc::FD_CLOEXEC != 0),
    }
}
