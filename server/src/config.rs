//! The server's configuration sections, declared here by their owner and loaded by
//! core's loader with core's own (`lxmetrics_core::config`): `[core]` (listeners and
//! authentication, LXD's `core.*` keys), `[cluster]` and `[remote_write]`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use lxmetrics_core::config::{Config, ConfigSections, LoadedConfig};

pub use crate::fleet_config::{
    BasicAuth, ClusterConfig, ClusterMember, RemoteWriteConfig, RemoteWriteTls,
};

/// The daemon's whole configuration: core's sections and the server's.
pub type DaemonConfig = Config<ServerSections>;

/// [`DaemonConfig`] with where each value came from.
pub type LoadedDaemonConfig = LoadedConfig<ServerSections>;

/// The top-level sections the server owns.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerSections {
    /// `[core]`: listeners and authentication.
    pub core: ListenersConfig,
    /// `[cluster]`: the daemons listed for Prometheus service discovery.
    pub cluster: ClusterConfig,
    /// `[remote_write]`: pushing to a remote-write receiver.
    pub remote_write: RemoteWriteConfig,
}

impl ConfigSections for ServerSections {
    const UNSET_KEYS: &'static [&'static str] = &["core.metrics_address"];

    fn validate(&self) -> Result<(), (String, String)> {
        self.cluster
            .validate()
            .map_err(|m| ("cluster.members".to_owned(), m))?;
        self.remote_write
            .validate()
            .map_err(|(key, m)| (key.to_owned(), m))
    }
}

/// `[core]`: listeners and authentication.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenersConfig {
    /// Full API listener (TLS). `:8443` means all addresses.
    pub https_address: ListenAddress,
    /// Extra listener serving only `/1.0/metrics` and `/1.0`; a bare host means port
    /// 9100, as LXD (`HTTPSMetricsDefaultPort`).
    #[serde(deserialize_with = "metrics_address")]
    pub metrics_address: Option<ListenAddress>,
    /// `false`: `/1.0/metrics` needs no client certificate.
    pub metrics_authentication: bool,
    /// PKI mode: certificates signed by `server.ca` are trusted as `client`.
    pub trust_ca_certificates: bool,
}

impl Default for ListenersConfig {
    fn default() -> Self {
        ListenersConfig {
            https_address: ListenAddress {
                ip: Some(IpAddr::from([127, 0, 0, 1])),
                port: HTTPS_DEFAULT_PORT,
            },
            metrics_address: None,
            metrics_authentication: true,
            trust_ca_certificates: false,
        }
    }
}

/// The port of `core.https_address` given as a bare host (LXD's `HTTPSDefaultPort`).
const HTTPS_DEFAULT_PORT: u16 = 8443;
/// The port of `core.metrics_address` given as a bare host (LXD's `HTTPSMetricsDefaultPort`).
const METRICS_DEFAULT_PORT: u16 = 9100;

fn metrics_address<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<ListenAddress>, D::Error> {
    let text = Option::<String>::deserialize(d)?;
    text.map(|t| ListenAddress::parse(&t, METRICS_DEFAULT_PORT))
        .transpose()
        .map_err(serde::de::Error::custom)
}

/// A listen address: `:PORT` (all addresses), `IP:PORT`, `[IPv6]:PORT`, or a bare IP
/// (port 8443 for `core.https_address`, 9100 for `core.metrics_address`, as LXD).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListenAddress {
    /// `None` means every address (IPv6 and IPv4).
    pub ip: Option<IpAddr>,
    /// TCP port; 0 lets the kernel pick (tests).
    pub port: u16,
}

impl ListenAddress {
    /// The socket address to bind; "all addresses" is `[::]`, dual-stack.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip.unwrap_or(IpAddr::from([0u16; 8])), self.port)
    }
}

impl FromStr for ListenAddress {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ListenAddress::parse(s, HTTPS_DEFAULT_PORT)
    }
}

impl ListenAddress {
    /// Parses `s`; a bare IP gets `default_port`.
    fn parse(s: &str, default_port: u16) -> Result<Self, String> {
        let s = s.trim();
        let bad = || {
            format!(
                "\"{s}\" is not an address like \":8443\", \"127.0.0.1:8443\" or \"[::1]:8443\""
            )
        };
        if let Some(port) = s.strip_prefix(':') {
            let port = port.parse().map_err(|_| bad())?;
            return Ok(ListenAddress { ip: None, port });
        }
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(ListenAddress {
                ip: Some(addr.ip()),
                port: addr.port(),
            });
        }
        let bare = s.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(ListenAddress {
                ip: Some(ip),
                port: default_port,
            });
        }
        Err(bad())
    }
}

impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip {
            None => write!(f, ":{}", self.port),
            Some(ip) => write!(f, "{}", SocketAddr::new(ip, self.port)),
        }
    }
}

impl Serialize for ListenAddress {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ListenAddress {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail fixes the closure's error type.
mod tests {
    use super::*;
    use figment::value::Value;
    use figment::Jail;
    use lxmetrics_core::config::{known_keys, load, unused_env_vars, ConfigError, ConfigFile};

    fn load_in(jail: &Jail, file: &str) -> Result<DaemonConfig, ConfigError> {
        let path = jail.directory().join("config.toml");
        std::fs::write(&path, file).unwrap();
        load::<ServerSections>(&ConfigFile::Optional(path), &[])
    }

    #[test]
    fn defaults_match_the_design() {
        let c = ListenersConfig::default();
        assert_eq!(c.https_address.to_string(), "127.0.0.1:8443");
        assert_eq!(c.metrics_address, None);
        assert!(c.metrics_authentication);
        assert!(!c.trust_ca_certificates);
    }

    #[test]
    fn file_then_env_then_flags() {
        Jail::expect_with(|jail| {
            jail.set_env("LXMETRICS_CORE__METRICS_ADDRESS", "[::1]:9100");
            let file = "[core]\nhttps_address = \":8443\"\nmetrics_address = \":9000\"\n";
            std::fs::write(jail.directory().join("c.toml"), file).unwrap();
            let c = load::<ServerSections>(
                &ConfigFile::Required(jail.directory().join("c.toml")),
                &[("core.https_address", Value::from("127.0.0.1:0"))],
            )
            .unwrap();
            let core = &c.sections.core;
            assert_eq!(core.metrics_address.unwrap().to_string(), "[::1]:9100");
            assert_eq!(core.https_address.to_string(), "127.0.0.1:0");
            Ok(())
        });
    }

    #[test]
    fn bad_values_name_the_key_and_origin() {
        Jail::expect_with(|jail| {
            let e = load_in(jail, "[core]\nhttps_address = \"localhost\"\n").unwrap_err();
            assert_eq!(e.key, "core.https_address");
            assert!(e.message.contains("not an address"), "{e}");
            assert!(e.origin.ends_with("config.toml"), "{e}");

            let e = load_in(jail, "[core]\nmetrics_authentication = \"maybe\"\n").unwrap_err();
            assert_eq!(e.key, "core.metrics_authentication");

            let e = load_in(jail, "[core]\nhttps_adress = \":1\"\n").unwrap_err();
            assert_eq!(e.key, "core.https_adress");
            assert!(e.message.contains("unknown key"), "{e}");

            let e = load_in(jail, "[remote_write]\nurl = \"ftp://x\"\n").unwrap_err();
            assert_eq!(e.key, "remote_write.url");
            assert!(e.origin.ends_with("config.toml"), "{e}");

            let e = load_in(
                jail,
                "[[cluster.members]]\nname = \"a\"\naddress = \"nowhere\"\n",
            )
            .unwrap_err();
            assert_eq!(e.key, "cluster.members");
            Ok(())
        });
    }

    #[test]
    fn a_bare_metrics_host_listens_on_9100_as_lxd() {
        Jail::expect_with(|jail| {
            let file = "[core]\nmetrics_address = \"127.0.0.1\"\nhttps_address = \"127.0.0.1\"\n";
            std::fs::write(jail.directory().join("c.toml"), file).unwrap();
            let c =
                load::<ServerSections>(&ConfigFile::Required(jail.directory().join("c.toml")), &[])
                    .unwrap();
            assert_eq!(
                c.sections.core.metrics_address.unwrap().to_string(),
                "127.0.0.1:9100"
            );
            assert_eq!(c.sections.core.https_address.to_string(), "127.0.0.1:8443");
            Ok(())
        });
    }

    #[test]
    fn listen_addresses() {
        let ok = [
            (":8443", None, 8443),
            ("127.0.0.1:9000", Some("127.0.0.1"), 9000),
            ("[::1]:8443", Some("::1"), 8443),
            ("10.0.0.1", Some("10.0.0.1"), 8443),
            ("[::1]", Some("::1"), 8443),
        ];
        for (text, ip, port) in ok {
            let a: ListenAddress = text.parse().unwrap();
            assert_eq!(a.ip, ip.map(|i| i.parse().unwrap()), "{text}");
            assert_eq!(a.port, port, "{text}");
        }
        let metrics = ListenAddress::parse("127.0.0.1", METRICS_DEFAULT_PORT).unwrap();
        assert_eq!(metrics.to_string(), "127.0.0.1:9100");
        for bad in ["", ":", ":99999", "localhost:80", "1.2.3.4:x"] {
            assert!(bad.parse::<ListenAddress>().is_err(), "{bad}");
        }
        assert_eq!(
            ":8443"
                .parse::<ListenAddress>()
                .unwrap()
                .socket_addr()
                .to_string(),
            "[::]:8443"
        );
    }

    #[test]
    fn an_environment_variable_that_sets_nothing_is_named_with_the_closest() {
        let unused = unused_env_vars::<ServerSections>(
            [
                "LXMETRICS_CORE_HTTPS_ADDRESS",
                "LXMETRICS_CORE__HTTPS_ADDRESS",
                "LXMETRICS_STATE_DIR",
                "LXMETRICS_COLLECTORS__TEXTFILE__DIRECTORY",
                "LXMETRICS_REMOTE_WRITE__EXTERNAL_LABELS__DC",
                "LXMETRICS_WHATEVER",
                "PATH",
            ],
            &[
                "LXMETRICS_STATE_DIR",
                "LXMETRICS_CONFIG",
                "LXMETRICS_LOG_LEVEL",
            ],
        );
        assert_eq!(
            unused,
            [
                (
                    "LXMETRICS_CORE_HTTPS_ADDRESS".to_owned(),
                    Some("LXMETRICS_CORE__HTTPS_ADDRESS".to_owned())
                ),
                ("LXMETRICS_WHATEVER".to_owned(), None),
            ]
        );
    }

    #[test]
    fn every_key_is_documented() {
        let doc = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/configuration.md"
        ))
        .expect("docs/configuration.md exists");
        let keys = known_keys::<ServerSections>();
        assert!(keys.len() >= 13, "{keys:?}");
        assert!(keys.contains(&"instances.source".to_string()), "{keys:?}");
        for key in keys {
            assert!(
                doc.contains(&format!("`{key}`")),
                "docs/configuration.md does not document `{key}`"
            );
        }
    }

    #[test]
    fn the_example_file_loads_and_its_uncommented_form_too() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/config.toml");
        Jail::expect_with(|jail| {
            let c = load::<ServerSections>(&ConfigFile::Required(path.into()), &[]).unwrap();
            assert_eq!(c, DaemonConfig::default());
            // Uncommenting every setting must also load (the example stays valid).
            let text = std::fs::read_to_string(path).unwrap();
            let uncommented: String = text
                .lines()
                .map(|l| {
                    l.strip_prefix('#')
                        .filter(|r| !r.starts_with(' '))
                        .unwrap_or(l)
                })
                .collect::<Vec<_>>()
                .join("\n");
            std::fs::write(jail.directory().join("all.toml"), &uncommented).unwrap();
            let c = load::<ServerSections>(
                &ConfigFile::Required(jail.directory().join("all.toml")),
                &[],
            )
            .unwrap();
            assert_eq!(c.instances.source.len(), 6);
            Ok(())
        });
    }
}
