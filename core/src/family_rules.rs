//! The rules every served family obeys, whoever produced it: checked when a snapshot is
//! assembled (built-in and plugin collectors) and by the textfile/exec relay before it
//! merges a source (so one bad source is refused alone, not its whole collector).

use lxmetrics_plugin::is_valid_label_name;

/// The labels the daemon sets from the instance; no collector or relayed source may.
pub const INSTANCE_LABELS: [&str; 3] = ["name", "project", "type"];

/// The daemon's own family names without the prefix (its `metrics_*` families are
/// reserved as a namespace); `daemon_metrics` tests that each of its families is here.
const DAEMON_FAMILIES: [&str; 4] = [
    "uptime_seconds",
    "instances",
    "api_requests_completed_total",
    "api_requests_ongoing",
];

/// Whether a family served as `rendered` (its full name under `prefix`, see
/// `MetricDesc::rendered_name`) would collide with a daemon metric: the `process_*`
/// names, the daemon's own names, and everything under `<prefix>_metrics_`.
pub fn is_reserved(rendered: &str, prefix: &str) -> bool {
    if rendered.starts_with("process_") {
        return true;
    }
    let unprefixed = match prefix {
        "" => Some(rendered),
        p => rendered.strip_prefix(p).and_then(|r| r.strip_prefix('_')),
    };
    unprefixed.is_some_and(|name| name.starts_with("metrics_") || DAEMON_FAMILIES.contains(&name))
}

/// Checks a family's label names: valid Prometheus label names, none of the instance
/// labels, none twice.
pub fn check_label_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<(), String> {
    let mut seen: Vec<&str> = Vec::new();
    for label in names {
        if !is_valid_label_name(label) {
            return Err(format!("label \"{label}\" is not a valid label name"));
        }
        if INSTANCE_LABELS.contains(&label) {
            return Err(format!(
                "label \"{label}\" is set by the daemon, not collectors"
            ));
        }
        if seen.contains(&label) {
            return Err(format!("label \"{label}\" appears twice"));
        }
        seen.push(label);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_names_are_checked_once_for_everyone() {
        assert!(check_label_names(["device", "mode"]).is_ok());
        assert!(check_label_names(["project"])
            .unwrap_err()
            .contains("set by the daemon"));
        assert!(check_label_names(["a", "a"]).unwrap_err().contains("twice"));
        assert!(check_label_names(["__x"])
            .unwrap_err()
            .contains("not a valid"));
    }

    #[test]
    fn daemon_names_are_reserved_under_any_prefix() {
        assert!(is_reserved("lxd_uptime_seconds", "lxd"));
        assert!(is_reserved("lxd_metrics_anything", "lxd"));
        assert!(is_reserved("process_open_fds", "lxd"));
        assert!(is_reserved("instances", ""));
        assert!(!is_reserved("lxd_cpu_seconds_total", "lxd"));
        assert!(!is_reserved("other_uptime_seconds", "lxd"));
    }
}
