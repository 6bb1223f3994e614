//! A single-threaded workload for the real-cgroup end-to-end test: it touches some
//! memory, burns CPU, and on each line read from stdin sends a known number of bytes over
//! loopback UDP, then prints how many payload bytes it sent. One process, so the test
//! knows what the cgroup holds (the test still reads the count from the cgroup itself).

use std::io::{BufRead, Write};
use std::net::UdpSocket;
use std::time::{Duration, Instant};

const DATAGRAMS: usize = 2_000;
const PAYLOAD: usize = 1_000;

fn main() {
    let memory: Vec<u8> = (0..32 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let receiver = UdpSocket::bind("127.0.0.1:0").expect("bind receiver on loopback");
    receiver.set_nonblocking(true).expect("nonblocking");
    let sender = UdpSocket::bind("127.0.0.1:0").expect("bind sender on loopback");
    let target = receiver.local_addr().expect("receiver address");
    let stdin = std::io::stdin();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    // Reading stdin needs a thread (pids.current counts it too): it only forwards lines.
    std::thread::spawn(move || {
        for line in stdin.lock().lines() {
            if line.is_err() || tx.send(()).is_err() {
                break;
            }
        }
    });
    println!("ready");
    let mut sink = [0u8; 2048];
    let mut spin: u64 = u64::from(memory[12345]);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(120) {
        for _ in 0..100_000 {
            spin = spin.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        while receiver.recv(&mut sink).is_ok() {}
        if rx.try_recv().is_ok() {
            let payload = [0x5au8; PAYLOAD];
            for _ in 0..DATAGRAMS {
                sender.send_to(&payload, target).expect("send on loopback");
            }
            println!("sent {}", DATAGRAMS * PAYLOAD);
            let _ = std::io::stdout().flush();
        }
    }
    std::hint::black_box((spin, memory));
}
