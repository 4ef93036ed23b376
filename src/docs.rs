//! Man pages and shell completions, generated from the clap definition so
//! they can never disagree with the flags (`scatter manpage`,
//! `scatter completions SHELL`). The copies shipped in `doc/` are checked
//! against these by a test.
//!
//! Pages are assembled from clap_mangen's sections, plus a NOTES section
//! holding each command's after-help text (placeholders, environment, exit
//! status) in no-fill mode, so its tables keep their lines.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;
use roff::{Roff, roman};

use crate::cli::Cli;
use crate::display::quoted;

/// Writes the completion script for `shell`.
pub fn completions(shell: clap_complete::Shell, out: &mut impl Write) {
    clap_complete::generate(shell, &mut Cli::command(), "scatter", out);
}

/// Every page: `scatter.1` and `scatter-<subcommand>.1`, as (file name, roff).
pub fn manpages() -> Result<Vec<(String, Vec<u8>)>> {
    let mut cmd = Cli::command();
    cmd.build();
    let mut pages = vec![("scatter.1".to_string(), page(&cmd)?)];
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        // After build(), a subcommand's display name is `scatter-<name>`,
        // as `man scatter-run` expects.
        let name = sub.get_display_name().unwrap_or(sub.get_name());
        let sub = sub.clone().version(env!("CARGO_PKG_VERSION"));
        pages.push((format!("{name}.1"), page(&sub)?));
    }
    Ok(pages)
}

fn page(cmd: &clap::Command) -> Result<Vec<u8>> {
    let man = clap_mangen::Man::new(cmd.clone());
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut out)?;
    }
    if cmd.get_subcommands().any(|s| s.get_name() != "help") {
        man.render_subcommands_section(&mut out)?;
    }
    if let Some(after) = cmd.get_after_long_help().or(cmd.get_after_help()) {
        let mut notes = Roff::new();
        notes.control("SH", ["NOTES"]).control("nf", []);
        for line in after.to_string().lines() {
            notes.text([roman(line)]);
        }
        notes.control("fi", []);
        notes.to_writer(&mut out)?;
    }
    man.render_version_section(&mut out)?;
    Ok(out)
}

/// Writes the main man page, `scatter.1`.
pub fn manpage(out: &mut impl Write) -> Result<()> {
    let pages = manpages()?;
    out.write_all(&pages[0].1)?;
    Ok(())
}

/// Writes every page into `dir`.
pub fn manpages_to(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", quoted(dir)))?;
    for (name, text) in manpages()? {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", quoted(&path)))?;
    }
    Ok(())
}
