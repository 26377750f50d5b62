//! The shape of src/: imports between its top-level modules point one way, down the layer
//! list below (docs/architecture.md, src/lib.rs). A module that imports one above it, or
//! one it is told never to import, fails here with the file that does it.
//!
//! Imports are read from `crate::` paths (in `use` lines and in code), as
//! ../shared/tools/modgraph.py reads them; an inline `#[cfg(test)] mod tests { … }` at the
//! end of a file is left out (tests may reach anywhere), and so is a file named tests.rs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, top first: a module may import modules of lower layers only.
const LAYERS: &[&[&str]] = &[
    &["cli", "server"],
    &["api"],
    &["layers"],
    &["delivery", "adapters"],
    &["simulation"],
    &["store"],
    &["domain"],
    &["audit"],
    &["directory", "tls"],
    &["telemetry"],
    &["config"],
    &["common"],
];

/// Within a layer, who may import whom.
const SAME_LAYER: &[(&str, &str)] = &[("cli", "server"), ("adapters", "delivery")];

/// What a module must never import, whatever the layers say (the issue's rules, written
/// out so a change of the layer list cannot quietly allow them).
const NEVER: &[(&str, &[&str])] = &[
    (
        "domain",
        &[
            "store", "api", "delivery", "adapters", "cli", "layers", "server",
        ],
    ),
    (
        "config",
        &[
            "adapters",
            "api",
            "audit",
            "cli",
            "delivery",
            "directory",
            "domain",
            "layers",
            "server",
            "simulation",
            "store",
            "telemetry",
            "tls",
        ],
    ),
    (
        "common",
        &[
            "adapters",
            "api",
            "audit",
            "cli",
            "config",
            "delivery",
            "directory",
            "domain",
            "layers",
            "server",
            "simulation",
            "store",
            "telemetry",
            "tls",
        ],
    ),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (src/x.rs and src/x/… are `x`).
fn module_of(file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src()).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib" && name != "main").then(|| name.to_string())
}

/// Every `crate::<module>` a text names, with a `use crate::{a, b::c}` group counted too.
fn imported(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        let boundary_ok = rest[..i]
            .chars()
            .last()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        if boundary_ok {
            if let Some(group) = after.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    let name: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        out.insert(name);
                    }
                }
            } else {
                let name: String = after
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                out.insert(name);
            }
        }
        rest = after;
    }
    out
}

/// Where an inline `#[cfg(test)] mod name {` starts (not `#[cfg(test)] mod name;`).
fn inline_test_module(text: &str) -> Option<usize> {
    let marker = "#[cfg(test)]\nmod ";
    let mut from = 0;
    while let Some(i) = text[from..].find(marker) {
        let start = from + i;
        let after = &text[start + marker.len()..];
        let name_len = after
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .count();
        if after[name_len..].trim_start().starts_with('{') {
            return Some(start);
        }
        from = start + marker.len();
    }
    None
}

/// Module → the modules it imports (test code left out), with one file per edge to blame.
fn edges() -> BTreeMap<String, BTreeMap<String, PathBuf>> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(f)).collect();
    let mut edges: BTreeMap<String, BTreeMap<String, PathBuf>> = BTreeMap::new();
    for file in &files {
        let Some(from) = module_of(file) else {
            continue;
        };
        if file.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let mut text = std::fs::read_to_string(file).expect("a source file");
        if let Some(cut) = inline_test_module(&text) {
            text.truncate(cut);
        }
        for to in imported(&text) {
            if to != from && modules.contains(&to) {
                edges
                    .entry(from.clone())
                    .or_default()
                    .entry(to)
                    .or_insert_with(|| file.clone());
            }
        }
    }
    edges
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

#[test]
fn every_module_of_src_has_a_layer() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let unplaced: BTreeSet<String> = files
        .iter()
        .filter_map(|f| module_of(f))
        .filter(|m| layer_of(m).is_none())
        .collect();
    assert!(
        unplaced.is_empty(),
        "give these modules a place in LAYERS (and in docs/architecture.md): {unplaced:?}"
    );
}

#[test]
fn imports_point_down_the_layers() {
    let mut wrong = Vec::new();
    for (from, tos) in edges() {
        for (to, file) in tos {
            let (Some(a), Some(b)) = (layer_of(&from), layer_of(&to)) else {
                continue;
            };
            let allowed = a < b || (a == b && SAME_LAYER.contains(&(from.as_str(), to.as_str())));
            if !allowed {
                wrong.push(format!("{from} -> {to} ({})", file.display()));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that point up (or across) the layers:\n  {}",
        wrong.join("\n  ")
    );
}

#[test]
fn forbidden_imports_stay_forbidden() {
    let edges = edges();
    let mut wrong = Vec::new();
    for (from, never) in NEVER {
        for to in *never {
            if let Some(file) = edges.get(*from).and_then(|t| t.get(*to)) {
                wrong.push(format!("{from} -> {to} ({})", file.display()));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "forbidden imports:\n  {}",
        wrong.join("\n  ")
    );
}

#[test]
fn there_is_no_import_cycle() {
    // Layers that point down admit no cycle; this says it without trusting LAYERS.
    let edges = edges();
    fn reaches(
        edges: &BTreeMap<String, BTreeMap<String, PathBuf>>,
        from: &str,
        target: &str,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        edges.get(from).is_some_and(|tos| {
            tos.keys().any(|to| {
                to == target || (seen.insert(to.clone()) && reaches(edges, to, target, seen))
            })
        })
    }
    let cyclic: Vec<&String> = edges
        .keys()
        .filter(|m| reaches(&edges, m, m, &mut BTreeSet::new()))
        .collect();
    assert!(cyclic.is_empty(), "modules in an import cycle: {cyclic:?}");
}

#[test]
fn the_reader_finds_grouped_and_inline_imports() {
    let found = imported(
        "use crate::{store::Store, audit};\nfn f() { crate::tls::x(); }\n// mycrate::nope\n",
    );
    assert_eq!(
        found.into_iter().collect::<Vec<_>>(),
        ["audit", "store", "tls"]
    );
}

#[test]
fn the_codemap_describes_every_module_in_its_layer() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/architecture.md"))
            .expect("docs/architecture.md");
    let block_start = doc
        .find("```\ncli, server")
        .expect("the layer block of docs/architecture.md");
    let block =
        &doc[block_start..block_start + doc[block_start + 3..].find("```").unwrap_or(0) + 3];
    let mut missing = Vec::new();
    for (i, layer) in LAYERS.iter().enumerate() {
        let line = block
            .lines()
            .nth(i + 1)
            .and_then(|l| l.split("  ").next())
            .unwrap_or_default();
        let named: Vec<&str> = line.split(", ").map(str::trim).collect();
        if named != *layer {
            missing.push(format!(
                "layer {i}: the doc says {named:?}, LAYERS says {layer:?}"
            ));
        }
        for m in *layer {
            if !doc.contains(&format!("**`{m}/`**")) && !doc.contains(&format!("**`{m}`**")) {
                missing.push(format!("no section for `{m}`"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/architecture.md is out of date:\n  {}",
        missing.join("\n  ")
    );
}
