//! The crate's shape, held in place: dependencies between modules run one
//! way (no cycle among `crate::` references outside tests), and no source
//! file grows past 600 lines. Each failure names what to look at.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 600;

fn sources() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    walkdir::WalkDir::new(&root)
        .sort_by_file_name()
        .into_iter()
        .map(|e| e.unwrap().into_path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect()
}

/// `src/a/b.rs` and `src/a/mod.rs` belong to top-level module `a`;
/// `src/lib.rs` and `src/main.rs` to none.
fn top_module(path: &Path) -> Option<String> {
    let rel = path
        .strip_prefix(Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
        .ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib" && name != "main").then(|| name.to_string())
}

/// Files that only tests compile: `#[cfg(test)] mod x;` in their parent.
fn test_only_files() -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for path in sources() {
        let text = std::fs::read_to_string(&path).unwrap();
        let dir = if path
            .file_name()
            .is_some_and(|n| n == "mod.rs" || n == "lib.rs")
        {
            path.parent().unwrap().to_path_buf()
        } else {
            path.with_extension("")
        };
        let lines: Vec<&str> = text.lines().collect();
        for pair in lines.windows(2) {
            if pair[0].trim() == "#[cfg(test)]"
                && let Some(name) = pair[1]
                    .trim()
                    .strip_prefix("mod ")
                    .and_then(|r| r.strip_suffix(';'))
            {
                out.insert(dir.join(format!("{name}.rs")));
                out.insert(dir.join(name).join("mod.rs"));
            }
        }
    }
    out
}

/// The code of a file without comments, string contents and its inline
/// `#[cfg(test)]` module (which, by this crate's habit, ends the file).
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests {") {
        Some(i) => &text[..i],
        None => text,
    };
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut in_str = false;
        let mut prev = ' ';
        let mut kept = String::new();
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if !in_str && c == '/' && chars.get(i + 1) == Some(&'/') {
                break;
            }
            if c == '"' && prev != '\\' {
                in_str = !in_str;
            } else if !in_str {
                kept.push(c);
            }
            prev = c;
            i += 1;
        }
        out.push_str(&kept);
        out.push('\n');
    }
    out
}

/// The top-level modules a piece of code names through `crate::`, in any
/// form: `crate::a::b`, `crate::{a, b::{c}}`.
fn referenced(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            // Each item of the group, split at commas of brace depth 0,
            // names its top-level module first.
            let mut depth = 0;
            let mut items = vec![String::new()];
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => items.push(String::new()),
                    _ => {}
                }
                if let Some(item) = items.last_mut() {
                    item.push(c);
                }
            }
            for item in items {
                let name: String = item
                    .trim_start_matches([',', ' ', '\n', '\t'])
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        } else {
            let name: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
        rest = after;
    }
    found
}

fn graph() -> BTreeMap<String, BTreeMap<String, PathBuf>> {
    let tests = test_only_files();
    let mut edges: BTreeMap<String, BTreeMap<String, PathBuf>> = BTreeMap::new();
    for path in sources() {
        if tests.contains(&path) {
            continue;
        }
        let Some(from) = top_module(&path) else {
            continue;
        };
        let code = code_of(&std::fs::read_to_string(&path).unwrap());
        let entry = edges.entry(from.clone()).or_default();
        for to in referenced(&code) {
            if to != from && to != "self" && to != "super" {
                entry.entry(to).or_insert_with(|| path.clone());
            }
        }
    }
    edges
}

/// A cycle in the graph, as a path of modules, if there is one.
fn find_cycle(edges: &BTreeMap<String, BTreeMap<String, PathBuf>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeMap<String, PathBuf>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_string(), 1);
        stack.push(node.to_string());
        for next in edges.get(node).into_iter().flat_map(|m| m.keys()) {
            match state.get(next.as_str()).copied().unwrap_or(0) {
                1 => {
                    let start = stack.iter().position(|n| n == next).unwrap();
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(next, edges, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(node.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in edges.keys() {
        if state.get(node.as_str()).copied().unwrap_or(0) == 0
            && let Some(c) = visit(node, edges, &mut state, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

#[test]
fn module_dependencies_run_one_way() {
    let edges = graph();
    assert!(edges.len() > 20, "the module graph looks empty: {edges:?}");
    if let Some(cycle) = find_cycle(&edges) {
        let why: Vec<String> = cycle
            .windows(2)
            .map(|w| {
                format!(
                    "{} -> {} (in {})",
                    w[0],
                    w[1],
                    edges[&w[0]][&w[1]].display()
                )
            })
            .collect();
        panic!(
            "module cycle: {}\n{}\nmove the shared item down a layer (see the README's module table)",
            cycle.join(" -> "),
            why.join("\n")
        );
    }
}

#[test]
fn no_source_file_is_over_600_lines() {
    let long: Vec<String> = sources()
        .into_iter()
        .filter_map(|p| {
            let n = std::fs::read_to_string(&p).unwrap().lines().count();
            (n > MAX_LINES).then(|| format!("{} ({n} lines)", p.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "split these into modules of one responsibility each: {long:?}"
    );
}

#[test]
fn the_checker_sees_every_form_of_reference() {
    let code = code_of(
        "use crate::a::B;\nuse crate::{c, d::{E, F}, g};\nfn x() { crate::h::i(); }\n// crate::comment\nlet s = \"crate::string\";\n",
    );
    let found: Vec<String> = referenced(&code).into_iter().collect();
    assert_eq!(found, ["a", "c", "d", "g", "h"]);
    let mut edges: BTreeMap<String, BTreeMap<String, PathBuf>> = BTreeMap::new();
    edges
        .entry("a".into())
        .or_default()
        .insert("b".into(), "x".into());
    edges
        .entry("b".into())
        .or_default()
        .insert("a".into(), "y".into());
    assert_eq!(
        find_cycle(&edges),
        Some(vec!["a".to_string(), "b".to_string(), "a".to_string()])
    );
}
