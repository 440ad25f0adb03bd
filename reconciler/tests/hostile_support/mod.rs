//! The hostile repositories of issue 12, written into a directory (a `validate` target or
//! a work tree to commit): each is one `Hostile` case with the message fragment a clear
//! error must carry. Shared by `hostile_validate.rs` and `hostile_run.rs`.
#![allow(dead_code)]

use std::path::Path;

/// The hostile cases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hostile {
    /// ~10 KB DPDKConfig: one anchor of 2,500 items referenced 1,700 times.
    AliasBomb,
    /// A 2 GiB (sparse, all zeros) YAML file under the path.
    BigBlobInside,
    /// The same outside the path: never read, the revision is fine.
    BigBlobOutside,
    /// 100,000 small YAML files under the path (100 directories of 1,000).
    ManyFiles,
    /// A DPDKConfig with a value nested 10,000 levels deep.
    DeepNesting,
    /// A directory symlink to its parent (`cycle/loop -> ..`) and two file symlinks
    /// pointing at each other.
    SymlinkLoop,
}

pub const ALL: [Hostile; 6] = [
    Hostile::AliasBomb,
    Hostile::BigBlobInside,
    Hostile::BigBlobOutside,
    Hostile::ManyFiles,
    Hostile::DeepNesting,
    Hostile::SymlinkLoop,
];

pub const GIB2: u64 = 2 * 1024 * 1024 * 1024;

impl Hostile {
    pub fn label(self) -> &'static str {
        match self {
            Hostile::AliasBomb => "alias-bomb",
            Hostile::BigBlobInside => "2gb-inside",
            Hostile::BigBlobOutside => "2gb-outside",
            Hostile::ManyFiles => "100k-files",
            Hostile::DeepNesting => "deep-10000",
            Hostile::SymlinkLoop => "symlink-loop",
        }
    }

    /// Fragments the error must contain (`path` is the spec.path prefix, e.g. `prod`);
    /// empty for the case that is not an error.
    pub fn expected(self, path: &str) -> Vec<String> {
        match self {
            Hostile::AliasBomb => vec![
                format!("{path}/bomb.yaml:"),
                "more than 20000 YAML nodes".into(),
                "--max-yaml-nodes".into(),
            ],
            Hostile::BigBlobInside => vec![format!(
                "{path}/big.yaml: file is {GIB2} bytes (--max-file-bytes)"
            )],
            Hostile::BigBlobOutside => vec![],
            Hostile::ManyFiles => {
                vec!["more than 10000 YAML files under the path (--max-files)".into()]
            }
            Hostile::DeepNesting => vec![
                format!("{path}/deep.yaml:"),
                "YAML nested deeper than 64 levels (--max-yaml-depth)".into(),
            ],
            Hostile::SymlinkLoop => vec![
                format!(
                    "{path}/cycle/loop: symlink to .. loops back to a directory that contains it"
                ),
                format!("{path}/ping.yaml: symlink to pong.yaml is a loop"),
            ],
        }
    }

    /// Writes the case into `dir`, the repository root; `path` is the spec.path.
    pub fn write(self, dir: &Path, path: &str) {
        let p = dir.join(path);
        std::fs::create_dir_all(&p).expect("mkdir");
        match self {
            Hostile::AliasBomb => std::fs::write(p.join("bomb.yaml"), alias_bomb()).expect("bomb"),
            Hostile::BigBlobInside => sparse(&p.join("big.yaml"), GIB2),
            Hostile::BigBlobOutside => {
                std::fs::create_dir_all(dir.join("assets")).expect("mkdir");
                sparse(&dir.join("assets/big.yaml"), GIB2)
            }
            Hostile::ManyFiles => {
                for d in 0..100 {
                    let sub = p.join(format!("d{d:03}"));
                    std::fs::create_dir_all(&sub).expect("mkdir");
                    for f in 0..1000 {
                        std::fs::File::create(sub.join(format!("f{f:04}.yaml"))).expect("file");
                    }
                }
            }
            Hostile::DeepNesting => {
                std::fs::write(p.join("deep.yaml"), deep(10_000)).expect("deep")
            }
            Hostile::SymlinkLoop => {
                let link = |t: &str, l: &str| {
                    let _ = std::fs::remove_file(p.join(l));
                    std::os::unix::fs::symlink(t, p.join(l)).expect("symlink")
                };
                std::fs::create_dir_all(p.join("cycle")).expect("mkdir");
                link("..", "cycle/loop");
                link("pong.yaml", "ping.yaml");
                link("ping.yaml", "pong.yaml");
            }
        }
    }
}

/// A file of `len` bytes that takes no disk space (all zeros).
fn sparse(path: &Path, len: u64) {
    let f = std::fs::File::create(path).expect("create");
    f.set_len(len).expect("set_len");
}

const HEAD: &str = "apiVersion: networking.k8s.aws/v1alpha1\nkind: DPDKConfig\n";

/// The alias bomb of the issue: 10,193 bytes; serde_yaml expands it to ~4.25 M nodes.
pub fn alias_bomb() -> String {
    format!(
        "{HEAD}metadata:\n  name: bomb\n  annotations:\n    a: &a [{}]\nspec:\n  nodeSelector:\n    ng: bomb\n  resourceMapping: [{}]\n",
        vec!["x"; 2500].join(","),
        vec!["*a"; 1700].join(",")
    )
}

/// A DPDKConfig whose `spec.nodeSelector` holds a value nested `levels` deep (flow style:
/// block style would need an indentation of 2 × `levels` per line).
pub fn deep(levels: usize) -> String {
    format!(
        "{HEAD}metadata:\n  name: deep\nspec:\n  nodeSelector:\n    ng: {}{}\n",
        "[".repeat(levels),
        "]".repeat(levels)
    )
}
