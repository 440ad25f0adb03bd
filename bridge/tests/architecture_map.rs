//! `docs/architecture.md`'s "Where things live" map matches the tree: every path it names
//! exists, and every source file of every crate is named (directly, or through a folder
//! the map lists).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The map's table rows: (first column, second column).
fn map_rows() -> Vec<(String, String)> {
    let doc = std::fs::read_to_string(root().join("docs/architecture.md")).expect("read doc");
    let start = doc.find("## Where things live").expect("the map section");
    let section = &doc[start + 3..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").collect();
            (cells.len() == 2).then(|| (cells[0].trim().to_string(), cells[1].trim().to_string()))
        })
        .collect()
}

/// The backticked words of a cell.
fn ticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

fn is_path(word: &str) -> bool {
    word.ends_with('/')
        || [".rs", ".yaml", ".yml", ".sh"]
            .iter()
            .any(|e| word.ends_with(e))
}

/// The paths the map names, relative to the workspace: the first column's, and the second
/// column's relative to a folder in the first (or to a sub-folder named in the same cell).
/// A folder in the first column is only a heading: its files must each be named.
fn named_paths() -> (Vec<String>, Vec<String>) {
    let (mut headings, mut out) = (Vec::new(), Vec::new());
    for (first, second) in map_rows() {
        let heads: Vec<String> = ticked(&first).into_iter().filter(|w| is_path(w)).collect();
        for h in &heads {
            if h.ends_with('/') {
                headings.push(h.clone());
            } else {
                out.push(h.clone());
            }
        }
        for dir in heads.iter().filter(|h| h.ends_with('/')) {
            let words: Vec<String> = ticked(&second).into_iter().filter(|w| is_path(w)).collect();
            let subdirs: Vec<&String> = words.iter().filter(|w| w.ends_with('/')).collect();
            for w in &words {
                let direct = format!("{dir}{w}");
                if root().join(&direct).exists() {
                    out.push(direct);
                    continue;
                }
                let nested = subdirs
                    .iter()
                    .map(|s| format!("{dir}{s}{w}"))
                    .find(|p| root().join(p).exists());
                out.push(nested.unwrap_or(direct));
            }
        }
    }
    (headings, out)
}

fn source_files(dir: &Path, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(root()).expect("under the root");
            out.insert(rel.to_string_lossy().into_owned());
        }
    }
}

#[test]
fn every_path_the_map_names_exists() {
    let (headings, named) = named_paths();
    let missing: Vec<String> = headings
        .into_iter()
        .chain(named)
        .filter(|p| !root().join(p).exists())
        .collect();
    assert!(
        missing.is_empty(),
        "docs/architecture.md names missing paths: {missing:?}"
    );
}

#[test]
fn every_source_file_is_on_the_map() {
    let (_, named) = named_paths();
    let mut files = BTreeSet::new();
    for krate in ["bridge", "reconciler", "node-agent", "testenv"] {
        source_files(&root().join(krate).join("src"), &mut files);
    }
    let missing: Vec<&String> = files
        .iter()
        .filter(|f| {
            !named
                .iter()
                .any(|n| *f == n || (n.ends_with('/') && f.starts_with(n.as_str())))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "not on docs/architecture.md's map: {missing:?}"
    );
}
