//! The layering rule of ARCHITECTURE.md, checked on the source: a module may use only
//! modules of a lower layer (and itself). Reads `src/` as text, so it needs no build of
//! anything else and fails naming the file and the import that points up.

use std::path::Path;

/// Layers from the bottom. A module's imports must all come from earlier rows.
const LAYERS: &[&[&str]] = &[
    &["model", "quorum"],
    &["config", "pb", "lease"],
    &["store", "discovery", "telemetry"],
    &["metrics"],
    &["network"],
    &["node"],
    &["cluster"],
    &["api"],
    &["server"],
    &["bench", "probe"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|row| row.contains(&module))
}

/// The top-level modules that `crate::` paths in `code` name.
fn imported_modules(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a::b, c, D}`: the first segment of each item (nested braces included).
            let mut depth = 1;
            let end = group
                .char_indices()
                .find(|&(_, c)| {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map_or(group.len(), |(i, _)| i);
            let mut item_start = true;
            let mut depth = 0;
            let mut word = String::new();
            for c in group[..end].chars().chain(std::iter::once(',')) {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if c.is_alphanumeric() || c == '_' => {
                        if item_start {
                            word.push(c);
                        }
                        continue;
                    }
                    _ => {}
                }
                if !word.is_empty() {
                    found.push(std::mem::take(&mut word));
                    item_start = c == ',' && depth == 0;
                }
            }
        } else {
            let word: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if rest[word.len()..].starts_with("::") {
                found.push(word);
            }
        }
    }
    found.retain(|w| w.chars().next().is_some_and(|c| c.is_lowercase()));
    found
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_import_runs_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut violations = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).expect("under src/");
        let first = rel
            .components()
            .next()
            .expect("a path")
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_owned();
        if module == "lib" || module == "main" {
            continue;
        }
        let own = layer_of(&module).unwrap_or_else(|| panic!("{module} has no layer in LAYERS"));
        let text = std::fs::read_to_string(file).expect("a readable source file");
        // Doc and ordinary comments may point anywhere.
        let code: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for used in imported_modules(&code) {
            if used == module {
                continue;
            }
            match layer_of(&used) {
                Some(l) if l < own => {}
                Some(_) => violations.push(format!("{}: {module} uses crate::{used}", rel.display())),
                None => {}
            }
        }
    }
    assert!(
        violations.is_empty(),
        "imports that do not run down the layers:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_parser_sees_grouped_and_plain_paths() {
    let code = "use crate::{NodeId, model::{A, B}, store::X};\nlet x = crate::node::f();";
    assert_eq!(imported_modules(code), ["model", "store", "node"]);
}
