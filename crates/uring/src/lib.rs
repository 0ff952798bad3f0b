//! Batched non-blocking socket sends over io_uring: the sends of one fan-out, to many sockets, in
//! one system call.
//!
//! A fan-out that writes an update to N subscribers' sockets makes N `send`s; each pays the
//! system call's entry, exit and file lookup on top of the TCP work. Here the N sends are queued
//! in the ring's submission queue and handed to the kernel by one `io_uring_enter`, which runs each
//! of them at once (they are non-blocking: `MSG_DONTWAIT`) and posts each one's outcome, exactly
//! what `send` would have returned: the bytes taken (all of them, or part when the socket's buffer
//! filled) or an error (`EAGAIN` when it was full). Measured on this project's machines
//! (`loadtest/uring-probe`, 1,000 loopback sockets whose reader sleeps in `epoll_wait` between
//! updates): 1.13–1.25× less sending CPU per delivery with the whole fan-out in one submission,
//! about 1.05× with 64 sends per submission.
//!
//! **Why `unsafe`, and why it is sound.** Submitting a send gives the kernel a pointer into the
//! buffer; the kernel may use it until the send's completion is posted. [`SendRing::send_all`]
//! waits for the completion of every send it submitted before it returns, while it holds a
//! reference to the buffer, so the buffer outlives every use. If the ring fails in a way that
//! leaves sends it cannot account for, it keeps a reference to their buffer for as long as it
//! exists, is never used again ([`SendRing::send_all`] answers with an error, and the caller falls
//! back to plain writes), and when dropped, leaks itself and what it kept instead of freeing
//! memory the kernel might still read. The sockets are borrowed for the call; a send the kernel
//! took holds its own reference to the socket until it completes.
//!
//! **Where io_uring is not allowed** (container runtimes often forbid it by seccomp, kernels older
//! than 5.19 lack what this needs), [`SendRing::new`] fails and the caller writes as before.

use std::io;
use std::os::fd::BorrowedFd;

use bytes::Bytes;

/// The longest [`SendRing::send_all`] waits for the completions of sends it submitted (they are
/// non-blocking, so they complete at once).
#[cfg(target_os = "linux")]
const COMPLETION_LIMIT_SECS: u64 = 1;

/// The flags of every send: never wait for room, never raise `SIGPIPE`.
#[cfg(target_os = "linux")]
const SEND_FLAGS: i32 = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;

/// The result of a send whose completion was not seen (the ring failed): it may or may not have
/// been made.
pub const UNKNOWN: i32 = i32::MIN;

/// What a send to a full socket returns (negated): the socket's buffer had no room.
#[cfg(target_os = "linux")]
pub const EAGAIN: i32 = libc::EAGAIN;
/// What a send to a full socket returns (negated); io_uring exists on Linux only.
#[cfg(not(target_os = "linux"))]
pub const EAGAIN: i32 = 11;

/// A ring for batched sends (see the crate documentation). One per thread of work that fans out:
/// it is used by one caller at a time (`&mut self`).
pub struct SendRing {
    /// Taken (and leaked) only when dropped broken.
    #[cfg(target_os = "linux")]
    ring: Option<io_uring::IoUring>,
    /// Buffers of sends whose completion was never seen (the ring failed): kept while it lives.
    kept: Vec<Bytes>,
    /// The ring failed once and is not used again.
    broken: bool,
    /// `io_uring_enter` calls made.
    enters: u64,
}

impl std::fmt::Debug for SendRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendRing")
            .field("broken", &self.broken)
            .field("enters", &self.enters)
            .finish_non_exhaustive()
    }
}

impl SendRing {
    /// A ring whose submission queue holds `entries` sends (a power of two; the kernel rounds
    /// up). Fails where io_uring is missing, forbidden, or lacks batched non-blocking sends.
    #[cfg(target_os = "linux")]
    pub fn new(entries: u32) -> io::Result<Self> {
        let ring = io_uring::IoUring::builder()
            // Every queued send is taken by the enter even if one is malformed: nothing is left in
            // the queue pointing at a buffer (5.18).
            .setup_submit_all()
            // Completions are posted when the sending thread next enters, without interrupting
            // it (5.19).
            .setup_coop_taskrun()
            .setup_cqsize(entries.saturating_mul(2))
            .build(entries)?;
        let mut probe = io_uring::Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        if !probe.is_supported(io_uring::opcode::Send::CODE) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring without the send operation",
            ));
        }
        Ok(Self {
            ring: Some(ring),
            kept: Vec::new(),
            broken: false,
            enters: 0,
        })
    }

    /// io_uring exists on Linux only.
    #[cfg(not(target_os = "linux"))]
    pub fn new(_entries: u32) -> io::Result<Self> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "io_uring exists on Linux only",
        ))
    }

    /// `io_uring_enter` calls made so far.
    pub fn enters(&self) -> u64 {
        self.enters
    }

    /// Sends `data` to each of `sockets` without blocking, as many per system call as the
    /// submission queue holds. `results[i]` is what a `send` to `sockets[i]` would have returned:
    /// the bytes taken, or minus the error number. An error means the ring failed (and will not be
    /// used again); `results` then still holds what was seen, and [`UNKNOWN`] for the sends whose
    /// outcome was not.
    #[cfg(target_os = "linux")]
    pub fn send_all(
        &mut self,
        data: &Bytes,
        sockets: &[BorrowedFd<'_>],
        results: &mut Vec<i32>,
    ) -> io::Result<()> {
        results.clear();
        results.resize(sockets.len(), UNKNOWN);
        let outcome = match self.ring.as_mut() {
            Some(ring) if !self.broken => {
                send_chunks(ring, &mut self.enters, data, sockets, results)
            }
            _ => return Err(io::Error::other("the ring failed earlier")),
        };
        outcome.map_err(|why| {
            // Sends it could not account for may still read `data`: keep it while the ring lives.
            self.broken = true;
            self.kept.push(data.clone());
            io::Error::other(format!("io_uring failed: {why}"))
        })
    }

    /// io_uring exists on Linux only.
    #[cfg(not(target_os = "linux"))]
    pub fn send_all(
        &mut self,
        _data: &Bytes,
        sockets: &[BorrowedFd<'_>],
        results: &mut Vec<i32>,
    ) -> io::Result<()> {
        results.clear();
        results.resize(sockets.len(), UNKNOWN);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "io_uring exists on Linux only",
        ))
    }
}

/// [`SendRing::send_all`] on a working ring; an error says why the ring must be given up.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn send_chunks(
    ring: &mut io_uring::IoUring,
    enters: &mut u64,
    data: &Bytes,
    sockets: &[BorrowedFd<'_>],
    results: &mut [i32],
) -> Result<(), String> {
    use std::os::fd::AsRawFd;

    let length = u32::try_from(data.len()).map_err(|_| "a buffer over 4 GiB".to_string())?;
    let capacity = ring.params().sq_entries() as usize;
    for (start, chunk) in (0..).step_by(capacity).zip(sockets.chunks(capacity)) {
        {
            let mut queue = ring.submission();
            for (offset, socket) in chunk.iter().enumerate() {
                let send = io_uring::opcode::Send::new(
                    io_uring::types::Fd(socket.as_raw_fd()),
                    data.as_ptr(),
                    length,
                )
                .flags(SEND_FLAGS)
                .build()
                .user_data((start + offset) as u64);
                // SAFETY: the send reads `length` bytes at `data`, which the caller borrows for
                // the whole call; the call does not return before the send's completion is reaped
                // below, or else (the ring failed) the caller keeps `data` alive for the ring's
                // whole life and never enters it again. The queue has room: it is empty at the
                // start of a chunk, and a chunk is at most its capacity.
                if unsafe { queue.push(&send) }.is_err() {
                    return Err("the submission queue was full".into());
                }
            }
        }
        submit_and_reap(ring, enters, chunk.len(), results).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Submits the `count` queued sends and waits for all their completions, writing each result at
/// its index.
#[cfg(target_os = "linux")]
fn submit_and_reap(
    ring: &mut io_uring::IoUring,
    enters: &mut u64,
    count: usize,
    results: &mut [i32],
) -> io::Result<()> {
    let mut reaped = 0;
    // Interruptions and momentary shortages are retried; a ring that keeps failing is given up
    // (after a bounded number of tries, not a hang).
    let mut tries = 0;
    // A non-blocking send completes at once; the bound only keeps a kernel that made one wait
    // from holding the caller (and what it has locked) for longer. A ring that times out is given
    // up like any failed one: what it sent may still be in flight, so its buffers are kept.
    let limit = io_uring::types::Timespec::new().sec(COMPLETION_LIMIT_SECS);
    let args = io_uring::types::SubmitArgs::new().timespec(&limit);
    while reaped < count {
        *enters += 1;
        match ring.submitter().submit_with_args(count - reaped, &args) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ETIME) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "sends did not complete in time",
                ));
            }
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
                ) && tries < 1_000 =>
            {
                tries += 1;
            }
            Err(e) => return Err(e),
        }
        for completion in ring.completion() {
            if let Some(slot) = results.get_mut(completion.user_data() as usize) {
                *slot = completion.result();
            }
            reaped += 1;
        }
    }
    if !ring.submission().is_empty() {
        return Err(io::Error::other("sends left unsubmitted"));
    }
    Ok(())
}

impl Drop for SendRing {
    fn drop(&mut self) {
        if self.broken {
            // Sends may still be in the kernel's hands: their buffers and the ring's memory must
            // outlive them, so both are leaked rather than freed.
            std::mem::forget(std::mem::take(&mut self.kept));
            #[cfg(target_os = "linux")]
            std::mem::forget(self.ring.take());
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd;

    use super::*;

    fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        (server, client)
    }

    #[test]
    fn every_socket_gets_the_bytes_and_a_full_one_says_so() {
        let Ok(mut ring) = SendRing::new(8) else {
            eprintln!("io_uring is not available here: nothing to test");
            return;
        };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        // More sockets than the queue holds: several submissions.
        let pairs: Vec<_> = (0..20).map(|_| pair(&listener)).collect();
        let data = Bytes::from_static(b"data: hello\n\n");
        let fds: Vec<_> = pairs.iter().map(|(s, _)| s.as_fd()).collect();
        let mut results = Vec::new();
        ring.send_all(&data, &fds, &mut results).unwrap();
        assert_eq!(results, vec![data.len() as i32; 20]);
        for (_, mut client) in pairs {
            let mut got = vec![0; data.len()];
            client.read_exact(&mut got).unwrap();
            assert_eq!(got, &data[..]);
        }
        assert!(ring.enters() >= 3);

        // A socket whose reader never reads fills up: part of a send, then EAGAIN.
        let (server, _client) = pair(&listener);
        let big = Bytes::from(vec![b'x'; 1 << 20]);
        let mut outcomes = Vec::new();
        for _ in 0..64 {
            ring.send_all(&big, &[server.as_fd()], &mut results)
                .unwrap();
            outcomes.push(results[0]);
            if results[0] < 0 {
                break;
            }
        }
        assert_eq!(outcomes.last(), Some(&-libc::EAGAIN), "{outcomes:?}");
        assert!(
            outcomes.iter().any(|&n| n > 0 && (n as usize) < big.len()),
            "{outcomes:?}"
        );
    }
}
