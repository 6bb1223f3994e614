//! Helpers for the end-to-end tests: build and start the real `lxmetrics` binary, find
//! its listen address, and stop it. Every helper fails loudly with what is missing
//! instead of skipping.

pub mod churn;
pub mod fuzz_entry;
pub mod prometheus;
pub mod real_cgroup;
pub mod real_engines;
pub mod real_lxd;
pub mod setup;
pub mod synthetic_fleet;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::Duration;
use tokio_rustls::TlsConnector;

/// The workspace root (where `Cargo.toml` with `[workspace]` lives).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Builds a workspace binary once per test process with the same cargo that runs the
/// tests (a no-op when it is up to date) and returns its path.
fn build_bin(package: &str, bin: &str) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // A release build of this crate (the benches, the soak run) starts release daemons.
    let release = !cfg!(debug_assertions);
    let mut args = vec!["build", "--quiet", "-p", package, "--bin", bin];
    if release {
        args.push("--release");
    }
    let status = Command::new(cargo)
        .args(&args)
        .current_dir(workspace_root())
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build {bin}: {e}"));
    assert!(status.success(), "building {bin} failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let path = target
        .join(if release { "release" } else { "debug" })
        .join(bin);
    assert!(path.is_file(), "{} missing after build", path.display());
    path
}

/// Path of the `lxmetrics` binary.
pub fn lxmetrics_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build_bin("lxmetrics-server", "lxmetrics"))
}

/// Path of `lxm-instance`, the bench's realistic instance (its own namespaces, traffic,
/// block I/O): built with the bench's own profile, since `cargo run --bin
/// lxmetrics-bench` builds only the bench.
pub fn instance_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build_bin("lxmetrics-tests", "lxm-instance"))
}

/// Path of the example custom daemon that links the example plugin.
pub fn custom_daemon_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build_bin("lxmetrics-custom-daemon", "lxmetrics-custom"))
}

/// A command for the `lxmetrics` binary with a state directory and a clean
/// `LXMETRICS_*` environment.
pub fn lxmetrics(state_dir: &Path) -> Command {
    command(lxmetrics_bin(), state_dir)
}

/// A command for any daemon binary with a state directory and a clean environment.
pub fn command(bin: &Path, state_dir: &Path) -> Command {
    let mut cmd = Command::new(bin);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("LXMETRICS_") {
            cmd.env_remove(key);
        }
    }
    cmd.arg("--state-dir").arg(state_dir);
    cmd
}

/// A client certificate and key, PEM.
#[derive(Clone, Debug)]
pub struct ClientCert {
    /// Certificate PEM.
    pub cert_pem: String,
    /// Private key PEM.
    pub key_pem: String,
}

impl ClientCert {
    /// A fresh self-signed ECDSA P-384 certificate (like the product note's openssl one),
    /// valid from `not_before` to `not_after` years relative to now (defaults: valid now).
    pub fn generate(name: &str) -> ClientCert {
        Self::generate_valid(name, -1, 10)
    }

    /// A certificate valid from `from_years` to `to_years` relative to this year.
    pub fn generate_valid(name: &str, from_years: i32, to_years: i32) -> ClientCert {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("key");
        let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let year = 1970
            + (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_secs()
                / 31_556_952) as i32;
        params.not_before = rcgen::date_time_ymd(year + from_years, 1, 1);
        params.not_after = rcgen::date_time_ymd(year + to_years, 1, 1);
        let cert = params.self_signed(&key).expect("self-signed");
        ClientCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// Writes `<dir>/<stem>.crt` and `<stem>.key`, returning the certificate path.
    pub fn write(&self, dir: &Path, stem: &str) -> PathBuf {
        let cert = dir.join(format!("{stem}.crt"));
        std::fs::write(&cert, &self.cert_pem).expect("write cert");
        std::fs::write(dir.join(format!("{stem}.key")), &self.key_pem).expect("write key");
        cert
    }
}

/// A running daemon; killed when dropped.
pub struct Daemon {
    child: Child,
    bin: &'static Path,
    /// Base URL of the `core.https_address` listener, e.g. `https://127.0.0.1:41234`.
    pub url: String,
    /// Base URL of the `core.metrics_address` listener, when one was configured.
    pub metrics_url: Option<String>,
    /// Its state directory (removed when the daemon is dropped).
    pub state_dir: tempfile::TempDir,
    /// A certificate trusted as `client` before the daemon started.
    pub client_cert: ClientCert,
    /// What the daemon printed on stdout up to its last listener line.
    pub startup_output: Vec<String>,
    stderr: mpsc::Receiver<String>,
}

/// A new state directory holding `config` as its `config.toml`.
pub fn state_with_config(config: impl AsRef<str>) -> tempfile::TempDir {
    let state = tempfile::tempdir().expect("temporary state directory");
    std::fs::write(state.path().join("config.toml"), config.as_ref()).expect("write config.toml");
    state
}

impl Daemon {
    /// Starts `lxmetrics daemon` on a kernel-chosen loopback port with extra arguments,
    /// and waits until it listens.
    pub fn start(extra_args: &[&str]) -> Daemon {
        let state_dir = tempfile::tempdir().expect("temporary state directory");
        Self::start_in(state_dir, extra_args)
    }

    /// Like [`Daemon::start`] with a prepared state directory (e.g. holding config.toml).
    pub fn start_in(state_dir: tempfile::TempDir, extra_args: &[&str]) -> Daemon {
        let mut args = vec!["--https-address", "127.0.0.1:0"];
        args.extend_from_slice(extra_args);
        Self::start_raw(state_dir, &args)
    }

    /// Starts `lxmetrics daemon ARGS` with exactly these arguments (the listen address
    /// then comes from the state directory's config.toml unless ARGS give one).
    pub fn start_raw(state_dir: tempfile::TempDir, daemon_args: &[&str]) -> Daemon {
        Self::start_program(lxmetrics_bin(), state_dir, daemon_args)
    }

    /// Starts `BIN daemon ARGS` for another daemon binary built on lxmetrics.
    pub fn start_program(
        bin: &'static Path,
        state_dir: tempfile::TempDir,
        daemon_args: &[&str],
    ) -> Daemon {
        let client_cert = ClientCert::generate("e2e-client");
        let cert_path = client_cert.write(state_dir.path(), "e2e-client");
        let added = command(bin, state_dir.path())
            .args(["trust", "add"])
            .arg(&cert_path)
            .args(["--type=client", "--name", "e2e-client"])
            .output()
            .expect("run lxmetrics trust add");
        assert!(
            added.status.success(),
            "trust add failed: {}",
            String::from_utf8_lossy(&added.stderr)
        );
        let mut child = command(bin, state_dir.path())
            .arg("daemon")
            .args(daemon_args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start lxmetrics daemon");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let (err_tx, err_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if err_tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Lines like "lxmetrics listening on https://127.0.0.1:4321 (core.https_address,
        // from command line)", then "... on unix:PATH" last.
        let (line_tx, line_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = line_tx.send(line);
            }
        });
        let (mut url, mut metrics_url) = (None, None);
        let mut startup_output = Vec::new();
        loop {
            let line = line_rx.recv_timeout(Duration::from_secs(20));
            if let Ok(line) = &line {
                startup_output.push(line.clone());
            }
            let listening = line.map(|l| l.split("listening on ").nth(1).map(str::to_owned));
            match listening {
                Ok(None) => continue,
                Ok(Some(rest)) if rest.starts_with("unix:") => break,
                Ok(Some(rest)) => {
                    let address = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    if rest.contains("(core.metrics_address") {
                        metrics_url = Some(address);
                    } else {
                        url = Some(address);
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let errors: Vec<String> = err_rx.try_iter().collect();
                    panic!(
                        "daemon did not report its listeners; stderr:\n{}",
                        errors.join("\n")
                    );
                }
            }
        }
        Daemon {
            child,
            bin,
            url: url.expect("core.https_address listener reported"),
            metrics_url,
            state_dir,
            client_cert,
            startup_output,
            stderr: err_rx,
        }
    }

    /// The daemon's server certificate (the CA for clients).
    pub fn server_cert_pem(&self) -> Vec<u8> {
        std::fs::read(self.state_dir.path().join("server.crt")).expect("server.crt exists")
    }

    /// An HTTPS client presenting `cert` (or none) and trusting the daemon's certificate.
    pub fn client_with(&self, cert: Option<&ClientCert>) -> reqwest::Client {
        let root =
            reqwest::Certificate::from_pem(&self.server_cert_pem()).expect("server.crt parses");
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(root)
            .no_gzip()
            .timeout(Duration::from_secs(20));
        if let Some(cert) = cert {
            let pem = format!("{}{}", cert.cert_pem, cert.key_pem);
            builder =
                builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).expect("identity"));
        }
        builder.build().expect("client")
    }

    /// A raw TLS connector presenting `cert` (or none), trusting the daemon's certificate
    /// and offering `alpn` (e.g. `[b"h2"]`), for tests that speak below HTTP.
    pub fn tls_connector(&self, cert: Option<&ClientCert>, alpn: &[&[u8]]) -> TlsConnector {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let mut roots = rustls::RootCertStore::empty();
        let server_pem = self.server_cert_pem();
        for der in CertificateDer::pem_slice_iter(&server_pem) {
            roots
                .add(der.expect("server.crt parses"))
                .expect("server.crt is a CA");
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots);
        let mut config = match cert {
            Some(cert) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_slice(cert.cert_pem.as_bytes()).expect("cert")],
                    PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).expect("key"),
                )
                .expect("client identity"),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsConnector::from(std::sync::Arc::new(config))
    }

    /// The `host:port` of the full listener.
    pub fn address(&self) -> String {
        self.url
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .to_owned()
    }

    /// The daemon's resident memory in KiB, from `/proc/<pid>/status`.
    pub fn rss_kib(&self) -> u64 {
        proc_status_value(self.pid(), "VmRSS:")
    }

    /// The daemon's thread count, from `/proc/<pid>/status`.
    pub fn threads(&self) -> u64 {
        proc_status_value(self.pid(), "Threads:")
    }

    /// An HTTPS client with the trusted `client` certificate.
    pub fn client(&self) -> reqwest::Client {
        self.client_with(Some(&self.client_cert))
    }

    /// `GET path` on the full listener with the trusted client certificate: the status
    /// and the body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        self.get_as(Some(&self.client_cert), path).await
    }

    /// `GET path` on the full listener presenting `cert` (or none): status and body.
    pub async fn get_as(&self, cert: Option<&ClientCert>, path: &str) -> (u16, String) {
        let response = self
            .client_with(cert)
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("request to the daemon");
        let status = response.status().as_u16();
        (status, response.text().await.expect("response body"))
    }

    /// Runs this daemon's binary as a CLI: `BIN --state-dir <this daemon's> ARGS`.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        command(self.bin, self.state_dir.path())
            .args(args)
            .output()
            .expect("run the daemon's CLI")
    }

    /// Writes `cert` into the state directory as `<stem>.crt` and trusts it with
    /// `trust add` and `args` (e.g. `--type=client --restricted --projects prod`); panics
    /// with the CLI's error if that fails.
    pub fn trust_with(&self, cert: &ClientCert, stem: &str, args: &[&str]) {
        let path = cert.write(self.state_dir.path(), stem);
        let mut full = vec!["trust", "add", path.to_str().expect("utf-8 path")];
        full.extend_from_slice(args);
        let out = self.cli(&full);
        assert!(
            out.status.success(),
            "trust add {stem}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Trusts the certificate at `cert` as a metrics certificate; panics with the CLI's
    /// error if that fails.
    pub fn trust_metrics(&self, cert: &Path) {
        let out = self.cli(&[
            "trust",
            "add",
            cert.to_str().expect("utf-8 path"),
            "--type=metrics",
        ]);
        assert!(
            out.status.success(),
            "trust add {}: {}",
            cert.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// What a Prometheus in `dir` needs to scrape this daemon as examples/prometheus.yml
    /// says: `tls/server.crt` (this daemon's certificate as the CA) and a new metrics
    /// certificate `tls/metrics.crt`/`.key` that this daemon trusts.
    pub fn write_prometheus_tls(&self, dir: &Path) {
        let tls = dir.join("tls");
        std::fs::create_dir_all(&tls).expect("mkdir tls");
        std::fs::write(tls.join("server.crt"), self.server_cert_pem()).expect("server.crt");
        self.trust_metrics(&ClientCert::generate("metrics.local").write(&tls, "metrics"));
    }

    /// Kills the daemon with SIGKILL and hands back its state directory.
    pub fn kill9(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::replace(&mut self.state_dir, tempfile::tempdir().expect("tempdir"))
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).expect("valid pid");
        rustix::process::kill_process(pid, signal).expect("send signal");
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits (up to `limit`) for the exit status.
    pub fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).expect("valid pid");
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("send SIGTERM");
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("wait for daemon") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Opens `n` TLS connections with the trusted client certificate, sends
    /// `GET /1.0/metrics` on each and never reads: slow readers, as the review's memory
    /// attack has them. Hold the result to keep them open.
    pub async fn unread_scrapes(
        &self,
        n: usize,
    ) -> Vec<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        use tokio::io::AsyncWriteExt;
        let connector = self.tls_connector(Some(&self.client_cert), &[b"http/1.1"]);
        let mut held = Vec::with_capacity(n);
        for _ in 0..n {
            let tcp = tokio::net::TcpStream::connect(self.address())
                .await
                .expect("connect");
            let server = rustls_pki_types::ServerName::IpAddress(
                std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST).into(),
            );
            let mut tls = connector.connect(server, tcp).await.expect("TLS handshake");
            tls.write_all(b"GET /1.0/metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .await
                .expect("send request");
            tls.flush().await.expect("flush");
            held.push(tls);
        }
        held
    }

    /// `?project=` keys that name no project, for the review's cache-flooding attack.
    pub fn random_project_urls(&self, n: u32) -> Vec<String> {
        (0..n)
            .map(|i| {
                let key = i.wrapping_mul(2_654_435_761);
                format!("{}/1.0/metrics?project=flood{key:08x}", self.url)
            })
            .collect()
    }

    /// Lines the daemon wrote to stderr so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.try_iter().collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A state directory whose `config.toml` points the host roots at a fixture tree of
/// `plugins/tests/fixtures/<layout>` (an LXD host: its `lxd.socket` marker exists),
/// followed by `extra` TOML.
pub fn fixture_state_dir(layout: &str, extra: &str) -> tempfile::TempDir {
    let state = tempfile::tempdir().expect("tempdir");
    let root = workspace_root().join("plugins/tests/fixtures").join(layout);
    let config = format!(
        "{extra}\n[host]\nproc_root = \"{r}/proc\"\nsys_root = \"{r}/sys\"\ncgroup_root = \"{r}/cgroup\"\n\
         [instances.lxd]\nsocket = \"{r}/lxd.socket\"\n[instances.incus]\nsocket = \"\"\n",
        r = root.display()
    );
    std::fs::write(state.path().join("config.toml"), config).expect("write config.toml");
    state
}

/// The `lxd_*` metric names that PromQL expressions (or any text holding them) use,
/// sorted and without repeats.
pub fn metric_names_in<'a>(texts: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut names: Vec<String> = texts
        .into_iter()
        .flat_map(|e| {
            e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .filter(|t| t.starts_with("lxd_"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Whether a metrics body has a series of family `name`.
pub fn emits(body: &str, name: &str) -> bool {
    body.lines()
        .any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
}

/// The distinct `project` label values of a metrics body's series, sorted.
pub fn projects_in(body: &str) -> Vec<String> {
    let mut projects: Vec<String> = body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split("project=\"").nth(1)?.split('"').next())
        .map(String::from)
        .collect();
    projects.sort();
    projects.dedup();
    projects
}

/// A loopback port that was free a moment ago (for configurations that need a fixed port).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Finds a program on PATH or fails the test naming the Debian package that has it.
pub fn require_program(program: &str, debian_package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("`{program}` is not installed: install the Debian package `{debian_package}` (.ci/run does)")
        })
}

/// The value of a series without labels (or the first series of that name) in
/// Prometheus text, if present.
pub fn sample_value(body: &str, series: &str) -> Option<f64> {
    body.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

/// CPU seconds a process has used, all its threads (live and ended) together, to the
/// nanosecond: its CPU-time clock (`clock_getcpuclockid`). `/proc/<pid>/stat` says the
/// same in 10 ms ticks, too coarse for one scrape of a few milliseconds; it is the
/// fallback where the clock cannot be read.
pub fn process_cpu_seconds(pid: u32) -> f64 {
    let mut clock: libc::clockid_t = 0;
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: both calls only write the out-parameters given, which live on this stack.
    let read = unsafe {
        libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) == 0
            && libc::clock_gettime(clock, &mut now) == 0
    };
    if read {
        return now.tv_sec as f64 + now.tv_nsec as f64 * 1e-9;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/stat: {e}"));
    // Fields 14 and 15, counted after the parenthesised command name (it may hold spaces).
    let after_comm = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let mut fields = after_comm.split_whitespace().skip(11);
    let mut ticks = || -> u64 {
        fields
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("/proc/{pid}/stat: no CPU times in {stat:?}"))
    };
    let total = ticks() + ticks();
    total as f64 / rustix::param::clock_ticks_per_second().max(1) as f64
}

/// A number from `/proc/<pid>/status` (`VmRSS:`, `Threads:`, ...).
pub fn proc_status_value(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{key} missing from /proc/{pid}/status"))
}

/// Raises this process's soft open-file limit to its hard limit, for tests that hold
/// many connections at once.
pub fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    )
    .expect("raise the open-file limit");
}

/// Runs `promtool check metrics` (Debian package `prometheus`) on `body`: its exit code
/// (0 clean, 3 lint findings, 1 parse error) and its report (stdout and stderr).
pub fn promtool_check_metrics(body: &str) -> (Option<i32>, String) {
    use std::io::Write;
    let promtool = require_program("promtool", "prometheus");
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    child
        .stdin
        .take()
        .expect("promtool stdin")
        .write_all(body.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool ran");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), report)
}
