//! `scatter pause` and `scatter resume`: holding instances back from a
//! job's runs.
//!
//! Pauses go into the job's state directory, found exactly as `scatter
//! status` finds it, and are written under the same lock as the instance
//! records ([`crate::state::health`]). Two mistakes are refused unless
//! `--force` says otherwise: a state directory no run has used (a pause
//! written where the job's runs never look, say by a user other than the
//! job's, would silently do nothing), and an id that is not an instance (a
//! typo). Ids are taken as raw bytes and stored exactly, whatever they hold.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::{Context, Result};
use log::warn;

use crate::cli::{JobArgs, PauseArgs, ResumeArgs};
use crate::config::default_name;
use crate::display::{hex_unless_utf8, quoted, unix_secs};
use crate::exit::{self, Fatal};
use crate::health::pause_words;
use crate::idcode::encode_id;
use crate::platform;
use crate::safedir::is_one_component;
use crate::state::health::MAX_REASON;
use crate::state::{self, Pause, StateDir};

/// Runs `scatter pause`.
pub fn pause(args: PauseArgs) -> Result<u8> {
    check_ids(&args.job.name, &args.ids)?;
    if let Some(reason) = &args.reason
        && reason.len() > MAX_REASON
    {
        return Err(Fatal::usage(format!(
            "--reason is {} bytes long; at most {MAX_REASON} are kept",
            reason.len()
        ))
        .hint("say it in a line; scatter status and the --on-change hook show it")
        .into());
    }
    let (_, dir) = job_state(&args.job, false)?;
    if !args.job.force {
        check_instances(&args.job, &dir, &args.ids)?;
    }
    let now = SystemTime::now();
    let euid = platform::euid();
    let by = platform::user_name(euid).unwrap_or_else(|| format!("uid {euid}"));
    let sudo_user = std::env::var("SUDO_USER").ok().filter(|u| !u.is_empty());
    let until = args
        .duration
        .map(|d| unix_secs(now.checked_add(d).unwrap_or(now)));
    let made: Vec<(OsString, Pause)> = args
        .ids
        .iter()
        .map(|id| {
            let pause = Pause {
                id: id.to_string_lossy().into_owned(),
                id_hex: hex_unless_utf8(id.as_bytes()),
                by: by.clone(),
                sudo_user: sudo_user.clone(),
                since: unix_secs(now),
                until,
                reason: args.reason.clone(),
            };
            (id.clone(), pause)
        })
        .collect();
    dir.change_pauses(unix_secs(now), |pauses| {
        for (id, pause) in &made {
            pauses.insert(encode_id(id), pause.clone());
        }
    })
    .with_context(|| format!("cannot write the pauses in {}", quoted(&dir.path)))?;
    let mut out = std::io::stdout().lock();
    for (id, pause) in &made {
        writeln!(out, "{}: {}", quoted(id), pause_words(pause))?;
    }
    out.flush()?;
    Ok(exit::OK)
}

/// Runs `scatter resume`.
pub fn resume(args: ResumeArgs) -> Result<u8> {
    check_ids(&args.job.name, &args.ids)?;
    let (_, dir) = job_state(&args.job, true)?;
    let now = unix_secs(SystemTime::now());
    let ids = args.ids.clone();
    let all = args.all;
    let ended = dir
        .change_pauses(now, |pauses| {
            if all {
                let ended: Vec<Option<Pause>> = pauses.values().cloned().map(Some).collect();
                pauses.clear();
                return ended;
            }
            ids.iter().map(|id| pauses.remove(&encode_id(id))).collect()
        })
        .with_context(|| format!("cannot write the pauses in {}", quoted(&dir.path)))?;
    let mut out = std::io::stdout().lock();
    if all {
        let n = ended.len();
        writeln!(
            out,
            "resumed {}",
            crate::display::plural(n as u64, "instance")
        )?;
    }
    for (i, pause) in ended.iter().enumerate() {
        match (pause, args.ids.get(i)) {
            (Some(pause), _) if all => writeln!(out, "{}: resumed", quoted(pause.raw_id()))?,
            (Some(_), Some(id)) => writeln!(out, "{}: resumed", quoted(id))?,
            (None, Some(id)) => warn!("{} was not paused (or its pause had ended)", quoted(id)),
            _ => {}
        }
    }
    out.flush()?;
    Ok(exit::OK)
}

/// Every id must be one path component, as an instance directory's name is.
fn check_ids(name: &Option<OsString>, ids: &[OsString]) -> Result<()> {
    for id in ids {
        if !is_one_component(id) {
            return Err(Fatal::usage(format!(
                "{} is not an instance id: an id is the name of one directory",
                quoted(id)
            ))
            .hint(match name {
                Some(_) => "give the id as scatter run --dry-run shows it, without any path",
                None => "give the id as scatter run --dry-run shows it; the job goes in --name or --instances",
            })
            .into());
        }
    }
    Ok(())
}

/// The job's name and its state directory, as `scatter status` finds it; one
/// no run has used is refused, unless `--force` (which creates it) or, to
/// resume, it holds pauses.
fn job_state(job: &JobArgs, resuming: bool) -> Result<(OsString, StateDir)> {
    let name = match (&job.name, &job.instances) {
        (Some(name), _) => name.clone(),
        (None, Some(dir)) => default_name(
            &std::path::absolute(dir).with_context(|| format!("--instances {}", quoted(dir)))?,
        )?,
        (None, None) => {
            return Err(
                Fatal::usage("which job? give --name NAME or --instances DIR")
                    .hint("use the same --name or --instances as the scatter run of the job")
                    .into(),
            );
        }
    };
    let path = state::path_for(job.state_dir.as_deref(), &name)?;
    let unused = || {
        Fatal::usage(format!(
            "no scatter run has used the state directory {}",
            quoted(&path)
        ))
        .hint(format!(
            "pauses only work where the job's runs read them: give the job as its scatter run is given it (--name, --instances, --state-dir) and run this as the job's user{}; --force uses {} anyway",
            if platform::euid() != 0 { " (root's jobs keep their state in /var/lib/scatter)" } else { "" },
            quoted(&path)
        ))
    };
    let dir = match StateDir::open(&path)? {
        Some(dir) if job.force || dir.used_by_a_run() || (resuming && dir.has_pauses()) => dir,
        Some(_) => return Err(unused().into()),
        None if job.force => StateDir::create(&path)?,
        None => return Err(unused().into()),
    };
    Ok((name, dir))
}

/// Refuses ids that are not instances of the job: directories (or links to
/// them) in its instances directory, taken from `--instances` or the last
/// run's record.
fn check_instances(job: &JobArgs, dir: &StateDir, ids: &[OsString]) -> Result<()> {
    let instances = match &job.instances {
        Some(dir) => Some(std::path::absolute(dir)?),
        None => dir
            .runs()?
            .iter()
            .rev()
            .find(|r| !r.instances_dir.is_empty())
            .map(|r| PathBuf::from(&r.instances_dir)),
    };
    let Some(instances) = instances else {
        return Err(
            Fatal::usage("cannot tell which ids are instances of this job")
                .hint("give --instances DIR, or --force to pause the ids as they are")
                .into(),
        );
    };
    for id in ids {
        if !is_instance(&instances, id) {
            return Err(Fatal::usage(format!(
                "{} is not an instance in {}",
                quoted(id),
                quoted(&instances)
            ))
            .hint("check the id (scatter run --dry-run lists them); --force pauses it anyway, for an instance not created yet")
            .into());
        }
    }
    Ok(())
}

fn is_instance(instances: &std::path::Path, id: &OsStr) -> bool {
    !id.as_bytes().starts_with(b".")
        && std::fs::metadata(instances.join(id)).is_ok_and(|m| m.is_dir())
}
