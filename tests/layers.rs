//! The layering rule of ARCHITECTURE.md, checked on the source: a module may use only
//! modules of a lower layer (and itself). Reads `src/` as text, so it needs no build of
//! anything else and fails naming the file and the import that points up.

use std::path::Path;

/// Layers from the bottom. A module's imports must all come from earlier rows.
const LAYERS: &[&[&str]] = &[
    &["model", "quorum"],
    &["config", "pb", "lease"],
    &["store", "discovery", "telemetry", "security"],
    &["metrics"],
    &["network"],
    &["node"],
    &["backup"],
    &["cluster"],
    &["api"],
    &["server"],
    &["bench", "probe", "ctl"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|row| row.contains(&module))
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The top-level modules that `crate::` paths in `code` name: `crate::a::b` names `a`,
/// `crate::{a::b, c::{d, e}, f, D}` names `a`, `c` and `f` (capitalised items are root
/// types).
fn imported_modules(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        // In a group a bare lowercase item is a module (`crate::{quorum}`); outside one only
        // a path (`crate::a::b`) names one.
        let (items, grouped) = match rest.strip_prefix('{') {
            Some(group) => (top_level_items(group), true),
            None => (vec![rest], false),
        };
        for item in items {
            let item = item.trim_start();
            let word: String = item.chars().take_while(|c| is_ident(*c)).collect();
            let names_module = grouped || item[word.len()..].starts_with("::");
            if names_module && word.starts_with(|c: char| c.is_lowercase()) {
                found.push(word);
            }
        }
    }
    found
}

/// The comma-separated items of a brace group, up to its closing brace.
fn top_level_items(group: &str) -> Vec<&str> {
    let (mut items, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(&group[start..i]);
                return items;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&group[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&group[start..]);
    items
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
    let code = "use crate::{NodeId, model::{A, B}, store::X, quorum};\nlet x = crate::node::f();";
    assert_eq!(imported_modules(code), ["model", "store", "quorum", "node"]);
}
