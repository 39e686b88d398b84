//! Captures everything a run's processes write to file descriptors 1 and 2.
//!
//! Each run's process gets a fresh pipe per stream, whose write end it puts on fd 1 (or 2), so
//! Python's `print`, C extensions and subprocesses all land in the same place, in the order
//! they wrote. The template holds the read ends and drains them from its poll loop (it has no
//! threads, so it can fork) into a buffer that keeps at most the run's limit and counts the
//! rest, so memory stays bounded however much a program prints. A pipe belongs to one run:
//! nothing written by an earlier run, or by something it left behind, can reach a later one.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::ipc::CapturedStream;

/// Most bytes moved per call of [`Capture::drain`]: a writer that never pauses must not keep
/// the template from its other duties (interrupts, the run's answer).
const TURN: usize = 1024 * 1024;

pub struct Capture {
    pipe: File,
    kept: Vec<u8>,
    dropped: u64,
    limit: usize,
    /// False once every writer has closed its end.
    open: bool,
}

impl Capture {
    /// A new pipe: the capture (read end, non-blocking) and the write end for the run's process.
    pub fn pipe() -> std::io::Result<(Self, OwnedFd)> {
        let (read_end, write_end) = crate::platform::pipe()?;
        let capture = Self {
            pipe: File::from(read_end),
            kept: Vec::new(),
            dropped: 0,
            limit: 0,
            open: true,
        };
        Ok((capture, write_end))
    }

    pub fn fd(&self) -> RawFd {
        self.pipe.as_raw_fd()
    }

    pub fn is_open(&self) -> bool {
        self.open
    }

    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    fn push(&mut self, bytes: &[u8]) {
        let room = self.limit.saturating_sub(self.kept.len());
        let take = room.min(bytes.len());
        self.kept.extend_from_slice(&bytes[..take]);
        self.dropped += (bytes.len() - take) as u64;
    }

    /// Moves what the pipe holds into the buffer, at most `budget` bytes.
    fn drain_up_to(&mut self, budget: usize) {
        let mut chunk = [0u8; 64 * 1024];
        let mut left = budget;
        while left > 0 && self.open {
            let want = left.min(chunk.len());
            match self.pipe.read(&mut chunk[..want]) {
                Ok(0) => self.open = false,
                Ok(n) => {
                    self.push(&chunk[..n]);
                    left -= n;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return, // WouldBlock: empty for now
            }
        }
    }

    /// Called when the pipe is readable.
    pub fn drain(&mut self) {
        self.drain_up_to(TURN);
    }

    /// Ends the run: everything written before this call (the run's process flushed its own
    /// buffers before answering). Whatever is written later belongs to no run.
    pub fn finish(mut self) -> CapturedStream {
        let pending = pending(&self.pipe);
        self.drain_up_to(pending);
        CapturedStream {
            text: String::from_utf8_lossy(&self.kept).into_owned(),
            dropped_bytes: self.dropped,
        }
    }
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
