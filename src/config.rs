//! Turns parsed flags into a checked run configuration.
//!
//! Everything that can be wrong with the command line is found here, before
//! any directory is listed or any lock is taken: unknown placeholders, an
//! empty command, a name that is not one path component, an unusable lock
//! directory. The dry run and the real run both start from a `RunConfig`.
//!
//! This is the one module that knows both the flags (`cli`) and the domain
//! types they become (`plan::Spec`, `supervise::Options`, `history::Spec`).

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use log::warn;

use crate::cli::{Format, RunArgs};
use crate::display::quoted;
use crate::exit::{self, Fatal};
use crate::filter::Filter;
use crate::health;
use crate::history;
use crate::lock;
use crate::output::OutputMode;
use crate::plan;
use crate::pressure;
use crate::priority::Priority;
use crate::shard::Shard;
use crate::state;
use crate::supervise::Options;
use crate::template::Template;

mod request;
pub use request::{DEFAULT_CAP, DEFAULT_TIMEOUT};

/// A validated `scatter run`.
#[derive(Debug)]
pub struct RunConfig {
    /// What decides the plan.
    pub plan: plan::Spec,
    /// The lock base directory; the job's locks are in `plan.lock_dir`.
    pub lock_base: PathBuf,
    pub dry_run: bool,
    pub format: Format,
    /// Concurrency cap, timeouts, detach, output.
    pub supervision: Options,
    /// Where the run's records and metrics go.
    pub history: history::Spec,
    /// Back-off, what to report, the `--on-change` hook.
    pub health: health::Spec,
    /// `--with-state`: the dry run shows what a real run would do now.
    pub with_state: bool,
}

impl RunConfig {
    pub fn from_args(args: RunArgs) -> Result<RunConfig> {
        let request = request::from_args(&args)?;
        let template = match &request {
            Some(_) => Template::none(),
            None => Template::parse(&args.command)?,
        };
        let program = match template.fixed_program() {
            Some(name) => resolve_program(&name, args.dry_run)?,
            None => None,
        };
        let instances = std::path::absolute(&args.instances)
            .with_context(|| format!("--instances {}", quoted(&args.instances)))?;
        let name = match args.name {
            Some(name) => name,
            None => default_name(&instances)?,
        };
        let output = match args.output {
            OutputMode::Dir(dir) => OutputMode::Dir(
                std::path::absolute(&dir)
                    .with_context(|| format!("--output dir={}", quoted(&dir)))?,
            ),
            other => other,
        };
        if args.detach && matches!(output, OutputMode::Tag | OutputMode::OnFailure) {
            return Err(Fatal::usage("--detach cannot be combined with --output tag or on-failure")
                .hint("with --detach scatter exits before the tasks finish, so it cannot relay their output; use --output dir=PATH or null")
                .into());
        }
        if args.detach && std::env::var_os("INVOCATION_ID").is_some() {
            // systemd sets INVOCATION_ID for services; when the service's
            // main process exits, systemd kills what remains in its cgroup.
            warn!(
                "--detach under systemd: the service manager kills the tasks when scatter exits, unless the unit sets KillMode=process"
            );
        }
        // `--only` runs at once, whatever the pressure: a manual run does
        // what it is told, so its pressure flags are not even checked.
        let pressure = if args.only.is_empty() {
            match pressure::Spec::resolve(
                &args.protect.max_pressure,
                &args.protect.pressure_source,
                args.protect.max_load,
            ) {
                Ok(spec) => spec,
                // CI may check plans on a machine without PSI.
                Err(err) if args.dry_run => {
                    warn!("{err:#}");
                    None
                }
                Err(err) => return Err(err),
            }
        } else {
            None
        };
        let filter = Filter::new(&args.include, &args.exclude)?;
        let on_change = args
            .on_change
            .as_deref()
            .map(|hook| resolve_hook(hook, args.dry_run))
            .transpose()?
            .flatten();
        let health = health::Spec {
            backoff: args.backoff,
            report: args.report,
            failures_before_report: args.failures_before_report.get(),
            remind: args.remind,
            on_change,
            hook_timeout: args.hook_timeout,
        };
        let mut supervision = Options {
            max_concurrent: args.max_concurrent,
            timeout: args.timeout,
            kill_after: args.kill_after,
            detach: args.detach,
            output,
            // With --report changes, failures are logged as changes, at the
            // end of the run, not one record per failure.
            log_failures: crate::logging::structured() && args.report == health::ReportMode::Every,
            tls: None,
            catch_up: args.protect.catch_up,
            pressure,
            max_defer: Some(args.protect.max_defer.unwrap_or(args.window / 2)),
            defer_action: args.protect.max_defer_action,
            priority: Priority {
                nice: args.protect.nice,
                io: args.protect.ionice,
            },
        };
        if let Some(request) = &request {
            request.apply(&mut supervision);
        }
        let shard = Shard::select(args.shard, args.shards)?;
        let lock_base = lock::base_path(args.lock_dir.as_deref())?;
        let lock_dir = lock::job_dir(&lock_base, &name);
        let state_dir = match state::path_for(args.state_dir.as_deref(), &name) {
            Ok(dir) => Some(dir),
            // History is for status and monitoring: a run goes ahead without it.
            Err(err) if !args.dry_run => {
                warn!("{err:#}; this run records no history");
                None
            }
            Err(_) => None,
        };
        let metrics_file = args
            .metrics_file
            .map(|p| {
                std::path::absolute(&p).with_context(|| format!("--metrics-file {}", quoted(&p)))
            })
            .transpose()?;
        Ok(RunConfig {
            plan: plan::Spec {
                instances,
                name,
                lock_dir,
                window: args.window,
                order: args.order,
                only: args.only,
                shard,
                template,
                program,
                request: request.map(|r| r.template),
                filter,
            },
            lock_base,
            dry_run: args.dry_run,
            format: args.format,
            supervision,
            history: history::Spec {
                state_dir,
                keep_runs: args.keep_runs,
                metrics_file,
            },
            health,
            with_state: args.with_state,
        })
    }
}

/// Checks `--on-change` once, before anything runs: an executable file,
/// by its path (or found in PATH when it is a bare name). A dry run only
/// warns, as for the command.
fn resolve_hook(hook: &Path, dry_run: bool) -> Result<Option<PathBuf>> {
    let found = which::which(hook)
        .map_err(|_| ())
        .and_then(|path| std::path::absolute(&path).map_err(|_| ()));
    match found {
        Ok(path) => Ok(Some(path)),
        Err(()) if dry_run => {
            warn!("--on-change {}: not found or not executable on this machine", quoted(hook));
            Ok(None)
        }
        Err(()) => Err(Fatal::usage(format!(
            "--on-change {}: not found or not executable",
            quoted(hook)
        ))
        .hint("give the path of an executable file (it is run directly, never through a shell), such as /usr/local/lib/scatter/notify")
        .into()),
    }
}

/// Looks the command up once, as execvp would at every start, so that a typo
/// or cron's short PATH is reported before anything runs. A dry run only
/// warns: CI may check plans on a machine without the command.
fn resolve_program(name: &OsStr, dry_run: bool) -> Result<Option<PathBuf>> {
    match which::which(name) {
        Ok(path) => Ok(Some(path)),
        Err(_) if dry_run => {
            warn!("command {} not found on this machine", quoted(name));
            Ok(None)
        }
        Err(_) => {
            let path = std::env::var_os("PATH").unwrap_or_default();
            let hint = if Path::new(name).components().count() > 1 {
                "check the path; a relative path is taken from the directory scatter runs in"
                    .to_string()
            } else {
                format!(
                    "PATH is {}; cron's default PATH is only /usr/bin:/bin, so give the full path or set PATH in the crontab",
                    quoted(&path)
                )
            };
            Err(Fatal {
                code: exit::NOT_FOUND,
                message: format!("command {} not found or not executable", quoted(name)),
                hint: Some(hint),
            }
            .into())
        }
    }
}

/// The basename of the instances directory, as given (a symlinked
/// `/srv/instances` is still named `instances`).
pub fn default_name(instances: &std::path::Path) -> Result<OsString> {
    let named = instances.file_name().map(OsString::from).or_else(|| {
        std::fs::canonicalize(instances)
            .ok()
            .and_then(|p| p.file_name().map(OsString::from))
    });
    named.ok_or_else(|| {
        Fatal::usage(format!(
            "cannot derive a job name from --instances {}",
            quoted(instances)
        ))
        .hint("pass --name NAME (one path component, such as checkmail)")
        .into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_name_is_the_basename() {
        assert_eq!(
            default_name(Path::new("/srv/instances")).unwrap(),
            "instances"
        );
        assert_eq!(
            default_name(Path::new("/srv/instances/")).unwrap(),
            "instances"
        );
        assert!(default_name(Path::new("/")).is_err());
    }
}
