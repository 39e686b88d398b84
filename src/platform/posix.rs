//! Plain POSIX ways to do what Linux has a single call for: a close-on-exec pipe without
//! `pipe2`, and taking a pending signal without `sigtimedwait`. macOS uses them; the unit tests
//! run them on Linux too, so they are tested somewhere even though CI has no Mac.

use std::os::fd::OwnedFd;

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
