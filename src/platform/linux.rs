//! Linux: `pipe2`, `prctl`, `sigtimedwait`, `sched_getaffinity` and `/proc`.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::dir::Dir;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::stat::Mode;

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

// What a later run could observe (`process_state`).

/// This process's threads: the entries of /proc/self/task, which take less for the kernel to
/// list than /proc/self/status takes to write.
pub fn own_threads() -> Option<u32> {
    let (threads, _) = numeric_entries("/proc/self/task")?;
    u32::try_from(threads.len()).ok()
}

/// The numeric entries of a /proc directory, ascending, and the descriptor that listed them.
fn numeric_entries(path: &str) -> Option<(Vec<i32>, RawFd)> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let mut dir = Dir::open(path, flags, Mode::empty()).ok()?;
    let mut entries: Vec<i32> = dir
        .iter()
        .filter_map(|entry| entry.ok()?.file_name().to_str().ok()?.parse().ok())
        .collect();
    entries.sort_unstable();
    Some((entries, dir.as_raw_fd()))
}

/// Descriptors open in this process, ascending.
pub fn open_fds() -> Option<Vec<RawFd>> {
    let (mut fds, listing) = numeric_entries("/proc/self/fd")?;
    // It was open while it listed, and is closed now.
    fds.retain(|fd| *fd != listing);
    Some(fds)
}

/// Every signal a program can give a disposition: the standard ones and the realtime ones glibc
/// leaves to programs (it keeps the lowest few for its threads).
pub fn signals() -> impl Iterator<Item = libc::c_int> {
    (1..=31).chain(libc::SIGRTMIN()..=libc::SIGRTMAX())
}

/// A name for a signal nix has none for.
pub fn unnamed_signal(signal: libc::c_int) -> String {
    if signal >= libc::SIGRTMIN() {
        format!("SIGRTMIN+{}", signal - libc::SIGRTMIN())
    } else {
        format!("signal {signal}")
    }
}

/// The C environment, a null-terminated array of `NAME=value` strings (or null).
pub fn environ() -> *const *const libc::c_char {
    extern "C" {
        static environ: *const *const libc::c_char;
    }
    // SAFETY: reads the pointer itself, which libc keeps valid; what it points to is the
    // caller's to read under the caller's conditions.
    unsafe { environ }
}

/// `getrlimit`'s resource type: glibc has one of its own.
#[cfg(target_env = "gnu")]
pub type Resource = libc::__rlimit_resource_t;
#[cfg(not(target_env = "gnu"))]
pub type Resource = libc::c_int;

/// Every resource limit Linux has.
pub const RESOURCE_LIMITS: [(Resource, &str); 16] = [
    (libc::RLIMIT_AS, "RLIMIT_AS"),
    (libc::RLIMIT_CORE, "RLIMIT_CORE"),
    (libc::RLIMIT_CPU, "RLIMIT_CPU"),
    (libc::RLIMIT_DATA, "RLIMIT_DATA"),
    (libc::RLIMIT_FSIZE, "RLIMIT_FSIZE"),
    (libc::RLIMIT_LOCKS, "RLIMIT_LOCKS"),
    (libc::RLIMIT_MEMLOCK, "RLIMIT_MEMLOCK"),
    (libc::RLIMIT_MSGQUEUE, "RLIMIT_MSGQUEUE"),
    (libc::RLIMIT_NICE, "RLIMIT_NICE"),
    (libc::RLIMIT_NOFILE, "RLIMIT_NOFILE"),
    (libc::RLIMIT_NPROC, "RLIMIT_NPROC"),
    (libc::RLIMIT_RSS, "RLIMIT_RSS"),
    (libc::RLIMIT_RTPRIO, "RLIMIT_RTPRIO"),
    (libc::RLIMIT_RTTIME, "RLIMIT_RTTIME"),
    (libc::RLIMIT_SIGPENDING, "RLIMIT_SIGPENDING"),
    (libc::RLIMIT_STACK, "RLIMIT_STACK"),
];

/// What only Linux has: the CPU affinity, and the `prctl` flags that the worker relies on (a
/// parent-death signal, being its descendants' subreaper) or that can never be undone.
#[derive(Debug, PartialEq, Eq)]
pub struct OsState {
    affinity: Option<Affinity>,
    parent_death_signal: Option<libc::c_int>,
    child_subreaper: Option<libc::c_int>,
    no_new_privs: Option<libc::c_int>,
    seccomp: Option<libc::c_int>,
}

/// The calling thread's CPU affinity.
struct Affinity(libc::cpu_set_t);

impl Affinity {
    fn capture() -> Option<Self> {
        // SAFETY: zeroed memory is a valid (empty) cpu_set_t.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::cpu_set_t>();
        // SAFETY: the kernel writes at most `size` bytes into `set`.
        let ok = unsafe { libc::sched_getaffinity(0, size, &mut set) } == 0;
        ok.then_some(Affinity(set))
    }

    fn count(&self) -> libc::c_int {
        // SAFETY: reads the set we own.
        unsafe { libc::CPU_COUNT(&self.0) }
    }
}

impl PartialEq for Affinity {
    fn eq(&self, other: &Self) -> bool {
        // SAFETY: compares two sets we own.
        unsafe { libc::CPU_EQUAL(&self.0, &other.0) }
    }
}

impl Eq for Affinity {}

impl std::fmt::Debug for Affinity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Affinity({} CPUs)", self.count())
    }
}

/// A `prctl` that returns its answer.
fn prctl_get(option: libc::c_int) -> Option<libc::c_int> {
    // SAFETY: the GET options used here take no further arguments and touch no memory of ours.
    let value = unsafe { libc::prctl(option, 0, 0, 0, 0) };
    (value >= 0).then_some(value)
}

/// A `prctl` that writes its answer through a pointer.
fn prctl_get_into(option: libc::c_int) -> Option<libc::c_int> {
    let mut value: libc::c_int = 0;
    // SAFETY: the GET options used here write one int through the pointer, to `value`.
    let ok = unsafe { libc::prctl(option, &mut value as *mut libc::c_int, 0, 0, 0) } == 0;
    ok.then_some(value)
}

impl OsState {
    pub fn capture() -> Self {
        Self {
            affinity: Affinity::capture(),
            parent_death_signal: prctl_get_into(libc::PR_GET_PDEATHSIG),
            child_subreaper: prctl_get_into(libc::PR_GET_CHILD_SUBREAPER),
            no_new_privs: prctl_get(libc::PR_GET_NO_NEW_PRIVS),
            seccomp: prctl_get(libc::PR_GET_SECCOMP),
        }
    }

    pub fn changes(&self, now: &OsState, found: &mut Vec<String>) {
        if self.affinity != now.affinity {
            let count = |a: &Option<Affinity>| a.as_ref().map_or(0, Affinity::count);
            found.push(format!(
                "CPU affinity changed ({} -> {} CPUs)",
                count(&self.affinity),
                count(&now.affinity)
            ));
        }
        let flags = [
            (
                "parent-death signal",
                self.parent_death_signal,
                now.parent_death_signal,
            ),
            (
                "child subreaper flag",
                self.child_subreaper,
                now.child_subreaper,
            ),
            ("no_new_privs flag", self.no_new_privs, now.no_new_privs),
            ("seccomp mode", self.seccomp, now.seccomp),
        ];
        for (what, before, now) in flags {
            if before != now {
                let show =
                    |v: Option<libc::c_int>| v.map_or("unknown".to_owned(), |v| v.to_string());
                found.push(format!(
                    "{what} changed ({} -> {})",
                    show(before),
                    show(now)
                ));
            }
        }
    }
}
