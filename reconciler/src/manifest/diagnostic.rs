//! Errors and warnings about a config repository, each naming `file:line:col`.

use std::fmt;

/// Error or warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Error,
    Warning,
}

/// What a diagnostic is about: a stable, machine-readable code (also used as the
/// DPDKConfigSource condition reason family and documented in docs/validate.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Code {
    /// The text is not valid YAML (or not UTF-8).
    InvalidYaml,
    /// A document is not a Kubernetes object, or lacks apiVersion/kind.
    NotAnObject,
    /// A DPDKConfig with an apiVersion this version does not serve.
    UnsupportedVersion,
    /// A value breaks the CRD's structural schema (type, enum, range, length, required).
    SchemaViolation,
    /// A field the CRD does not define.
    UnknownField,
    /// deviceIndex 0: the primary ENI.
    PrimaryEni,
    /// A CEL rule of the CRD (non-empty nodeSelector, resourceName format, ...).
    RuleViolation,
    /// Two entries of a list-map with the same key (duplicate deviceIndex).
    DuplicateKey,
    /// Two objects with the same name.
    DuplicateName,
    /// Invalid metadata (name, labels, generateName, server-set fields).
    InvalidMetadata,
    /// A symlink that leaves the repository, or a broken one.
    SymlinkEscapes,
    /// A symlink that loops: to a directory that contains it, or a chain that never ends.
    SymlinkLoop,
    /// spec.path leaves the repository or does not exist.
    PathEscapes,
    /// Over a limit of the loader (each names its flag): a file's or the path's bytes, the
    /// number of files, directory nesting, or a YAML document's nodes (aliases expanded)
    /// or nesting.
    TooLarge,
    /// Reading the repository failed.
    Io,
    /// The seed guide's `writeCombing` spelling (warning).
    DeprecatedField,
    /// A field that is ignored when applying (status, namespace, our own labels) (warning).
    IgnoredField,
}

impl Code {
    /// The code as written in messages and condition reasons.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::InvalidYaml => "InvalidYAML",
            Code::NotAnObject => "NotAnObject",
            Code::UnsupportedVersion => "UnsupportedVersion",
            Code::SchemaViolation => "SchemaViolation",
            Code::UnknownField => "UnknownField",
            Code::PrimaryEni => "PrimaryENI",
            Code::RuleViolation => "RuleViolation",
            Code::DuplicateKey => "DuplicateKey",
            Code::DuplicateName => "DuplicateName",
            Code::InvalidMetadata => "InvalidMetadata",
            Code::SymlinkEscapes => "SymlinkEscapes",
            Code::SymlinkLoop => "SymlinkLoop",
            Code::PathEscapes => "PathEscapes",
            Code::TooLarge => "TooLarge",
            Code::Io => "IOError",
            Code::DeprecatedField => "DeprecatedField",
            Code::IgnoredField => "IgnoredField",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One finding about a file of the repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub code: Code,
    /// Path relative to the repository root (or to the directory given to `validate`).
    pub file: String,
    /// 1-based; 0 when the finding is about the file or path as a whole.
    pub line: usize,
    /// 1-based column in characters; 0 with `line == 0`.
    pub col: usize,
    pub message: String,
    /// JSON pointer of the offending node, when the finding is about one.
    pub pointer: Option<String>,
}

impl Diagnostic {
    pub fn error(
        code: Code,
        file: &str,
        line: usize,
        col: usize,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity: Severity::Error,
            code,
            file: file.to_string(),
            line,
            col,
            message: message.into(),
            pointer: None,
        }
    }

    pub fn warning(
        code: Code,
        file: &str,
        line: usize,
        col: usize,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, file, line, col, message)
        }
    }

    pub fn with_pointer(mut self, pointer: impl Into<String>) -> Self {
        self.pointer = Some(pointer.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// `file:line:col` (or just `file` for whole-file findings).
    pub fn location(&self) -> String {
        if self.line == 0 {
            self.file.clone()
        } else {
            format!("{}:{}:{}", self.file, self.line, self.col)
        }
    }
}

/// `file:line:col: message`, warnings as `file:line:col: warning: message`.
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.severity {
            Severity::Error => write!(f, "{}: {}", self.location(), self.message),
            Severity::Warning => write!(f, "{}: warning: {}", self.location(), self.message),
        }
    }
}
