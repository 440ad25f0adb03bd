//! Manifests from a config repository: the YAML position index, the loader and the
//! offline validator. All serde_yaml use of the crate lives in this module (the rest of
//! the crate sees JSON values and typed objects).
//!
//! - [`position`]: splits multi-document files and maps JSON pointers to `line:col` and
//!   value spans (used for `file:line:col` errors and by the drift engine for minimal
//!   line-level patches). Stable API.
//! - [`load`]: reads every `*.yaml`/`*.yml` under a path of a repository, deterministic
//!   order, symlinks leaving the repository refused, size and count limits.
//! - [`budget`]: a YAML document's nodes (aliases expanded) and nesting, counted before
//!   any value is built.
//! - [`validate`]: the CRD's rules offline plus the semantic ones.
//! - [`Manifests`]: the result of loading a path: files (text + indexed documents), the
//!   valid DPDKConfig objects, skipped documents of other kinds, and diagnostics.
//!
//! ```no_run
//! use dpdk_reconciler::manifest::{Manifests, load::LoadOptions};
//! let m = Manifests::load(std::path::Path::new("/repo"), "clusters/production", &LoadOptions::default());
//! for d in m.errors() {
//!     println!("{d}"); // clusters/production/a.yaml:12:18: deviceIndex must be >= 1: ...
//! }
//! for o in &m.objects {
//!     let doc = m.document(o).expect("objects point at their document");
//!     let line = doc.index.locate("/spec/resourceMapping/0/deviceIndex").line;
//!     println!("{} declared at {}:{line}", o.name, o.file);
//! }
//! ```

use std::path::Path;

use dpdk_bridge::api::DPDKConfig;

pub mod budget;
pub mod diagnostic;
pub mod load;
pub mod position;
pub mod report;
pub mod validate;

pub use diagnostic::{Code, Diagnostic, Severity};
use load::{LoadOptions, RawFile, YamlLimits};
use position::IndexedDocument;

/// One YAML file that was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestFile {
    /// Path relative to the repository root, `/`-separated.
    pub path: String,
    /// The file's text (empty when it was not valid UTF-8).
    pub text: String,
    /// Its documents, with their line ranges and position indexes.
    pub documents: Vec<IndexedDocument>,
}

/// A valid DPDKConfig declared in Git.
#[derive(Clone, Debug, PartialEq)]
pub struct ManifestObject {
    pub name: String,
    /// The file, relative to the repository root (what `dpdk.aws.k8s/origin` records).
    pub file: String,
    /// Index into [`Manifests::files`].
    pub file_index: usize,
    /// Index into that file's `documents`.
    pub document: usize,
    /// First line of the document in the file.
    pub line: usize,
    /// The object as declared (JSON), without `status` and `metadata.namespace`: what
    /// is applied, before the applier adds its labels and annotations.
    pub body: serde_json::Value,
    /// The same, typed (defaults filled in).
    pub config: DPDKConfig,
}

/// A document of another kind, skipped and reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedDocument {
    pub file: String,
    /// Index into that file's `documents`.
    pub document: usize,
    pub line: usize,
    pub api_version: String,
    pub kind: String,
    pub name: Option<String>,
    pub reason: String,
}

/// Everything loaded from one path of a repository at one revision.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Manifests {
    pub files: Vec<ManifestFile>,
    pub objects: Vec<ManifestObject>,
    pub skipped: Vec<SkippedDocument>,
    /// Errors and warnings, files in load order.
    pub diagnostics: Vec<Diagnostic>,
}

impl Manifests {
    /// Loads and validates every YAML file under `path` of the repository at `root`.
    pub fn load(root: &Path, path: &str, opts: &LoadOptions) -> Manifests {
        let (files, mut diags) = load::collect_files(root, path, opts);
        let mut m = Manifests::from_files_with(files, &opts.yaml);
        diags.append(&mut m.diagnostics);
        m.diagnostics = diags;
        m
    }

    /// Parses and validates files already read (paths relative to the repository root),
    /// with the default YAML limits.
    pub fn from_files(files: Vec<RawFile>) -> Manifests {
        Manifests::from_files_with(files, &YamlLimits::default())
    }

    /// Parses and validates files already read, each document within `limits`.
    pub fn from_files_with(files: Vec<RawFile>, limits: &YamlLimits) -> Manifests {
        let mut m = Manifests::default();
        for (i, f) in files.into_iter().enumerate() {
            let r = validate::check_file(&f.path, &f.bytes, i, limits);
            m.files.push(r.file);
            m.objects.extend(r.objects);
            m.skipped.extend(r.skipped);
            m.diagnostics.extend(r.diagnostics);
        }
        let dups = validate::check_duplicate_names(&m.objects, &m.files);
        m.diagnostics.extend(dups);
        m
    }

    /// The errors; a revision with any is not applied.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_error())
    }

    /// The warnings (e.g. the `writeCombing` spelling).
    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| !d.is_error())
    }

    /// True when there is no error.
    pub fn is_valid(&self) -> bool {
        self.errors().next().is_none()
    }

    /// The object declared under `name`.
    pub fn object(&self, name: &str) -> Option<&ManifestObject> {
        self.objects.iter().find(|o| o.name == name)
    }

    /// The indexed document an object was read from.
    pub fn document(&self, object: &ManifestObject) -> Option<&IndexedDocument> {
        self.files
            .get(object.file_index)?
            .documents
            .get(object.document)
    }

    /// The file an object was read from.
    pub fn file(&self, object: &ManifestObject) -> Option<&ManifestFile> {
        self.files.get(object.file_index)
    }
}
