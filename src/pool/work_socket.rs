//! The supervisor's end of a worker slot's work socket.
//!
//! It is registered with the reactor for readability only. A socket registered for
//! writability too (as `tokio::net::UnixStream` always is) wakes the supervisor each time the
//! worker reads a request, because reading frees buffer space: once per run, for nothing, and
//! on a VM each such wake-up of an idle CPU costs tens of microseconds. Writes go straight to
//! the non-blocking socket; only when the socket's buffer is full is writability asked for, on
//! a duplicate descriptor registered for that wait alone.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// The send buffer asked for on the supervisor's end.
const SEND_BUFFER: usize = 1024 * 1024;

pub struct WorkSocket {
    socket: AsyncFd<UnixStream>,
}

impl WorkSocket {
    pub fn new(socket: UnixStream) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        // Room for a typical program in one write: the default is about 200 KiB on Linux and
        // 8 KiB on macOS. The kernel may cap it lower (Linux: net.core.wmem_max), which is fine.
        let _ =
            nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::SndBuf, &SEND_BUFFER);
        Ok(Self {
            socket: register(socket, Interest::READABLE)?,
        })
    }

    /// Appends what the socket holds to `buffer` (into its spare capacity), waiting until there
    /// is something; `Ok(0)` is the worker's end closed. Cancel-safe: nothing is read unless
    /// the call completes.
    pub async fn read_buf(&self, buffer: &mut Vec<u8>) -> io::Result<usize> {
        loop {
            let mut ready = self.socket.readable().await?;
            match ready.try_io(|socket| receive_into(socket.get_ref(), buffer)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Appends what the socket holds now to `buffer`, without waiting.
    pub fn drain_into(&self, buffer: &mut Vec<u8>) -> io::Result<()> {
        loop {
            buffer.reserve(4096);
            match receive_into(self.socket.get_ref(), buffer) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes what fits of `bytes` now, without waiting: how many bytes (0 when the socket's
    /// buffer is full).
    pub fn write_some(&self, bytes: &[u8]) -> io::Result<usize> {
        loop {
            match self.socket.get_ref().write(bytes) {
                Ok(0) if !bytes.is_empty() => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => return Ok(written),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits until the socket has room. Registering reports a socket that already has room at
    /// once, so room freed between the failed write and here is not missed. Cancel-safe.
    pub async fn writable(&self) -> io::Result<()> {
        let duplicate = register(self.socket.get_ref().try_clone()?, Interest::WRITABLE)?;
        duplicate.writable().await?.retain_ready();
        Ok(())
    }
}

fn register(socket: UnixStream, interest: Interest) -> io::Result<AsyncFd<UnixStream>> {
    // SAFETY: a `UnixStream` owns its descriptor and always reports that same one, and it lives
    // inside the `AsyncFd` until the `AsyncFd` is dropped.
    Ok(unsafe { AsyncFd::register_with_interest(socket, interest) }?)
}

/// One `recv` into `buffer`'s spare capacity, without zeroing it first: the caller reserves
/// 64 KiB or more (up to a whole frame) for reads that happen on every answer.
fn receive_into(socket: &UnixStream, buffer: &mut Vec<u8>) -> io::Result<usize> {
    let spare = buffer.spare_capacity_mut();
    if spare.is_empty() {
        // Never asked to read into nothing: that would look like a closed socket.
        let mut byte = [0u8; 1];
        let read = (&*socket).read(&mut byte)?;
        buffer.extend_from_slice(&byte[..read]);
        return Ok(read);
    }
    // SAFETY: `spare` is writable memory of the length given; recv writes at most that many
    // bytes and reports how many, and exactly those become part of the vector.
    let read = unsafe {
        libc::recv(
            socket.as_raw_fd(),
            spare.as_mut_ptr().cast(),
            spare.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if read < 0 {
        return Err(io::Error::last_os_error());
    }
    let read = read as usize;
    // SAFETY: recv initialised the first `read` bytes of the spare capacity.
    unsafe { buffer.set_len(buffer.len() + read) };
    Ok(read)
}
