//! The host's layering, checked: every module may use only the modules of
//! the layers below it, so no two modules depend on each other.
//!
//! The check reads the source (every `crate::NAME` and `super::NAME` path
//! outside comments), which is what `cargo test` can do without a tool of
//! its own; `cargo test -p outreach --lib layers` runs it alone. A new
//! module must be placed in [`LAYERS`] before the check passes.

use std::collections::BTreeMap;
use std::path::Path;

/// The host's modules from the bottom up; a module may use the modules of
/// earlier layers only. Within a layer, modules do not use each other.
const LAYERS: &[&[&str]] = &[
    // Foundations: secrets and errors, then what builds on them (the
    // config reads OAuth client secrets from the environment).
    &["secret", "metrics", "error"],
    &["config", "contract"],
    // State on disk.
    &["store", "public_media"],
    &["outbox"],
    // The broker, then the plugin host on top of it.
    &["http"],
    &["plugin"],
    // Exchanges that survive a kill, and the shared parts.
    &["escrow"],
    &["services"],
    // Flows, refresh, then what commands do.
    &["auth"],
    &["schedule"],
    &["accounts", "backup", "migrate"],
    &["publish"],
    // The composition root, then the front ends.
    &["app"],
    &["daemon"],
    // The MCP server asks a running daemon, as the CLI's reads do.
    &["mcp"],
    &["cli"],
];

/// The stages of `publish`, in pipeline order; a stage may use the stages
/// before it (results types live in `settle`, which the earlier stages
/// report into).
const PUBLISH_STAGES: &[&str] = &["parse", "settle", "plan", "journal", "deliver"];

/// `(file, line number, module used)` for every use of a crate module.
fn uses(src: &Path) -> Vec<(String, usize, String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).expect("under src");
            let text = std::fs::read_to_string(&path).expect("read file");
            for (n, line) in text.lines().enumerate() {
                let code = match line.find("//") {
                    Some(i) => &line[..i],
                    None => line,
                };
                for (kind, pattern) in [("crate", "crate::"), ("super", "super::")] {
                    let mut rest = code;
                    while let Some(i) = rest.find(pattern) {
                        let after = &rest[i + pattern.len()..];
                        let name: String = after
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '{')
                            .collect();
                        out.push((rel.display().to_string(), n + 1, kind.to_string(), name));
                        rest = after;
                    }
                }
            }
        }
    }
    out
}

/// The top-level module a file under `src/` belongs to.
fn module_of(file: &str) -> &str {
    let first = file.split('/').next().unwrap_or(file);
    first.strip_suffix(".rs").unwrap_or(first)
}

#[test]
fn no_module_uses_one_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let rank: BTreeMap<&str, usize> = LAYERS
        .iter()
        .enumerate()
        .flat_map(|(i, layer)| layer.iter().map(move |m| (*m, i)))
        .collect();
    // Every module the crate declares has a place.
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
    for line in lib.lines() {
        if let Some(name) = line.strip_prefix("pub mod ") {
            let name = name.trim_end_matches(';');
            assert!(
                rank.contains_key(name),
                "module `{name}` has no layer: add it to LAYERS in host/src/layers.rs"
            );
        }
    }
    let mut wrong = Vec::new();
    for (file, line, kind, name) in uses(&src) {
        let from = module_of(&file);
        if matches!(from, "lib" | "main" | "layers") {
            continue;
        }
        let in_stage = file.starts_with("publish/") && file != "publish/mod.rs";
        if name.starts_with('{') && (kind == "crate" || in_stage) {
            wrong.push(format!(
                "{file}:{line}: `{kind}::{{…}}`: name one module per path so the layering can be checked"
            ));
            continue;
        }
        if kind == "super" {
            // Inside `publish`, the stages go in pipeline order.
            let stage = |f: &str| {
                let f = f.strip_prefix("publish/")?.strip_suffix(".rs")?;
                PUBLISH_STAGES.iter().position(|s| *s == f)
            };
            if let (Some(a), Some(b)) =
                (stage(&file), PUBLISH_STAGES.iter().position(|s| *s == name))
                && b >= a
            {
                wrong.push(format!(
                    "{file}:{line}: stage `{}` uses `{name}`, a later stage of the pipeline",
                    PUBLISH_STAGES[a]
                ));
            }
            continue;
        }
        if name == from {
            continue;
        }
        let (Some(a), Some(b)) = (rank.get(from), rank.get(name.as_str())) else {
            continue;
        };
        if b >= a {
            wrong.push(format!(
                "{file}:{line}: `{from}` (layer {a}) uses `{name}` (layer {b}), which is not below it"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "modules that use a module not below them:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_check_sees_an_upward_use() {
    // The scanner itself: a path into a higher layer is found, one in a
    // comment is not.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("store.rs"),
        "// crate::cli::run in a comment\nuse crate::config::Loaded;\nfn f() { crate::cli::run(); }\n",
    )
    .expect("write");
    let found: Vec<String> = uses(dir.path()).into_iter().map(|u| u.3).collect();
    assert_eq!(found, vec!["config".to_string(), "cli".to_string()]);
}
