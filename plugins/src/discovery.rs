//! Instance discovery from cgroups: `[[instances.source]]` rules (presets and custom
//! patterns) matched against the cgroup tree, walking only the directories a pattern can
//! reach. An instance is running when its cgroup (or a descendant) holds a process.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use lxmetrics_core::collector::{run_blocking, HostPaths};
use lxmetrics_core::config::{InstanceSource, Preset};
use lxmetrics_core::discovery::{Discovery, DiscoveryError};
use lxmetrics_core::instance::{Instance, InstanceType};

use crate::cgroupfs::{parse, FileReader, Layout};

/// How deep below an instance cgroup to look for a process (systemd inside a container
/// puts them in `init.scope`, `system.slice/x.service`, ...).
const PID_SEARCH_DEPTH: usize = 4;

/// One piece of a pattern component.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Name,
    Project,
    /// `{_}`: matches anything, captured nowhere (libvirt's domain id).
    Any,
}

/// A compiled rule.
#[derive(Clone, Debug)]
struct Rule {
    components: Vec<Vec<Piece>>,
    kind: InstanceType,
    project: String,
    /// LXD names cgroups `lxc.payload.<project>_<name>` outside the default project.
    lxd_project_prefix: bool,
    /// Literal characters: the more, the more specific the rule.
    specificity: usize,
}

fn compile(pattern: &str, kind: InstanceType, project: &str, lxd: bool) -> Rule {
    let components: Vec<Vec<Piece>> = pattern
        .split('/')
        .filter(|c| !c.is_empty())
        .map(|component| {
            let mut pieces = Vec::new();
            let mut rest = component;
            while let Some(open) = rest.find('{') {
                if open > 0 {
                    pieces.push(Piece::Literal(rest[..open].to_owned()));
                }
                let close = rest[open..].find('}').map_or(rest.len(), |c| open + c);
                pieces.push(match &rest[open + 1..close] {
                    "name" => Piece::Name,
                    "project" => Piece::Project,
                    _ => Piece::Any,
                });
                rest = rest.get(close + 1..).unwrap_or("");
            }
            if !rest.is_empty() {
                pieces.push(Piece::Literal(rest.to_owned()));
            }
            pieces
        })
        .collect();
    let specificity = components
        .iter()
        .flatten()
        .map(|p| match p {
            Piece::Literal(l) => l.len(),
            _ => 0,
        })
        .sum();
    Rule {
        components,
        kind,
        project: project.to_owned(),
        lxd_project_prefix: lxd,
        specificity,
    }
}

/// The rules a preset stands for.
fn preset_rules(preset: Preset) -> Vec<Rule> {
    use InstanceType::{Container, VirtualMachine};
    let c = |p: &str| compile(p, Container, "default", false);
    match preset {
        Preset::Lxc => vec![compile("lxc.payload.{name}", Container, "default", true)],
        Preset::Docker => vec![c("system.slice/docker-{name}.scope"), c("docker/{name}")],
        Preset::Podman => vec![
            c("machine.slice/libpod-{name}.scope"),
            c("libpod_parent/libpod-{name}"),
        ],
        Preset::SystemdNspawn => vec![c("machine.slice/machine-{name}.scope")],
        Preset::Libvirt => vec![
            compile(
                "machine.slice/machine-qemu\\x2d{_}\\x2d{name}.scope",
                VirtualMachine,
                "default",
                false,
            ),
            compile(
                "machine/qemu-{_}-{name}.libvirt-qemu",
                VirtualMachine,
                "default",
                false,
            ),
        ],
    }
}

/// Matches one path component against pattern pieces, filling captures.
fn match_component<'a>(
    pieces: &[Piece],
    text: &'a str,
    name: &mut Option<&'a str>,
    project: &mut Option<&'a str>,
) -> bool {
    let Some((first, rest)) = pieces.split_first() else {
        return text.is_empty();
    };
    match first {
        Piece::Literal(lit) => text
            .strip_prefix(lit.as_str())
            .is_some_and(|t| match_component(rest, t, name, project)),
        capture => {
            // Try every non-empty split; components are short, patterns have few pieces.
            for end in (1..=text.len()).filter(|e| text.is_char_boundary(*e)) {
                let (value, tail) = text.split_at(end);
                let (mut n, mut p) = (*name, *project);
                match capture {
                    Piece::Name => n = Some(value),
                    Piece::Project => p = Some(value),
                    _ => {}
                }
                if match_component(rest, tail, &mut n, &mut p) {
                    *name = n;
                    *project = p;
                    return true;
                }
            }
            false
        }
    }
}

/// Undoes systemd's unit name escaping (`\x2d` is `-`).
fn systemd_unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("\\x") {
        out.push_str(&rest[..i]);
        let hex = rest
            .get(i + 2..i + 4)
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(b) if b.is_ascii() => {
                out.push(char::from(b));
                rest = &rest[i + 4..];
            }
            _ => {
                out.push_str("\\x");
                rest = &rest[i + 2..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Finds instances in the cgroup tree.
#[derive(Clone, Debug)]
pub struct CgroupDiscovery {
    rules: Vec<Rule>,
}

impl CgroupDiscovery {
    /// Discovery for the configured `[[instances.source]]` rules (validated by the config).
    pub fn new(sources: &[InstanceSource]) -> Self {
        let rules = sources
            .iter()
            .flat_map(|s| match (s.preset, &s.pattern) {
                (Some(preset), _) => preset_rules(preset),
                (None, Some(pattern)) => vec![compile(
                    pattern,
                    s.kind.unwrap_or(InstanceType::Container),
                    s.project.as_deref().unwrap_or("default"),
                    false,
                )],
                (None, None) => Vec::new(),
            })
            .collect();
        CgroupDiscovery { rules }
    }

    /// Walks the tree under `cgroup_root`'s discovery hierarchy (blocking).
    pub fn discover_blocking(&self, host: &HostPaths) -> Result<Vec<Instance>, DiscoveryError> {
        let layout =
            Layout::detect(&host.cgroup_root).map_err(|e| DiscoveryError(e.to_string()))?;
        let root = layout.discovery_root();
        let mut found: Vec<(usize, Instance)> = Vec::new();
        let mut reader = FileReader::new();
        for rule in &self.rules {
            let mut matches = Vec::new();
            walk(
                &root,
                &rule.components,
                String::new(),
                None,
                None,
                &mut matches,
            );
            for (relative, name, project) in matches {
                let Some(pid) = first_pid(&root.join(&relative), &mut reader, PID_SEARCH_DEPTH)
                else {
                    continue; // not running
                };
                let name = systemd_unescape(&name);
                let (project, name) = match (project, rule.lxd_project_prefix) {
                    (Some(p), _) => (p, name),
                    (None, true) => match name.split_once('_') {
                        Some((p, n)) if !p.is_empty() && !n.is_empty() => {
                            (p.to_owned(), n.to_owned())
                        }
                        _ => (rule.project.clone(), name),
                    },
                    (None, false) => (rule.project.clone(), name),
                };
                found.push((
                    rule.specificity,
                    Instance {
                        name,
                        project,
                        kind: rule.kind,
                        cgroup: relative,
                        pid: Some(pid),
                    },
                ));
            }
        }
        // A cgroup matched by several rules belongs to the most specific one.
        found.sort_by_key(|(specificity, _)| std::cmp::Reverse(*specificity));
        let mut cgroups = HashSet::new();
        let mut names = HashSet::new();
        let mut instances: Vec<Instance> = found
            .into_iter()
            .map(|(_, i)| i)
            .filter(|i| cgroups.insert(i.cgroup.clone()))
            .filter(|i| names.insert((i.project.clone(), i.name.clone())))
            .collect();
        instances.sort_by(|a, b| (&a.project, &a.name).cmp(&(&b.project, &b.name)));
        Ok(instances)
    }
}

#[async_trait]
impl Discovery for CgroupDiscovery {
    async fn discover(&self, host: &HostPaths) -> Result<Vec<Instance>, DiscoveryError> {
        let this = self.clone();
        let host = host.clone();
        run_blocking(move || this.discover_blocking(&host))
            .await
            .map_err(|e| DiscoveryError(e.to_string()))?
    }
}

/// Expands the pattern component by component; literal components cost a `stat`, only
/// components with placeholders list a directory.
fn walk(
    dir: &Path,
    components: &[Vec<Piece>],
    relative: String,
    name: Option<String>,
    project: Option<String>,
    out: &mut Vec<(String, String, Option<String>)>,
) {
    let Some((component, rest)) = components.split_first() else {
        if let Some(name) = name {
            out.push((relative, name, project));
        }
        return;
    };
    let join = |child: &str| {
        if relative.is_empty() {
            child.to_owned()
        } else {
            format!("{relative}/{child}")
        }
    };
    if let [Piece::Literal(literal)] = component.as_slice() {
        let next = dir.join(literal);
        if next.is_dir() {
            walk(&next, rest, join(literal), name, project, out);
        }
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let file_name = entry.file_name();
        let Some(child) = file_name.to_str() else {
            continue;
        };
        let (mut n, mut p) = (None, None);
        if match_component(component, child, &mut n, &mut p) {
            walk(
                &entry.path(),
                rest,
                join(child),
                n.map(str::to_owned).or_else(|| name.clone()),
                p.map(str::to_owned).or_else(|| project.clone()),
                out,
            );
        }
    }
}

/// The first pid in the cgroup or its descendants (breadth first, bounded depth).
fn first_pid(dir: &Path, reader: &mut FileReader, depth: usize) -> Option<u32> {
    let mut level: Vec<PathBuf> = vec![dir.to_path_buf()];
    for _ in 0..=depth {
        let mut next = Vec::new();
        for d in &level {
            if let Ok(pids) = reader.parse(&d.join("cgroup.procs"), parse::pid_list) {
                if let Some(pid) = pids.first() {
                    return Some(*pid);
                }
            }
            if let Ok(entries) = std::fs::read_dir(d) {
                next.extend(
                    entries
                        .flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path()),
                );
            }
        }
        if next.is_empty() {
            break;
        }
        level = next;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, text: &str) -> Option<(Option<String>, Option<String>)> {
        let rule = compile(pattern, InstanceType::Container, "default", false);
        let comps: Vec<&str> = text.split('/').collect();
        if comps.len() != rule.components.len() {
            return None;
        }
        let (mut name, mut project) = (None, None);
        for (pieces, comp) in rule.components.iter().zip(comps) {
            if !match_component(pieces, comp, &mut name, &mut project) {
                return None;
            }
        }
        Some((name.map(String::from), project.map(String::from)))
    }

    #[test]
    fn patterns_capture_name_and_project() {
        assert_eq!(
            matches("lxc.payload.{name}", "lxc.payload.web"),
            Some((Some("web".into()), None))
        );
        assert_eq!(matches("lxc.payload.{name}", "lxc.monitor.web"), None);
        assert_eq!(
            matches("vms/{project}/{name}", "vms/prod/db"),
            Some((Some("db".into()), Some("prod".into())))
        );
        assert_eq!(
            matches(
                "machine.slice/machine-qemu\\x2d{_}\\x2d{name}.scope",
                "machine.slice/machine-qemu\\x2d3\\x2dwin\\x2d11.scope"
            ),
            Some((Some("win\\x2d11".into()), None))
        );
        assert_eq!(matches("docker/{name}", "docker/"), None);
    }

    #[test]
    fn systemd_escapes_are_undone() {
        assert_eq!(systemd_unescape("win\\x2d11"), "win-11");
        assert_eq!(systemd_unescape("plain"), "plain");
        assert_eq!(systemd_unescape("bad\\xzz"), "bad\\xzz");
        assert_eq!(systemd_unescape("end\\x"), "end\\x");
    }

    #[test]
    fn more_literal_rules_are_more_specific() {
        let nspawn = &preset_rules(Preset::SystemdNspawn)[0];
        let libvirt = &preset_rules(Preset::Libvirt)[0];
        assert!(libvirt.specificity > nspawn.specificity);
    }
}
