//! Hostile clients against the real daemon, on loopback, in bounded loops: half-open TLS
//! handshakes, slowloris headers, a 10 MB header, an HTTP/2 rapid-reset flood, and a
//! stream of unknown paths and methods. Through each, legitimate scrapes keep being
//! answered and the daemon's resident memory stays bounded.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use lxmetrics_tests::{raise_fd_limit, Daemon};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How much the daemon's RSS may grow during one attack.
const RSS_GROWTH_LIMIT_KIB: u64 = 48 * 1024;

fn loopback() -> ServerName<'static> {
    ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into())
}

/// A TLS connection to the daemon with its trusted client certificate, offering `alpn`.
async fn trusted_tls(daemon: &Daemon, alpn: &[u8]) -> tokio_rustls::client::TlsStream<TcpStream> {
    let connector = daemon.tls_connector(Some(&daemon.client_cert), &[alpn]);
    let tcp = TcpStream::connect(daemon.address()).await.expect("connect");
    connector
        .connect(loopback(), tcp)
        .await
        .expect("TLS handshake")
}

/// One legitimate scrape; fails the test unless it is answered 200 within 5 s.
async fn scrape_ok(daemon: &Daemon, client: &reqwest::Client) -> Duration {
    let started = Instant::now();
    let response = tokio::time::timeout(
        Duration::from_secs(5),
        client.get(format!("{}/1.0/metrics", daemon.url)).send(),
    )
    .await
    .expect("a legitimate scrape was not answered within 5 s")
    .expect("a legitimate scrape failed");
    assert_eq!(response.status(), 200);
    let body = response.text().await.expect("body");
    assert!(body.contains("lxd_uptime_seconds"), "{body}");
    started.elapsed()
}

fn assert_rss_bounded(daemon: &Daemon, before_kib: u64, attack: &str) {
    let after = daemon.rss_kib();
    assert!(
        after.saturating_sub(before_kib) < RSS_GROWTH_LIMIT_KIB,
        "{attack}: RSS grew from {before_kib} KiB to {after} KiB"
    );
}

/// The start of a TLS ClientHello that announces 512 bytes and never sends them.
const PARTIAL_CLIENT_HELLO: [u8; 9] = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_unfinished_handshakes_do_not_block_scrapes() {
    raise_fd_limit();
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    scrape_ok(&daemon, &client).await;
    let rss = daemon.rss_kib();

    let started = Instant::now();
    let mut held = Vec::with_capacity(1000);
    for i in 0..1000 {
        let mut stream = TcpStream::connect(daemon.address()).await.expect("connect");
        if i % 2 == 0 {
            stream
                .write_all(&PARTIAL_CLIENT_HELLO)
                .await
                .expect("write a partial ClientHello");
        }
        held.push(stream);
    }
    for _ in 0..5 {
        scrape_ok(&daemon, &client).await;
    }
    assert_rss_bounded(&daemon, rss, "1000 half-open handshakes");

    // The daemon hangs up on them at its handshake timeout (10 s).
    let mut silent = held.swap_remove(1);
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(20), silent.read(&mut buf))
        .await
        .expect("the daemon never closed a connection that sent nothing");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "expected a close, got {read:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "closed too early"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_headers_are_cut_off() {
    raise_fd_limit();
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    let rss = daemon.rss_kib();
    let connector = daemon.tls_connector(Some(&daemon.client_cert), &[b"http/1.1"]);
    let started = Instant::now();

    let mut attackers = Vec::new();
    for _ in 0..100 {
        let connector = connector.clone();
        let address = daemon.address();
        attackers.push(tokio::spawn(async move {
            let tcp = TcpStream::connect(address).await.expect("connect");
            let mut tls = connector
                .connect(loopback(), tcp)
                .await
                .expect("TLS handshake");
            tls.write_all(b"GET /1.0/metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                .await
                .expect("request line");
            let mut buf = [0u8; 256];
            // One header line per second, until the daemon hangs up (bounded at 30 s).
            for _ in 0..30 {
                tokio::select! {
                    // Data (a 408), a clean close or a reset: the daemon hung up.
                    read = tls.read(&mut buf) => return Some(read.map_or(0, |n| n)),
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                if tls.write_all(b"X-Slow: 1\r\n").await.is_err() {
                    return Some(0);
                }
            }
            None
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for _ in 0..3 {
        scrape_ok(&daemon, &client).await;
    }
    for attacker in attackers {
        let outcome = attacker.await.expect("attacker task");
        assert!(
            outcome.is_some(),
            "a slowloris connection was still open after 30 s"
        );
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(20),
        "slowloris connections lived {took:?}"
    );
    scrape_ok(&daemon, &client).await;
    assert_rss_bounded(&daemon, rss, "slowloris");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_megabyte_header_is_refused() {
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    scrape_ok(&daemon, &client).await;
    let rss = daemon.rss_kib();
    let tls = trusted_tls(&daemon, b"http/1.1").await;
    let (mut reader, mut writer) = tokio::io::split(tls);
    let sender = tokio::spawn(async move {
        let _ = writer
            .write_all(b"GET /1.0/metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
            .await;
        let chunk = vec![b'a'; 64 * 1024];
        for _ in 0..160 {
            if writer.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = writer.write_all(b"\r\n\r\n").await;
    });
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut response))
        .await
        .expect("the daemon neither answered nor closed within 10 s");
    let head = String::from_utf8_lossy(&response[..response.len().min(64)]).to_string();
    assert!(
        response.is_empty() || head.starts_with("HTTP/1.1 431"),
        "expected 431 or a close, got {head:?}"
    );
    sender.abort();
    scrape_ok(&daemon, &client).await;
    assert_rss_bounded(&daemon, rss, "10 MB header");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_rapid_reset_flood_is_cut_off() {
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    scrape_ok(&daemon, &client).await;
    let rss = daemon.rss_kib();
    let tls = trusted_tls(&daemon, b"h2").await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut h2, connection) = h2::client::handshake(tls).await.expect("h2 handshake");
    let driver = tokio::spawn(connection);

    let uri = format!("https://{}/1.0/metrics", daemon.address());
    let mut sent = 0;
    let flood = async {
        for _ in 0..20_000 {
            h2 = match h2.clone().ready().await {
                Ok(ready) => ready,
                Err(_) => break,
            };
            let request = http::Request::get(&uri).body(()).expect("request");
            match h2.send_request(request, true) {
                // Dropping the response at once resets the stream (RST_STREAM CANCEL).
                Ok((response, _)) => drop(response),
                Err(_) => break,
            }
            sent += 1;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), flood)
        .await
        .expect("the flood loop did not end within 30 s");
    // The server either served every cancelled stream cheaply or sent GOAWAY; either way
    // the connection task ends when we drop our handle.
    drop(h2);
    let _ = tokio::time::timeout(Duration::from_secs(10), driver).await;
    assert!(sent > 0, "no stream was opened");
    assert!(
        sent < 20_000,
        "the daemon let a client open and reset 20,000 streams without closing the connection"
    );
    scrape_ok(&daemon, &client).await;
    assert_rss_bounded(&daemon, rss, "HTTP/2 rapid reset");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_and_methods_in_bulk_stay_cheap() {
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    scrape_ok(&daemon, &client).await;
    let counter_series = |body: &str| {
        body.lines()
            .filter(|l| l.starts_with("lxd_api_requests_completed_total{"))
            .count()
    };
    let (_, body) = daemon.get("/1.0/metrics").await;
    let before = counter_series(&body);
    let rss = daemon.rss_kib();
    let methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW"];
    for i in 0..2000u32 {
        let method = reqwest::Method::from_bytes(methods[i as usize % methods.len()].as_bytes())
            .expect("method");
        let path = format!("/{}/x{}/../{}?q={}", i % 7, i, "%00%ff", i);
        let response = client
            .request(method, format!("{}{path}", daemon.url))
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        assert!(
            (400..500).contains(&status),
            "{path}: status {status} is not a client error"
        );
    }
    scrape_ok(&daemon, &client).await;
    assert_rss_bounded(&daemon, rss, "2000 unknown requests");
    // LXD's entity types and results are written from the start: 2,000 odd paths add
    // to their counts, never a series.
    let (_, body) = daemon.get("/1.0/metrics").await;
    assert_eq!(
        counter_series(&body),
        before,
        "request counters must not grow a series per path:\n{body}"
    );
}
