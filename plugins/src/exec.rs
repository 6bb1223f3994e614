//! `exec`: series from commands that print the Prometheus text format, so a plugin can be
//! written in any language and needs no recompile.
//!
//! Each `[[collectors.exec.commands]]` runs once per refresh (`scope = "host"`) or once
//! per running instance (`scope = "instance"`, with the instance in `LXMETRICS_INSTANCE_*`
//! environment variables; its series get that instance's labels). A command runs with an
//! empty environment besides `PATH`, what its `env` table sets and the instance variables,
//! stdin from `/dev/null`, in its own process group, under its `timeout`. Its output is
//! served only when it exits 0 within the timeout, stays under `max_output_bytes` and
//! parses whole; otherwise `lxd_exec_command_success{command} 0` says so and the problem
//! is logged once. When a command ends or times out its whole process group is killed, so
//! a hanging script leaves nothing behind.

use std::collections::{BTreeMap, HashSet};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lxmetrics_plugin::{
    BuildContext, BuildError, CollectError, Collection, Collector, CollectorSettings, Family,
    Instance, InstanceIndex, MetricDesc, Scope, SeriesOf, Setting,
};

use async_trait::async_trait;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::problem_log::ProblemLog;
use crate::prom_text;
use crate::relay::RelayedFamilies;

lxmetrics_plugin::register_collector!(
    "exec",
    "Series printed by the commands in [[collectors.exec.commands]], each under a timeout",
    ExecCollector::build,
    settings = Settings,
    enabled = false
);

const SUCCESS: MetricDesc = MetricDesc::gauge(
    "exec_command_success",
    "1 if the command exited 0 in time and its output was served, 0 if it was skipped",
);
const DURATION: MetricDesc = MetricDesc::gauge(
    "exec_command_duration_seconds",
    "How long the command ran in this refresh",
);

/// `PATH` for commands; the daemon's own environment is not passed on.
const COMMAND_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How much of the end of a command's stderr is quoted in the log.
const STDERR_QUOTE_BYTES: usize = 1024;
/// How many of its last lines.
const STDERR_QUOTE_LINES: usize = 5;

/// Whether a command speaks for the host or for each instance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CommandScope {
    /// Run once; series carry no instance labels.
    #[default]
    Host,
    /// Run once per running instance; series get the instance's labels.
    Instance,
}

/// One `[[collectors.exec.commands]]` entry.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSpec {
    /// Names the command in the `command` label and in logs.
    pub name: String,
    /// Program (absolute path) and arguments; no shell is involved.
    pub command: Vec<String>,
    /// The run is killed and skipped after this long (default 2 s); must be below
    /// `metrics.collector_timeout`.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Host or per-instance.
    #[serde(default)]
    pub scope: CommandScope,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(2)
}

/// `[collectors.exec]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct Settings {
    commands: Vec<CommandSpec>,
    max_output_bytes: u64,
    concurrency: usize,
}

impl CollectorSettings for Settings {
    const KEYS: &'static [Setting] = &[
        Setting {
            key: "commands",
            help: "[[collectors.exec.commands]]: name, command, timeout, scope (host or instance), env",
        },
        Setting {
            key: "max_output_bytes",
            help: "A command printing more is killed and its output refused",
        },
        Setting {
            key: "concurrency",
            help: "Commands run at once",
        },
    ];
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            commands: Vec::new(),
            max_output_bytes: 4 * 1024 * 1024,
            concurrency: 8,
        }
    }
}

/// Runs the configured commands each refresh.
#[derive(Debug)]
pub struct ExecCollector {
    commands: Arc<[CommandSpec]>,
    max_output_bytes: u64,
    concurrency: usize,
    metric_prefix: String,
    problems: ProblemLog,
}

impl ExecCollector {
    fn build(ctx: &BuildContext<'_>) -> Result<Self, BuildError> {
        let settings: Settings = ctx.settings()?;
        if settings.commands.is_empty() {
            return Err("collectors.exec.commands: the exec collector is enabled but no command is configured".into());
        }
        if settings.concurrency == 0 {
            return Err("collectors.exec.concurrency: must be at least 1".into());
        }
        let mut names = HashSet::new();
        for (i, spec) in settings.commands.iter().enumerate() {
            let key = format!("collectors.exec.commands[{i}]");
            if spec.name.is_empty() || !names.insert(spec.name.as_str()) {
                return Err(format!("{key}.name: \"{}\" is empty or used twice", spec.name).into());
            }
            match spec.command.first() {
                None => return Err(format!("{key}.command: empty").into()),
                Some(program) if !program.starts_with('/') => {
                    return Err(
                        format!("{key}.command: \"{program}\" is not an absolute path").into(),
                    )
                }
                Some(_) => {}
            }
            if spec.timeout.is_zero() || spec.timeout >= ctx.collector_timeout {
                return Err(format!(
                    "{key}.timeout: {} must be above 0 and below metrics.collector_timeout ({})",
                    humantime::format_duration(spec.timeout),
                    humantime::format_duration(ctx.collector_timeout)
                )
                .into());
            }
            if let Some(bad) = spec
                .env
                .keys()
                .find(|k| k.is_empty() || k.contains(['=', '\0']))
            {
                return Err(format!("{key}.env: \"{bad}\" is not a variable name").into());
            }
        }
        Ok(ExecCollector::new(
            settings.commands,
            settings.max_output_bytes,
            settings.concurrency,
            ctx.metric_prefix,
        ))
    }

    /// A collector running `commands`, at most `concurrency` at a time.
    pub fn new(
        commands: Vec<CommandSpec>,
        max_output_bytes: u64,
        concurrency: usize,
        metric_prefix: &str,
    ) -> Self {
        ExecCollector {
            commands: commands.into(),
            max_output_bytes,
            concurrency: concurrency.max(1),
            metric_prefix: metric_prefix.to_owned(),
            problems: ProblemLog::new("exec"),
        }
    }
}

/// One run's result.
struct Run {
    command: usize,
    instance: Option<InstanceIndex>,
    took: Duration,
    output: Result<String, String>,
}

#[async_trait]
impl Collector for ExecCollector {
    async fn collect(&self, scope: &Scope) -> Result<Collection, CollectError> {
        let mut jobs = Vec::new();
        for (c, spec) in self.commands.iter().enumerate() {
            match spec.scope {
                CommandScope::Host => jobs.push((c, None)),
                CommandScope::Instance => {
                    jobs.extend(scope.indexed_instances().map(|(i, _)| (c, Some(i))))
                }
            }
        }
        let mut runs: Vec<Run> = futures_util::stream::iter(jobs)
            .map(|(command, instance)| {
                let spec = &self.commands[command];
                let inst = instance.and_then(|i| scope.instances.get(i as usize));
                async move {
                    let started = Instant::now();
                    let output = run_command(spec, inst, self.max_output_bytes).await;
                    Run {
                        command,
                        instance,
                        took: started.elapsed(),
                        output,
                    }
                }
            })
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        runs.sort_by_key(|r| (r.command, r.instance));

        let mut relayed =
            RelayedFamilies::new(&self.metric_prefix, "Metric printed by an exec command");
        let mut success = Family::new(SUCCESS, &["command"]);
        let mut duration = Family::new(DURATION, &["command"]);
        let mut seen = HashSet::with_capacity(runs.len());
        for run in runs {
            let spec = &self.commands[run.command];
            let source = match run.instance.and_then(|i| scope.instances.get(i as usize)) {
                Some(inst) => format!("{}@{}/{}", spec.name, inst.project, inst.name),
                None => spec.name.clone(),
            };
            let outcome = run.output.and_then(|text| {
                let families = prom_text::parse(&text).map_err(|e| format!("output {e}"))?;
                relayed.add(families, run.instance)
            });
            self.problems.record(
                &source,
                outcome.as_ref().map(|_| ()).map_err(String::as_str),
            );
            let ok = f64::from(u8::from(outcome.is_ok()));
            match run.instance {
                Some(i) => {
                    success.push(i, [spec.name.as_str()], ok);
                    duration.push(i, [spec.name.as_str()], run.took.as_secs_f64());
                }
                None => {
                    success.push(SeriesOf::HOST, [spec.name.as_str()], ok);
                    duration.push(SeriesOf::HOST, [spec.name.as_str()], run.took.as_secs_f64());
                }
            }
            seen.insert(source);
        }
        self.problems.retain(&seen);
        let mut collection = Collection::new();
        collection.families = relayed.into_families();
        collection.push(success);
        collection.push(duration);
        Ok(collection)
    }
}

/// Kills a command's process group when dropped: after the command ends, when it times
/// out, and when the refresh itself is abandoned at the collector deadline.
struct GroupKiller(Option<rustix::process::Pid>);

impl Drop for GroupKiller {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            // ESRCH (the group is already gone) is the common, good case.
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

/// Runs one command and returns its stdout, or why it is not served.
async fn run_command(
    spec: &CommandSpec,
    instance: Option<&Instance>,
    max_output: u64,
) -> Result<String, String> {
    let (program, args) = spec
        .command
        .split_first()
        .ok_or_else(|| "empty command".to_owned())?;
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .env_clear()
        .env("PATH", COMMAND_PATH)
        .envs(&spec.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(instance) = instance {
        command
            .env("LXMETRICS_INSTANCE_NAME", &instance.name)
            .env("LXMETRICS_INSTANCE_PROJECT", &instance.project)
            .env("LXMETRICS_INSTANCE_TYPE", instance.kind.as_str())
            .env("LXMETRICS_INSTANCE_CGROUP", &instance.cgroup);
        if let Some(pid) = instance.pid {
            command.env("LXMETRICS_INSTANCE_PID", pid.to_string());
        }
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    let _group = GroupKiller(
        child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .and_then(rustix::process::Pid::from_raw),
    );
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let run = async {
        let (out, err) = tokio::try_join!(read_capped(stdout, max_output), async {
            Ok(read_quote(stderr).await)
        })?;
        let status = child
            .wait()
            .await
            .map_err(|e| format!("cannot wait for it: {e}"))?;
        Ok::<(Vec<u8>, String, ExitStatus), String>((out, err, status))
    };
    let (out, err, status) = tokio::time::timeout(spec.timeout, run)
        .await
        .map_err(|_| {
            format!(
                "timed out after {} (killed)",
                humantime::format_duration(spec.timeout)
            )
        })??;
    if !status.success() {
        let err = err.trim();
        return Err(if err.is_empty() {
            format!("{status}")
        } else {
            format!("{status}: {err}")
        });
    }
    if !err.is_empty() {
        tracing::debug!(command = %spec.name, "stderr: {err}");
    }
    String::from_utf8(out).map_err(|_| "output is not UTF-8".to_owned())
}

/// Reads stdout to the end, refusing more than `max` bytes.
async fn read_capped<R: AsyncRead + Unpin>(pipe: Option<R>, max: u64) -> Result<Vec<u8>, String> {
    let Some(pipe) = pipe else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    pipe.take(max + 1)
        .read_to_end(&mut out)
        .await
        .map_err(|e| format!("cannot read its output: {e}"))?;
    if out.len() as u64 > max {
        return Err(format!(
            "output is over collectors.exec.max_output_bytes ({max})"
        ));
    }
    Ok(out)
}

/// Reads stderr to the end (so the command never blocks on it) and keeps its last lines
/// (where a failing program says why), joined into one log line with ` | `.
async fn read_quote<R: AsyncRead + Unpin>(pipe: Option<R>) -> String {
    let Some(mut pipe) = pipe else {
        return String::new();
    };
    let mut kept: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = pipe.read(&mut buf).await {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > 2 * STDERR_QUOTE_BYTES {
            kept.drain(..kept.len() - STDERR_QUOTE_BYTES);
        }
    }
    let tail = &kept[kept.len().saturating_sub(STDERR_QUOTE_BYTES)..];
    let text = String::from_utf8_lossy(tail);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(STDERR_QUOTE_LINES)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use lxmetrics_plugin::HostPaths;

    #[tokio::test]
    async fn the_last_lines_of_stderr_are_kept() {
        let mut text = String::new();
        for i in 0..500 {
            text.push_str(&format!("line {i}\n"));
        }
        text.push_str("\nfatal: the real reason\n");
        let quote = read_quote(Some(text.as_bytes())).await;
        assert!(
            quote.ends_with("line 499 | fatal: the real reason"),
            "{quote}"
        );
        assert_eq!(quote.matches(" | ").count(), STDERR_QUOTE_LINES - 1);
    }

    fn spec(name: &str, script: &str, timeout_ms: u64, scope: CommandScope) -> CommandSpec {
        CommandSpec {
            name: name.into(),
            command: vec!["/bin/sh".into(), "-c".into(), script.into()],
            timeout: Duration::from_millis(timeout_ms),
            scope,
            env: BTreeMap::new(),
        }
    }

    async fn collect(commands: Vec<CommandSpec>, instances: Vec<Instance>) -> Collection {
        let collector = ExecCollector::new(commands, 1024, 4, "lxd");
        let scope = Scope::new(instances, HostPaths::default());
        collector.collect(&scope).await.unwrap()
    }

    fn value(c: &Collection, family: &str, instance: Option<u32>, label: &str) -> Option<f64> {
        c.families
            .iter()
            .find(|f| f.desc.name == family)?
            .samples
            .iter()
            .find(|s| s.instance == instance && s.label_values.get(0) == Some(label))
            .map(|s| s.value)
    }

    #[tokio::test]
    async fn host_and_instance_commands_are_relayed() {
        let c = collect(
            vec![
                spec("host", "echo 'app_up 1'", 2000, CommandScope::Host),
                spec(
                    "per",
                    "echo \"app_info{pid=\\\"$LXMETRICS_INSTANCE_PID\\\",who=\\\"$LXMETRICS_INSTANCE_PROJECT/$LXMETRICS_INSTANCE_NAME\\\"} 1\"",
                    2000,
                    CommandScope::Instance,
                ),
            ],
            vec![
                Instance::container("a", "lxc.payload.a").with_pid(42),
                Instance::container("b", "lxc.payload.b"),
            ],
        )
        .await;
        let up = c.families.iter().find(|f| f.desc.name == "app_up").unwrap();
        assert_eq!(up.samples[0].instance, None);
        let info = c
            .families
            .iter()
            .find(|f| f.desc.name == "app_info")
            .unwrap();
        let got: Vec<_> = info
            .samples
            .iter()
            .map(|s| {
                (
                    s.instance,
                    s.label_values.iter().map(String::from).collect::<Vec<_>>(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (Some(0), vec!["42".into(), "default/a".into()]),
                (Some(1), vec!["".into(), "default/b".into()]),
            ]
        );
        assert_eq!(value(&c, "exec_command_success", None, "host"), Some(1.0));
        assert_eq!(value(&c, "exec_command_success", Some(1), "per"), Some(1.0));
    }

    #[tokio::test]
    async fn a_hanging_command_is_killed_with_its_children_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("child-alive");
        // The script starts a child that would touch the marker after 2 s, then hangs.
        let script = format!(
            "(sleep 2; touch {}) & echo 'partial 1'; sleep 60",
            marker.display()
        );
        let started = Instant::now();
        let c = collect(
            vec![
                spec("hang", &script, 300, CommandScope::Host),
                spec("fine", "echo 'fine_metric 1'", 2000, CommandScope::Host),
            ],
            vec![],
        )
        .await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(value(&c, "exec_command_success", None, "hang"), Some(0.0));
        assert_eq!(value(&c, "exec_command_success", None, "fine"), Some(1.0));
        assert!(c.families.iter().all(|f| f.desc.name != "partial"));
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(
            !marker.exists(),
            "the hanging command's child survived the kill"
        );
    }

    #[tokio::test]
    async fn failures_are_reported_not_served() {
        let c = collect(
            vec![
                spec(
                    "exit1",
                    "echo 'x_metric 1'; echo oops >&2; exit 1",
                    2000,
                    CommandScope::Host,
                ),
                spec("garbage", "echo 'x_metric{'", 2000, CommandScope::Host),
                spec(
                    "big",
                    "yes 'big_metric 1' | head -c 5000",
                    2000,
                    CommandScope::Host,
                ),
                spec(
                    "override",
                    "echo 'y_metric{name=\"other\"} 1'",
                    2000,
                    CommandScope::Instance,
                ),
            ],
            vec![Instance::container("a", "lxc.payload.a")],
        )
        .await;
        for name in ["exit1", "garbage", "big"] {
            assert_eq!(
                value(&c, "exec_command_success", None, name),
                Some(0.0),
                "{name}"
            );
        }
        assert_eq!(
            value(&c, "exec_command_success", Some(0), "override"),
            Some(0.0)
        );
        let names: Vec<_> = c.families.iter().map(|f| f.desc.name.as_ref()).collect();
        assert_eq!(
            names,
            ["exec_command_success", "exec_command_duration_seconds"]
        );
    }

    #[tokio::test]
    async fn a_missing_program_is_reported() {
        let mut missing = spec("missing", "", 2000, CommandScope::Host);
        missing.command = vec!["/nonexistent/program".into()];
        let c = collect(vec![missing], vec![]).await;
        assert_eq!(
            value(&c, "exec_command_success", None, "missing"),
            Some(0.0)
        );
    }
}
