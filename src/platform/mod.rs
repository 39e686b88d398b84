//! Everything that differs between the operating systems the plugin runs on (Linux and macOS).
//!
//! The rest of the code asks this module for what it needs and never names an OS:
//!
//! - **pipes** with close-on-exec set ([`pipe`]): `pipe2` does not exist on macOS;
//! - **parent death** ([`in_child_before_exec`]): a worker must not outlive its supervisor. The
//!   portable mechanism is the worker's interrupt socket: when the supervisor dies, the kernel
//!   closes its end and the worker's listener thread ends the process (`worker::run`). On Linux
//!   the worker also gets `PR_SET_PDEATHSIG`, so the kernel kills it even before that thread
//!   runs. [`SpawnGuard`] keeps the mechanism sound on macOS, where sockets cannot be created
//!   close-on-exec atomically;
//! - **signal waiting** ([`discard_pending`]): `sigtimedwait` does not exist on macOS;
//! - **what a worker's processes use and which it runs** ([`ProcessTree`], [`running_children`]):
//!   `/proc` on Linux, `libproc` on macOS;
//! - **killing a worker with everything it started** ([`ProcessTree::kill`]);
//! - **what a run left behind in its worker's process** ([`ProcessState`]): `/proc` and `prctl`
//!   on Linux, `libproc` on macOS, POSIX calls for the rest.
//!
//! [`ProcessTree`] is the seam for containment: a tree is the worker (leader of its own process
//! group) and every process below it, walked through the OS; on Linux the worker is their child
//! subreaper ([`become_subreaper`]), so one that leaves the group with `setsid` stays in the
//! tree. A Linux cgroup per worker (kernel-enforced memory and pids limits, `cgroup.kill`)
//! belongs behind it too, without changing its callers.

use std::os::fd::OwnedFd;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

#[cfg(target_os = "linux")]
#[path = "linux.rs"]
mod os;
#[cfg(target_os = "macos")]
#[path = "macos.rs"]
mod os;
#[cfg(not(any(target_os = "linux", target_os = "macos")))]
compile_error!("qntx-python-plugin supports Linux and macOS");
#[cfg(any(target_os = "macos", test))]
mod posix;
mod process_state;

pub use os::SpawnGuard;
pub use process_state::ProcessState;

/// A pipe `(read end, write end)`: both close-on-exec, the read end non-blocking and the write
/// end blocking (a writer that fills the pipe waits rather than failing). On macOS the flags
/// are set after the pipe exists: call it only while no other thread of this process can fork.
pub fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    os::pipe()
}

/// What the child does between `fork` and `exec` of a worker, after it leads its own process
/// group: on Linux, ask the kernel to SIGKILL it when the supervisor dies; nothing on macOS.
/// Only async-signal-safe calls may happen here; an error fails the spawn.
pub fn in_child_before_exec() -> std::io::Result<()> {
    os::in_child_before_exec()
}

/// Held from creating a worker's sockets until the worker has been spawned, so no other spawn
/// forks while a descriptor is not yet close-on-exec (a no-op on Linux).
pub fn hold_spawns() -> SpawnGuard {
    os::hold_spawns()
}

/// Takes every pending instance of `signal`, which the calling thread must have blocked,
/// without running its handler and without waiting.
pub fn discard_pending(signal: Signal) {
    os::discard_pending(signal)
}

/// Child processes of this process that are still running (zombies do not count).
pub fn running_children() -> Vec<u32> {
    // One cheap syscall for the usual case of no children at all.
    // SAFETY: waitid with WNOWAIT only inspects; it reaps nothing, and `info` is ours.
    let no_children = unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
        libc::waitid(libc::P_ALL, 0, &mut info, flags) == -1
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD)
    };
    if no_children {
        return Vec::new();
    }
    os::running_children()
}

/// Threads of process `pid`, as the OS counts them; `None` once it is gone.
pub fn thread_count(pid: i32) -> Option<u32> {
    os::thread_count(pid)
}

/// Asks the kernel to SIGKILL the calling process when its parent dies (Linux), and ends it at
/// once if the parent is already gone; nothing on macOS, where the sockets say it instead.
pub fn die_with_parent() {
    os::die_with_parent()
}

/// Makes the calling process (a worker) the reaper of its orphaned descendants (Linux), so
/// they stay in its [`ProcessTree`]; nothing on macOS.
pub fn become_subreaper() {
    os::become_subreaper()
}

/// What a process tree holds right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeUsage {
    /// Resident memory of the leader and every running descendant, summed.
    pub memory_bytes: u64,
    /// Running descendants of the leader (the processes its programs started).
    pub descendants: usize,
}

/// Descendants looked at in one walk: a bound on the work, far above any process limit.
const MAX_WALK: usize = 10_000;

/// A worker and everything it started: the unit the supervisor measures and kills.
#[derive(Debug, Clone, Copy)]
pub struct ProcessTree {
    /// The worker; it leads its own process group, whose id is its pid.
    leader: Pid,
}

impl ProcessTree {
    /// The tree of a child spawned as the leader of its own process group.
    pub fn led_by(pid: u32) -> Self {
        Self {
            leader: Pid::from_raw(pid as i32),
        }
    }

    pub fn leader(&self) -> i32 {
        self.leader.as_raw()
    }

    /// Kills every process in the tree; "already gone" is not an error. Call it while the
    /// leader is unreaped: then the group id cannot have been reused by someone else.
    ///
    /// Descendants go first, found by walking the tree while the leader is alive (it is their
    /// subreaper, so one that left the process group with `setsid()` is still below it), again
    /// until a walk finds none, so ones forked meanwhile go too; then the group.
    pub fn kill(&self) {
        if self.leader.as_raw() <= 0 {
            return;
        }
        for _ in 0..16 {
            let descendants = self.descendants();
            if descendants.is_empty() {
                break;
            }
            for pid in descendants {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
        // The leader itself too: one that does not lead a group (an orphan a template kills)
        // is not reached by its pid as a group id.
        let _ = nix::sys::signal::kill(self.leader, Signal::SIGKILL);
        let _ = killpg(self.leader, Signal::SIGKILL);
    }

    /// Running descendants of the leader, breadth first, at most [`MAX_WALK`].
    fn descendants(&self) -> Vec<u32> {
        let mut found = Vec::new();
        let mut next = vec![self.leader.as_raw() as u32];
        while let Some(pid) = next.pop() {
            for child in os::running_children_of(pid) {
                if found.len() >= MAX_WALK {
                    return found;
                }
                found.push(child);
                next.push(child);
            }
        }
        found
    }

    /// Memory of the whole tree and the number of processes below the leader; `None` once the
    /// leader is gone. What the memory and process limits of a run count.
    pub fn usage(&self) -> Option<TreeUsage> {
        let leader = self.memory_bytes()?;
        let descendants = self.descendants();
        let memory_bytes = descendants
            .iter()
            .filter_map(|pid| os::memory_bytes(*pid as i32))
            .sum::<u64>()
            + leader;
        Some(TreeUsage {
            memory_bytes,
            descendants: descendants.len(),
        })
    }

    /// Memory the leader uses, in bytes; `None` once it is gone. Linux: resident set size.
    /// macOS: physical footprint, which also counts the leader's compressed memory (resident
    /// size would let a program slip under the limit by having its pages compressed).
    pub fn memory_bytes(&self) -> Option<u64> {
        os::memory_bytes(self.leader.as_raw())
    }

    /// Threads of the leader; `None` once it is gone.
    pub fn threads(&self) -> Option<u32> {
        os::thread_count(self.leader.as_raw())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{ErrorKind, Read, Write};
    use std::os::unix::process::{CommandExt, ExitStatusExt};

    use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
    use nix::sys::signal::SigSet;

    fn sleeper(script: &str) -> std::process::Child {
        std::process::Command::new("sh")
            .args(["-c", script])
            .process_group(0)
            .spawn()
            .unwrap()
    }

    fn assert_pipe_is_close_on_exec_with_a_non_blocking_read_end(
        pipe: fn() -> std::io::Result<(OwnedFd, OwnedFd)>,
    ) {
        let (read_end, write_end) = pipe().unwrap();
        for fd in [&read_end, &write_end] {
            let flags = FdFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFD).unwrap());
            assert!(flags.contains(FdFlag::FD_CLOEXEC));
        }
        let status = |fd| OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL).unwrap());
        assert!(status(&read_end).contains(OFlag::O_NONBLOCK));
        assert!(!status(&write_end).contains(OFlag::O_NONBLOCK));

        let (mut reader, mut writer) = (
            std::fs::File::from(read_end),
            std::fs::File::from(write_end),
        );
        let mut buf = [0u8; 8];
        assert_eq!(
            reader.read(&mut buf).unwrap_err().kind(),
            ErrorKind::WouldBlock
        );
        writer.write_all(b"hi").unwrap();
        assert_eq!(reader.read(&mut buf).unwrap(), 2);
    }

    #[test]
    fn pipe_is_close_on_exec_with_a_non_blocking_read_end() {
        assert_pipe_is_close_on_exec_with_a_non_blocking_read_end(pipe);
        // The macOS way, run here too.
        assert_pipe_is_close_on_exec_with_a_non_blocking_read_end(posix::pipe);
    }

    /// The calling thread's pending signals (`sigpending`, which nix does not wrap).
    fn pending() -> SigSet {
        // SAFETY: sigpending fills the set we own; the set it fills is a valid sigset_t.
        unsafe {
            let mut raw: libc::sigset_t = std::mem::zeroed();
            assert_eq!(libc::sigpending(&mut raw), 0);
            SigSet::from_sigset_t_unchecked(raw)
        }
    }

    fn assert_discard_pending_takes_a_blocked_signal(discard: fn(Signal)) {
        // A thread of its own: the mask and the thread-directed signal stay there. SIGUSR2 has
        // no handler here, so if it were delivered rather than taken, the test process would die.
        std::thread::spawn(move || {
            let mut set = SigSet::empty();
            set.add(Signal::SIGUSR2);
            set.thread_block().unwrap();
            let this_thread = nix::sys::pthread::pthread_self();
            nix::sys::pthread::pthread_kill(this_thread, Signal::SIGUSR2).unwrap();
            assert!(pending().contains(Signal::SIGUSR2));
            discard(Signal::SIGUSR2);
            assert!(!pending().contains(Signal::SIGUSR2));
            discard(Signal::SIGUSR2); // nothing pending: returns at once
            set.thread_unblock().unwrap();
        })
        .join()
        .unwrap();
    }

    #[test]
    fn discard_pending_takes_a_blocked_signal_without_running_its_handler() {
        assert_discard_pending_takes_a_blocked_signal(discard_pending);
        // The macOS way (sigpending, then sigwait), run here too.
        assert_discard_pending_takes_a_blocked_signal(posix::discard_pending);
    }

    #[test]
    fn a_tree_reports_memory_and_threads_and_dies_whole() {
        // The leader starts a grandchild; both hold the write end of stdout, so the read end
        // sees end-of-file only once both are dead.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 600 & wait"])
            .process_group(0)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let tree = ProcessTree::led_by(child.id());
        assert!(tree.memory_bytes().is_some_and(|bytes| bytes > 0));
        assert_eq!(tree.threads(), Some(1));

        tree.kill();
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert_eq!(tree.memory_bytes(), None);
        assert_eq!(tree.threads(), None);
        let (sender, closed) = std::sync::mpsc::channel();
        std::thread::spawn(move || sender.send(stdout.read_to_end(&mut Vec::new())));
        let read = closed.recv_timeout(std::time::Duration::from_secs(20));
        assert!(
            matches!(read, Ok(Ok(0))),
            "the grandchild outlived the kill: {read:?}"
        );
    }

    #[test]
    fn running_children_lists_a_child_until_it_is_a_zombie() {
        let mut child = sleeper("sleep 60");
        let pid = child.id();
        // Other tests run children concurrently: assert on this one only.
        assert!(running_children().contains(&pid));
        ProcessTree::led_by(pid).kill();
        // Wait until it has exited without reaping it: it is now a zombie. (nix has no waitid
        // for macOS.)
        // SAFETY: waitid fills the siginfo we own; WNOWAIT leaves the child unreaped.
        let waited = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let flags = libc::WEXITED | libc::WNOWAIT;
            libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags)
        };
        assert_eq!(waited, 0, "{}", std::io::Error::last_os_error());
        assert!(!running_children().contains(&pid));
        child.wait().unwrap();
    }
}
