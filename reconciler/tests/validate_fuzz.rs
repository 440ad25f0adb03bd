//! Property tests: the position index, the loader and the validator never panic, on
//! arbitrary bytes, on YAML-like token soup and on mutations of a real config; and on
//! generated block YAML the index finds every node exactly where it was written.

use dpdk_bridge::json_pointer::pointer_of;
use dpdk_reconciler::manifest::Manifests;
use dpdk_reconciler::manifest::load::{LoadOptions, RawFile};
use dpdk_reconciler::manifest::position::{PositionIndex, index_file};
use proptest::prelude::*;

use dpdk_testenv::fixtures::SEED_DPDKCONFIG as SEED;

fn exercise(bytes: &[u8]) {
    let m = Manifests::from_files(vec![RawFile {
        path: "f.yaml".into(),
        bytes: bytes.to_vec(),
    }]);
    // Every diagnostic renders and names the file.
    for d in &m.diagnostics {
        assert!(d.to_string().starts_with("f.yaml"));
    }
    let text = String::from_utf8_lossy(bytes);
    for doc in index_file(&text) {
        for n in doc.index.nodes() {
            assert!(
                n.value.start <= n.value.end
                    || n.value.end.line > n.value.start.line
                    || n.value.start.line == n.value.end.line
            );
            let _ = doc.index.locate(&n.pointer);
        }
    }
    let _ = PositionIndex::build(&text, 1);
}

fn yamlish() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("- ".to_string()),
        Just(": ".to_string()),
        Just(":".to_string()),
        Just("\n".to_string()),
        Just("\n  ".to_string()),
        Just("\n    ".to_string()),
        Just("  ".to_string()),
        Just("\"".to_string()),
        Just("'".to_string()),
        Just("# c".to_string()),
        Just("|".to_string()),
        Just(">-".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just("{".to_string()),
        Just("}".to_string()),
        Just(",".to_string()),
        Just("---".to_string()),
        Just("...".to_string()),
        Just("&a ".to_string()),
        Just("*a".to_string()),
        Just("!!str ".to_string()),
        Just("? ".to_string()),
        Just("\\".to_string()),
        Just("\t".to_string()),
        Just("é".to_string()),
        Just("kind: DPDKConfig\n".to_string()),
        Just("apiVersion: networking.k8s.aws/v1alpha1\n".to_string()),
        Just("spec:\n  resourceMapping:\n  - deviceIndex: ".to_string()),
        "[a-z]{1,6}",
        "[0-9]{1,3}",
    ];
    prop::collection::vec(token, 0..60).prop_map(|v| v.concat())
}

/// A JSON-like tree rendered as block YAML, with the text each leaf was written as.
#[derive(Clone, Debug)]
enum Tree {
    Leaf(String),
    Map(Vec<(String, Tree)>),
    List(Vec<Tree>),
}

fn tree() -> impl Strategy<Value = Tree> {
    let leaf = prop_oneof![
        "[a-z][a-z0-9]{0,8}".prop_map(Tree::Leaf),
        "[0-9]{1,4}".prop_map(Tree::Leaf),
        "[a-z ]{0,6}".prop_map(|s| Tree::Leaf(format!("\"{s}\""))),
        "[a-z]{0,6}".prop_map(|s| Tree::Leaf(format!("'{s}'"))),
        Just(Tree::Leaf("[1, 2]".to_string())),
    ];
    leaf.prop_recursive(4, 40, 5, |inner| {
        prop_oneof![
            prop::collection::btree_map("[a-z][a-z./]{0,6}", inner.clone(), 1..5)
                .prop_map(|m| Tree::Map(m.into_iter().collect())),
            prop::collection::vec(inner, 1..4).prop_map(Tree::List),
        ]
    })
}

/// Renders `t` as the value of an entry whose key/dash is at `indent`; records for every
/// leaf its pointer, line (1-based), column and text.
fn render(
    t: &Tree,
    indent: usize,
    ptr: &[String],
    out: &mut Vec<String>,
    leaves: &mut Vec<(String, usize, usize, String)>,
    inline: bool,
) {
    match t {
        Tree::Leaf(s) => {
            // `inline`: written right after "key: " or "- " on the current last line.
            let last = out.last_mut().expect("a line to continue");
            let col = last.chars().count() + 1;
            last.push_str(s);
            if inline {
                last.push_str("  # trailing");
            }
            leaves.push((pointer_of(ptr), out.len(), col, s.clone()));
        }
        Tree::Map(entries) => {
            for (i, (k, v)) in entries.iter().enumerate() {
                let mut p = ptr.to_vec();
                p.push(k.clone());
                let key = if k.contains('/') {
                    format!("\"{k}\"")
                } else {
                    k.clone()
                };
                if i == 0 && inline {
                    out.last_mut().expect("line").push_str(&format!("{key}:"));
                } else {
                    out.push(format!("{}{key}:", " ".repeat(indent)));
                }
                match v {
                    Tree::Leaf(_) => {
                        out.last_mut().expect("line").push(' ');
                        render(v, indent, &p, out, leaves, true);
                    }
                    Tree::Map(_) => {
                        out.push(format!("{}# comment inside", " ".repeat(indent + 2)));
                        out.push(" ".repeat(indent + 2));
                        render(v, indent + 2, &p, out, leaves, true);
                    }
                    // Kubernetes style: the list at the same indent as its key.
                    Tree::List(_) => render(v, indent, &p, out, leaves, false),
                }
            }
        }
        Tree::List(items) => {
            for (i, v) in items.iter().enumerate() {
                let mut p = ptr.to_vec();
                p.push(i.to_string());
                out.push(format!("{}- ", " ".repeat(indent)));
                match v {
                    Tree::List(_) => {
                        out.last_mut().expect("line").pop();
                        render(v, indent + 2, &p, out, leaves, false)
                    }
                    _ => render(v, indent + 2, &p, out, leaves, true),
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        exercise(&bytes);
    }

    #[test]
    fn yaml_token_soup_never_panics(text in yamlish()) {
        exercise(text.as_bytes());
    }

    #[test]
    fn mutated_configs_never_panic(edits in prop::collection::vec((0usize..400, prop_oneof![Just(""), Just("\n"), Just(" "), Just("- "), Just(":"), Just("\""), Just("#"), Just("0"), Just("---\n")]), 1..6)) {
        let mut text = SEED.to_string();
        for (at, ins) in edits {
            let mut i = at % (text.len() + 1);
            while !text.is_char_boundary(i) { i -= 1; }
            if ins.is_empty() && i < text.len() {
                text.remove(i);
            } else {
                text.insert_str(i, ins);
            }
        }
        exercise(text.as_bytes());
    }

    #[test]
    fn loader_on_a_tree_of_arbitrary_files_never_panics(files in prop::collection::vec(("[a-c]{1,2}(/[a-c]{1,2}){0,2}\\.ya?ml", prop::collection::vec(any::<u8>(), 0..200)), 0..6)) {
        let dir = tempfile::tempdir().expect("tempdir");
        for (path, bytes) in &files {
            let p = dir.path().join(path);
            if let Some(parent) = p.parent() {
                // A name may already be a file; that's fine, the write just fails.
                let _ = std::fs::create_dir_all(parent);
            }
            let _ = std::fs::write(&p, bytes);
        }
        let m = Manifests::load(dir.path(), ".", &LoadOptions::default());
        let _ = m.is_valid();
    }

    #[test]
    fn generated_block_yaml_is_indexed_where_it_was_written(t in tree()) {
        let Tree::Map(_) = &t else { return Ok(()) };
        let mut out = vec![String::new()];
        out[0].push_str("# header comment");
        out.push(String::new());
        let mut leaves = Vec::new();
        render(&t, 0, &[], &mut out, &mut leaves, true);
        let text = out.join("\n") + "\n";
        let idx = PositionIndex::build(&text, 1);
        for (ptr, line, col, written) in leaves {
            let n = idx.get(&ptr);
            prop_assert!(n.is_some(), "{ptr} not indexed in\n{text}");
            let n = n.expect("checked");
            prop_assert_eq!((n.value.start.line, n.value.start.col), (line, col), "{} in\n{}", ptr, text);
            let l = text.lines().nth(line - 1).expect("line");
            let got = &l[n.value.start.byte..n.value.end.byte];
            prop_assert_eq!(got, written.as_str(), "{} in\n{}", ptr, text);
        }
    }
}
