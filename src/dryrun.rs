//! Printing a plan without running it (`--dry-run`), as text or JSON.
//!
//! The text form has a short `#` header and then exactly one line per
//! instance: offset, id, lock path and argv, each shell-quoted so that a
//! newline or space in a name cannot break or shift the columns. The JSON
//! form carries the same data; ids that are not valid UTF-8 are shown lossily
//! and also given exactly as hex in `id_hex`. Both depend only on the
//! directory and the flags, so CI can diff them; `--with-state` adds what
//! the state directory holds back now (paused, backed off).
//!
//! With `--include`/`--exclude`, the header says how many instances they
//! leave out, and with `-v` which.

use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;

use serde::Serialize;

use crate::cli::Format;
use crate::display::{self, argv_line, quoted, unix_secs};
use crate::plan::{Entry, Plan};

/// Writes the plan to `out` in the chosen format.
pub fn write(plan: &Plan, format: Format, out: &mut impl Write) -> io::Result<()> {
    match format {
        Format::Text => write_text(plan, out),
        Format::Json => write_json(plan, out),
    }
}

fn write_text(plan: &Plan, out: &mut impl Write) -> io::Result<()> {
    let n = plan.entries.len();
    let noun = if n == 1 { "instance" } else { "instances" };
    if plan.manual {
        writeln!(
            out,
            "# scatter plan {}: {n} {noun}, started at once (--only)",
            quoted(&plan.name)
        )?;
    } else {
        writeln!(
            out,
            "# scatter plan {}: {n} {noun} over {}, one every {}, order {}",
            quoted(&plan.name),
            humantime::format_duration(plan.window),
            display::duration_precise(plan.interval()),
            plan.order.as_str()
        )?;
    }
    if let Some(shard) = plan.shard {
        writeln!(out, "# shard     {shard} (rendezvous hashing of the id)")?;
    }
    if !plan.filter.is_empty() {
        let n = plan.excluded.len();
        writeln!(
            out,
            "# filter    {}: {n} {} left out",
            plan.filter,
            if n == 1 { "instance" } else { "instances" }
        )?;
        if log::log_enabled!(log::Level::Debug) {
            for id in &plan.excluded {
                writeln!(out, "# excluded  {}", quoted(id))?;
            }
        }
    }
    writeln!(out, "# instances {}", quoted(&plan.instances))?;
    writeln!(out, "# locks     {}", quoted(&plan.lock_dir))?;
    if let Some(request) = &plan.request {
        writeln!(
            out,
            "# request   {} (made by scatter, no process)",
            request.method.as_str()
        )?;
    }
    for entry in &plan.entries {
        let task = match plan.request(entry) {
            // Only URI characters: nothing to quote.
            Some(request) => format!("{} {}", plan_method(plan), request.url),
            None => argv_line(&plan.argv(entry)),
        };
        let held = plan
            .held(entry.slot)
            .map_or(String::new(), |o| format!("  # {}", o.describe(None, None)));
        writeln!(
            out,
            "+{:.3}s  {}  {}  {task}{held}",
            entry.offset.as_secs_f64(),
            quoted(&entry.id),
            quoted(plan.lock_path(entry)),
        )?;
    }
    Ok(())
}

#[derive(Serialize)]
struct Header<'a> {
    format: &'static str,
    name: String,
    instances_dir: String,
    lock_dir: String,
    window_secs: f64,
    interval_secs: f64,
    order: &'a str,
    manual: bool,
    shard: Option<String>,
    count: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    filter: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    excluded: Option<Vec<String>>,
}

#[derive(Serialize)]
struct JsonEntry {
    slot: usize,
    offset_secs: f64,
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    id_hex: Option<String>,
    path: String,
    lock: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    argv: Option<Vec<String>>,
    /// `--url`: the request, instead of `argv`.
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    /// With `--with-state`: `paused` or `backed_off`, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    held: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_attempt: Option<f64>,
}

fn plan_method(plan: &Plan) -> &'static str {
    plan.request.as_ref().map_or("", |r| r.method.as_str())
}

fn lossy(s: impl AsRef<std::ffi::OsStr>) -> String {
    s.as_ref().to_string_lossy().into_owned()
}

fn json_entry(plan: &Plan, entry: &Entry) -> JsonEntry {
    let bytes = entry.id.as_bytes();
    let held = plan.held(entry.slot);
    JsonEntry {
        slot: entry.slot,
        offset_secs: entry.offset.as_secs_f64(),
        id: lossy(&entry.id),
        id_hex: display::hex_unless_utf8(bytes),
        path: lossy(plan.path(entry)),
        lock: lossy(plan.lock_path(entry)),
        argv: plan
            .request
            .is_none()
            .then(|| plan.argv(entry).iter().map(lossy).collect()),
        method: plan.request.as_ref().map(|r| r.method.as_str()),
        url: plan.request(entry).map(|r| r.url),
        held: held.map(|o| o.kind().name()),
        reason: held.and_then(|o| o.reason()),
        next_attempt: held.and_then(|o| o.next_attempt()).map(unix_secs),
    }
}

/// One JSON document: the header fields, then `instances`, one object per
/// line so that a diff shows which instance changed.
fn write_json(plan: &Plan, out: &mut impl Write) -> io::Result<()> {
    let header = Header {
        format: "scatter-plan/1",
        name: lossy(&plan.name),
        instances_dir: lossy(&plan.instances),
        lock_dir: lossy(&plan.lock_dir),
        window_secs: plan.window.as_secs_f64(),
        interval_secs: plan.interval().as_secs_f64(),
        order: plan.order.as_str(),
        manual: plan.manual,
        shard: plan.shard.map(|s| s.to_string()),
        count: plan.entries.len(),
        filter: (!plan.filter.is_empty()).then(|| plan.filter.clone()),
        excluded: (!plan.filter.is_empty()).then(|| plan.excluded.iter().map(lossy).collect()),
    };
    let head = serde_json::to_string(&header)?;
    // Reopen the header object to append the instances array.
    write!(out, "{},\"instances\":[", &head[..head.len() - 1])?;
    for (i, entry) in plan.entries.iter().enumerate() {
        out.write_all(if i == 0 { b"\n" } else { b",\n" })?;
        serde_json::to_writer(&mut *out, &json_entry(plan, entry))?;
    }
    writeln!(out, "\n]}}")
}
