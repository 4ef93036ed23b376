//! The README is the user's manual: every flag and every exit code the
//! binary has must be documented there, and the `--help` table must agree.

use clap::CommandFactory;
use scatter::cli::Cli;

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

#[test]
fn every_flag_is_in_the_readme() {
    let readme = readme();
    let cmd = Cli::command();
    for sub in cmd.get_subcommands() {
        for arg in sub.get_arguments() {
            if let Some(long) = arg.get_long() {
                if long == "help" || long == "version" {
                    continue;
                }
                assert!(
                    readme.contains(&format!("`--{long}")),
                    "README does not document --{long} of `scatter {}`",
                    sub.get_name()
                );
            }
            if let Some(env) = arg.get_env() {
                let env = env.to_str().unwrap();
                assert!(readme.contains(env), "README does not mention {env}");
            }
        }
    }
}

#[test]
fn every_exit_code_is_in_the_readme() {
    let readme = readme();
    for line in scatter::exit::HELP_TABLE.lines().skip(1) {
        let code = line.split_whitespace().next().unwrap();
        let row = format!("| {code} |");
        assert!(
            readme.contains(&row),
            "README lacks the exit code row {row}"
        );
    }
}

const REGENERATE: &str = "regenerate with: cargo run -q -- manpage --dir doc/man && \
for s in bash zsh fish; do cargo run -q -- completions $s; done \
(to doc/completions/scatter.bash, _scatter, scatter.fish)";

#[test]
fn shipped_man_pages_match_the_flags() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/doc/man");
    let pages = scatter::docs::manpages().unwrap();
    let mut shipped: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    shipped.sort();
    let mut names: Vec<String> = pages.iter().map(|(n, _)| n.clone()).collect();
    names.sort();
    assert_eq!(shipped, names, "{REGENERATE}");
    for (name, text) in &pages {
        let on_disk = std::fs::read(format!("{dir}/{name}")).unwrap();
        assert!(on_disk == *text, "doc/man/{name} is stale; {REGENERATE}");
    }
    // Every long flag of `run` is on its page.
    let run = String::from_utf8_lossy(&pages.iter().find(|(n, _)| n == "scatter-run.1").unwrap().1)
        .into_owned();
    let cmd = Cli::command();
    for arg in cmd.find_subcommand("run").unwrap().get_arguments() {
        if let Some(long) = arg.get_long() {
            assert!(
                run.contains(&format!("\\-\\-{}", long.replace('-', "\\-"))),
                "--{long} missing from scatter-run.1"
            );
        }
    }
}

#[test]
fn shipped_completions_match_the_flags() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/doc/completions");
    for (shell, file) in [
        (clap_complete::Shell::Bash, "scatter.bash"),
        (clap_complete::Shell::Zsh, "_scatter"),
        (clap_complete::Shell::Fish, "scatter.fish"),
    ] {
        let mut fresh = Vec::new();
        scatter::docs::completions(shell, &mut fresh);
        let on_disk = std::fs::read(format!("{dir}/{file}")).unwrap();
        assert!(
            on_disk == fresh,
            "doc/completions/{file} is stale; {REGENERATE}"
        );
        let text = String::from_utf8(fresh).unwrap();
        for flag in [
            "--instances",
            "--window",
            "--max-concurrent",
            "--metrics-file",
            "--shard",
        ] {
            assert!(
                text.contains(flag.trim_start_matches('-')),
                "{file} lacks {flag}"
            );
        }
    }
}
