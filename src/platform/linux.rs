//! Linux: `pipe2`, `prctl`, `sigtimedwait` and `/proc`.

use std::cell::RefCell;
use std::ffi::CStr;
use std::os::fd::{OwnedFd, RawFd};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::signal::{SigSet, Signal};

use super::process_state::{
    disposition, file_of, push_changed, signal_set, Credentials, Descriptor, Disposition, Signals,
    Summary,
};

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
    // ends; the supervisor spawns from its runtime's one thread, its main thread.) It cannot
    // fail for SIGKILL, and if it did, the socket would still end the worker.
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

/// What `/proc/thread-self/status` tells (see `process_state`), with the two `prctl` flags it
/// does not show and SIGCHLD's full action: four system calls besides the checks of the kept
/// files (see [`ProcFiles`]).
pub fn summary() -> Summary {
    let status = read_status().unwrap_or_default();
    // The kernel's signal masks have signal n at bit n - 1.
    let has = |mask: u64, signal: libc::c_int| {
        let bit = u32::try_from(signal - 1).ok();
        bit.and_then(|bit| mask.checked_shr(bit))
            .is_some_and(|bits| bits & 1 == 1)
    };
    let signals = Signals::from_fn(|signal| {
        if signal == libc::SIGCHLD {
            return disposition(signal);
        }
        let (ignored, caught) = (status.ignored?, status.caught?);
        Some(Disposition::summarised(
            has(ignored, signal),
            has(caught, signal),
        ))
    });
    let blocked = status
        .blocked
        .map(|mask| signal_set(|signal| has(mask, signal)));
    Summary {
        threads: status.threads,
        umask: status.umask,
        signals,
        blocked,
        credentials: Credentials {
            uid: status.uids.map(|[real, _]| real),
            euid: status.uids.map(|[_, effective]| effective),
            gid: status.gids.map(|[real, _]| real),
            egid: status.gids.map(|[_, effective]| effective),
            groups: status.groups,
        },
        os: OsState {
            affinity: status.affinity,
            parent_death_signal: prctl_get_into(libc::PR_GET_PDEATHSIG),
            child_subreaper: prctl_get_into(libc::PR_GET_CHILD_SUBREAPER),
            no_new_privs: status.no_new_privs,
            seccomp: status.seccomp,
        },
    }
}

/// `/proc/thread-self/status` and `/proc/self/fd`, kept open from a thread's first capture on:
/// opening them each time cost most of a capture, above all once a run has filled the caches
/// (measured in C, with `getrlimit`: 32 µs opened each time, 20 µs kept and read again).
///
/// Per thread, as the status is: each capturing thread keeps its own pair (a worker has one),
/// and needs no lock, which a fork taken while another thread held it would leave locked in
/// the child forever. The descriptors are the capture's own, so its listing leaves them out.
///
/// The process runs arbitrary programs, which may close any descriptor or open another file on
/// its number, and may fork; so before each use:
///
/// - **the process**: a forked child inherits the descriptors, but they were opened on the
///   parent's `/proc/<pid>` (what `self` and `thread-self` meant then): a capture in another
///   process than `pid` closes them and opens its own. The process id is enough: a thread's
///   files are only used by that thread, whose id changes only with a fork (as the process's
///   does).
/// - **the file**: `fstat` must still give the device and inode it gave at opening, else the
///   number is no longer ours (closed, or another file is on it) and is left alone: not read,
///   not rewound, never closed. Validating what is read instead (the status names its thread,
///   the listing holds its own descriptor) would save the two `fstat`s, 0.6 µs of a capture's
///   12 warm and about 1 of its 35 after a run (`process_state_cost`), but would rewind and
///   read whatever file a program put on the number, and could not tell whether a number that
///   fails is still ours to close.
///
/// A read that fails all the same (no known cause: closed and replaced descriptors are caught
/// before) opens that file again and reads once more.
struct ProcFiles {
    /// The process they were opened in.
    pid: libc::pid_t,
    status: Option<Kept>,
    fds: Option<Kept>,
}

thread_local! {
    static PROC_FILES: RefCell<ProcFiles> = const { RefCell::new(ProcFiles::none(0)) };
}

#[derive(Clone, Copy)]
enum ProcFile {
    Status,
    Fds,
}

impl ProcFiles {
    /// None open yet, for process `pid`.
    const fn none(pid: libc::pid_t) -> Self {
        ProcFiles {
            pid,
            status: None,
            fds: None,
        }
    }

    fn get(&mut self, which: ProcFile) -> &mut Option<Kept> {
        match which {
            ProcFile::Status => &mut self.status,
            ProcFile::Fds => &mut self.fds,
        }
    }

    /// Makes both this process's and still open, as far as they can be.
    fn check(&mut self) {
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() };
        if pid != self.pid {
            // A fork's inherited copies are closed (when still ours) before opening anew.
            *self = ProcFiles::none(pid);
        }
        let files = [
            (ProcFile::Status, c"/proc/thread-self/status", 0),
            (ProcFile::Fds, c"/proc/self/fd", libc::O_DIRECTORY),
        ];
        for (which, path, flags) in files {
            let kept = self.get(which);
            if kept.as_ref().is_some_and(|kept| !kept.is_ours()) {
                *kept = None;
            }
            if kept.is_none() {
                *kept = Kept::open(path, flags);
            }
        }
    }

    /// Whether `fd` is one of these.
    fn holds(&self, fd: RawFd) -> bool {
        [&self.status, &self.fds]
            .iter()
            .any(|kept| kept.as_ref().is_some_and(|kept| kept.fd == fd))
    }
}

/// `read` of this thread's [`ProcFiles`], checked first; if it fails, once more with `which`
/// opened again.
fn with_proc_files<T>(which: ProcFile, read: impl Fn(&ProcFiles) -> Option<T>) -> Option<T> {
    let attempt = |files: &mut ProcFiles| {
        files.check();
        read(files).or_else(|| {
            *files.get(which) = None;
            files.check();
            read(files)
        })
    };
    let kept =
        PROC_FILES.try_with(|files| files.try_borrow_mut().ok().map(|mut f| attempt(&mut f)));
    match kept {
        Ok(Some(read)) => read,
        // While the thread ends (its files are gone), or re-entered: files of this call's own.
        _ => attempt(&mut ProcFiles::none(0)),
    }
}

/// A descriptor [`ProcFiles`] opened, and the file it opened it on: device and inode.
struct Kept {
    fd: RawFd,
    file: (libc::dev_t, libc::ino_t),
}

impl Kept {
    fn open(path: &CStr, flags: libc::c_int) -> Option<Kept> {
        let flags = libc::O_RDONLY | libc::O_CLOEXEC | flags;
        // SAFETY: a NUL-terminated path; open touches no other memory of ours.
        let fd = unsafe { libc::open(path.as_ptr(), flags) };
        if fd < 0 {
            return None;
        }
        let Some(file) = file_of(fd) else {
            // SAFETY: just opened, and ours alone.
            unsafe { libc::close(fd) };
            return None;
        };
        Some(Kept { fd, file })
    }

    /// Whether the descriptor still refers to the file it was opened on.
    fn is_ours(&self) -> bool {
        file_of(self.fd) == Some(self.file)
    }
}

impl Drop for Kept {
    /// Closes the descriptor if it is still ours; another file on its number is someone else's.
    fn drop(&mut self) {
        if self.is_ours() {
            // SAFETY: it refers to the file this opened, which nothing else of the process knows
            // of (a program that opened the same `/proc` file and put it on this number had
            // better not).
            unsafe { libc::close(self.fd) };
        }
    }
}

/// This thread's status, read from its kept file into a buffer on the stack when it fits, as it
/// does unless the machine has thousands of CPUs: one `pread`.
fn read_status() -> Option<Status> {
    with_proc_files(ProcFile::Status, |files| {
        let fd = files.status.as_ref()?.fd;
        let mut buffer = [0u8; 4096];
        let read = pread(fd, &mut buffer, 0)?;
        // The file is one record, which the kernel writes whole into the buffer if it fits
        // (`single_open`): a short read is all of it.
        if read < buffer.len() {
            return Some(Status::parse(&buffer[..read]));
        }
        let mut whole = buffer.to_vec();
        loop {
            let len = whole.len();
            whole.resize(len + 4096, 0);
            let read = pread(fd, &mut whole[len..], len)?;
            whole.truncate(len + read);
            if read == 0 {
                return Some(Status::parse(&whole));
            }
        }
    })
}

fn pread(fd: RawFd, buffer: &mut [u8], offset: usize) -> Option<usize> {
    let offset = libc::off_t::try_from(offset).ok()?;
    loop {
        // SAFETY: the kernel writes at most the buffer's length into it.
        let read = unsafe { libc::pread(fd, buffer.as_mut_ptr().cast(), buffer.len(), offset) };
        match usize::try_from(read) {
            Ok(read) => return Some(read),
            Err(_) if nix::errno::Errno::last() == nix::errno::Errno::EINTR => {}
            Err(_) => return None,
        }
    }
}

/// The lines of `/proc/thread-self/status` that `summary` uses (proc(5)); `None` for any the
/// kernel does not write (`Umask` is there since Linux 4.7, `NoNewPrivs` since 4.10).
#[derive(Debug, Default, PartialEq, Eq)]
struct Status {
    /// The process's, not the thread's.
    threads: Option<u32>,
    umask: Option<libc::mode_t>,
    /// The thread's mask, and the process's ignored and caught signals.
    blocked: Option<u64>,
    ignored: Option<u64>,
    caught: Option<u64>,
    /// Real and effective.
    uids: Option<[u32; 2]>,
    gids: Option<[u32; 2]>,
    /// How many supplementary groups.
    groups: Option<usize>,
    no_new_privs: Option<libc::c_int>,
    seccomp: Option<libc::c_int>,
    affinity: Option<Affinity>,
}

impl Status {
    fn parse(text: &[u8]) -> Self {
        let mut status = Status::default();
        for line in text.split(|byte| *byte == b'\n') {
            let Some(colon) = line.iter().position(|byte| *byte == b':') else {
                continue;
            };
            let (key, value) = (&line[..colon], &line[colon + 1..]);
            match key {
                b"Threads" => status.threads = number(value, 10),
                b"Umask" => status.umask = number(value, 8),
                b"SigBlk" => status.blocked = number(value, 16),
                b"SigIgn" => status.ignored = number(value, 16),
                b"SigCgt" => status.caught = number(value, 16),
                b"Uid" => status.uids = real_and_effective(value),
                b"Gid" => status.gids = real_and_effective(value),
                b"Groups" => status.groups = Some(fields(value).count()),
                b"NoNewPrivs" => status.no_new_privs = number(value, 10),
                b"Seccomp" => status.seccomp = number(value, 10),
                b"Cpus_allowed" => status.affinity = Affinity::parse(value),
                _ => {}
            }
        }
        status
    }
}

fn fields(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(u8::is_ascii_whitespace)
        .filter(|field| !field.is_empty())
}

/// The value's one number, in `radix`.
fn number<T: TryFrom<u64>>(value: &[u8], radix: u32) -> Option<T> {
    let mut fields = fields(value);
    let (Some(number), None) = (fields.next(), fields.next()) else {
        return None;
    };
    let number = u64::from_str_radix(std::str::from_utf8(number).ok()?, radix).ok()?;
    T::try_from(number).ok()
}

/// The first two of the four ids on a `Uid` or `Gid` line: real, effective, saved, filesystem.
fn real_and_effective(value: &[u8]) -> Option<[u32; 2]> {
    let mut ids = fields(value).map(|id| std::str::from_utf8(id).ok()?.parse().ok());
    Some([ids.next()??, ids.next()??])
}

/// Descriptors open in this process, ascending: the entries of `/proc/self/fd`, its kept file
/// rewound and listed with `getdents64` into a buffer on the stack (three system calls). Only
/// their numbers: what each refers to would take two system calls more per descriptor.
pub fn open_fds() -> Option<Vec<Descriptor>> {
    with_proc_files(ProcFile::Fds, list_fds)
}

fn list_fds(files: &ProcFiles) -> Option<Vec<Descriptor>> {
    /// Room for a hundred-odd entries a call, aligned as the kernel writes them.
    #[repr(C, align(8))]
    struct Entries([u8; 4096]);

    let listing = files.fds.as_ref()?.fd;
    // SAFETY: integers only.
    if unsafe { libc::lseek(listing, 0, libc::SEEK_SET) } != 0 {
        return None;
    }
    let mut fds = Vec::new();
    let mut entries = Entries([0; 4096]);
    loop {
        // SAFETY: the kernel writes at most the buffer's size of records into it.
        let read = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                listing,
                entries.0.as_mut_ptr(),
                entries.0.len(),
            )
        };
        let Ok(read) = usize::try_from(read) else {
            return None;
        };
        if read == 0 {
            break;
        }
        let mut records = entries.0.get(..read)?;
        // Each record: inode (8 bytes), offset (8), its own length (2), type (1), then the
        // NUL-terminated name (linux_dirent64).
        while let Some(length) = records.get(16..18) {
            let length = usize::from(u16::from_ne_bytes([length[0], length[1]]));
            let name = records.get(19..length)?;
            let name = &name[..name.iter().position(|byte| *byte == 0)?];
            let fd = std::str::from_utf8(name).ok().and_then(|n| n.parse().ok());
            // "." and "..", and the capture's own kept files, are no descriptors of the
            // process's.
            if let Some(fd) = fd.filter(|fd| !files.holds(*fd)) {
                fds.push(Descriptor {
                    fd,
                    file: None,
                    close_on_exec: None,
                });
            }
            records = &records[length..];
        }
    }
    // The kernel lists them in order already; the comparison needs them so.
    fds.sort_unstable_by_key(|descriptor| descriptor.fd);
    Some(fds)
}

/// The descriptors this thread keeps open for its captures, `[status, fd listing]`.
#[cfg(test)]
pub fn kept_fds() -> [Option<RawFd>; 2] {
    PROC_FILES.with_borrow(|files| {
        [&files.status, &files.fds].map(|kept| kept.as_ref().map(|kept| kept.fd))
    })
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

/// The calling thread's CPU affinity: a bit per CPU, for as many as a `cpu_set_t` holds (1024).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Affinity([u64; 16]);

impl Affinity {
    /// As `/proc` writes it: hexadecimal, most significant first, in comma-separated groups of
    /// 32 bits.
    fn parse(value: &[u8]) -> Option<Self> {
        let mut set = [0u64; 16];
        let digits = value
            .iter()
            .rev()
            .filter(|byte| !byte.is_ascii_whitespace() && **byte != b',');
        let mut any = false;
        for (at, digit) in digits.enumerate() {
            let digit = u64::from(char::from(*digit).to_digit(16)?);
            // CPUs beyond the 1024th are left out, as sched_getaffinity with a cpu_set_t does.
            if let Some(word) = set.get_mut(at / 16) {
                *word |= digit << (4 * (at % 16));
            }
            any = true;
        }
        any.then_some(Affinity(set))
    }

    fn count(&self) -> u32 {
        self.0.iter().map(|word| word.count_ones()).sum()
    }
}

impl std::fmt::Debug for Affinity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Affinity({} CPUs)", self.count())
    }
}

/// A `prctl` that writes its answer through a pointer.
fn prctl_get_into(option: libc::c_int) -> Option<libc::c_int> {
    let mut value: libc::c_int = 0;
    // SAFETY: the GET options used here write one int through the pointer, to `value`.
    let ok = unsafe { libc::prctl(option, &mut value as *mut libc::c_int, 0, 0, 0) } == 0;
    ok.then_some(value)
}

impl OsState {
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
            push_changed(found, what, &before, &now, libc::c_int::to_string);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_lines_used_are_read() {
        let text = b"Name:\tpython3\nUmask:\t0027\nState:\tS (sleeping)\n\
            Uid:\t1000\t1001\t1002\t1003\nGid:\t100\t101\t102\t103\nGroups:\t4 24 27 \n\
            Threads:\t7\nSigQ:\t0/62811\nSigPnd:\t0000000000000000\n\
            SigBlk:\t0000000000010000\nSigIgn:\t0000000001001000\n\
            SigCgt:\t0000000180000002\nNoNewPrivs:\t1\nSeccomp:\t2\n\
            Cpus_allowed:\t80000000,00000001\nCpus_allowed_list:\t0,63\n";
        let mut cpus = [0; 16];
        cpus[0] = 1 | 1 << 63;
        assert_eq!(
            Status::parse(text),
            Status {
                threads: Some(7),
                umask: Some(0o027),
                blocked: Some(1 << 16),
                ignored: Some(1 << 12 | 1 << 24),
                caught: Some(1 << 1 | 1 << 31 | 1 << 32),
                uids: Some([1000, 1001]),
                gids: Some([100, 101]),
                groups: Some(3),
                no_new_privs: Some(1),
                seccomp: Some(2),
                affinity: Some(Affinity(cpus)),
            }
        );
        let none = Status::parse(b"Groups:\t \nUmask:\t\nCpus_allowed:\t\n");
        assert_eq!(
            none,
            Status {
                groups: Some(0),
                ..Status::default()
            }
        );
    }

    #[test]
    fn this_kernel_writes_every_line_used() {
        let status = read_status().unwrap();
        let Status {
            threads,
            umask,
            blocked,
            ignored,
            caught,
            uids,
            gids,
            groups,
            no_new_privs,
            seccomp,
            affinity,
        } = status;
        assert!(threads.is_some_and(|threads| threads >= 1));
        assert!(umask.is_some() && blocked.is_some() && ignored.is_some() && caught.is_some());
        assert!(uids.is_some() && gids.is_some() && groups.is_some());
        assert!(no_new_privs.is_some() && seccomp.is_some());
        assert!(affinity.is_some_and(|cpus| cpus.count() >= 1));
    }
}
