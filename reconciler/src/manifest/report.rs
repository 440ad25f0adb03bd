//! `dpdk-reconciler validate <dir>`: the source controller's loader and validator, offline,
//! for config-repo CI and pre-commit hooks.

use std::io::Write;
use std::path::Path;

use super::Manifests;
use super::load::LoadOptions;

/// Exit code: everything valid (warnings may have been printed).
pub const EXIT_VALID: u8 = 0;
/// Exit code: at least one error; one line per error was printed.
pub const EXIT_INVALID: u8 = 1;
/// Exit code: usage error (the directory does not exist, ...).
pub const EXIT_USAGE: u8 = 2;

/// Validates every YAML file under `dir` (which is treated as the repository root: symlinks
/// leaving it are refused). Prints errors and warnings to `out`, one per line, as
/// `<dir>/<file>:line:col: message`, and a summary plus skipped documents to `err`.
/// Returns the exit code.
pub fn validate_dir(
    dir: &Path,
    opts: &LoadOptions,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    if !dir.exists() {
        let _ = writeln!(
            err,
            "dpdk-reconciler validate: {}: no such file or directory",
            dir.display()
        );
        return EXIT_USAGE;
    }
    let (root, path) = if dir.is_dir() {
        (dir.to_path_buf(), ".".to_string())
    } else {
        // A single file: its directory is the root.
        let parent = dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        (parent.to_path_buf(), name)
    };
    let m = Manifests::load(&root, &path, opts);
    let prefix = {
        let s = root.display().to_string();
        let s = s.trim_end_matches('/');
        if s == "." || s.is_empty() {
            String::new()
        } else {
            format!("{s}/")
        }
    };
    let shown = |d: &super::Diagnostic| {
        let mut d = d.clone();
        if d.file != "." {
            d.file = format!("{prefix}{}", d.file);
        } else if !prefix.is_empty() {
            d.file = prefix.trim_end_matches('/').to_string();
        }
        if d.code == super::Code::DuplicateName {
            // The message names the other file too.
            d.message = d.message.replace(
                "already declared at ",
                &format!("already declared at {prefix}"),
            );
        }
        d.to_string()
    };
    for d in &m.diagnostics {
        let _ = writeln!(out, "{}", shown(d));
    }
    for s in &m.skipped {
        let name = s
            .name
            .as_deref()
            .map(|n| format!(" {n}"))
            .unwrap_or_default();
        let kind = if s.kind.is_empty() {
            "document".to_string()
        } else {
            s.kind.clone()
        };
        let _ = writeln!(
            err,
            "{prefix}{}:{}: skipped {kind}{name}: {}",
            s.file, s.line, s.reason
        );
    }
    let errors = m.errors().count();
    let warnings = m.warnings().count();
    let _ = writeln!(
        err,
        "validate: {} file(s), {} DPDKConfig(s), {} skipped, {errors} error(s), {warnings} warning(s)",
        m.files.len(),
        m.objects.len(),
        m.skipped.len()
    );
    if errors > 0 { EXIT_INVALID } else { EXIT_VALID }
}
