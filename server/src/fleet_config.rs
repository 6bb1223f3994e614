//! Configuration of a host's place in a larger fleet: the `[cluster]` members listed for
//! Prometheus service discovery, and `[remote_write]`, pushing to a Prometheus-compatible
//! receiver for hosts Prometheus cannot reach (docs/scaling.md).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use lxmetrics_plugin::is_valid_label_name;

/// `[cluster]`: the daemons `GET /1.0/metrics/targets` lists.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Every member, this host included, as Prometheus should scrape them.
    pub members: Vec<ClusterMember>,
}

/// One daemon of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterMember {
    /// Its name, given to Prometheus as `__meta_lxmetrics_member`.
    pub name: String,
    /// `host:port` of its metrics listener.
    pub address: String,
}

impl ClusterConfig {
    /// Checks names (unique, non-empty) and addresses (`host:port`).
    pub fn validate(&self) -> Result<(), String> {
        let mut names = std::collections::HashSet::new();
        for (i, member) in self.members.iter().enumerate() {
            let which = format!("member {} ({:?})", i + 1, member.name);
            if member.name.is_empty() || !names.insert(member.name.as_str()) {
                return Err(format!("{which}: the name is empty or used twice"));
            }
            let port = member
                .address
                .rsplit_once(':')
                .filter(|(host, _)| !host.is_empty())
                .and_then(|(_, port)| port.parse::<u16>().ok());
            if port.is_none() || member.address.contains(['/', ' ']) {
                return Err(format!(
                    "{which}: address \"{}\" is not host:port",
                    member.address
                ));
            }
        }
        Ok(())
    }
}

/// `[remote_write]`: push each fresh snapshot with the remote-write 1.0 protocol.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteWriteConfig {
    /// Receiver URL (`https://.../api/v1/push`); unset means no pushing.
    pub url: Option<String>,
    /// How often a snapshot is taken and pushed.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// One request's time limit.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Compressed batches waiting for the receiver are kept up to this many bytes; the
    /// oldest are dropped beyond it, so a receiver that is down costs bounded memory.
    pub max_queue_bytes: u64,
    /// Labels added to every pushed series (`job` and `instance` are added when absent:
    /// `lxmetrics` and the host name).
    pub external_labels: BTreeMap<String, String>,
    /// TLS towards the receiver.
    pub tls: RemoteWriteTls,
    /// HTTP basic authentication.
    pub basic_auth: Option<BasicAuth>,
}

impl Default for RemoteWriteConfig {
    fn default() -> Self {
        RemoteWriteConfig {
            url: None,
            interval: Duration::from_secs(15),
            timeout: Duration::from_secs(10),
            max_queue_bytes: 16 * 1024 * 1024,
            external_labels: BTreeMap::new(),
            tls: RemoteWriteTls::default(),
            basic_auth: None,
        }
    }
}

/// `[remote_write.tls]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteWriteTls {
    /// CA certificates (PEM) to verify the receiver with, instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM), for receivers that want mutual TLS.
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    pub key_file: Option<PathBuf>,
}

/// `[remote_write.basic_auth]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// User name.
    pub username: String,
    /// File holding the password (its first line); preferred over `password`.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// The password itself.
    #[serde(default)]
    pub password: Option<String>,
}

impl RemoteWriteConfig {
    /// Checks the URL, durations, labels and TLS files; returns the key and message of
    /// the first problem.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if let Some(url) = &self.url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err((
                    "remote_write.url",
                    format!("\"{url}\" is not an http(s) URL"),
                ));
            }
        }
        if self.interval.is_zero() {
            return Err(("remote_write.interval", "must be greater than zero".into()));
        }
        if self.timeout.is_zero() {
            return Err(("remote_write.timeout", "must be greater than zero".into()));
        }
        if self.max_queue_bytes == 0 {
            return Err((
                "remote_write.max_queue_bytes",
                "must be greater than zero".into(),
            ));
        }
        for name in self.external_labels.keys() {
            if !is_valid_label_name(name) || matches!(name.as_str(), "name" | "project" | "type") {
                return Err((
                    "remote_write.external_labels",
                    format!("\"{name}\" is not a usable label name"),
                ));
            }
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return Err((
                "remote_write.tls",
                "cert_file and key_file go together".into(),
            ));
        }
        if let Some(auth) = &self.basic_auth {
            if auth.password.is_some() == auth.password_file.is_some() {
                return Err((
                    "remote_write.basic_auth",
                    "give exactly one of password and password_file".into(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, address: &str) -> ClusterMember {
        ClusterMember {
            name: name.into(),
            address: address.into(),
        }
    }

    #[test]
    fn cluster_members_are_checked() {
        let ok = ClusterConfig {
            members: vec![
                member("a", "10.0.0.1:8443"),
                member("b", "node-b.example:9100"),
                member("c", "[::1]:8443"),
            ],
        };
        assert_eq!(ok.validate(), Ok(()));
        for bad in [
            vec![member("", "h:1")],
            vec![member("a", "h:1"), member("a", "h:2")],
            vec![member("a", "h")],
            vec![member("a", ":1")],
            vec![member("a", "https://h:1")],
        ] {
            assert!(
                ClusterConfig {
                    members: bad.clone()
                }
                .validate()
                .is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn remote_write_is_checked() {
        assert_eq!(RemoteWriteConfig::default().validate(), Ok(()));
        let with = |f: &dyn Fn(&mut RemoteWriteConfig)| {
            let mut c = RemoteWriteConfig::default();
            f(&mut c);
            c.validate().map_err(|(key, _)| key)
        };
        assert_eq!(
            with(&|c| c.url = Some("ftp://x".into())),
            Err("remote_write.url")
        );
        assert_eq!(
            with(&|c| c.interval = Duration::ZERO),
            Err("remote_write.interval")
        );
        assert_eq!(
            with(&|c| {
                c.external_labels.insert("project".into(), "x".into());
            }),
            Err("remote_write.external_labels")
        );
        assert_eq!(
            with(&|c| c.tls.cert_file = Some("c".into())),
            Err("remote_write.tls")
        );
        assert_eq!(
            with(&|c| {
                c.basic_auth = Some(BasicAuth {
                    username: "u".into(),
                    password_file: None,
                    password: None,
                })
            }),
            Err("remote_write.basic_auth")
        );
    }
}
