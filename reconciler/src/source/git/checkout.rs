//! Checking out `spec.path` of a fetched commit, within the loader's limits.
//!
//! Only `spec.path` is written (with the symlinks met on the way to it, and what the
//! symlinks under it point at inside the repository): the rest of the tree is never read.
//! Only what the loader reads is written (YAML files, directories, symlinks; no hidden
//! entries). Every blob's size is read from its object header before the blob is, so a
//! 2 GB blob under the path is refused without being inflated, and the count and byte
//! limits stop the walk before the blobs are read. A breach writes nothing.

use std::collections::{BTreeSet, VecDeque};
use std::path::Path;

use git2::{ObjectType, Oid, Repository, Tree};

use crate::manifest::diagnostic::{Code, Diagnostic};
use crate::manifest::load::{
    LoadOptions, file_too_large, is_yaml_name, normalize_repo_path, revision_too_large, too_deep,
    too_many_files,
};

/// Git's file mode of a symlink.
const MODE_LINK: i32 = 0o120000;
/// A symlink's target is a path: longer is not one.
const MAX_LINK_BYTES: usize = 4096;
/// Symlinks followed while resolving one path (like the kernel's 40).
const MAX_HOPS: usize = 40;

/// What is written, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Item {
    Dir(String),
    File { rel: String, oid: Oid },
    Link { rel: String, target: String },
}

/// A limit breached while planning: the loader's diagnostic, not yet tied to a revision.
pub(super) type Breach = Diagnostic;

/// Plans and writes `path` of `tree` into `dir` (which must exist and be empty).
pub(super) fn write_path(
    repo: &Repository,
    tree: &Tree<'_>,
    path: &str,
    limits: &LoadOptions,
    dir: &Path,
) -> Result<(), CheckoutError> {
    let items = plan(repo, tree, path, limits)?;
    write(repo, &items, dir).map_err(CheckoutError::Io)
}

/// Why a checkout did not happen.
#[derive(Debug)]
pub(super) enum CheckoutError {
    /// Over a limit: the revision is invalid.
    Limit(Breach),
    /// Reading the object database or writing the checkout failed.
    Io(String),
}

struct Planner<'r> {
    repo: &'r Repository,
    root: Tree<'r>,
    limits: &'r LoadOptions,
    items: Vec<Item>,
    /// Paths already planned (a directory reached twice is walked once).
    planned: BTreeSet<String>,
    /// Symlink targets still to plan.
    queue: VecDeque<String>,
    files: usize,
    bytes: u64,
}

fn plan(
    repo: &Repository,
    tree: &Tree<'_>,
    path: &str,
    limits: &LoadOptions,
) -> Result<Vec<Item>, CheckoutError> {
    let Ok(rel) = normalize_repo_path(path) else {
        // The loader reports the bad path; nothing to write.
        return Ok(Vec::new());
    };
    let root = repo
        .find_tree(tree.id())
        .map_err(|e| CheckoutError::Io(e.message().to_string()))?;
    let mut p = Planner {
        repo,
        root,
        limits,
        items: Vec::new(),
        planned: BTreeSet::new(),
        queue: VecDeque::from([rel]),
        files: 0,
        bytes: 0,
    };
    while let Some(next) = p.queue.pop_front() {
        p.path(&next)?;
    }
    Ok(p.items)
}

/// What a path of the tree is, once its symlinks are followed.
enum Found<'r> {
    Tree(Tree<'r>),
    Blob(Oid),
    /// Missing, leaving the repository, or a loop: the loader reports it.
    Nothing,
}

impl<'r> Planner<'r> {
    /// Plans one path: the symlinks on the way, then what it names.
    fn path(&mut self, rel: &str) -> Result<(), CheckoutError> {
        let (canonical, found) = self.resolve(rel)?;
        if !self.planned.insert(canonical.clone()) {
            return Ok(());
        }
        match found {
            Found::Tree(t) => {
                if !canonical.is_empty() {
                    self.items.push(Item::Dir(canonical.clone()));
                }
                self.tree(&t, &canonical, 0)
            }
            Found::Blob(oid) => self.file(&canonical, oid),
            Found::Nothing => Ok(()),
        }
    }

    /// Follows `rel` through the tree from the root, planning every symlink it passes.
    fn resolve(&mut self, rel: &str) -> Result<(String, Found<'r>), CheckoutError> {
        let mut todo: Vec<String> = rel
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .rev()
            .collect();
        let mut done: Vec<String> = Vec::new();
        let mut cur = self.root.clone();
        let mut hops = 0;
        while let Some(name) = todo.pop() {
            let Some((kind, mode, id)) = cur
                .get_name(&name)
                .map(|e| (e.kind(), e.filemode(), e.id()))
            else {
                return Ok((rel.to_string(), Found::Nothing));
            };
            let here = join(&done.join("/"), &name);
            match (kind, mode) {
                (Some(ObjectType::Tree), _) => {
                    if !todo.is_empty() {
                        self.items.push(Item::Dir(here.clone()));
                    }
                    cur = self.find_tree(id)?;
                    done.push(name);
                }
                (Some(ObjectType::Blob), MODE_LINK) => {
                    let target = self.link(&here, id)?;
                    hops += 1;
                    let Some(next) = lexical(&done.join("/"), &target) else {
                        return Ok((here, Found::Nothing));
                    };
                    if hops > MAX_HOPS {
                        return Ok((here, Found::Nothing));
                    }
                    todo.extend(
                        next.split('/')
                            .filter(|s| !s.is_empty())
                            .rev()
                            .map(str::to_string),
                    );
                    done.clear();
                    cur = self.root.clone();
                }
                (Some(ObjectType::Blob), _) if todo.is_empty() => {
                    return Ok((here, Found::Blob(id)));
                }
                _ => return Ok((rel.to_string(), Found::Nothing)),
            }
        }
        Ok((done.join("/"), Found::Tree(cur)))
    }

    fn tree(&mut self, tree: &Tree<'r>, rel: &str, depth: usize) -> Result<(), CheckoutError> {
        if depth > self.limits.max_depth {
            return Err(breach(rel, too_deep(self.limits.max_depth)));
        }
        let mut entries: Vec<(Vec<u8>, Oid, Option<ObjectType>, i32)> = tree
            .iter()
            .filter(|e| !e.name_bytes().starts_with(b"."))
            .map(|e| (e.name_bytes().to_vec(), e.id(), e.kind(), e.filemode()))
            .collect();
        // The loader's order: byte order of the names.
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, oid, kind, mode) in entries {
            let child = join(rel, &String::from_utf8_lossy(&name));
            match (kind, mode) {
                (Some(ObjectType::Tree), _) => {
                    self.items.push(Item::Dir(child.clone()));
                    let sub = self.find_tree(oid)?;
                    self.tree(&sub, &child, depth + 1)?;
                }
                (Some(ObjectType::Blob), MODE_LINK) => {
                    let target = self.link(&child, oid)?;
                    // What it points at inside the repository is read by the loader too,
                    // unless it is a directory above it (a loop the loader reports).
                    if let Some(t) = lexical(rel, &target)
                        && !is_ancestor(&t, &child)
                    {
                        self.queue.push_back(t);
                    }
                }
                (Some(ObjectType::Blob), _) if is_yaml_name(&name) => self.file(&child, oid)?,
                _ => {}
            }
        }
        Ok(())
    }

    /// Plans a YAML file: its size from the object header, against every limit.
    fn file(&mut self, rel: &str, oid: Oid) -> Result<(), CheckoutError> {
        if self.files >= self.limits.max_files {
            return Err(breach(rel, too_many_files(self.limits.max_files)));
        }
        let len = self.size(oid)?;
        if len > self.limits.max_file_bytes {
            return Err(breach(rel, file_too_large(len, self.limits.max_file_bytes)));
        }
        if self.bytes.saturating_add(len) > self.limits.max_revision_bytes {
            return Err(breach(
                rel,
                revision_too_large(self.bytes, len, self.limits.max_revision_bytes),
            ));
        }
        self.files += 1;
        self.bytes += len;
        self.items.push(Item::File {
            rel: rel.to_string(),
            oid,
        });
        Ok(())
    }

    /// Plans a symlink and returns its target (its size checked before it is read).
    fn link(&mut self, rel: &str, oid: Oid) -> Result<String, CheckoutError> {
        let len = self.size(oid)?;
        if len > MAX_LINK_BYTES as u64 {
            return Err(breach(
                rel,
                format!(
                    "symlink target is {len} bytes, over the {MAX_LINK_BYTES}-byte limit of a path"
                ),
            ));
        }
        let blob = self
            .repo
            .find_blob(oid)
            .map_err(|e| CheckoutError::Io(e.message().to_string()))?;
        let target = String::from_utf8_lossy(blob.content()).into_owned();
        let item = Item::Link {
            rel: rel.to_string(),
            target: target.clone(),
        };
        if !self.items.contains(&item) {
            self.items.push(item);
        }
        Ok(target)
    }

    fn size(&self, oid: Oid) -> Result<u64, CheckoutError> {
        let odb = self
            .repo
            .odb()
            .map_err(|e| CheckoutError::Io(e.message().to_string()))?;
        let (len, _) = odb
            .read_header(oid)
            .map_err(|e| CheckoutError::Io(format!("object {oid}: {}", e.message())))?;
        Ok(len as u64)
    }

    fn find_tree(&self, oid: Oid) -> Result<Tree<'r>, CheckoutError> {
        self.repo
            .find_tree(oid)
            .map_err(|e| CheckoutError::Io(format!("tree {oid}: {}", e.message())))
    }
}

fn breach(rel: &str, message: String) -> CheckoutError {
    let shown = if rel.is_empty() { "." } else { rel };
    CheckoutError::Limit(Diagnostic::error(Code::TooLarge, shown, 0, 0, message))
}

fn join(rel: &str, name: &str) -> String {
    if rel.is_empty() {
        name.to_string()
    } else {
        format!("{rel}/{name}")
    }
}

/// `target` of a symlink in directory `dir`, as a repository path; None when it is
/// absolute or climbs out of the repository.
fn lexical(dir: &str, target: &str) -> Option<String> {
    if target.starts_with('/') {
        return None;
    }
    normalize_repo_path(&join(dir, target)).ok()
}

/// True when `dir` is `path` or a directory above it.
fn is_ancestor(dir: &str, path: &str) -> bool {
    dir.is_empty() || path == dir || path.starts_with(&format!("{dir}/"))
}

/// Writes the planned items under `dir`.
fn write(repo: &Repository, items: &[Item], dir: &Path) -> Result<(), String> {
    for item in items {
        match item {
            Item::Dir(rel) => {
                let p = dir.join(rel);
                if std::fs::symlink_metadata(&p).is_err() {
                    std::fs::create_dir_all(&p).map_err(|e| format!("{}: {e}", p.display()))?;
                }
            }
            Item::File { rel, oid } => {
                let p = dir.join(rel);
                ensure_parent(&p)?;
                let blob = repo
                    .find_blob(*oid)
                    .map_err(|e| format!("{rel}: {}", e.message()))?;
                std::fs::write(&p, blob.content()).map_err(|e| format!("{}: {e}", p.display()))?;
            }
            Item::Link { rel, target } => {
                let p = dir.join(rel);
                ensure_parent(&p)?;
                if std::fs::symlink_metadata(&p).is_err() {
                    std::os::unix::fs::symlink(target, &p)
                        .map_err(|e| format!("{}: {e}", p.display()))?;
                }
            }
        }
    }
    Ok(())
}

fn ensure_parent(p: &Path) -> Result<(), String> {
    match p.parent() {
        Some(parent) => {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))
        }
        None => Ok(()),
    }
}

/// The checkout directory of `sha` for `path` (a source may change its path).
pub(super) fn checkout_name(sha: &str, path: &str) -> String {
    let rel = normalize_repo_path(path).unwrap_or_else(|_| path.to_string());
    if rel.is_empty() {
        return sha.to_string();
    }
    use sha2::Digest;
    let h = sha2::Sha256::digest(rel.as_bytes());
    format!("{sha}-{}", hex::encode(&h[..6]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexical_targets_and_ancestors() {
        assert_eq!(
            lexical("prod", "../shared/a.yaml").as_deref(),
            Some("shared/a.yaml")
        );
        assert_eq!(lexical("prod", ".."), Some(String::new()));
        assert_eq!(lexical("prod", "../../etc"), None);
        assert_eq!(lexical("prod", "/etc/passwd"), None);
        assert!(is_ancestor("", "prod/loop"));
        assert!(is_ancestor("prod", "prod/loop"));
        assert!(!is_ancestor("pro", "prod/loop"));
        assert!(!is_ancestor("shared", "prod/loop"));
    }

    #[test]
    fn checkout_names_depend_on_the_path() {
        let sha = "0123456789012345678901234567890123456789";
        assert_eq!(checkout_name(sha, ""), sha);
        assert_eq!(checkout_name(sha, "."), sha);
        assert_ne!(checkout_name(sha, "prod"), checkout_name(sha, "staging"));
        assert_eq!(checkout_name(sha, "./prod/"), checkout_name(sha, "prod"));
    }
}
