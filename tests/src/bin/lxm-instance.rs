//! One realistic instance for the bench's fleet (docs/performance.md), shaped like a
//! small container: started by `lxmetrics-bench` and moved into its cgroup, then on the
//! line `go` it takes its own network and mount namespaces, mounts a tmpfs as an extra
//! file system, brings `lo` up and sends some traffic over it, starts two more processes
//! and does a little direct block I/O; on the line `up` (once the bench has given it an
//! `eth0` on a bridge) it brings `eth0` up, without IPv6. It prints `ready` after each step and stays
//! until its stdin closes.

use std::io::{BufRead, Write};
use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};

fn main() {
    let index: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .expect("usage: lxm-instance INDEX");
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let mut next_is = |word: &str| matches!(lines.next(), Some(Ok(line)) if line == word);
    let ready = || {
        println!("ready");
        let _ = std::io::stdout().flush();
    };
    if !next_is("go") {
        return;
    }
    use rustix::thread::UnshareFlags;
    // SAFETY: only the network and mount namespaces are unshared, not the file
    // descriptor table (CLONE_FILES), which is what makes unshare unsafe; this process
    // has one thread.
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNET | UnshareFlags::NEWNS) }
        .expect("unshare network and mount namespaces");
    // Mounts made here stay in this namespace.
    rustix::mount::mount_change(
        "/",
        rustix::mount::MountPropagationFlags::PRIVATE | rustix::mount::MountPropagationFlags::REC,
    )
    .expect("make / private");
    rustix::mount::mount(
        "tmpfs",
        "/mnt",
        "tmpfs",
        rustix::mount::MountFlags::empty(),
        Some(c"size=16m"),
    )
    .expect("mount a tmpfs on /mnt");
    run("ip", &["link", "set", "lo", "up"]);
    loopback_traffic();
    let block_file = format!("/var/tmp/lxm-bench-{index}");
    run(
        "dd",
        &[
            "if=/dev/zero",
            &format!("of={block_file}"),
            "bs=4096",
            "count=16",
            "oflag=direct",
            "status=none",
        ],
    );
    let _ = std::fs::remove_file(&block_file);
    let mut others: Vec<Child> = (0..2)
        .map(|_| {
            Command::new("sleep")
                .arg("3600")
                .stdin(Stdio::null())
                .spawn()
                .expect("start a process")
        })
        .collect();
    ready();
    if next_is("up") {
        // No IPv6 link-local address, as on the bench's end (see `Fleet::grow_to`).
        run("ip", &["link", "set", "eth0", "addrgenmode", "none", "up"]);
        ready();
        // Stays until the bench closes stdin (the bench sends nothing more).
        next_is("");
    }
    for other in &mut others {
        let _ = other.kill();
        let _ = other.wait();
    }
}

fn run(program: &str, args: &[&str]) {
    let status = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(status.success(), "{program} {}: {status}", args.join(" "));
}

/// A hundred datagrams over `lo`, so its counters are not all zero.
fn loopback_traffic() {
    let receiver = UdpSocket::bind("127.0.0.1:0").expect("bind on lo");
    let sender = UdpSocket::bind("127.0.0.1:0").expect("bind on lo");
    let target = receiver.local_addr().expect("address");
    for _ in 0..100 {
        let _ = sender.send_to(&[0x5a; 512], target);
    }
}
