//! Placeholders in the task's command line.
//!
//! The command is given as argv and is never passed to a shell. Each argument
//! may contain `{}` or `{id}` (the instance id), `{path}` (the instance's
//! absolute path), and `{{` / `}}` for literal braces. Any other `{word}` made
//! of letters, digits and `_` is rejected before anything runs, so a typo such
//! as `{nmae}` is caught instead of reaching the task. Every other brace is
//! literal, so `awk '{print $1}'` passes through unchanged. Expansion is a
//! single pass: an id that itself contains `{}` is inserted verbatim.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use crate::display::quoted;
use crate::exit::Fatal;

/// One piece of an argument: literal bytes (braces already unescaped), or
/// a placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(Vec<u8>),
    Id,
    Path,
}

/// A parsed command line, ready to be expanded for each instance.
#[derive(Debug, Clone)]
pub struct Template {
    args: Vec<Vec<Piece>>,
}

impl Template {
    /// Parses the command and its arguments, rejecting unknown placeholders
    /// and an empty command.
    pub fn parse(argv: &[OsString]) -> Result<Template, Fatal> {
        if argv.is_empty() || argv[0].is_empty() {
            return Err(Fatal::usage("the command to run is empty").hint(
                "put the command after `--`, for example: scatter run --instances DIR -- ./task {}",
            ));
        }
        let args = argv
            .iter()
            .enumerate()
            .map(|(i, arg)| parse_arg(arg.as_bytes()).map_err(|word| unknown(i, arg, &word)))
            .collect::<Result<_, _>>()?;
        Ok(Template { args })
    }

    /// The command itself, when it contains no placeholder and so is the
    /// same for every instance (and can be looked up in PATH once).
    pub fn fixed_program(&self) -> Option<OsString> {
        match self.args.first().map(Vec::as_slice) {
            Some([Piece::Text(text)]) => Some(OsString::from_vec(text.clone())),
            _ => None,
        }
    }

    /// A template with no command, for a run whose task is not a process
    /// (`--url`): it expands to nothing.
    pub fn none() -> Template {
        Template { args: Vec::new() }
    }

    /// The argv for one instance.
    pub fn expand(&self, id: &OsStr, path: &Path) -> Vec<OsString> {
        self.args
            .iter()
            .map(|pieces| {
                let mut out = Vec::new();
                for piece in pieces {
                    match piece {
                        Piece::Text(t) => out.extend_from_slice(t),
                        Piece::Id => out.extend_from_slice(id.as_bytes()),
                        Piece::Path => out.extend_from_slice(path.as_os_str().as_bytes()),
                    }
                }
                OsString::from_vec(out)
            })
            .collect()
    }
}

fn unknown(index: usize, arg: &OsStr, word: &[u8]) -> Fatal {
    let word = String::from_utf8_lossy(word);
    let place = if index == 0 {
        "the command".to_string()
    } else {
        format!("argument {index}")
    };
    Fatal::usage(format!(
        "unknown placeholder {{{word}}} in {place} ({})",
        quoted(arg)
    ))
    .hint("known placeholders are {}, {id} and {path}; write {{ and }} for literal braces")
}

/// Splits one argument into pieces by the rules above; on an unknown
/// `{word}` returns the word. `--url` templates are parsed with the same
/// rules ([`crate::http`]).
pub fn parse_arg(arg: &[u8]) -> Result<Vec<Piece>, Vec<u8>> {
    let mut pieces = Vec::new();
    let mut text = Vec::new();
    let mut i = 0;
    while i < arg.len() {
        let b = arg[i];
        if (b == b'{' || b == b'}') && arg.get(i + 1) == Some(&b) {
            text.push(b);
            i += 2;
            continue;
        }
        if b == b'{' {
            let word_len = arg[i + 1..]
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
                .count();
            if arg.get(i + 1 + word_len) == Some(&b'}') {
                let word = &arg[i + 1..i + 1 + word_len];
                let piece = match word {
                    b"" | b"id" => Piece::Id,
                    b"path" => Piece::Path,
                    other => return Err(other.to_vec()),
                };
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                pieces.push(piece);
                i += word_len + 2;
                continue;
            }
        }
        text.push(b);
        i += 1;
    }
    if !text.is_empty() || pieces.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(args: &[&str], id: &[u8]) -> Vec<Vec<u8>> {
        let argv: Vec<OsString> = args.iter().map(OsString::from).collect();
        Template::parse(&argv)
            .unwrap()
            .expand(OsStr::from_bytes(id), Path::new("/srv/i/x"))
            .into_iter()
            .map(OsString::into_vec)
            .collect()
    }

    #[test]
    fn placeholders_expand() {
        assert_eq!(
            expand(&["task", "{}", "--id={id}", "{path}/conf", "{}{}"], b"acme"),
            vec![
                b"task".to_vec(),
                b"acme".to_vec(),
                b"--id=acme".to_vec(),
                b"/srv/i/x/conf".to_vec(),
                b"acmeacme".to_vec()
            ]
        );
    }

    #[test]
    fn doubled_braces_are_literal() {
        assert_eq!(
            expand(&["{{}}", "{{id}}", "}}{{"], b"a"),
            vec![b"{}".to_vec(), b"{id}".to_vec(), b"}{".to_vec()]
        );
    }

    #[test]
    fn other_braces_pass_through() {
        let awk = "{print $1}";
        assert_eq!(expand(&["awk", awk], b"a")[1], awk.as_bytes());
        assert_eq!(
            expand(&["{", "}", "{x", "a{-}b", "{ id }"], b"a")[1..],
            [
                b"}".to_vec(),
                b"{x".to_vec(),
                b"a{-}b".to_vec(),
                b"{ id }".to_vec()
            ]
        );
    }

    #[test]
    fn ids_are_inserted_verbatim_without_reexpansion() {
        assert_eq!(expand(&["{}"], b"{path}")[0], b"{path}");
        assert_eq!(
            expand(&["{}"], b"$(reboot) `x` ;|*\n")[0],
            b"$(reboot) `x` ;|*\n"
        );
        assert_eq!(expand(&["{}"], b"\xff\xfe")[0], b"\xff\xfe");
    }

    #[test]
    fn unknown_placeholders_are_named() {
        let argv = vec![OsString::from("task"), OsString::from("--x={nmae}")];
        let err = Template::parse(&argv).unwrap_err();
        assert!(err.message.contains("{nmae}"), "{}", err.message);
        assert!(err.message.contains("argument 1"), "{}", err.message);
        assert!(err.hint.unwrap().contains("{path}"));
    }

    #[test]
    fn empty_command_is_rejected() {
        assert!(Template::parse(&[]).is_err());
        assert!(Template::parse(&[OsString::new()]).is_err());
    }

    #[test]
    fn fixed_program_only_without_placeholders() {
        let parse = |a: &[&str]| {
            Template::parse(&a.iter().map(OsString::from).collect::<Vec<_>>()).unwrap()
        };
        assert_eq!(
            parse(&["curl", "{}"]).fixed_program(),
            Some(OsString::from("curl"))
        );
        assert_eq!(
            parse(&["{{x}}"]).fixed_program(),
            Some(OsString::from("{x}"))
        );
        assert_eq!(parse(&["{path}/run"]).fixed_program(), None);
    }

    #[test]
    fn empty_argument_survives() {
        assert_eq!(expand(&["task", ""], b"a")[1], b"");
    }
}
