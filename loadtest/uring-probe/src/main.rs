//! What a fan-out pays per delivery in system calls: one `send(2)` per socket against one io_uring
//! submission of the whole fan-out (one `io_uring_enter` for N sends), on loopback TCP with a
//! reader thread (core 1) draining every socket, the writer on core 0. Prints the writer thread's
//! CPU time per delivery for each, three passes.
//!
//!     cargo run --release --manifest-path loadtest/uring-probe/Cargo.toml -- 1000 1000 64   # sockets, rounds, sends per submission
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Between two fan-outs: long enough for the reader to drain every socket and fall asleep, as the
/// load generator does between updates.
const PAUSE: std::time::Duration = std::time::Duration::from_millis(2);

fn uring_pass(
    ring: &mut io_uring::IoUring,
    fds: &[i32],
    msg: &[u8],
    rounds: usize,
    per_submit: usize,
    fixed: bool,
) -> f64 {
    let c = thread_cpu();
    for _ in 0..rounds {
        let mut i = 0;
        while i < fds.len() {
            let batch = (fds.len() - i).min(per_submit);
            {
                let mut sq = ring.submission();
                for (k, &fd) in fds[i..i + batch].iter().enumerate() {
                    let e = if fixed {
                        io_uring::opcode::Send::new(
                            io_uring::types::Fixed((i + k) as u32),
                            msg.as_ptr(),
                            msg.len() as u32,
                        )
                    } else {
                        io_uring::opcode::Send::new(
                            io_uring::types::Fd(fd),
                            msg.as_ptr(),
                            msg.len() as u32,
                        )
                    }
                    .flags(libc::MSG_DONTWAIT)
                    .build();
                    unsafe { sq.push(&e).unwrap() };
                }
            }
            ring.submit_and_wait(batch).unwrap();
            for cqe in ring.completion() {
                assert!(cqe.result() == msg.len() as i32, "cqe {}", cqe.result());
            }
            i += batch;
        }
        std::thread::sleep(PAUSE);
    }
    thread_cpu() - c
}

fn thread_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

fn pin(core: usize) {
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn main() {
    let n: usize = std::env::args().nth(1).map_or(1000, |s| s.parse().unwrap());
    let rounds: usize = std::env::args().nth(2).map_or(2000, |s| s.parse().unwrap());
    // Sends per submission (the hub submits a fan-out in batches of this many).
    let per_submit: usize = std::env::args().nth(3).map_or(4096, |s| s.parse().unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut writers = Vec::new();
    let mut readers = Vec::new();
    for _ in 0..n {
        let c = TcpStream::connect(addr).unwrap();
        let (s, _) = listener.accept().unwrap();
        s.set_nodelay(true).unwrap();
        c.set_nonblocking(true).unwrap();
        writers.push(s);
        readers.push(c);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    // The reader sleeps in epoll_wait between bursts, as a real client does, so a send pays for
    // waking it as it would in the hub.
    let reader = std::thread::spawn(move || {
        pin(1);
        let ep = unsafe { libc::epoll_create1(0) };
        for (i, r) in readers.iter().enumerate() {
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: i as u64,
            };
            unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, r.as_raw_fd(), &mut ev) };
        }
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
        let mut buf = vec![0u8; 65536];
        let mut total = 0u64;
        while !stop2.load(Ordering::Relaxed) {
            let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), 1024, 100) };
            for ev in &events[..n.max(0) as usize] {
                let r = &mut readers[ev.u64 as usize];
                while let Ok(k) = r.read(&mut buf) {
                    if k == 0 {
                        break;
                    }
                    total += k as u64;
                }
            }
        }
        total
    });
    pin(0);
    let msg = vec![b'x'; 250];
    let fds: Vec<i32> = writers.iter().map(|w| w.as_raw_fd()).collect();
    let mut ring = io_uring::IoUring::new(4096).unwrap();
    ring.submitter().register_files(&fds).unwrap();
    for pass in 0..3 {
        // One send(2) per socket.
        let c0 = thread_cpu();
        for _ in 0..rounds {
            for &fd in &fds {
                let r =
                    unsafe { libc::send(fd, msg.as_ptr().cast(), msg.len(), libc::MSG_DONTWAIT) };
                assert!(r == msg.len() as isize, "send {r}");
            }
            std::thread::sleep(PAUSE);
        }
        let write_cpu = thread_cpu() - c0;
        // io_uring: the N sends of a fan-out, `per_submit` per io_uring_enter; then the same with
        // the sockets registered with the ring (no file lookup per send).
        let uring_cpu = uring_pass(&mut ring, &fds, &msg, rounds, per_submit, false);
        let fixed_cpu = uring_pass(&mut ring, &fds, &msg, rounds, per_submit, true);
        let d = (n * rounds) as f64;
        println!(
            "pass {pass}: n={n} rounds={rounds} per_submit={per_submit}: send {:.0} ns/delivery, io_uring {:.0} (ratio {:.2}), registered {:.0} (ratio {:.2})",
            write_cpu / d * 1e9,
            uring_cpu / d * 1e9,
            write_cpu / uring_cpu,
            fixed_cpu / d * 1e9,
            write_cpu / fixed_cpu
        );
    }
    stop.store(true, Ordering::Relaxed);
    let total = reader.join().unwrap();
    eprintln!("read {total} bytes");
}
