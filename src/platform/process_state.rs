//! What a run can leave behind in its worker's process for a later run to see, at the OS level.
//!
//! A worker runs one program after another in one process, so whatever a program changes about
//! the process outlives it. Python-level leftovers are the interpreter's business; this covers
//! the attributes fork(2) and execve(2) list as the process's own, which a program changes with
//! a system call: threads, working directory, environment, umask, signal dispositions and mask,
//! interval timers, resource limits, open descriptors, scheduling priority, locale, user and group
//! ids, process group and session; on Linux also the CPU affinity and the `prctl` flags that the
//! worker relies on (parent-death signal, child subreaper) or that can never be undone
//! (`no_new_privs`, seccomp).
//!
//! [`ProcessState::capture`] takes them all while the worker is fresh; after each run a second
//! capture and [`ProcessState::changes_since`] name whatever differs. The worker captures after
//! every run, so a capture keeps to few system calls, and opens no file after the first: opening
//! one costs most, the more so once a run has filled the caches with its own data. On Linux it
//! reads the kernel's summaries, from two files each capturing thread opens once and keeps
//! (`linux.rs`): `/proc/thread-self/status` for the threads, umask, signal mask and
//! dispositions, ids, `no_new_privs`, seccomp mode and affinity, and `/proc/self/fd` for the
//! descriptors; the rest is a system call each (one `getrlimit` per limit, which costs less than
//! opening `/proc/self/limits` and having the kernel format it), 33 in all.
//! macOS asks with a system call for each, one `sigaction` per signal and an `fstat` and
//! `fcntl` per descriptor among them. The `process_state_cost` test measures a capture.
//!
//! What Linux's summaries do not tell, and so goes unseen there:
//!
//! - **which handler catches a signal**, and with which flags: `/proc` only says default,
//!   ignored or caught. A change from default or ignored to a handler is seen, and back, but
//!   not one C handler replacing another (or its flags changing) on a signal already caught.
//!   SIGCHLD is the exception, read in full with `sigaction`: its flags decide whether the
//!   children of later runs are reaped behind their backs. Python-level handlers are no help
//!   here on either OS (`signal.signal` puts the same C handler on every signal it catches): the
//!   worker compares those itself.
//! - **what an open descriptor refers to, and its close-on-exec flag**: a descriptor left open
//!   or closed is seen; one closed and opened again on another file, or `dup2`ed onto, under
//!   the same number, or whose close-on-exec flag changed, is not.

use std::ffi::{CStr, CString};
use std::hash::{BuildHasher, RandomState};
use std::ops::Range;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::OnceLock;

use libc::c_int;
use nix::sys::signal::Signal;

use super::os;

/// What a later run could observe of this process.
///
/// Capture it on the same thread each time, the one that runs the programs (a worker's main
/// thread): the signal mask, and on Linux the priority and CPU affinity, belong to the calling
/// thread. The environment and locale are read without a lock, as `getenv` does: capture while
/// no other thread of the process changes them (in a worker, between runs).
#[derive(Debug)]
pub struct ProcessState {
    threads: Option<u32>,
    cwd: Option<PathBuf>,
    environment: Environment,
    umask: Option<libc::mode_t>,
    signals: Signals,
    /// The calling thread's blocked signals, one bit per signal number.
    blocked: Option<u128>,
    /// Armed or not, for each of [`TIMERS`].
    timers: [Option<bool>; 3],
    /// Soft and hard, for each of the platform's resources, in the order of its list.
    limits: [Option<Limit>; os::RESOURCE_LIMITS.len()],
    fds: Option<Vec<Descriptor>>,
    priority: Option<c_int>,
    locale: Option<CString>,
    credentials: Credentials,
    process_group: i32,
    session: Option<i32>,
    os: os::OsState,
}

impl ProcessState {
    /// Everything listed in the module's documentation, as it is now.
    pub fn capture() -> Self {
        let Summary {
            threads,
            umask,
            signals,
            blocked,
            credentials,
            os,
        } = os::summary();
        Self {
            threads,
            cwd: std::env::current_dir().ok(),
            environment: Environment::capture(),
            umask,
            signals,
            blocked,
            timers: TIMERS.map(|(timer, _)| timer_armed(timer)),
            limits: os::RESOURCE_LIMITS.map(|(resource, _)| resource_limit(resource)),
            fds: os::open_fds(),
            priority: priority(),
            locale: locale(),
            credentials,
            process_group: nix::unistd::getpgrp().as_raw(),
            session: nix::unistd::getsid(None).ok().map(|pid| pid.as_raw()),
            os,
        }
    }

    /// As [`capture`](Self::capture), leaving `own` threads out of the count: threads the
    /// caller's own runtime started (a worker's host link), which no program did.
    pub fn capture_without(own: usize) -> Self {
        let mut state = Self::capture();
        let own = u32::try_from(own).unwrap_or(u32::MAX);
        state.threads = state.threads.map(|threads| threads.saturating_sub(own));
        state
    }

    /// Human-readable names of what differs from `self` in `now`; empty when nothing does.
    /// Environment variables are named, never their values (they may be secrets).
    ///
    /// A thread that has just been joined may still be counted for a moment while the kernel
    /// finishes it: a caller that sees nothing but "more threads" may capture again shortly.
    pub fn changes_since(&self, now: &ProcessState) -> Vec<String> {
        let mut found = Vec::new();
        thread_changes(self.threads, now.threads, &mut found);
        push_changed(
            &mut found,
            "working directory",
            &self.cwd,
            &now.cwd,
            |cwd| cwd.display().to_string(),
        );
        self.environment.changes(&now.environment, &mut found);
        push_changed(&mut found, "umask", &self.umask, &now.umask, |mask| {
            format!("{mask:03o}")
        });
        signal_changes(&self.signals, &now.signals, &mut found);
        mask_changes(self.blocked, now.blocked, &mut found);
        for (((_, name), before), now) in TIMERS.iter().zip(self.timers).zip(now.timers) {
            match (before, now) {
                (before, now) if before == now => {}
                (_, Some(true)) => found.push(format!("interval timer {name} armed")),
                (_, Some(false)) => found.push(format!("interval timer {name} disarmed")),
                (_, None) => found.push(format!("interval timer {name} unreadable")),
            }
        }
        limit_changes(&self.limits, &now.limits, &mut found);
        fd_changes(self.fds.as_deref(), now.fds.as_deref(), &mut found);
        push_changed(
            &mut found,
            "scheduling priority",
            &self.priority,
            &now.priority,
            c_int::to_string,
        );
        push_changed(&mut found, "locale", &self.locale, &now.locale, |locale| {
            locale.to_string_lossy().into_owned()
        });
        self.credentials.changes(&now.credentials, &mut found);
        let show = |id: &i32| id.to_string();
        let (before, now_group) = (Some(self.process_group), Some(now.process_group));
        push_changed(&mut found, "process group", &before, &now_group, show);
        push_changed(&mut found, "session", &self.session, &now.session, show);
        self.os.changes(&now.os, &mut found);
        found
    }
}

/// What each platform reads its own way: Linux mostly from one read of
/// `/proc/thread-self/status`, macOS with a system call for each.
pub(super) struct Summary {
    pub(super) threads: Option<u32>,
    pub(super) umask: Option<libc::mode_t>,
    pub(super) signals: Signals,
    /// The calling thread's blocked signals, as [`signal_set`] makes them.
    pub(super) blocked: Option<u128>,
    pub(super) credentials: Credentials,
    pub(super) os: os::OsState,
}

/// Pushes "`what` changed (before -> now)" if they differ; "unknown" where a probe failed.
pub(super) fn push_changed<T: PartialEq>(
    found: &mut Vec<String>,
    what: &str,
    before: &Option<T>,
    now: &Option<T>,
    show: impl Fn(&T) -> String,
) {
    if before != now {
        let show = |value: &Option<T>| value.as_ref().map_or("unknown".to_owned(), &show);
        found.push(format!(
            "{what} changed ({} -> {})",
            show(before),
            show(now)
        ));
    }
}

/// The device and inode `fd` refers to (one `fstat`); None when it is not open.
pub(super) fn file_of(fd: RawFd) -> Option<(libc::dev_t, libc::ino_t)> {
    // SAFETY: zeroed memory is a valid stat (integers only).
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes into `stat` alone; a descriptor that is not open is EBADF.
    let ok = unsafe { libc::fstat(fd, &mut stat) } == 0;
    ok.then_some((stat.st_dev, stat.st_ino))
}

fn thread_changes(before: Option<u32>, now: Option<u32>, found: &mut Vec<String>) {
    let plural = |n: u32| if n == 1 { "thread" } else { "threads" };
    match (before, now) {
        (Some(before), Some(now)) if now > before => {
            let more = now - before;
            found.push(format!("{more} more {}", plural(more)));
        }
        (Some(before), Some(now)) if now < before => {
            let fewer = before - now;
            found.push(format!("{fewer} fewer {}", plural(fewer)));
        }
        (before, now) if before != now => found.push("thread count unknown".to_owned()),
        _ => {}
    }
}
/// The C environment (`environ`): each variable's name and a hash of its value, in the order
/// of `environ`, which only setting or unsetting a variable changes.
#[derive(Debug, Default)]
struct Environment {
    /// Every name, back to back: one allocation rather than one per variable.
    names: Vec<u8>,
    vars: Vec<EnvVar>,
}

#[derive(Debug, PartialEq, Eq)]
struct EnvVar {
    name: Range<usize>,
    value_hash: u64,
}

/// The key for hashing values, the same for every capture of this process and unknown to the
/// programs it runs, which therefore cannot choose a value that hides a change.
static VALUE_KEY: OnceLock<RandomState> = OnceLock::new();

impl Environment {
    fn capture() -> Self {
        let key = VALUE_KEY.get_or_init(RandomState::new);
        let mut environment = Environment::default();
        let mut entry = os::environ();
        // SAFETY: `environ` is null or a null-terminated array of pointers to NUL-terminated
        // strings, which stay valid while no thread changes the environment (the caller's
        // promise, see `ProcessState`); the loop stops at the array's terminating null.
        unsafe {
            while !entry.is_null() && !(*entry).is_null() {
                environment.push(CStr::from_ptr(*entry).to_bytes(), key);
                entry = entry.add(1);
            }
        }
        environment
    }

    fn push(&mut self, var: &[u8], key: &RandomState) {
        // As std reads it: the name ends at the first '=' after its first byte.
        let split = var
            .iter()
            .skip(1)
            .position(|byte| *byte == b'=')
            .map_or(var.len(), |at| at + 1);
        let (name, value) = var.split_at(split);
        let start = self.names.len();
        self.names.extend_from_slice(name);
        self.vars.push(EnvVar {
            name: start..self.names.len(),
            value_hash: key.hash_one(value),
        });
    }

    fn iter(&self) -> impl Iterator<Item = (&[u8], u64)> {
        self.vars
            .iter()
            .map(|var| (&self.names[var.name.clone()], var.value_hash))
    }

    fn sorted(&self) -> Vec<(&[u8], u64)> {
        let mut vars: Vec<(&[u8], u64)> = self.iter().collect();
        vars.sort_unstable();
        vars
    }

    fn changes(&self, now: &Environment, found: &mut Vec<String>) {
        let name = |name: &[u8]| String::from_utf8_lossy(name).into_owned();
        let same_names = self.names == now.names
            && self.vars.len() == now.vars.len()
            && self
                .vars
                .iter()
                .zip(&now.vars)
                .all(|(a, b)| a.name == b.name);
        if same_names {
            // The usual case, which needs no sorting: at most values changed.
            for ((var, before), (_, after)) in self.iter().zip(now.iter()) {
                if before != after {
                    found.push(format!("environment variable {} changed", name(var)));
                }
            }
            return;
        }
        // A merge of the two lists sorted by name.
        let (before, now) = (self.sorted(), now.sorted());
        let (mut before, mut now) = (before.into_iter().peekable(), now.into_iter().peekable());
        loop {
            match (before.peek(), now.peek()) {
                (Some(&(old, old_hash)), Some(&(new, new_hash))) => match old.cmp(new) {
                    std::cmp::Ordering::Less => {
                        found.push(format!("environment variable {} unset", name(old)));
                        before.next();
                    }
                    std::cmp::Ordering::Greater => {
                        found.push(format!("environment variable {} set", name(new)));
                        now.next();
                    }
                    std::cmp::Ordering::Equal => {
                        if old_hash != new_hash {
                            found.push(format!("environment variable {} changed", name(old)));
                        }
                        before.next();
                        now.next();
                    }
                },
                (Some(&(old, _)), None) => {
                    found.push(format!("environment variable {} unset", name(old)));
                    before.next();
                }
                (None, Some(&(new, _))) => {
                    found.push(format!("environment variable {} set", name(new)));
                    now.next();
                }
                (None, None) => return,
            }
        }
    }
}

/// Signal numbers up to this one (exclusive) fit: Linux's go up to 64, macOS's to 31.
const SIGNAL_SLOTS: usize = 65;

/// The disposition of each of the platform's signals, by number (`None`: unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Signals([Option<Disposition>; SIGNAL_SLOTS]);

impl Signals {
    /// `disposition` of each of the platform's signals.
    pub(super) fn from_fn(mut disposition: impl FnMut(c_int) -> Option<Disposition>) -> Self {
        let mut all = [None; SIGNAL_SLOTS];
        for signal in os::signals() {
            if let Some(slot) = usize::try_from(signal).ok().and_then(|at| all.get_mut(at)) {
                *slot = disposition(signal);
            }
        }
        Self(all)
    }

    fn get(&self, signal: c_int) -> Option<Disposition> {
        let at = usize::try_from(signal).ok()?;
        *self.0.get(at)?
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Disposition {
    handler: Handler,
    /// Only the flags that change what happens (see [`Disposition::new`]); none where they are
    /// not known.
    flags: c_int,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handler {
    Default,
    Ignored,
    /// By a function, at this address where it is known (`sigaction` tells it, Linux's
    /// summary does not).
    Caught(Option<libc::sighandler_t>),
}

impl Disposition {
    /// What `sigaction` tells. Leaves out the flags that make no difference, so that putting
    /// back the default with other flags than the process started with (Python's
    /// `signal.signal` sets SA_ONSTACK, glibc adds SA_RESTORER to every action) is no change.
    /// For a default or ignored signal only the SIGCHLD flags count: they decide whether
    /// children are reaped automatically.
    fn new(handler: libc::sighandler_t, flags: c_int) -> Self {
        let (handler, meaningful) = match handler {
            libc::SIG_DFL => (Handler::Default, libc::SA_NOCLDSTOP | libc::SA_NOCLDWAIT),
            libc::SIG_IGN => (Handler::Ignored, libc::SA_NOCLDSTOP | libc::SA_NOCLDWAIT),
            handler => (
                Handler::Caught(Some(handler)),
                libc::SA_NOCLDSTOP
                    | libc::SA_NOCLDWAIT
                    | libc::SA_NODEFER
                    | libc::SA_ONSTACK
                    | libc::SA_RESETHAND
                    | libc::SA_RESTART
                    | libc::SA_SIGINFO,
            ),
        };
        Self {
            handler,
            flags: flags & meaningful,
        }
    }

    /// What Linux's summary tells: whether the signal is ignored, or caught by some handler
    /// with some flags.
    #[cfg(target_os = "linux")]
    pub(super) fn summarised(ignored: bool, caught: bool) -> Self {
        let handler = match (ignored, caught) {
            (true, _) => Handler::Ignored,
            (false, true) => Handler::Caught(None),
            (false, false) => Handler::Default,
        };
        Self { handler, flags: 0 }
    }

    fn kind(&self) -> &'static str {
        match self.handler {
            Handler::Default => "default",
            Handler::Ignored => "ignored",
            Handler::Caught(_) => "caught",
        }
    }
}

/// The signal's disposition, as `sigaction` tells it: one system call.
pub(super) fn disposition(signal: c_int) -> Option<Disposition> {
    // SAFETY: zeroed memory is a valid sigaction (integers, a handler address and a sigset).
    let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: with a null new action, sigaction only writes the current one into `current`.
    let ok = unsafe { libc::sigaction(signal, std::ptr::null(), &mut current) } == 0;
    ok.then(|| Disposition::new(current.sa_sigaction, current.sa_flags))
}

fn signal_name(signal: c_int) -> String {
    Signal::try_from(signal).map_or_else(|_| os::unnamed_signal(signal), |s| s.as_str().into())
}

fn signal_changes(before: &Signals, now: &Signals, found: &mut Vec<String>) {
    for signal in os::signals() {
        let (before, now) = (before.get(signal), now.get(signal));
        if before == now {
            continue;
        }
        let kind = |d: Option<Disposition>| d.as_ref().map_or("unknown", Disposition::kind);
        let how = match (before, now) {
            (Some(before), Some(now)) if before.kind() == now.kind() => {
                if before.handler != now.handler {
                    "another handler".to_owned()
                } else {
                    "other flags".to_owned()
                }
            }
            _ => format!("{} -> {}", kind(before), kind(now)),
        };
        found.push(format!(
            "signal handler for {} changed ({how})",
            signal_name(signal)
        ));
    }
}

/// One bit per signal number, for each of the platform's signals that `contains` says is in
/// a set.
pub(super) fn signal_set(contains: impl Fn(c_int) -> bool) -> u128 {
    os::signals()
        .filter(|signal| (1..128).contains(signal) && contains(*signal))
        .fold(0, |set, signal| set | 1 << signal)
}

fn mask_changes(before: Option<u128>, now: Option<u128>, found: &mut Vec<String>) {
    let (Some(before), Some(now)) = (before, now) else {
        if before != now {
            found.push("signal mask unknown".to_owned());
        }
        return;
    };
    for signal in os::signals().filter(|signal| (1..128).contains(signal)) {
        let bit = 1u128 << signal;
        match (before & bit != 0, now & bit != 0) {
            (false, true) => found.push(format!("signal {} blocked", signal_name(signal))),
            (true, false) => found.push(format!("signal {} unblocked", signal_name(signal))),
            _ => {}
        }
    }
}

const TIMERS: [(c_int, &str); 3] = [
    (libc::ITIMER_REAL, "ITIMER_REAL"),
    (libc::ITIMER_VIRTUAL, "ITIMER_VIRTUAL"),
    (libc::ITIMER_PROF, "ITIMER_PROF"),
];

fn timer_armed(timer: c_int) -> Option<bool> {
    // SAFETY: zeroed memory is a valid itimerval (integers only).
    let mut value: libc::itimerval = unsafe { std::mem::zeroed() };
    // SAFETY: getitimer only writes the timer's current value into `value`.
    let ok = unsafe { libc::getitimer(timer, &mut value) } == 0;
    ok.then_some(value.it_value.tv_sec != 0 || value.it_value.tv_usec != 0)
}

/// Soft and hard limit.
type Limit = (libc::rlim_t, libc::rlim_t);

fn resource_limit(resource: os::Resource) -> Option<Limit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the limit into `limit`.
    let ok = unsafe { libc::getrlimit(resource, &mut limit) } == 0;
    ok.then_some((limit.rlim_cur, limit.rlim_max))
}

fn limit_changes(before: &[Option<Limit>], now: &[Option<Limit>], found: &mut Vec<String>) {
    let show = |limit: libc::rlim_t| match limit {
        libc::RLIM_INFINITY => "unlimited".to_owned(),
        limit => limit.to_string(),
    };
    for (((_, name), before), now) in os::RESOURCE_LIMITS.iter().zip(before).zip(now) {
        match (before, now) {
            (Some(before), Some(now)) if before != now => {
                let mut parts = Vec::with_capacity(2);
                if before.0 != now.0 {
                    parts.push(format!("soft {} -> {}", show(before.0), show(now.0)));
                }
                if before.1 != now.1 {
                    parts.push(format!("hard {} -> {}", show(before.1), show(now.1)));
                }
                found.push(format!("{name} changed ({})", parts.join(", ")));
            }
            (before, now) if before != now => found.push(format!("{name} unknown")),
            _ => {}
        }
    }
}

/// An open descriptor, with what the platform tells of it cheaply. On macOS that is also what
/// it refers to and its close-on-exec flag (`posix::describe`): a program that closes one and
/// opens another in its place (or `dup2`s onto it) leaves the number but not the file. Linux
/// lists the numbers alone (see the module's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Descriptor {
    pub(super) fd: RawFd,
    pub(super) file: Option<(libc::dev_t, libc::ino_t)>,
    pub(super) close_on_exec: Option<bool>,
}

fn fd_changes(before: Option<&[Descriptor]>, now: Option<&[Descriptor]>, found: &mut Vec<String>) {
    let (Some(before), Some(now)) = (before, now) else {
        if before.is_some() != now.is_some() {
            found.push("open file descriptors unknown".to_owned());
        }
        return;
    };
    // A merge: `open_fds` lists them in ascending order.
    let (mut before, mut now) = (before.iter().peekable(), now.iter().peekable());
    loop {
        match (before.peek(), now.peek()) {
            (Some(old), Some(new)) if old.fd == new.fd => {
                if old.file != new.file {
                    found.push(format!("file descriptor {} replaced", new.fd));
                } else if old.close_on_exec != new.close_on_exec {
                    found.push(format!(
                        "file descriptor {} close-on-exec flag changed",
                        new.fd
                    ));
                }
                before.next();
                now.next();
            }
            (Some(old), Some(new)) if old.fd < new.fd => {
                found.push(format!("file descriptor {} closed", old.fd));
                before.next();
            }
            (_, Some(new)) => {
                found.push(format!("file descriptor {} open", new.fd));
                now.next();
            }
            (Some(old), None) => {
                found.push(format!("file descriptor {} closed", old.fd));
                before.next();
            }
            (None, None) => return,
        }
    }
}

/// The nice value (of the calling thread on Linux, of the process on macOS).
fn priority() -> Option<c_int> {
    // -1 is a valid nice value: only errno tells a failure.
    nix::errno::Errno::clear();
    // SAFETY: getpriority takes two integers and touches no memory of ours.
    let priority = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    (priority != -1 || nix::errno::Errno::last_raw() == 0).then_some(priority)
}

fn locale() -> Option<CString> {
    // SAFETY: a null locale only queries; the string returned stays valid until the next
    // setlocale, and we copy it at once.
    unsafe {
        let current = libc::setlocale(libc::LC_ALL, std::ptr::null());
        (!current.is_null()).then(|| CStr::from_ptr(current).to_owned())
    }
}

/// The process's real and effective user and group ids, and how many supplementary groups it
/// has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Credentials {
    pub(super) uid: Option<u32>,
    pub(super) euid: Option<u32>,
    pub(super) gid: Option<u32>,
    pub(super) egid: Option<u32>,
    pub(super) groups: Option<usize>,
}

impl Credentials {
    fn changes(&self, now: &Credentials, found: &mut Vec<String>) {
        let ids = [
            ("real user id", self.uid, now.uid),
            ("effective user id", self.euid, now.euid),
            ("real group id", self.gid, now.gid),
            ("effective group id", self.egid, now.egid),
        ];
        for (what, before, now) in ids {
            push_changed(found, what, &before, &now, u32::to_string);
        }
        push_changed(
            found,
            "supplementary groups",
            &self.groups,
            &now.groups,
            usize::to_string,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::time::{Duration, Instant};

    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet};
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    use nix::unistd::{fork, ForkResult};

    use super::super::posix;

    /// Runs `body` in a forked child of the test process: what it changes stays there, and
    /// nothing another test does meanwhile (threads, descriptors) shows up in its captures. The
    /// child has a single thread; a failed assertion comes back through a pipe.
    fn in_child(body: impl FnOnce()) {
        // Close-on-exec, so that no process another test spawns meanwhile holds the pipe.
        let (read_end, write_end) = super::super::pipe().unwrap();
        // SAFETY: the child runs `body` and `_exit`s. What the bodies use is fork-safe: glibc's
        // allocator is; they change the environment through libc and make temporary files in
        // the parent, because std's environment lock may have been held by another thread at
        // the fork. A child stuck all the same is killed below.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                drop(read_end);
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
                let message = match &outcome {
                    Ok(()) => String::new(),
                    Err(payload) => payload
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "the child panicked".to_owned()),
                };
                let _ = std::fs::File::from(write_end).write_all(message.as_bytes());
                // SAFETY: ends the child at once, running none of the test harness's exit code.
                unsafe { libc::_exit(i32::from(outcome.is_err())) };
            }
            ForkResult::Parent { child } => {
                drop(write_end);
                let deadline = Instant::now() + Duration::from_secs(60);
                let status = loop {
                    match waitpid(child, Some(WaitPidFlag::WNOHANG)).unwrap() {
                        WaitStatus::StillAlive if Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        WaitStatus::StillAlive => {
                            let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
                            break waitpid(child, None).unwrap();
                        }
                        status => break status,
                    }
                };
                // The child has exited: what it wrote is in the (non-blocking) pipe.
                let mut message = Vec::new();
                let _ = std::fs::File::from(read_end).read_to_end(&mut message);
                let message = String::from_utf8_lossy(&message);
                assert_eq!(status, WaitStatus::Exited(child, 0), "{message}");
            }
        }
    }

    /// A capture, after checking that it differs from nothing, not even from a second one.
    fn fresh() -> ProcessState {
        let fresh = ProcessState::capture();
        assert_eq!(fresh.changes_since(&fresh), NOTHING);
        assert_eq!(changes(&fresh), NOTHING);
        fresh
    }

    fn changes(fresh: &ProcessState) -> Vec<String> {
        fresh.changes_since(&ProcessState::capture())
    }

    const NOTHING: [String; 0] = [];

    #[test]
    fn a_capture_sees_everything_and_changes_nothing_it_sees() {
        in_child(|| {
            let state = fresh();
            // Neither the descriptor listing /proc nor reading the umask shows up.
            for _ in 0..3 {
                assert_eq!(changes(&state), NOTHING);
            }
            assert_eq!(state.threads, Some(1));
            assert!(state.cwd.is_some() && state.locale.is_some() && state.umask.is_some());
            assert!(state.fds.as_ref().is_some_and(|fds| fds.len() >= 3));
            assert!(state.environment.iter().any(|(name, _)| name == b"PATH"));
            assert!(os::signals().all(|signal| state.signals.get(signal).is_some()));
            assert!(os::signals().count() >= 31);
            assert!(state.blocked.is_some() && state.priority.is_some());
            assert!(state.timers.iter().all(|armed| *armed == Some(false)));
            assert!(state.limits.iter().all(Option::is_some));
            let Credentials {
                uid,
                euid,
                gid,
                egid,
                groups,
            } = state.credentials;
            assert!(uid.is_some() && euid.is_some() && gid.is_some() && egid.is_some());
            assert!(groups.is_some() && state.session.is_some());
        });
    }

    #[test]
    fn a_changed_working_directory_is_named() {
        let dir = tempfile::tempdir().unwrap();
        in_child(|| {
            let fresh = fresh();
            let before = std::env::current_dir().unwrap();
            std::env::set_current_dir(dir.path()).unwrap();
            // As getcwd reports it (on macOS, /var is a symbolic link).
            let after = dir.path().canonicalize().unwrap();
            assert_eq!(
                changes(&fresh),
                [format!(
                    "working directory changed ({} -> {})",
                    before.display(),
                    after.display()
                )]
            );
            std::env::set_current_dir(&before).unwrap();
            assert_eq!(changes(&fresh), NOTHING);
        });
    }

    fn setenv(name: &CStr, value: &CStr) {
        // SAFETY: the child has one thread; both strings are NUL-terminated.
        assert_eq!(unsafe { libc::setenv(name.as_ptr(), value.as_ptr(), 1) }, 0);
    }

    fn unsetenv(name: &CStr) {
        // SAFETY: the child has one thread; the name is NUL-terminated.
        assert_eq!(unsafe { libc::unsetenv(name.as_ptr()) }, 0);
    }

    #[test]
    fn environment_variables_set_unset_and_changed_are_named_without_their_values() {
        in_child(|| {
            setenv(c"QNTX_STATE_KEPT", c"first");
            let fresh = fresh();

            setenv(c"QNTX_STATE_NEW", c"1");
            assert_eq!(changes(&fresh), ["environment variable QNTX_STATE_NEW set"]);
            unsetenv(c"QNTX_STATE_NEW");
            assert_eq!(changes(&fresh), NOTHING);

            unsetenv(c"QNTX_STATE_KEPT");
            assert_eq!(
                changes(&fresh),
                ["environment variable QNTX_STATE_KEPT unset"]
            );
            setenv(c"QNTX_STATE_KEPT", c"a-secret");
            let changed = changes(&fresh);
            assert_eq!(changed, ["environment variable QNTX_STATE_KEPT changed"]);
            assert!(!changed.concat().contains("secret"));
            setenv(c"QNTX_STATE_KEPT", c"first");
            assert_eq!(changes(&fresh), NOTHING);
        });
    }

    #[test]
    fn a_changed_umask_is_named() {
        use nix::sys::stat::{umask, Mode};
        in_child(|| {
            let fresh = fresh();
            let before = umask(Mode::from_bits_truncate(0o027));
            assert_eq!(
                changes(&fresh),
                [format!("umask changed ({:03o} -> 027)", before.bits())]
            );
            umask(before);
            assert_eq!(changes(&fresh), NOTHING);
        });
    }

    extern "C" fn do_nothing(_: c_int) {}

    extern "C" fn do_nothing_either(_: c_int) {}

    fn action(handler: SigHandler, flags: SaFlags) -> SigAction {
        SigAction::new(handler, flags, SigSet::empty())
    }

    fn set_action(signal: Signal, action: &SigAction) -> SigAction {
        // SAFETY: the handlers do nothing; every test puts back what it replaced.
        unsafe { sigaction(signal, action) }.unwrap()
    }

    #[test]
    fn a_changed_signal_handler_is_named() {
        in_child(|| {
            // From the default, whatever the test runs under (`nohup` ignores SIGHUP).
            set_action(
                Signal::SIGHUP,
                &action(SigHandler::SigDfl, SaFlags::empty()),
            );
            let fresh = fresh();
            let handle = action(SigHandler::Handler(do_nothing), SaFlags::empty());
            let ignore = action(SigHandler::SigIgn, SaFlags::empty());
            let old_term = set_action(Signal::SIGTERM, &handle);
            let old_hup = set_action(Signal::SIGHUP, &ignore);
            assert_eq!(
                changes(&fresh),
                [
                    "signal handler for SIGHUP changed (default -> ignored)",
                    "signal handler for SIGTERM changed (default -> caught)",
                ]
            );
            set_action(Signal::SIGTERM, &old_term);
            set_action(Signal::SIGHUP, &old_hup);
            assert_eq!(changes(&fresh), NOTHING);

            // The default put back the way Python's signal.signal does it: no change.
            let python_default = action(SigHandler::SigDfl, SaFlags::SA_ONSTACK);
            set_action(Signal::SIGTERM, &python_default);
            assert_eq!(changes(&fresh), NOTHING);

            // SIGCHLD with SA_NOCLDWAIT: children of later runs would be reaped unseen.
            let old_chld = set_action(
                Signal::SIGCHLD,
                &action(SigHandler::SigDfl, SaFlags::SA_NOCLDWAIT),
            );
            assert_eq!(
                changes(&fresh),
                ["signal handler for SIGCHLD changed (other flags)"]
            );
            set_action(Signal::SIGCHLD, &old_chld);
            assert_eq!(changes(&fresh), NOTHING);
        });
    }

    /// What CPython's `signal.signal` does (`PyOS_setsig`): its one C handler, with SA_ONSTACK,
    /// whichever Python function is to run; SIG_DFL and SIG_IGN as they are.
    fn python_signal(signal: Signal, handler: SigHandler) -> SigAction {
        set_action(signal, &action(handler, SaFlags::SA_ONSTACK))
    }

    #[test]
    fn a_python_style_handler_is_named() {
        in_child(|| {
            let fresh = fresh();
            // signal.signal(SIGTERM, on_term)
            python_signal(Signal::SIGTERM, SigHandler::Handler(do_nothing));
            let caught = ["signal handler for SIGTERM changed (default -> caught)"];
            assert_eq!(changes(&fresh), caught);
            // signal.signal(SIGTERM, another_function): the same C handler; the worker's own
            // check of Python's handlers is what sees this one.
            python_signal(Signal::SIGTERM, SigHandler::Handler(do_nothing));
            assert_eq!(changes(&fresh), caught);
            // signal.signal(SIGTERM, signal.SIG_IGN)
            python_signal(Signal::SIGTERM, SigHandler::SigIgn);
            assert_eq!(
                changes(&fresh),
                ["signal handler for SIGTERM changed (default -> ignored)"]
            );
            // signal.signal(SIGTERM, signal.SIG_DFL)
            python_signal(Signal::SIGTERM, SigHandler::SigDfl);
            assert_eq!(changes(&fresh), NOTHING);
        });
    }

    #[test]
    fn another_handler_or_other_flags_are_named_where_known() {
        in_child(|| {
            let handle = action(SigHandler::Handler(do_nothing), SaFlags::empty());
            set_action(Signal::SIGCHLD, &handle);
            set_action(Signal::SIGUSR1, &handle);
            let fresh = fresh();
            // SIGCHLD's action is read in full everywhere.
            let other = action(SigHandler::Handler(do_nothing_either), SaFlags::empty());
            set_action(Signal::SIGCHLD, &other);
            assert_eq!(
                changes(&fresh),
                ["signal handler for SIGCHLD changed (another handler)"]
            );
            let restarting = action(SigHandler::Handler(do_nothing), SaFlags::SA_RESTART);
            set_action(Signal::SIGCHLD, &restarting);
            assert_eq!(
                changes(&fresh),
                ["signal handler for SIGCHLD changed (other flags)"]
            );
            set_action(Signal::SIGCHLD, &handle);
            assert_eq!(changes(&fresh), NOTHING);

            // Any other signal's only on macOS: Linux's summary says "caught", nothing more.
            set_action(Signal::SIGUSR1, &other);
            let another: &[&str] = if cfg!(target_os = "linux") {
                &[]
            } else {
                &["signal handler for SIGUSR1 changed (another handler)"]
            };
            assert_eq!(changes(&fresh), another);
            set_action(Signal::SIGUSR1, &restarting);
            let flags: &[&str] = if cfg!(target_os = "linux") {
                &[]
            } else {
                &["signal handler for SIGUSR1 changed (other flags)"]
            };
            assert_eq!(changes(&fresh), flags);
        });
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_changed_realtime_signal_handler_is_named() {
        in_child(|| {
            let fresh = fresh();
            let signal = libc::SIGRTMIN() + 2;
            // SAFETY: ignoring a realtime signal nobody sends; put back below.
            let old = unsafe { libc::signal(signal, libc::SIG_IGN) };
            assert_eq!(
                changes(&fresh),
                ["signal handler for SIGRTMIN+2 changed (default -> ignored)"]
            );
            // SAFETY: puts back what was there.
            unsafe { libc::signal(signal, old) };
            assert_eq!(changes(&fresh), NOTHING);
        });
    }

    #[test]
    fn a_changed_signal_mask_is_named() {
        in_child(|| {
            let fresh = fresh();
            let mut set = SigSet::empty();
            set.add(Signal::SIGUSR2);
            set.thread_block().unwrap();
            assert_eq!(changes(&fresh), ["signal SIGUSR2 blocked"]);
            set.thread_unblock().unwrap();
            assert_eq!(changes(&fresh), NOTHING);
        });
    }

    /// Linux's summary says what the system calls macOS makes say, before and after a change
    /// to each.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_summary_agrees_with_the_system_calls() {
        use nix::sys::stat::{umask, Mode};
        let agree = || {
            let summary = os::summary();
            assert_eq!(summary.umask, Some(posix::umask()));
            assert_eq!(summary.blocked, posix::blocked_signals());
            assert_eq!(summary.credentials, posix::credentials());
            for signal in os::signals() {
                let kind = |d: Option<Disposition>| d.map(|d| d.kind());
                let (summarised, asked) = (summary.signals.get(signal), disposition(signal));
                assert_eq!(kind(summarised), kind(asked), "{}", signal_name(signal));
            }
        };
        in_child(|| {
            agree();
            umask(Mode::from_bits_truncate(0o027));
            let mut set = SigSet::empty();
            set.add(Signal::SIGUSR2);
            set.thread_block().unwrap();
            let handle = action(SigHandler::Handler(do_nothing), SaFlags::empty());
            set_action(Signal::SIGTERM, &handle);
            set_action(
                Signal::SIGHUP,
                &action(SigHandler::SigIgn, SaFlags::empty()),
            );
            // SAFETY: ignoring a realtime signal nobody sends.
            unsafe { libc::signal(libc::SIGRTMAX(), libc::SIG_IGN) };
            agree();
        });
    }

    fn set_timer(timer: c_int, seconds: libc::time_t) {
        let zero = libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        };
        let value = libc::itimerval {
            it_interval: zero,
            it_value: libc::timeval {
                tv_sec: seconds,
                ..zero
            },
        };
        // SAFETY: setitimer reads `value`; a null old value is allowed.
        let set = unsafe { libc::setitimer(timer, &value, std::ptr::null_mut()) };
        assert_eq!(set, 0);
    }

    #[test]
    fn every_armed_interval_timer_is_named() {
        in_child(|| {
            let fresh = fresh();
            for (timer, name) in TIMERS {
                // Far enough off never to fire while the child lives.
                set_timer(timer, 3600);
                assert_eq!(changes(&fresh), [format!("interval timer {name} armed")]);
                set_timer(timer, 0);
                assert_eq!(changes(&fresh), NOTHING);
            }
        });
    }

    fn set_limit(resource: os::Resource, (soft, hard): Limit) {
        let limit = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: setrlimit reads `limit`.
        let set = unsafe { libc::setrlimit(resource, &limit) };
        assert_eq!(set, 0, "{}", std::io::Error::last_os_error());
    }

    #[test]
    fn every_lowered_resource_limit_is_named() {
        in_child(|| {
            let fresh = fresh();
            let mut lowered = 0;
            for (resource, name) in os::RESOURCE_LIMITS {
                let (soft, hard) = resource_limit(resource).unwrap();
                // A little lower: harmless for the rest of the child's life.
                let lower = match soft {
                    0 => continue,
                    libc::RLIM_INFINITY => 1 << 40,
                    soft => soft - 1,
                };
                set_limit(resource, (lower, hard));
                let changed = changes(&fresh);
                let expected = format!("{name} changed (soft ");
                assert!(
                    changed.len() == 1 && changed[0].starts_with(&expected),
                    "{changed:?}"
                );
                set_limit(resource, (soft, hard));
                assert_eq!(changes(&fresh), NOTHING);
                lowered += 1;
            }
            // Those that start at 0 cannot be lowered; most do not.
            assert!(lowered >= 5, "only {lowered} limits could be lowered");
        });
    }

    #[test]
    fn descriptors_left_open_or_closed_are_named() {
        use nix::fcntl::{fcntl, FcntlArg, FdFlag};
        use nix::unistd::dup2;
        use std::os::fd::OwnedFd;
        let mut kept = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        let other = tempfile::tempfile().unwrap();
        in_child(move || {
            let fd = kept.as_raw_fd();
            let fresh = fresh();

            let opened = std::fs::File::open("/dev/null").unwrap();
            let new = opened.as_raw_fd();
            assert_eq!(changes(&fresh), [format!("file descriptor {new} open")]);
            drop(opened);
            assert_eq!(changes(&fresh), NOTHING);

            // What a descriptor refers to and its flag are only known on macOS.
            let (replaced, flag_changed) = if cfg!(target_os = "linux") {
                (vec![], vec![])
            } else {
                (
                    vec![format!("file descriptor {fd} replaced")],
                    vec![format!("file descriptor {fd} close-on-exec flag changed")],
                )
            };
            // Another file in its place (what `dup2` onto a worker's socket would do).
            dup2(&other, &mut kept).unwrap();
            assert_eq!(changes(&fresh), replaced);
            // dup2 clears close-on-exec: set it again.
            dup2(std::fs::File::open("/dev/null").unwrap(), &mut kept).unwrap();
            fcntl(&kept, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).unwrap();
            assert_eq!(changes(&fresh), NOTHING);
            // Subprocesses of later runs would inherit it.
            fcntl(&kept, FcntlArg::F_SETFD(FdFlag::empty())).unwrap();
            assert_eq!(changes(&fresh), flag_changed);
            fcntl(&kept, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).unwrap();
            assert_eq!(changes(&fresh), NOTHING);

            drop(kept);
            assert_eq!(changes(&fresh), [format!("file descriptor {fd} closed")]);
        });
    }

    /// How macOS describes descriptors, run here too.
    #[test]
    fn a_replaced_descriptor_or_changed_close_on_exec_flag_is_named_when_described() {
        use nix::fcntl::{fcntl, FcntlArg, FdFlag};
        use nix::unistd::dup2;
        use std::os::fd::OwnedFd;
        let mut kept = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        let other = tempfile::tempfile().unwrap();
        let fd = kept.as_raw_fd();
        let changes = |before: &Descriptor| {
            let mut found = Vec::new();
            let now = posix::describe(fd);
            fd_changes(Some(&[*before]), Some(&[now]), &mut found);
            found
        };
        let fresh = posix::describe(fd);
        assert!(fresh.file.is_some() && fresh.close_on_exec == Some(true));
        assert_eq!(changes(&fresh), NOTHING);

        dup2(&other, &mut kept).unwrap();
        assert_eq!(changes(&fresh), [format!("file descriptor {fd} replaced")]);
        dup2(std::fs::File::open("/dev/null").unwrap(), &mut kept).unwrap();
        fcntl(&kept, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).unwrap();
        assert_eq!(changes(&fresh), NOTHING);

        fcntl(&kept, FcntlArg::F_SETFD(FdFlag::empty())).unwrap();
        assert_eq!(
            changes(&fresh),
            [format!("file descriptor {fd} close-on-exec flag changed")]
        );
    }

    #[test]
    fn a_thread_still_running_is_named() {
        in_child(|| {
            let fresh = fresh();
            let (stop, stopped) = std::sync::mpsc::channel::<()>();
            let thread = std::thread::spawn(move || stopped.recv());
            assert_eq!(changes(&fresh), ["1 more thread"]);
            drop(stop);
            thread.join().unwrap().unwrap_err();
            // The kernel counts a joined thread until it has finished exiting.
            let deadline = Instant::now() + Duration::from_secs(10);
            while !changes(&fresh).is_empty() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            assert_eq!(changes(&fresh), NOTHING);
        });
    }

    #[test]
    fn a_raised_nice_value_is_named() {
        in_child(|| {
            let fresh = fresh();
            let before = priority().unwrap();
            if before >= 19 {
                return; // Already the lowest priority there is.
            }
            // SAFETY: integers only. Raising one's own nice value needs no privilege (lowering
            // it back would, so the child just ends with it).
            let set = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, before + 1) };
            assert_eq!(set, 0);
            let after = before + 1;
            assert_eq!(
                changes(&fresh),
                [format!("scheduling priority changed ({before} -> {after})")]
            );
        });
    }

    #[test]
    fn a_changed_locale_is_named() {
        in_child(|| {
            let fresh = fresh();
            let before = locale().unwrap();
            // SAFETY: the child has one thread; the name is NUL-terminated.
            let set = unsafe { libc::setlocale(libc::LC_ALL, c"C.UTF-8".as_ptr()) };
            assert!(!set.is_null(), "no C.UTF-8 locale on this system");
            let after = locale().unwrap();
            assert_ne!(before, after);
            assert_eq!(
                changes(&fresh),
                [format!(
                    "locale changed ({} -> {})",
                    before.to_string_lossy(),
                    after.to_string_lossy()
                )]
            );
            // SAFETY: as above.
            unsafe { libc::setlocale(libc::LC_ALL, before.as_ptr()) };
            assert_eq!(changes(&fresh), NOTHING);
        });
    }

    #[test]
    fn a_new_session_and_process_group_are_named() {
        in_child(|| {
            let fresh = fresh();
            let (group, session) = (fresh.process_group, fresh.session.unwrap());
            let me = nix::unistd::setsid().unwrap().as_raw();
            assert_eq!(
                changes(&fresh),
                [
                    format!("process group changed ({group} -> {me})"),
                    format!("session changed ({session} -> {me})"),
                ]
            );
        });
    }

    #[test]
    fn changed_ids_and_groups_are_named() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: changing ids takes root");
            return;
        }
        in_child(|| {
            let fresh = fresh();
            let (uid, gid) = (
                fresh.credentials.euid.unwrap(),
                fresh.credentials.egid.unwrap(),
            );
            let nobody = 65534;
            // SAFETY: integers only; root may switch its effective ids and back (its saved
            // user id stays root).
            unsafe {
                assert_eq!(libc::setegid(nobody), 0);
                assert_eq!(libc::seteuid(nobody), 0);
            }
            assert_eq!(
                changes(&fresh),
                [
                    format!("effective user id changed ({uid} -> {nobody})"),
                    format!("effective group id changed ({gid} -> {nobody})"),
                ]
            );
            // SAFETY: as above.
            unsafe {
                assert_eq!(libc::seteuid(uid), 0);
                assert_eq!(libc::setegid(gid), 0);
            }
            assert_eq!(changes(&fresh), NOTHING);

            let groups = [nobody];
            // SAFETY: setgroups reads one gid; root may set the list.
            assert_eq!(unsafe { libc::setgroups(1, groups.as_ptr()) }, 0);
            // SAFETY: as above, with an empty list.
            assert_eq!(unsafe { libc::setgroups(0, std::ptr::null()) }, 0);
            let before = fresh.credentials.groups.unwrap();
            let expected: Vec<String> = if before == 0 {
                Vec::new()
            } else {
                vec![format!("supplementary groups changed ({before} -> 0)")]
            };
            assert_eq!(changes(&fresh), expected);
        });
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_changed_cpu_affinity_is_named() {
        in_child(|| {
            let fresh = fresh();
            // SAFETY: zeroed memory is a valid (empty) cpu_set_t.
            let mut all: libc::cpu_set_t = unsafe { std::mem::zeroed() };
            let size = std::mem::size_of::<libc::cpu_set_t>();
            // SAFETY: the kernel writes at most `size` bytes into `all`.
            assert_eq!(unsafe { libc::sched_getaffinity(0, size, &mut all) }, 0);
            // SAFETY: reads the set we own.
            let count = unsafe { libc::CPU_COUNT(&all) };
            if count < 2 {
                return; // Nothing narrower to pin to.
            }
            let first = (0..libc::CPU_SETSIZE as usize)
                // SAFETY: reads the set we own, within its size.
                .find(|cpu| unsafe { libc::CPU_ISSET(*cpu, &all) })
                .unwrap();
            // SAFETY: zeroed memory is a valid (empty) cpu_set_t.
            let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
            // SAFETY: `first` is within the set's size.
            unsafe { libc::CPU_SET(first, &mut one) };
            // SAFETY: the kernel reads `size` bytes of `one`.
            assert_eq!(unsafe { libc::sched_setaffinity(0, size, &one) }, 0);
            assert_eq!(
                changes(&fresh),
                [format!("CPU affinity changed ({count} -> 1 CPUs)")]
            );
            // SAFETY: as above, with the set it had.
            assert_eq!(unsafe { libc::sched_setaffinity(0, size, &all) }, 0);
            assert_eq!(changes(&fresh), NOTHING);
        });
    }

    /// Whether `fd` is open in this process.
    #[cfg(target_os = "linux")]
    fn is_open(fd: RawFd) -> bool {
        // SAFETY: integers only; a descriptor that is not open is EBADF.
        unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
    }

    /// The `/proc` files a capture keeps open on Linux are its own, not the process's: its
    /// listing leaves them out, from the first capture on, and they close with their thread.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_files_a_capture_keeps_are_no_descriptors_of_the_process() {
        in_child(|| {
            let kept = std::thread::spawn(|| {
                assert_eq!(os::kept_fds(), [None, None]);
                let first = ProcessState::capture();
                let kept = os::kept_fds().map(Option::unwrap);
                let fds = first.fds.as_ref().unwrap();
                assert!(fds.iter().all(|open| !kept.contains(&open.fd)), "{fds:?}");
                assert_eq!(first.changes_since(&ProcessState::capture()), NOTHING);
                kept
            });
            let kept = kept.join().unwrap();
            assert!(!kept.into_iter().any(is_open));
        });
    }

    /// A forked child inherits its parent's kept files, which are the parent's `/proc` files:
    /// its captures read its own.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_forked_child_captures_itself_not_its_parent() {
        use nix::sys::stat::{umask, Mode};
        let parent = ProcessState::capture();
        let inherited = os::kept_fds().map(Option::unwrap);
        let null = std::fs::File::open("/dev/null").unwrap();
        in_child(move || {
            let mask = if parent.umask == Some(0o027) {
                0o077
            } else {
                0o027
            };
            umask(Mode::from_bits_truncate(mask));
            // A descriptor the parent has not: far above the ones the tests open.
            // SAFETY: integers only; duplicates a descriptor the closure owns.
            let only_here = unsafe { libc::fcntl(null.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 500) };
            assert!(only_here >= 500);
            let state = ProcessState::capture();
            assert_eq!(state.umask, Some(mask));
            let fds = state.fds.as_ref().unwrap();
            assert!(fds.iter().any(|open| open.fd == only_here), "{fds:?}");
            // The inherited copies are closed, or their numbers taken again by the new ones.
            let kept = os::kept_fds().map(Option::unwrap);
            for fd in inherited {
                assert!(kept.contains(&fd) || !is_open(fd));
            }
            assert!(fds.iter().all(|open| !kept.contains(&open.fd)), "{fds:?}");
        });
    }

    /// What `os.closerange` or `os.dup2` in a program does to the descriptors a capture keeps
    /// open on Linux: closed, they are opened again; replaced, the program's file on their
    /// number is the program's descriptor, which the capture neither reads, rewinds nor closes.
    #[cfg(target_os = "linux")]
    #[test]
    fn kept_files_closed_or_replaced_by_a_program_are_opened_again() {
        use nix::sys::stat::{umask, Mode};
        use std::io::{Seek, SeekFrom};
        let mut other = tempfile::tempfile().unwrap();
        other.write_all(b"Name:\tnot this thread\n").unwrap();
        in_child(move || {
            let fresh = fresh();
            let kept = os::kept_fds().map(Option::unwrap);
            for fd in kept {
                // SAFETY: closes the capture's descriptor under its feet, as a program may.
                assert_eq!(unsafe { libc::close(fd) }, 0);
            }
            assert_eq!(changes(&fresh), NOTHING);
            // Read again, not remembered.
            let before = umask(Mode::from_bits_truncate(0o027));
            assert_eq!(
                changes(&fresh),
                [format!("umask changed ({:03o} -> 027)", before.bits())]
            );
            umask(before);

            let kept = os::kept_fds().map(Option::unwrap);
            for fd in kept {
                // SAFETY: puts the program's file on the capture's descriptor, as a program may.
                assert_eq!(unsafe { libc::dup2(other.as_raw_fd(), fd) }, fd);
            }
            other.seek(SeekFrom::Start(5)).unwrap();
            let (low, high) = (kept[0].min(kept[1]), kept[0].max(kept[1]));
            let left_open = [
                format!("file descriptor {low} open"),
                format!("file descriptor {high} open"),
            ];
            assert_eq!(changes(&fresh), left_open);
            assert!(kept.into_iter().all(is_open));
            assert_eq!(other.stream_position().unwrap(), 5);
            umask(Mode::from_bits_truncate(0o027));
            let changed = changes(&fresh);
            assert_eq!(changed.len(), 3, "{changed:?}");
            assert!(changed[0].starts_with("umask changed"), "{changed:?}");
            umask(before);
            for fd in kept {
                // SAFETY: the program closes what it left open.
                assert_eq!(unsafe { libc::close(fd) }, 0);
            }
            assert_eq!(changes(&fresh), NOTHING);
        });
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn changed_prctl_flags_are_named() {
        in_child(|| {
            let fresh = fresh();
            // SAFETY: each takes integers only and applies to this child alone.
            unsafe {
                assert_eq!(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM), 0);
                assert_eq!(libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1), 0);
            }
            let term = libc::SIGTERM;
            assert_eq!(
                changes(&fresh),
                [
                    format!("parent-death signal changed (0 -> {term})"),
                    "child subreaper flag changed (0 -> 1)".to_owned(),
                ]
            );
            // SAFETY: as above.
            unsafe {
                assert_eq!(libc::prctl(libc::PR_SET_PDEATHSIG, 0), 0);
                assert_eq!(libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 0), 0);
            }
            assert_eq!(changes(&fresh), NOTHING);

            // For good: nothing can undo these two.
            // SAFETY: integers only.
            assert_eq!(
                unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) },
                0
            );
            assert_eq!(changes(&fresh), ["no_new_privs flag changed (0 -> 1)"]);
            let allow_all = [libc::sock_filter {
                code: (libc::BPF_RET | libc::BPF_K) as u16,
                jt: 0,
                jf: 0,
                k: libc::SECCOMP_RET_ALLOW,
            }];
            let program = libc::sock_fprog {
                len: 1,
                filter: allow_all.as_ptr().cast_mut(),
            };
            // SAFETY: the kernel copies the one-instruction filter, which allows everything.
            let installed = unsafe {
                libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &program as *const libc::sock_fprog,
                )
            };
            assert_eq!(installed, 0, "{}", std::io::Error::last_os_error());
            assert_eq!(
                changes(&fresh),
                [
                    "no_new_privs flag changed (0 -> 1)",
                    "seccomp mode changed (0 -> 2)"
                ]
            );
        });
    }

    #[test]
    #[ignore = "a measurement: prints, asserts nothing"]
    fn process_state_cost() {
        let fresh = ProcessState::capture();
        let mut changed = 0;
        // Warm: capture after capture, everything in the caches.
        let rounds = 2_000;
        let start = Instant::now();
        for _ in 0..rounds {
            changed += fresh.changes_since(&ProcessState::capture()).len();
        }
        let warm = start.elapsed() / rounds;
        // Cold, as after a run: the caches hold the program's data rather than the kernel's.
        let mut program = vec![0u8; 16 << 20];
        let cold_rounds = 300;
        let mut cold = Duration::ZERO;
        for round in 0..cold_rounds {
            for byte in program.iter_mut().step_by(64) {
                *byte = byte.wrapping_add(round as u8);
            }
            std::hint::black_box(&mut program);
            let start = Instant::now();
            changed += fresh.changes_since(&ProcessState::capture()).len();
            cold += start.elapsed();
        }
        let cold = cold / cold_rounds;
        println!(
            "capture + compare: {warm:?} warm, {cold:?} after touching 16 MiB ({} descriptors, \
             {} environment variables, {} threads; {changed} changes seen)",
            fresh.fds.as_ref().map_or(0, Vec::len),
            fresh.environment.vars.len(),
            fresh.threads.unwrap_or(0),
        );
    }
}
