//! Collecting the YAML files of a repository path, safely: every `*.yaml`/`*.yml` under
//! the path, recursively, in a deterministic order; symlinks that leave the repository
//! and a path that escapes it are refused; files have a size limit.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::diagnostic::{Code, Diagnostic};

/// Limits of the loader.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Largest file read, in bytes (default 1 MiB). A larger file is an error.
    pub max_file_bytes: u64,
    /// Most YAML files read under the path (default 10 000).
    pub max_files: usize,
    /// Deepest directory nesting followed (default 32).
    pub max_depth: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            max_file_bytes: 1024 * 1024,
            max_files: 10_000,
            max_depth: 32,
        }
    }
}

/// One file read from the repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawFile {
    /// Path relative to the repository root, `/`-separated.
    pub path: String,
    pub bytes: Vec<u8>,
}

/// Normalizes `spec.path` lexically: `""`/`.` is the root; `..` may not climb above it;
/// absolute paths are refused. Returns the relative path without `.` segments.
pub fn normalize_repo_path(path: &str) -> Result<String, String> {
    if path.starts_with('/') {
        return Err(format!(
            "spec.path {path:?} is absolute; it must be relative to the repository root"
        ));
    }
    let mut parts: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(format!("spec.path {path:?} escapes the repository"));
                }
            }
            s => parts.push(s),
        }
    }
    Ok(parts.join("/"))
}

/// True for `*.yaml` and `*.yml` (any case).
pub fn is_yaml_name(name: &[u8]) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.ends_with(b".yaml") || lower.ends_with(b".yml")
}

/// Reads every YAML file under `path` of the repository at `root`.
///
/// Hidden files and directories (names starting with `.`, e.g. `.git`, `.github`) are
/// skipped. Entries are visited in byte order of their names, depth first, so the result
/// is the same on every machine. Problems are returned as diagnostics, never panics.
pub fn collect_files(
    root: &Path,
    path: &str,
    opts: &LoadOptions,
) -> (Vec<RawFile>, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let mut files = Vec::new();
    let shown_path = if path.is_empty() { "." } else { path };
    let rel = match normalize_repo_path(path) {
        Ok(r) => r,
        Err(msg) => {
            diags.push(Diagnostic::error(Code::PathEscapes, shown_path, 0, 0, msg));
            return (files, diags);
        }
    };
    let canon_root = match std::fs::canonicalize(root) {
        Ok(r) => r,
        Err(e) => {
            diags.push(Diagnostic::error(
                Code::Io,
                ".",
                0,
                0,
                format!("repository root {}: {e}", root.display()),
            ));
            return (files, diags);
        }
    };
    let start = if rel.is_empty() {
        canon_root.clone()
    } else {
        canon_root.join(&rel)
    };
    // The path itself may be (or pass through) a symlink: resolve and check it.
    let resolved = match std::fs::canonicalize(&start) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            diags.push(Diagnostic::error(
                Code::PathEscapes,
                shown_path,
                0,
                0,
                format!("spec.path {shown_path:?} does not exist in the repository"),
            ));
            return (files, diags);
        }
        Err(e) => {
            diags.push(Diagnostic::error(Code::Io, shown_path, 0, 0, e.to_string()));
            return (files, diags);
        }
    };
    if !resolved.starts_with(&canon_root) {
        diags.push(Diagnostic::error(
            Code::PathEscapes,
            shown_path,
            0,
            0,
            format!(
                "spec.path {shown_path:?} resolves to {} outside the repository",
                resolved.display()
            ),
        ));
        return (files, diags);
    }
    let mut walker = Walker {
        root: &canon_root,
        opts,
        files: &mut files,
        diags: &mut diags,
        visited: BTreeSet::new(),
        limit_reported: false,
    };
    if resolved.is_dir() {
        walker.dir(&resolved, &rel, 0);
    } else {
        // spec.path may name a single file.
        walker.file(&resolved, &rel);
    }
    (files, diags)
}

struct Walker<'a> {
    root: &'a Path,
    opts: &'a LoadOptions,
    files: &'a mut Vec<RawFile>,
    diags: &'a mut Vec<Diagnostic>,
    /// Canonical directories already walked (a symlink cycle inside the repo ends here).
    visited: BTreeSet<PathBuf>,
    limit_reported: bool,
}

impl Walker<'_> {
    fn dir(&mut self, abs: &Path, rel: &str, depth: usize) {
        if depth > self.opts.max_depth {
            self.diags.push(Diagnostic::error(
                Code::TooLarge,
                rel,
                0,
                0,
                format!(
                    "directory nesting deeper than {} levels",
                    self.opts.max_depth
                ),
            ));
            return;
        }
        if !self.visited.insert(abs.to_path_buf()) {
            return;
        }
        let entries = match std::fs::read_dir(abs) {
            Ok(e) => e,
            Err(e) => {
                self.diags.push(Diagnostic::error(
                    Code::Io,
                    display(rel),
                    0,
                    0,
                    e.to_string(),
                ));
                return;
            }
        };
        let mut names: Vec<OsString> = entries
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            if name.as_bytes().starts_with(b".") {
                continue;
            }
            let child_abs = abs.join(&name);
            let child_rel = join_rel(rel, &name.to_string_lossy());
            let Ok(meta) = std::fs::symlink_metadata(&child_abs) else {
                continue;
            };
            if meta.file_type().is_symlink() {
                self.symlink(&child_abs, &child_rel, &name, depth);
            } else if meta.is_dir() {
                self.dir(&child_abs, &child_rel, depth + 1);
            } else if meta.is_file() && is_yaml_name(name.as_bytes()) {
                self.file(&child_abs, &child_rel);
            }
        }
    }

    fn symlink(&mut self, abs: &Path, rel: &str, name: &OsString, depth: usize) {
        let target = std::fs::read_link(abs)
            .map(|t| t.display().to_string())
            .unwrap_or_default();
        let resolved = match std::fs::canonicalize(abs) {
            Ok(r) => r,
            Err(_) => {
                // A dangling link: where would it have pointed? Lexically outside is the
                // more important message.
                let outside = lexically_outside(self.root, abs, Path::new(&target));
                let (code, msg) = if outside {
                    (
                        Code::SymlinkEscapes,
                        format!("symlink to {target} leaves the repository; refused"),
                    )
                } else {
                    (
                        Code::SymlinkEscapes,
                        format!("symlink to {target} is broken"),
                    )
                };
                self.diags.push(Diagnostic::error(code, rel, 0, 0, msg));
                return;
            }
        };
        if !resolved.starts_with(self.root) {
            self.diags.push(Diagnostic::error(
                Code::SymlinkEscapes,
                rel,
                0,
                0,
                format!("symlink to {target} leaves the repository; refused"),
            ));
            return;
        }
        if resolved.is_dir() {
            self.dir(&resolved, rel, depth + 1);
        } else if resolved.is_file() && is_yaml_name(name.as_bytes()) {
            self.file(&resolved, rel);
        }
    }

    fn file(&mut self, abs: &Path, rel: &str) {
        if self.files.len() >= self.opts.max_files {
            if !self.limit_reported {
                self.limit_reported = true;
                self.diags.push(Diagnostic::error(
                    Code::TooLarge,
                    rel,
                    0,
                    0,
                    format!(
                        "more than {} YAML files under the path; the rest is not read",
                        self.opts.max_files
                    ),
                ));
            }
            return;
        }
        let len = std::fs::metadata(abs).map(|m| m.len()).unwrap_or(0);
        if len > self.opts.max_file_bytes {
            self.diags.push(Diagnostic::error(
                Code::TooLarge,
                rel,
                0,
                0,
                format!(
                    "file is {len} bytes, over the {}-byte limit",
                    self.opts.max_file_bytes
                ),
            ));
            return;
        }
        match read_limited(abs, self.opts.max_file_bytes) {
            Ok(bytes) => self.files.push(RawFile {
                path: rel.to_string(),
                bytes,
            }),
            Err(e) => self.diags.push(Diagnostic::error(Code::Io, rel, 0, 0, e)),
        }
    }
}

/// Reads at most `limit` bytes (a file may grow between stat and read).
fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    f.take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|e| e.to_string())?;
    if buf.len() as u64 > limit {
        return Err(format!("file is over the {limit}-byte limit"));
    }
    Ok(buf)
}

fn join_rel(rel: &str, name: &str) -> String {
    if rel.is_empty() {
        name.to_string()
    } else {
        format!("{rel}/{name}")
    }
}

fn display(rel: &str) -> &str {
    if rel.is_empty() { "." } else { rel }
}

/// For a dangling link: does `target` (relative to the link's directory, or absolute)
/// point outside `root`, judged lexically?
fn lexically_outside(root: &Path, link: &Path, target: &Path) -> bool {
    let base = if target.is_absolute() {
        PathBuf::new()
    } else {
        link.parent().map(Path::to_path_buf).unwrap_or_default()
    };
    let mut out = PathBuf::new();
    for c in base.join(target).components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    !out.starts_with(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_paths_are_normalized_and_escapes_refused() {
        assert_eq!(
            normalize_repo_path("./clusters//prod/").as_deref(),
            Ok("clusters/prod")
        );
        assert_eq!(normalize_repo_path(".").as_deref(), Ok(""));
        assert_eq!(normalize_repo_path("a/../b").as_deref(), Ok("b"));
        assert!(normalize_repo_path("../../etc").is_err());
        assert!(normalize_repo_path("a/../../etc").is_err());
        assert!(normalize_repo_path("/etc").is_err());
    }

    #[test]
    fn yaml_names() {
        assert!(is_yaml_name(b"a.yaml"));
        assert!(is_yaml_name(b"a.YML"));
        assert!(!is_yaml_name(b"a.json"));
        assert!(!is_yaml_name(b"yaml"));
    }
}
