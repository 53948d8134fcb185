//! The direction of dependencies between tailgate's modules: the
//! pure core — `clock`, `watermark`, `metrics` (names only), `otlp`,
//! `rules`, `buffer`, `pipeline` — never names the Kafka edge, the app or
//! an I/O crate; `kafka` implements the core's ports and names only the
//! core and the settings; nothing depends on a module above it, so there is
//! no cycle.
//!
//! The check reads the sources: every `crate::…` and `super::…` path outside
//! `#[cfg(test)]` code is a dependency of the file's top-level module, and
//! every external crate path (`rdkafka::…`) a dependency on that crate. It
//! prints the module graph it found (`cargo test --test architecture --
//! --nocapture`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The modules, lowest first. Each may name only modules listed before it,
/// and of those only the ones given. A new top-level module must be placed
/// here (the test fails until it is).
const LAYERS: &[(&str, &[&str])] = &[
    ("clock", &[]),
    ("watermark", &[]),
    ("metrics", &[]),
    ("otlp", &[]),
    ("rules", &["otlp"]),
    ("route", &["otlp"]),
    ("buffer", &["clock", "otlp"]),
    (
        "pipeline",
        &["buffer", "clock", "metrics", "otlp", "rules", "watermark"],
    ),
    ("workload", &["otlp"]),
    (
        "config",
        &["buffer", "clock", "otlp", "pipeline", "rules", "watermark"],
    ),
    // The edge: implements the core's ports.
    ("kafka", &["config", "metrics", "otlp", "pipeline"]),
    ("reload", &["config", "metrics", "rules"]),
    (
        "replay",
        &[
            "buffer", "clock", "config", "kafka", "otlp", "pipeline", "rules",
        ],
    ),
    (
        "app",
        &[
            "buffer",
            "clock",
            "config",
            "kafka",
            "metrics",
            "otlp",
            "pipeline",
            "reload",
            "route",
            "rules",
            "watermark",
        ],
    ),
    (
        "demo",
        &["app", "config", "kafka", "metrics", "otlp", "workload"],
    ),
    (
        "cli",
        &[
            "app", "config", "demo", "kafka", "otlp", "pipeline", "replay", "rules", "workload",
        ],
    ),
];

/// The pure core: no Kafka, no HTTP, no file watching, no command line.
const CORE: &[&str] = &[
    "clock",
    "watermark",
    "metrics",
    "otlp",
    "rules",
    "buffer",
    "pipeline",
    "route",
];
const EDGE_CRATES: &[&str] = &["rdkafka", "axum", "notify", "clap", "indicatif"];

#[test]
fn the_core_never_names_the_edge_and_no_module_names_one_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = module_graph(&src);
    let mut problems = Vec::new();
    let order: BTreeMap<&str, usize> = LAYERS
        .iter()
        .enumerate()
        .map(|(i, (m, _))| (*m, i))
        .collect();
    for (module, uses) in &graph {
        let Some(&at) = order.get(module.as_str()) else {
            problems.push(format!(
                "src/{module}: a top-level module missing from LAYERS in tests/architecture.rs; place it"
            ));
            continue;
        };
        let allowed = LAYERS[at].1;
        for (dep, wheres) in uses {
            let ok = if let Some(name) = dep.strip_prefix("extern:") {
                !(CORE.contains(&module.as_str()) && EDGE_CRATES.contains(&name))
            } else {
                allowed.contains(&dep.as_str())
            };
            if !ok {
                problems.push(format!("{module} → {dep}: {}", wheres.join(", ")));
            }
        }
    }
    // The table itself is layered: each module names only modules before it.
    for (i, (module, allowed)) in LAYERS.iter().enumerate() {
        for dep in *allowed {
            let before = order.get(dep).is_some_and(|&j| j < i);
            assert!(
                before,
                "LAYERS: {module} may name {dep}, which is not listed before it"
            );
        }
    }
    eprintln!("module graph (non-test code):");
    for (module, uses) in &graph {
        let deps: Vec<&str> = uses.keys().map(String::as_str).collect();
        eprintln!("  {module} → {}", deps.join(", "));
    }
    assert!(
        problems.is_empty(),
        "dependencies against the direction (docs/architecture.md):\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn the_check_sees_paths_in_every_form() {
    let text = "use crate::buffer::X;\nuse crate::{otlp::Y, rules};\nfn f() { super::kafka::z(); rdkafka::q(); }\n\
                #[cfg(test)]\nmod tests { use crate::app::A; }\n// crate::demo in a comment\n";
    let found = paths_in(text, &["replay".to_string(), "sub".to_string()]);
    let names: BTreeSet<String> = found.into_iter().map(|(d, _)| d).collect();
    let expected: BTreeSet<String> = ["buffer", "otlp", "rules", "replay", "extern:rdkafka"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    // `super::kafka` from replay/sub.rs is replay::kafka: replay itself.
    assert_eq!(names, expected);
}

/// Top-level module → (dependency → where it is named).
type Graph = BTreeMap<String, BTreeMap<String, Vec<String>>>;

fn module_graph(src: &Path) -> Graph {
    let mut graph = Graph::new();
    let mut test_files = BTreeSet::new();
    let mut files = Vec::new();
    collect(src, &mut files);
    files.sort();
    // Files declared `#[cfg(test)] mod x;` are test code, as is everything under them.
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read source");
        for name in test_modules(&text) {
            let dir = if file.ends_with("mod.rs") || file.ends_with("lib.rs") {
                file.parent().expect("dir").to_path_buf()
            } else {
                file.with_extension("")
            };
            test_files.insert(dir.join(format!("{name}.rs")));
            test_files.insert(dir.join(&name));
        }
    }
    for file in &files {
        if test_files.iter().any(|t| file.starts_with(t)) {
            continue;
        }
        let rel = file.strip_prefix(src).expect("under src");
        let mut path: Vec<String> = rel
            .iter()
            .map(|c| c.to_string_lossy().trim_end_matches(".rs").to_string())
            .collect();
        if path.last().is_some_and(|l| l == "mod") {
            path.pop();
        }
        if path == ["lib"] || path == ["main"] {
            continue; // the crate roots: `pub mod` lines and the binary's entry
        }
        let top = path[0].clone();
        let text = std::fs::read_to_string(file).expect("read source");
        for (dep, line) in paths_in(&text, &path) {
            if dep == top {
                continue;
            }
            graph
                .entry(top.clone())
                .or_default()
                .entry(dep)
                .or_default()
                .push(format!("{}:{line}", rel.display()));
        }
        graph.entry(top).or_default();
    }
    graph
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Names of `#[cfg(test)] mod name;` declarations.
fn test_modules(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        if line == "#[cfg(test)]" {
            if let Some(next) = lines.next() {
                let decl = next
                    .trim_start_matches("pub ")
                    .trim_start_matches("pub(crate) ");
                if let Some(name) = decl.strip_prefix("mod ").and_then(|r| r.strip_suffix(';')) {
                    names.push(name.trim().to_string());
                }
            }
        }
    }
    names
}

/// The text without comments and without `#[cfg(test)]` items.
fn without_tests_and_comments(text: &str) -> String {
    let mut kept = String::new();
    for line in text.lines() {
        // A `//` that starts a comment (not inside "http://…").
        let code = match line.find("//") {
            Some(i) if !line[..i].ends_with(':') => &line[..i],
            _ => line,
        };
        kept.push_str(code);
        kept.push('\n');
    }
    let mut out = String::new();
    let mut rest = kept.as_str();
    while let Some(i) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        // The item ends at its `;` (a declaration) or its matching `}`.
        let (semi, brace) = (after.find(';'), after.find('{'));
        let end = match (semi, brace) {
            (Some(s), Some(b)) if s < b => s + 1,
            (_, Some(b)) => {
                let mut depth = 0;
                let mut end = after.len();
                for (j, c) in after[b..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = b + j + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                end
            }
            (Some(s), None) => s + 1,
            (None, None) => after.len(),
        };
        out.extend(std::iter::repeat_n(
            '\n',
            after[..end].matches('\n').count(),
        ));
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// The modules and external crates `text` (the file of module `path`) names,
/// each with its line.
fn paths_in(text: &str, path: &[String]) -> Vec<(String, usize)> {
    let code = without_tests_and_comments(text);
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    // Where `needle` starts a path: not the tail of a longer name or path.
    let starts = |needle: &str| -> Vec<usize> {
        code.match_indices(needle)
            .map(|(i, _)| i)
            .filter(|&i| {
                !code[..i]
                    .chars()
                    .last()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
            })
            .collect()
    };
    let mut found = Vec::new();
    for i in starts("crate::") {
        let after = &code[i + "crate::".len()..];
        if let Some(list) = after.strip_prefix('{') {
            for item in top_level_items(list) {
                found.push((item, line_of(i)));
            }
        } else if let Some(name) = ident(after) {
            found.push((name, line_of(i)));
        }
    }
    for i in starts("super::") {
        let mut ups = 0;
        let mut after = &code[i..];
        while let Some(r) = after.strip_prefix("super::") {
            ups += 1;
            after = r;
        }
        let top = if path.len() > ups {
            Some(path[0].clone())
        } else if let Some(list) = after.strip_prefix('{') {
            for item in top_level_items(list) {
                found.push((item, line_of(i)));
            }
            None
        } else {
            ident(after)
        };
        if let Some(top) = top {
            found.push((top, line_of(i)));
        }
    }
    for krate in EDGE_CRATES {
        for i in starts(&format!("{krate}::")) {
            found.push((format!("extern:{krate}"), line_of(i)));
        }
    }
    found
}

fn ident(s: &str) -> Option<String> {
    let name: String = s
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
}

/// The first path segment of each item of a `{a::b, c, d::{e, f}}` list.
fn top_level_items(list: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut depth = 0;
    let mut expecting = true;
    for (i, c) in list.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => expecting = true,
            c if expecting && depth == 0 && !c.is_whitespace() => {
                if let Some(name) = ident(&list[i..]) {
                    items.push(name);
                }
                expecting = false;
            }
            _ => {}
        }
    }
    items
}
