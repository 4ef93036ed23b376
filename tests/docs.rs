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
