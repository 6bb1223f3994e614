//! `lxmetrics trust add|list|remove` and `lxmetrics query`: through a running daemon's
//! unix socket, or on the state directory directly when no daemon runs.

use std::path::Path;

use anyhow::{anyhow, bail, Context};
use base64::Engine;

use crate::admin_client::{self, AdminResponse};
use crate::cli::{ListFormat, TrustCommand};
use crate::state_dir::StateDir;
use crate::trust::certificate;
use crate::trust::store::{CertificateType, NewCertificate, TrustStore, TrustedCertificate};

/// Runs a trust subcommand.
pub async fn run(command: &TrustCommand, state_dir: &Path) -> anyhow::Result<()> {
    let socket = StateDir(state_dir).socket();
    let daemon = admin_client::daemon_running(&socket).await;
    // Said after success (an error stays one line): which store this command used, so
    // a mistyped --state-dir is noticed, and what a user should know about the input.
    let mut notes = vec![if daemon {
        format!("through the daemon at {}", socket.display())
    } else {
        format!(
            "no daemon answers on {}; used the trust store {} directly",
            socket.display(),
            StateDir(state_dir).trust_db().display()
        )
    }];
    match command {
        TrustCommand::Add {
            file,
            kind,
            name,
            restricted,
            projects,
        } => {
            let kind: CertificateType = kind.parse().map_err(|e| anyhow!("--type: {e}"))?;
            // `--projects " a , b "` means a and b; names are then checked as LXD does.
            let projects: Vec<String> = projects.iter().map(|p| p.trim().to_owned()).collect();
            let contents = std::fs::read(file).with_context(|| format!("{}", file.display()))?;
            let parsed =
                certificate::parse(&contents).map_err(|e| anyhow!("{}: {e}", file.display()))?;
            let fingerprint = parsed.fingerprint.clone();
            if !crate::auth::currently_valid(&parsed.der) {
                notes.push(format!(
                    "warning: {} is not valid now (expired or not yet valid): it is \
                     trusted, but refused until its validity period covers the time",
                    file.display()
                ));
            }
            if daemon {
                let body = serde_json::json!({
                    "type": kind.as_str(),
                    "name": name.as_deref().unwrap_or_default(),
                    "certificate": base64::engine::general_purpose::STANDARD.encode(&parsed.der),
                    "restricted": restricted,
                    "projects": projects,
                });
                expect_ok(
                    admin_client::request(&socket, "POST", "/1.0/certificates", Some(body)).await?,
                )?;
            } else {
                let store = open_store(state_dir)?;
                store.add(NewCertificate {
                    certificate: parsed,
                    kind,
                    name: name.clone().unwrap_or_default(),
                    restricted: *restricted,
                    projects,
                })?;
            }
            println!("{fingerprint}");
        }
        TrustCommand::List { format } => {
            let list: Vec<TrustedCertificate> = if daemon {
                let response =
                    admin_client::request(&socket, "GET", "/1.0/certificates?recursion=1", None)
                        .await?;
                serde_json::from_value(expect_ok(response)?.metadata()?)?
            } else {
                open_store(state_dir)?.list()?
            };
            print_list(&list, *format)?;
        }
        TrustCommand::Remove { fingerprint } => {
            let wanted = certificate_reference(fingerprint)?;
            if daemon {
                let path = format!("/1.0/certificates/{wanted}");
                expect_ok(admin_client::request(&socket, "DELETE", &path, None).await?)?;
            } else {
                open_store(state_dir)?.remove(fingerprint)?;
            }
        }
    }
    for note in notes {
        eprintln!("lxmetrics: {note}");
    }
    Ok(())
}

/// `lxmetrics query PATH`: prints the body; fails on an error status.
pub async fn query(path: &str, state_dir: &Path) -> anyhow::Result<()> {
    let socket = StateDir(state_dir).socket();
    if !path.starts_with('/') {
        bail!("{path}: the path must start with /");
    }
    let response = admin_client::request(&socket, "GET", path, None)
        .await
        .with_context(|| format!("no daemon answers on {}", socket.display()))?;
    use std::io::Write;
    std::io::stdout().write_all(&response.body)?;
    if response.status >= 400 {
        bail!(
            "{path}: HTTP {}: {}",
            response.status,
            response.error_text()
        );
    }
    Ok(())
}

/// The trust store of `state_dir`, which must exist: the CLI never creates a state
/// directory (a mistyped `--state-dir` would get an empty store no daemon reads).
fn open_store(state_dir: &Path) -> anyhow::Result<TrustStore> {
    if !state_dir.is_dir() {
        bail!(
            "state directory {} does not exist: pass the daemon's --state-dir, or start \
             `lxmetrics daemon` once to create it",
            state_dir.display()
        );
    }
    crate::state_dir::check_private(state_dir)?;
    Ok(TrustStore::open(&StateDir(state_dir).trust_db())?)
}

fn expect_ok(response: AdminResponse) -> anyhow::Result<AdminResponse> {
    if response.status >= 400 {
        bail!("{}", response.error_text());
    }
    Ok(response)
}

/// A certificate as `trust remove` names it: its fingerprint (a unique prefix is
/// enough) or its name. It goes into a URL path as it is, so other characters are
/// refused, never dropped or escaped.
fn certificate_reference(given: &str) -> anyhow::Result<&str> {
    let fits = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if given.is_empty() || !given.chars().all(fits) {
        bail!(
            "\"{given}\" is neither a fingerprint (hex, a unique prefix is enough: see \
             `lxmetrics trust list`) nor a certificate name (letters, digits, '.', '_', '-')"
        );
    }
    Ok(given)
}

fn print_list(list: &[TrustedCertificate], format: ListFormat) -> anyhow::Result<()> {
    match format {
        ListFormat::Json => println!("{}", serde_json::to_string_pretty(list)?),
        ListFormat::Table => {
            println!(
                "{:<12}  {:<8}  {:<20}  {:<10}  PROJECTS",
                "FINGERPRINT", "TYPE", "NAME", "RESTRICTED"
            );
            for c in list {
                println!(
                    "{:<12}  {:<8}  {:<20}  {:<10}  {}",
                    &c.fingerprint[..12.min(c.fingerprint.len())],
                    c.kind.as_str(),
                    c.name,
                    if c.restricted { "yes" } else { "no" },
                    c.projects.join(",")
                );
            }
        }
    }
    Ok(())
}
