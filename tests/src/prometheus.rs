//! A real Prometheus server (Debian package `prometheus`) for end-to-end tests: started on
//! a loopback port the test picks, with a configuration the test writes, queried through
//! its HTTP API, killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, require_program, workspace_root, Daemon};

/// A running Prometheus.
pub struct Prometheus {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub api: String,
    /// Its listen port (to restart on the same one).
    pub port: u16,
    /// Its working directory (configuration, `data/`).
    pub dir: PathBuf,
    client: reqwest::Client,
}

impl Prometheus {
    /// Starts Prometheus in `dir` with `prometheus.yml` set to `config` on a free port.
    pub fn start(dir: &Path, config: &str, extra_args: &[&str]) -> Prometheus {
        std::fs::write(dir.join("prometheus.yml"), config).expect("write prometheus.yml");
        Self::start_on(dir, free_port(), extra_args)
    }

    /// Starts Prometheus in `dir` scraping `daemon` over mutual TLS every second, with
    /// examples/prometheus.yml as shipped (its target and interval changed).
    pub fn scraping(dir: &Path, daemon: &Daemon) -> Prometheus {
        daemon.write_prometheus_tls(dir);
        let example = std::fs::read_to_string(workspace_root().join("examples/prometheus.yml"))
            .expect("examples/prometheus.yml");
        assert!(example.contains("'127.0.0.1:8443'") && example.contains("scrape_interval: 15s"));
        let config = example
            .replace("'127.0.0.1:8443'", &format!("'{}'", daemon.address()))
            .replace(
                "scrape_interval: 15s",
                "scrape_interval: 1s\n  scrape_timeout: 1s",
            );
        Prometheus::start(dir, &config, &[])
    }

    /// Starts Prometheus in `dir` (with its existing `prometheus.yml` and data) on `port`.
    pub fn start_on(dir: &Path, port: u16, extra_args: &[&str]) -> Prometheus {
        let program = require_program("prometheus", "prometheus");
        let child = Command::new(program)
            .current_dir(dir)
            .arg("--config.file=prometheus.yml")
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        Prometheus {
            child,
            api: format!("http://127.0.0.1:{port}"),
            port,
            dir: dir.to_owned(),
            client: reqwest::Client::new(),
        }
    }

    /// Queries through `api` with `client` instead (a Prometheus whose web server wants
    /// TLS or authentication, set with `--web.config.file`).
    pub fn with_api(mut self, api: String, client: reqwest::Client) -> Self {
        self.api = api;
        self.client = client;
        self
    }

    /// Stops it (SIGKILL) and waits.
    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The `data.result` array of an instant query, empty while Prometheus is not ready.
    pub async fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        self.query_with(&[("query", expr.to_owned())]).await
    }

    /// Like [`Prometheus::query`], evaluated at `time` (seconds since the epoch).
    pub async fn query_at(&self, expr: &str, time: f64) -> Vec<serde_json::Value> {
        self.query_with(&[("query", expr.to_owned()), ("time", format!("{time:.3}"))])
            .await
    }

    async fn query_with(&self, params: &[(&str, String)]) -> Vec<serde_json::Value> {
        let response = self
            .client
            .get(format!("{}/api/v1/query", self.api))
            .query(params)
            .send()
            .await;
        let Ok(response) = response else {
            return Vec::new();
        };
        let value: serde_json::Value = response.json().await.unwrap_or_default();
        value["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Polls `expr` every 500 ms until `done` accepts its result; panics after `limit`
    /// with the scrape targets' state, which says why.
    pub async fn wait_for(
        &self,
        expr: &str,
        limit: Duration,
        done: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + limit;
        loop {
            let result = self.query(expr).await;
            if done(&result) {
                return result;
            }
            if Instant::now() > deadline {
                let targets = match self
                    .client
                    .get(format!("{}/api/v1/targets", self.api))
                    .send()
                    .await
                {
                    Ok(r) => r.text().await.unwrap_or_default(),
                    Err(e) => e.to_string(),
                };
                panic!("`{expr}` never matched; last result {result:?}; targets: {targets}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
