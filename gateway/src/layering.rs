//! The gateway's module graph is a DAG, in the layers ARCHITECTURE.md draws: a module imports
//! only from layers below its own. Read from the source's `crate::`, `super::` and child-module
//! paths (production code: a file is read up to its `#[cfg(test)]`), so a new import that
//! makes a cycle, or that makes ingest, control and alerts depend on each other, fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules by layer, lowest first; a module may import only from lower layers.
/// Keep in step with the picture in ARCHITECTURE.md.
const LAYERS: &[&[&str]] = &[
    // pure leaves: settings, counters, liveness, the failure detector, the InfluxDB schema,
    // discovery payloads, node keys, MQTT framing
    &[
        "config",
        "metrics",
        "clocks",
        "liveness",
        "detector",
        "schema",
        "homeassistant",
        "keyring",
        "wire",
        "enroll",
    ],
    &["nodes", "outbox", "acks", "scrub"],
    // the MQTT session and the channels between tasks
    &["bus"],
    // the tasks, which never import each other; and the servers
    &["ingest", "control", "alerts", "broker", "http"],
    // client subcommands
    &["status", "events", "keys"],
    &["main"],
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// A file's module path: `src/main.rs` is the root, `src/a/mod.rs` and `src/a.rs` are `a`.
fn module_of(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src()).unwrap_or(file).with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|l| l == "mod" || l == "main") {
        parts.pop();
    }
    parts
}

/// The file that holds the deepest existing module of `path`.
fn resolve(path: &[String]) -> Option<PathBuf> {
    (0..=path.len()).rev().find_map(|n| {
        let base = path[..n].iter().fold(src(), |p, s| p.join(s));
        if n == 0 {
            return Some(src().join("main.rs"));
        }
        [base.with_extension("rs"), base.join("mod.rs")]
            .into_iter()
            .find(|f| f.is_file())
    })
}

fn ident_len(s: &str) -> usize {
    s.find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len())
}

/// Expands the path that starts at `s` (after `crate::` or the like) into its full paths:
/// `a::{b, c::d}` gives `a::b` and `a::c::d`.
fn expand(s: &str, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let mut path = prefix;
    let mut rest = s;
    loop {
        rest = rest.trim_start();
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut start = 0;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        expand(&group[start..i], path.clone(), out);
                        return;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        expand(&group[start..i], path.clone(), out);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            return;
        }
        let n = ident_len(rest);
        if n == 0 {
            break;
        }
        path.push(rest[..n].to_owned());
        rest = &rest[n..];
        match rest.strip_prefix("::") {
            Some(r) => rest = r,
            None => break,
        }
    }
    out.push(path);
}

/// Where a file's inline test module starts.
fn tests_start(text: &str) -> Option<usize> {
    text.match_indices("#[cfg(test)]")
        .map(|(i, _)| i)
        .find(|&i| {
            let rest = text[i + "#[cfg(test)]".len()..].trim_start();
            rest.starts_with("mod ")
                && rest
                    .find('{')
                    .is_some_and(|b| rest.find(';').is_none_or(|s| b < s))
        })
}

/// Production code of a file: up to its test module, without comments.
fn code(text: &str) -> String {
    let end = tests_start(text).unwrap_or(text.len());
    text[..end]
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every module path a file names through `crate::`, `super::` or a child module it declares.
fn imports(file: &Path, text: &str) -> Vec<Vec<String>> {
    let here = module_of(file);
    let code = code(text);
    let children: BTreeSet<String> = code
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix("pub ").unwrap_or(l);
            let m = l.strip_prefix("mod ")?.trim_end_matches(';').trim();
            Some(m.to_owned())
        })
        .collect();
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < code.len() {
        let boundary = i == 0
            || !(bytes[i - 1].is_ascii_alphanumeric() || matches!(bytes[i - 1], b'_' | b':'));
        let rest = &code[i..];
        if boundary {
            if let Some(r) = rest.strip_prefix("crate::") {
                expand(r, Vec::new(), &mut out);
            } else if rest.starts_with("super::") {
                let mut base = here.clone();
                let mut r = rest;
                while let Some(next) = r.strip_prefix("super::") {
                    base.pop();
                    r = next;
                }
                expand(r, base, &mut out);
            } else if let Some(r) = rest.strip_prefix("use ") {
                let n = ident_len(r);
                if children.contains(&r[..n]) {
                    expand(r, here.clone(), &mut out);
                }
            }
        }
        i += rest.chars().next().map_or(1, char::len_utf8);
    }
    out
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// File -> files it imports.
fn file_graph() -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let mut all = Vec::new();
    files(&src(), &mut all);
    // This file names modules in its strings and is itself a test.
    all.retain(|f| !f.ends_with("layering.rs"));
    all.into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            let deps = imports(&f, &text)
                .iter()
                .filter_map(|p| resolve(p))
                .filter(|d| *d != f)
                .collect();
            (f, deps)
        })
        .collect()
}

fn top(file: &Path) -> String {
    module_of(file)
        .first()
        .cloned()
        .unwrap_or_else(|| "main".to_owned())
}

fn short(p: &Path) -> String {
    p.strip_prefix(src()).unwrap_or(p).display().to_string()
}

/// A cycle through the graph, if there is one.
fn cycle<N: Ord + Clone>(g: &BTreeMap<N, BTreeSet<N>>) -> Option<Vec<N>> {
    fn visit<N: Ord + Clone>(
        n: &N,
        g: &BTreeMap<N, BTreeSet<N>>,
        done: &mut BTreeSet<N>,
        stack: &mut Vec<N>,
    ) -> Option<Vec<N>> {
        if let Some(at) = stack.iter().position(|s| s == n) {
            let mut c = stack[at..].to_vec();
            c.push(n.clone());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.clone());
        for d in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(d, g, done, stack) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.clone());
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|n| visit(n, g, &mut done, &mut Vec::new()))
}

#[test]
fn no_file_imports_itself_through_others() {
    let g = file_graph();
    assert!(
        g.len() > 20,
        "read the gateway's sources ({} files)",
        g.len()
    );
    if let Some(c) = cycle(&g) {
        let c: Vec<String> = c.iter().map(|p| short(p)).collect();
        panic!("import cycle: {}", c.join(" -> "));
    }
}

/// Imports that go sideways or up the layers, and files in no layer.
fn against_layers(g: &BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Vec<String> {
    let rank: BTreeMap<&str, usize> = LAYERS
        .iter()
        .enumerate()
        .flat_map(|(i, l)| l.iter().map(move |m| (*m, i)))
        .collect();
    let mut wrong = Vec::new();
    for (f, deps) in g {
        let from = top(f);
        let Some(&r) = rank.get(from.as_str()) else {
            wrong.push(format!("{} is in no layer of LAYERS", short(f)));
            continue;
        };
        for d in deps {
            let to = top(d);
            if to == from {
                continue;
            }
            match rank.get(to.as_str()) {
                Some(&rd) if rd < r => {}
                _ => wrong.push(format!("{} imports {}", short(f), short(d))),
            }
        }
    }
    wrong
}

#[test]
fn modules_import_only_from_lower_layers() {
    let wrong = against_layers(&file_graph());
    assert!(
        wrong.is_empty(),
        "imports against the layers (ARCHITECTURE.md):\n{}",
        wrong.join("\n")
    );
}

#[test]
fn sideways_and_upward_imports_are_caught() {
    let f = |p: &str| src().join(p);
    let mut g = BTreeMap::new();
    g.insert(
        f("control/mod.rs"),
        BTreeSet::from([f("ingest/mod.rs"), f("bus.rs")]),
    );
    g.insert(f("config.rs"), BTreeSet::from([f("alerts/rules.rs")]));
    g.insert(
        f("ingest/mod.rs"),
        BTreeSet::from([f("ingest/decode.rs"), f("schema/mod.rs")]),
    );
    g.insert(f("spare.rs"), BTreeSet::new());
    assert_eq!(
        against_layers(&g),
        [
            "config.rs imports alerts/rules.rs",
            "control/mod.rs imports ingest/mod.rs",
            "spare.rs is in no layer of LAYERS",
        ]
    );
}

fn resolved(file: &Path, text: &str) -> BTreeSet<String> {
    imports(file, text)
        .iter()
        .filter_map(|p| resolve(p))
        .map(|p| short(&p))
        .collect()
}

fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn the_reader_sees_every_kind_of_path() {
    let control = src().join("control").join("mod.rs");
    let text = "use crate::{bus::Bus, config::{Config, LeaderMode}};\n\
                pub mod decide;\nuse decide::Decide;\n\
                // crate::ingest in a comment\nfn f() { crate::metrics::x(); }\n\
                #[cfg(test)]\nmod layering;\nuse crate::http::Z;\n\
                #[cfg(test)]\nmod tests {\nuse crate::alerts::Y;\n}";
    assert_eq!(
        resolved(&control, text),
        set(&[
            "bus.rs",
            "config.rs",
            "control/decide.rs",
            "http.rs",
            "metrics.rs"
        ])
    );
    let swarm = src().join("control").join("swarm.rs");
    assert_eq!(
        resolved(&swarm, "use super::decide::X;\nuse super::super::bus;"),
        set(&["control/decide.rs", "bus.rs"])
    );
}

#[test]
fn cycles_are_found() {
    let mut g = BTreeMap::new();
    g.insert(1, BTreeSet::from([2]));
    g.insert(2, BTreeSet::from([3]));
    g.insert(3, BTreeSet::from([1]));
    assert_eq!(cycle(&g), Some(vec![1, 2, 3, 1]));
    g.insert(3, BTreeSet::new());
    assert_eq!(cycle(&g), None);
}
