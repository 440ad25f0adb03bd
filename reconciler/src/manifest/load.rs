//! Collecting the YAML files of a repository path, safely: every `*.yaml`/`*.yml` under
//! the path, recursively, in a deterministic order; symlinks that leave the repository,
//! symlink loops and a path that escapes it are refused. Every limit ([`LoadOptions`]) is
//! checked before the data it bounds is read (sizes from `stat`, counts while walking);
//! the YAML limits are checked by [`super::budget`] before a value is built.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::diagnostic::{Code, Diagnostic};

/// Limits of the loader (`validate` and `run` alike; [`LimitArgs`] are their flags).
/// A breach is an error naming the limit's flag; a revision with one applies nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    /// Largest file read, in bytes (`--max-file-bytes`, default 1 MiB).
    pub max_file_bytes: u64,
    /// Most bytes of YAML read under the path, all files together (`--max-revision-bytes`,
    /// default 8 MiB).
    pub max_revision_bytes: u64,
    /// Most YAML files read under the path (`--max-files`, default 10 000).
    pub max_files: usize,
    /// Deepest directory nesting followed (`--max-dir-depth`, default 32).
    pub max_depth: usize,
    /// Limits of one YAML document.
    pub yaml: YamlLimits,
}

/// Limits of one YAML document, checked on the event stream before a value is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct YamlLimits {
    /// Most nodes (scalars, sequences, mappings) of a document, an alias counting as the
    /// whole node it repeats, each time it is used (`--max-yaml-nodes`, default 20 000).
    /// This is the alias-expansion cap: a "billion laughs" document stops here.
    pub max_nodes: u64,
    /// Deepest nesting of sequences and mappings (`--max-yaml-depth`, default 64).
    pub max_depth: usize,
}

impl Default for YamlLimits {
    fn default() -> Self {
        YamlLimits {
            max_nodes: 20_000,
            max_depth: 64,
        }
    }
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            max_file_bytes: 1024 * 1024,
            max_revision_bytes: 8 * 1024 * 1024,
            max_files: 10_000,
            max_depth: 32,
            yaml: YamlLimits::default(),
        }
    }
}

/// The loader's limits as flags, shared by `dpdk-reconciler validate` and `run`.
#[derive(clap::Args, Clone, Debug)]
pub struct LimitArgs {
    /// Largest YAML file read, in bytes.
    #[arg(long, default_value_t = LoadOptions::default().max_file_bytes)]
    pub max_file_bytes: u64,
    /// Most bytes of YAML read under the path (a source's spec.path), all files together.
    #[arg(long, default_value_t = LoadOptions::default().max_revision_bytes)]
    pub max_revision_bytes: u64,
    /// Most YAML files read under the path.
    #[arg(long, default_value_t = LoadOptions::default().max_files)]
    pub max_files: usize,
    /// Deepest directory nesting followed under the path.
    #[arg(long, default_value_t = LoadOptions::default().max_depth)]
    pub max_dir_depth: usize,
    /// Most nodes of one YAML document, aliases counted at their expanded size each time
    /// they are used (the alias-expansion cap).
    #[arg(long, default_value_t = YamlLimits::default().max_nodes)]
    pub max_yaml_nodes: u64,
    /// Deepest nesting of sequences and mappings in one YAML document.
    #[arg(long, default_value_t = YamlLimits::default().max_depth)]
    pub max_yaml_depth: usize,
}

impl LimitArgs {
    pub fn into_options(self) -> LoadOptions {
        LoadOptions {
            max_file_bytes: self.max_file_bytes,
            max_revision_bytes: self.max_revision_bytes,
            max_files: self.max_files,
            max_depth: self.max_dir_depth,
            yaml: YamlLimits {
                max_nodes: self.max_yaml_nodes,
                max_depth: self.max_yaml_depth,
            },
        }
    }
}

/// The flag of each limit, for messages (one spelling, used by the loader, the Git
/// checkout and the YAML budget).
pub mod flags {
    pub const MAX_FILE_BYTES: &str = "--max-file-bytes";
    pub const MAX_REVISION_BYTES: &str = "--max-revision-bytes";
    pub const MAX_FILES: &str = "--max-files";
    pub const MAX_DIR_DEPTH: &str = "--max-dir-depth";
    pub const MAX_YAML_NODES: &str = "--max-yaml-nodes";
    pub const MAX_YAML_DEPTH: &str = "--max-yaml-depth";
}

/// `file is N bytes (--max-file-bytes): K more bytes, over the M-byte limit`.
pub fn file_too_large(len: u64, limit: u64) -> String {
    format!(
        "file is {len} bytes ({}): {} more bytes, over the {limit}-byte limit",
        flags::MAX_FILE_BYTES,
        len.saturating_sub(limit)
    )
}

/// The message of a breach of `--max-revision-bytes` at a file of `len` bytes.
pub fn revision_too_large(total: u64, len: u64, limit: u64) -> String {
    format!(
        "reading this {len}-byte file would bring the YAML under the path to {} bytes ({}), over the {limit}-byte limit; the rest is not read",
        total.saturating_add(len),
        flags::MAX_REVISION_BYTES
    )
}

/// The message of a breach of `--max-files`.
pub fn too_many_files(limit: usize) -> String {
    format!(
        "more than {limit} YAML files under the path ({}); the rest is not read",
        flags::MAX_FILES
    )
}

/// The message of a breach of `--max-dir-depth`.
pub fn too_deep(limit: usize) -> String {
    format!(
        "directory nesting deeper than {limit} levels ({})",
        flags::MAX_DIR_DEPTH
    )
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
        ancestors: Vec::new(),
        bytes: 0,
        stopped: false,
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
    /// Canonical directories already walked (two links to one directory walk it once).
    visited: BTreeSet<PathBuf>,
    /// Canonical directories being walked, outermost first: a symlink to one is a loop.
    ancestors: Vec<PathBuf>,
    /// Bytes of YAML read so far (`--max-revision-bytes`).
    bytes: u64,
    /// A count or size limit was reached: nothing more is read.
    stopped: bool,
}

impl Walker<'_> {
    fn dir(&mut self, abs: &Path, rel: &str, depth: usize) {
        if self.stopped {
            return;
        }
        if depth > self.opts.max_depth {
            self.diags.push(Diagnostic::error(
                Code::TooLarge,
                rel,
                0,
                0,
                too_deep(self.opts.max_depth),
            ));
            return;
        }
        if !self.visited.insert(abs.to_path_buf()) {
            return;
        }
        self.ancestors.push(abs.to_path_buf());
        self.entries(abs, rel, depth);
        self.ancestors.pop();
    }

    fn entries(&mut self, abs: &Path, rel: &str, depth: usize) {
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
            if self.stopped {
                return;
            }
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
            Err(e) if e.raw_os_error() == Some(ELOOP) => {
                self.diags.push(Diagnostic::error(
                    Code::SymlinkLoop,
                    rel,
                    0,
                    0,
                    format!(
                        "symlink to {target} is a loop (too many levels of symbolic links); refused"
                    ),
                ));
                return;
            }
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
            if self.ancestors.contains(&resolved) {
                self.diags.push(Diagnostic::error(
                    Code::SymlinkLoop,
                    rel,
                    0,
                    0,
                    format!(
                        "symlink to {target} loops back to a directory that contains it; refused"
                    ),
                ));
                return;
            }
            self.dir(&resolved, rel, depth + 1);
        } else if resolved.is_file() && is_yaml_name(name.as_bytes()) {
            self.file(&resolved, rel);
        }
    }

    fn file(&mut self, abs: &Path, rel: &str) {
        if self.stopped {
            return;
        }
        if self.files.len() >= self.opts.max_files {
            self.stop(rel, too_many_files(self.opts.max_files));
            return;
        }
        let len = std::fs::metadata(abs).map(|m| m.len()).unwrap_or(0);
        if len > self.opts.max_file_bytes {
            self.diags.push(Diagnostic::error(
                Code::TooLarge,
                rel,
                0,
                0,
                file_too_large(len, self.opts.max_file_bytes),
            ));
            return;
        }
        if self.bytes.saturating_add(len) > self.opts.max_revision_bytes {
            let msg = revision_too_large(self.bytes, len, self.opts.max_revision_bytes);
            self.stop(rel, msg);
            return;
        }
        match read_limited(abs, self.opts.max_file_bytes) {
            Ok(bytes) => {
                self.bytes += bytes.len() as u64;
                self.files.push(RawFile {
                    path: rel.to_string(),
                    bytes,
                })
            }
            Err(e) => self.diags.push(Diagnostic::error(Code::Io, rel, 0, 0, e)),
        }
    }

    /// Reports a count or size limit and stops the walk: nothing after it is read.
    fn stop(&mut self, rel: &str, message: String) {
        self.stopped = true;
        self.diags
            .push(Diagnostic::error(Code::TooLarge, rel, 0, 0, message));
    }
}

/// `ELOOP` on Linux: a symlink chain that loops (or is too long).
const ELOOP: i32 = 40;

/// Reads at most `limit` bytes (a file may grow between stat and read).
fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    f.take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|e| e.to_string())?;
    if buf.len() as u64 > limit {
        return Err(format!(
            "file grew over the {limit}-byte limit ({}) while read",
            flags::MAX_FILE_BYTES
        ));
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
