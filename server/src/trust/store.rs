//! The trust store: which client certificates are trusted, as what, for which projects.
//!
//! Persisted in SQLite (`<state-dir>/trust.db`) with WAL journaling and
//! `synchronous=FULL`: every change is one transaction, so a `kill -9` at any moment
//! leaves either the old or the new state, and an acknowledged change survives a crash.
//! The daemon answers lookups from an in-memory snapshot that is swapped atomically after
//! each committed change, so authorization never touches the database.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::certificate::ParsedCertificate;

/// What a trusted certificate may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertificateType {
    /// The full API.
    Client,
    /// `/1.0/metrics` and `/1.0` only.
    Metrics,
}

impl CertificateType {
    /// The word used in the API and the database.
    pub const fn as_str(self) -> &'static str {
        match self {
            CertificateType::Client => "client",
            CertificateType::Metrics => "metrics",
        }
    }
}

impl std::str::FromStr for CertificateType {
    type Err = TrustStoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "client" => Ok(CertificateType::Client),
            "metrics" => Ok(CertificateType::Metrics),
            other => Err(TrustStoreError::UnknownType(other.to_owned())),
        }
    }
}

/// One trusted certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedCertificate {
    /// Lower-case hex SHA-256 of the DER certificate.
    pub fingerprint: String,
    /// Client or metrics.
    #[serde(rename = "type")]
    pub kind: CertificateType,
    /// A name for humans.
    pub name: String,
    /// Whether access is limited to `projects`.
    pub restricted: bool,
    /// The projects a restricted certificate may see.
    pub projects: Vec<String>,
    /// The certificate, PEM.
    pub certificate: String,
    /// When it was added, seconds since the epoch.
    pub added_at: u64,
}

/// What adding a certificate needs.
#[derive(Clone, Debug)]
pub struct NewCertificate {
    /// The parsed certificate.
    pub certificate: ParsedCertificate,
    /// Client or metrics.
    pub kind: CertificateType,
    /// A name (defaults to the fingerprint's first 12 characters when empty).
    pub name: String,
    /// Limit to `projects`.
    pub restricted: bool,
    /// Projects for a restricted certificate.
    pub projects: Vec<String>,
}

/// A trust store problem, in one sentence.
#[derive(Debug, thiserror::Error)]
pub enum TrustStoreError {
    /// The database could not be opened, read or written.
    #[error("trust store {path}: {source}")]
    Database {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// Adding a certificate that is already trusted.
    #[error("certificate {0} is already trusted")]
    AlreadyTrusted(String),
    /// Removing or showing a certificate that is not trusted.
    #[error("no trusted certificate has the fingerprint (or prefix) or name \"{0}\"")]
    NotFound(String),
    /// A fingerprint prefix or name that fits several certificates.
    #[error("\"{0}\" fits several trusted certificates: give more of the fingerprint")]
    Ambiguous(String),
    /// A type other than client or metrics.
    #[error("unknown certificate type \"{0}\" (use client or metrics)")]
    UnknownType(String),
    /// The store call did not complete (its task panicked or was cancelled).
    #[error("trust store operation interrupted: {0}")]
    Interrupted(String),
    /// `restricted` without projects, or projects without `restricted`.
    #[error("a restricted certificate needs at least one project, and projects need --restricted")]
    BadRestriction,
    /// A project name LXD would refuse.
    #[error("project name {name:?}: {reason}")]
    BadProjectName {
        /// The name as given.
        name: String,
        /// LXD's rule it breaks.
        reason: &'static str,
    },
}

/// Checks a project name as LXD checks it (`projectValidateName`): not empty, no `/`,
/// space, `_` or quote, not `*`, `.` or `..`. Names are stored as a list, so a comma is
/// part of a name, never a separator.
pub fn validate_project_name(name: &str) -> Result<(), TrustStoreError> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.contains('/') {
        Some("project names may not contain slashes")
    } else if name.chars().any(char::is_whitespace) {
        Some("project names may not contain spaces")
    } else if name.contains('_') {
        Some("project names may not contain underscores")
    } else if name.contains(['\'', '"']) {
        Some("project names may not contain quotes")
    } else if name == "*" {
        Some("reserved project name")
    } else if name == "." || name == ".." {
        Some("invalid project name")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(TrustStoreError::BadProjectName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// In-memory view used for authorization.
#[derive(Debug, Default)]
pub struct TrustSnapshot {
    by_fingerprint: HashMap<String, Arc<TrustedCertificate>>,
}

impl TrustSnapshot {
    /// The certificate with this fingerprint, if trusted.
    pub fn get(&self, fingerprint: &str) -> Option<&Arc<TrustedCertificate>> {
        self.by_fingerprint.get(fingerprint)
    }
}

/// The persistent trust store and its in-memory snapshot.
pub struct TrustStore {
    path: PathBuf,
    connection: Mutex<Connection>,
    snapshot: ArcSwap<TrustSnapshot>,
    /// SQLite's `data_version` when the snapshot was read: it changes when another
    /// connection (the CLI with no daemon reachable) commits.
    data_version: std::sync::atomic::AtomicI64,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS certificates (
    fingerprint TEXT PRIMARY KEY NOT NULL,
    type        TEXT NOT NULL CHECK (type IN ('client', 'metrics')),
    name        TEXT NOT NULL,
    restricted  INTEGER NOT NULL,
    projects    TEXT NOT NULL,
    certificate TEXT NOT NULL,
    added_at    INTEGER NOT NULL
);";

impl TrustStore {
    /// Opens (creating if needed) the store at `path` and loads the snapshot.
    pub fn open(path: &Path) -> Result<TrustStore, TrustStoreError> {
        let db = |source| TrustStoreError::Database {
            path: path.to_owned(),
            source,
        };
        let connection = Connection::open(path).map_err(db)?;
        connection
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;",
            )
            .map_err(db)?;
        connection.execute_batch(SCHEMA).map_err(db)?;
        let store = TrustStore {
            path: path.to_owned(),
            connection: Mutex::new(connection),
            snapshot: ArcSwap::from_pointee(TrustSnapshot::default()),
            data_version: std::sync::atomic::AtomicI64::new(0),
        };
        store.reload()?;
        Ok(store)
    }

    fn db_error(&self, source: rusqlite::Error) -> TrustStoreError {
        TrustStoreError::Database {
            path: self.path.clone(),
            source,
        }
    }

    /// The current snapshot (lock-free).
    pub fn snapshot(&self) -> Arc<TrustSnapshot> {
        self.snapshot.load_full()
    }

    /// Re-reads the database if another process committed since the last read, so a
    /// certificate removed by `lxmetrics trust remove` on the database itself stops
    /// being trusted within a second. Returns whether it reloaded.
    pub fn reload_if_changed(&self) -> Result<bool, TrustStoreError> {
        let version = self.current_data_version()?;
        if version == self.data_version.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(false);
        }
        self.reload().map(|()| true)
    }

    fn current_data_version(&self) -> Result<i64, TrustStoreError> {
        let connection = self.connection.lock().unwrap_or_else(|p| p.into_inner());
        connection
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(|e| self.db_error(e))
    }

    /// Watches for changes made by other processes until `stop` turns true.
    pub async fn watch(self: Arc<Self>, stop: tokio::sync::watch::Receiver<bool>) {
        crate::change_watch::poll(
            stop,
            "trust store changed by another process: reloaded",
            move || {
                self.reload_if_changed()
                    .map_err(|e| format!("cannot check the trust store for changes: {e}"))
            },
        )
        .await
    }

    /// Re-reads the database into a new snapshot (after another process changed it).
    pub fn reload(&self) -> Result<(), TrustStoreError> {
        let version = self.current_data_version()?;
        let all = self.read_all()?;
        let by_fingerprint = all
            .into_iter()
            .map(|c| (c.fingerprint.clone(), Arc::new(c)))
            .collect();
        self.snapshot
            .store(Arc::new(TrustSnapshot { by_fingerprint }));
        self.data_version
            .store(version, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Every trusted certificate, ordered by name then fingerprint.
    pub fn list(&self) -> Result<Vec<TrustedCertificate>, TrustStoreError> {
        self.read_all()
    }

    fn read_all(&self) -> Result<Vec<TrustedCertificate>, TrustStoreError> {
        let connection = self.connection.lock().unwrap_or_else(|p| p.into_inner());
        let mut statement = connection
            .prepare(
                "SELECT fingerprint, type, name, restricted, projects, certificate, added_at \
                 FROM certificates ORDER BY name, fingerprint",
            )
            .map_err(|e| self.db_error(e))?;
        let rows = statement
            .query_map([], row_to_certificate)
            .map_err(|e| self.db_error(e))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.db_error(e))
    }

    /// Adds a certificate in one transaction, then publishes the new snapshot.
    pub fn add(&self, new: NewCertificate) -> Result<TrustedCertificate, TrustStoreError> {
        if new.restricted == new.projects.is_empty() {
            return Err(TrustStoreError::BadRestriction);
        }
        for project in &new.projects {
            validate_project_name(project)?;
        }
        let fingerprint = new.certificate.fingerprint.clone();
        let name = match new.name.trim() {
            "" => fingerprint[..12].to_owned(),
            name => name.to_owned(),
        };
        let added_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let record = TrustedCertificate {
            fingerprint: fingerprint.clone(),
            kind: new.kind,
            name,
            restricted: new.restricted,
            projects: new.projects,
            certificate: new.certificate.to_pem(),
            added_at,
        };
        {
            let mut connection = self.connection.lock().unwrap_or_else(|p| p.into_inner());
            let tx = connection.transaction().map_err(|e| self.db_error(e))?;
            let exists: Option<i64> = tx
                .query_row(
                    "SELECT 1 FROM certificates WHERE fingerprint = ?1",
                    params![fingerprint],
                    |r| r.get(0),
                )
                .optional()
                .map_err(|e| self.db_error(e))?;
            if exists.is_some() {
                return Err(TrustStoreError::AlreadyTrusted(fingerprint));
            }
            tx.execute(
                "INSERT INTO certificates (fingerprint, type, name, restricted, projects, certificate, added_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    record.fingerprint,
                    record.kind.as_str(),
                    record.name,
                    record.restricted,
                    serde_json::to_string(&record.projects).unwrap_or_else(|_| "[]".into()),
                    record.certificate,
                    record.added_at as i64,
                ],
            )
            .map_err(|e| self.db_error(e))?;
            tx.commit().map_err(|e| self.db_error(e))?;
        }
        self.reload()?;
        Ok(record)
    }

    /// Removes a certificate, given by fingerprint (a unique prefix is enough) or name, as
    /// in LXD.
    pub fn remove(&self, wanted: &str) -> Result<TrustedCertificate, TrustStoreError> {
        let found = self.find(wanted)?;
        {
            let connection = self.connection.lock().unwrap_or_else(|p| p.into_inner());
            connection
                .execute(
                    "DELETE FROM certificates WHERE fingerprint = ?1",
                    params![found.fingerprint],
                )
                .map_err(|e| self.db_error(e))?;
        }
        self.reload()?;
        Ok(found)
    }

    /// The certificate whose fingerprint is or starts with `wanted`, or whose name is
    /// `wanted` (as LXD takes either).
    pub fn find(&self, wanted: &str) -> Result<TrustedCertificate, TrustStoreError> {
        let prefix = wanted.to_ascii_lowercase();
        let mut matches: Vec<TrustedCertificate> = self
            .read_all()?
            .into_iter()
            .filter(|c| {
                !wanted.is_empty() && (c.fingerprint.starts_with(&prefix) || c.name == wanted)
            })
            .collect();
        match matches.len() {
            1 => Ok(matches.remove(0)),
            0 => Err(TrustStoreError::NotFound(wanted.to_owned())),
            _ => Err(TrustStoreError::Ambiguous(wanted.to_owned())),
        }
    }
}

fn row_to_certificate(row: &rusqlite::Row<'_>) -> rusqlite::Result<TrustedCertificate> {
    let kind: String = row.get(1)?;
    let projects: String = row.get(4)?;
    let added_at: i64 = row.get(6)?;
    Ok(TrustedCertificate {
        fingerprint: row.get(0)?,
        kind: kind.parse().map_err(|e: TrustStoreError| {
            rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, Box::new(e))
        })?,
        name: row.get(2)?,
        restricted: row.get(3)?,
        projects: stored_projects(&projects),
        certificate: row.get(5)?,
        added_at: u64::try_from(added_at).unwrap_or(0),
    })
}

/// The `projects` column: a JSON list; rows written before lists were stored hold the
/// names comma-joined (names with a comma could not be stored then).
fn stored_projects(column: &str) -> Vec<String> {
    if column.starts_with('[') {
        return serde_json::from_str(column).unwrap_or_default();
    }
    column
        .split(',')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::certificate;

    fn cert() -> ParsedCertificate {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let c = rcgen::CertificateParams::new(vec!["metrics.local".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        certificate::parse(c.pem().as_bytes()).unwrap()
    }

    fn new(kind: CertificateType, restricted: bool, projects: &[&str]) -> NewCertificate {
        NewCertificate {
            certificate: cert(),
            kind,
            name: String::new(),
            restricted,
            projects: projects.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn add_lookup_remove_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trust.db");
        let store = TrustStore::open(&path).unwrap();
        let metrics = store
            .add(new(CertificateType::Metrics, true, &["a", "b"]))
            .unwrap();
        let client = store.add(new(CertificateType::Client, false, &[])).unwrap();
        let snap = store.snapshot();
        assert_eq!(snap.get(&metrics.fingerprint).unwrap().projects, ["a", "b"]);
        assert_eq!(
            snap.get(&client.fingerprint).unwrap().kind,
            CertificateType::Client
        );
        drop(store);

        // Reopened: everything acknowledged is there.
        let store = TrustStore::open(&path).unwrap();
        assert_eq!(store.list().unwrap().len(), 2);
        let removed = store.remove(&metrics.fingerprint[..10]).unwrap();
        assert_eq!(removed.fingerprint, metrics.fingerprint);
        assert!(store.snapshot().get(&metrics.fingerprint).is_none());
        assert!(matches!(
            store.remove(&metrics.fingerprint),
            Err(TrustStoreError::NotFound(_))
        ));
    }

    #[test]
    fn duplicates_and_bad_restrictions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = TrustStore::open(&dir.path().join("trust.db")).unwrap();
        let c = new(CertificateType::Client, false, &[]);
        store.add(c.clone()).unwrap();
        assert!(matches!(
            store.add(c),
            Err(TrustStoreError::AlreadyTrusted(_))
        ));
        assert!(matches!(
            store.add(new(CertificateType::Metrics, true, &[])),
            Err(TrustStoreError::BadRestriction)
        ));
        assert!(matches!(
            store.add(new(CertificateType::Metrics, false, &["a"])),
            Err(TrustStoreError::BadRestriction)
        ));
        assert!(matches!(
            "admin".parse::<CertificateType>(),
            Err(TrustStoreError::UnknownType(_))
        ));
    }

    #[test]
    fn projects_are_a_list_and_named_as_lxd_names_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = TrustStore::open(&dir.path().join("trust.db")).unwrap();
        // A comma is part of one name, never a separator: "x,y" does not give x and y.
        let odd = store
            .add(new(CertificateType::Metrics, true, &["x,y"]))
            .unwrap();
        assert_eq!(
            store.snapshot().get(&odd.fingerprint).unwrap().projects,
            ["x,y"]
        );
        for bad in ["", " a ", "a_b", "a/b", "*", "..", "it's"] {
            assert!(
                matches!(
                    store.add(new(CertificateType::Metrics, true, &[bad])),
                    Err(TrustStoreError::BadProjectName { .. })
                ),
                "{bad:?}"
            );
        }
        // Rows from before lists were stored still read.
        assert_eq!(stored_projects("a,b"), ["a", "b"]);
        assert_eq!(stored_projects("[\"a,b\"]"), ["a,b"]);
    }

    #[test]
    fn a_second_handle_sees_changes_after_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trust.db");
        let daemon = TrustStore::open(&path).unwrap();
        let cli = TrustStore::open(&path).unwrap();
        assert!(!daemon.reload_if_changed().unwrap());
        let added = cli.add(new(CertificateType::Metrics, false, &[])).unwrap();
        assert!(daemon.snapshot().get(&added.fingerprint).is_none());
        assert!(daemon.reload_if_changed().unwrap());
        assert!(daemon.snapshot().get(&added.fingerprint).is_some());
        assert!(!daemon.reload_if_changed().unwrap(), "nothing new");
        cli.remove(&added.fingerprint).unwrap();
        assert!(daemon.reload_if_changed().unwrap());
        assert!(daemon.snapshot().get(&added.fingerprint).is_none());
    }
}
