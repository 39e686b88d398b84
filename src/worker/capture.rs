//! Captures everything written to file descriptors 1 and 2 during a run.
//!
//! Each stream is a pipe whose write end sits on fd 1 (or 2), so Python's `print`, C extensions
//! and subprocesses all land in the same place, in the order they wrote. A reader thread drains
//! the pipe into a buffer that keeps at most the run's limit and counts the rest, so memory stays
//! bounded however much a program prints. The reader only ever reads while holding the buffer's
//! lock; `finish` drains what is left under the same lock, so no byte is ever in flight between
//! the pipe and the buffer when a run's output is taken.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::ipc::CapturedStream;

#[derive(Default)]
struct Buffer {
    kept: Vec<u8>,
    dropped: u64,
    limit: usize,
    /// Where reads land before `push`, allocated once: zeroing a fresh 64 KiB array on every
    /// drain (four per run) cost more than the reads themselves.
    scratch: Vec<u8>,
}

impl Buffer {
    fn push(&mut self, bytes: &[u8]) {
        let room = self.limit.saturating_sub(self.kept.len());
        let take = room.min(bytes.len());
        self.kept.extend_from_slice(&bytes[..take]);
        self.dropped += (bytes.len() - take) as u64;
    }
}

pub struct StreamCapture {
    target_fd: RawFd,
    /// A close-on-exec copy of the write end, to put back on `target_fd` before every run: a
    /// program may have closed or redirected fd 1 or 2, and the next one must still be captured.
    write_end: OwnedFd,
    pipe: Arc<File>,
    buffer: Arc<Mutex<Buffer>>,
}

fn lock(buffer: &Mutex<Buffer>) -> MutexGuard<'_, Buffer> {
    // A panic in the reader cannot leave the buffer inconsistent (push is the only mutation).
    buffer.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Moves what the pipe holds into the buffer, at most `budget` bytes: a writer that never
/// pauses (a thread a program left running) must not keep this loop, and the lock, forever.
fn drain(pipe: &File, buffer: &mut Buffer, budget: usize) {
    if budget == 0 {
        return;
    }
    let mut chunk = std::mem::take(&mut buffer.scratch);
    chunk.resize(64 * 1024, 0);
    let mut left = budget;
    while left > 0 {
        let want = left.min(chunk.len());
        match (&*pipe).read(&mut chunk[..want]) {
            Ok(0) => break,
            Ok(n) => {
                buffer.push(&chunk[..n]);
                left -= n;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break, // WouldBlock: empty for now
        }
    }
    buffer.scratch = chunk;
}

/// Bytes waiting in the pipe right now.
fn pending(pipe: &File) -> usize {
    let mut available: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    let ok = unsafe { libc::ioctl(pipe.as_raw_fd(), libc::FIONREAD, &mut available) } == 0;
    if ok {
        available.max(0) as usize
    } else {
        0
    }
}

/// Most bytes the reader thread moves per turn with the lock held.
const READER_TURN: usize = 1024 * 1024;

/// Sleeps until `fd` has something to read (no timeout: an idle worker's reader threads stay
/// asleep).
fn wait_readable(fd: RawFd) {
    let mut pollfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut pollfd, 1, -1) };
}

impl StreamCapture {
    /// Puts a pipe on `target_fd` (1 or 2) and starts draining it.
    pub fn install(target_fd: RawFd) -> std::io::Result<Self> {
        // Close-on-exec, read end non-blocking: writers block when the pipe is full rather
        // than fail. dup2 gives the target descriptor no CLOEXEC, so subprocesses inherit it.
        let (read_end, write_end) = crate::platform::pipe()?;
        // SAFETY: dup2 of a descriptor we own onto the stream's fixed descriptor.
        if unsafe { libc::dup2(write_end.as_raw_fd(), target_fd) } < 0 {
            return Err(std::io::Error::last_os_error());
        }

        let pipe = Arc::new(File::from(read_end));
        let buffer = Arc::new(Mutex::new(Buffer::default()));
        let (reader_pipe, reader_buffer) = (Arc::clone(&pipe), Arc::clone(&buffer));
        std::thread::Builder::new()
            .name(format!("capture-fd{target_fd}"))
            .spawn(move || loop {
                wait_readable(reader_pipe.as_raw_fd());
                drain(&reader_pipe, &mut lock(&reader_buffer), READER_TURN);
            })?;
        Ok(Self {
            target_fd,
            write_end,
            pipe,
            buffer,
        })
    }

    /// Starts a run: forgets what was written between runs and sets the run's limit.
    pub fn begin(&self, limit: usize) {
        // SAFETY: dup2 of a descriptor we own onto the stream's fixed descriptor.
        unsafe { libc::dup2(self.write_end.as_raw_fd(), self.target_fd) };
        let mut buffer = lock(&self.buffer);
        drain(&self.pipe, &mut buffer, pending(&self.pipe));
        buffer.kept.clear();
        buffer.dropped = 0;
        buffer.limit = limit;
    }

    /// Ends a run: everything written so far (the caller has flushed its own buffers).
    pub fn finish(&self) -> CapturedStream {
        let mut buffer = lock(&self.buffer);
        // What was written before this call; whatever comes later belongs to no run.
        drain(&self.pipe, &mut buffer, pending(&self.pipe));
        let kept = std::mem::take(&mut buffer.kept);
        let dropped = std::mem::take(&mut buffer.dropped);
        CapturedStream {
            text: String::from_utf8_lossy(&kept).into_owned(),
            dropped_bytes: dropped,
        }
    }
}
