//! The report's human formats: JSON (what `/drift` serves) and a unified diff of all
//! three layers (what `/drift.diff` serves).
//!
//! The diff reads `-` as what Git (or the spec) asks for and `+` as what the cluster (or
//! the node) has, the same direction as the patch.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;
use similar::TextDiff;

use super::model::{DriftReport, Finding, GitSource, Layer, LiveObjects};
use super::patch::{file_changes, render_patch};

/// The report as pretty JSON.
pub fn render_json(report: &DriftReport) -> String {
    let mut s = serde_json::to_string_pretty(report)
        .unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string()));
    s.push('\n');
    s
}

/// The patch for one source, with a comment header naming the source, the revision and
/// the time. `git apply` skips the header.
pub fn render_source_patch(report: &DriftReport, src: &GitSource, live: &LiveObjects) -> String {
    render_source_patch_with(
        report,
        src,
        &render_patch(&file_changes(src, &report.findings, live)),
    )
}

/// [`render_source_patch`] with the patch body already made.
pub fn render_source_patch_with(report: &DriftReport, src: &GitSource, body: &str) -> String {
    if body.is_empty() {
        return String::new();
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# dpdk-reconciler drift patch: source {}, revision {}, computed {}",
        src.key
            .as_ref()
            .map_or_else(|| "(local checkout)".to_string(), ToString::to_string),
        src.revision.as_deref().unwrap_or("unknown"),
        report.generated_at
    );
    let _ = writeln!(
        out,
        "# On a checkout at that revision, `git apply` makes the repository describe the cluster;"
    );
    let _ = writeln!(
        out,
        "# `git apply -R --stat` lists what the next reconcile changes in the cluster."
    );
    out.push_str(body);
    out
}

/// A unified diff of all layers: layer 1 as file diffs with repo-relative headers, layer
/// 2 per NodeENI, layer 3 per node.
pub fn render_diff(report: &DriftReport, sources: &[GitSource], live: &LiveObjects) -> String {
    let bodies: Vec<String> = sources
        .iter()
        .map(|src| render_patch(&file_changes(src, &report.findings, live)))
        .collect();
    render_diff_with(report, sources, &bodies)
}

/// [`render_diff`] with each source's patch body (from [`render_patch`]) already made.
pub fn render_diff_with(
    report: &DriftReport,
    sources: &[GitSource],
    patch_bodies: &[String],
) -> String {
    let mut out = String::new();
    if report.findings.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "# dpdk-reconciler drift, computed {}: {} finding(s)",
        report.generated_at, report.summary.total
    );
    let _ = writeln!(
        out,
        "# '-' is what Git (or the DPDKNodeState spec) asks for, '+' what the cluster (or the node) has."
    );

    for (src, body) in sources.iter().zip(patch_bodies) {
        if body.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "\n# layer git-cluster: source {} at {}",
            src.key
                .as_ref()
                .map_or_else(|| "(local checkout)".to_string(), ToString::to_string),
            src.revision.as_deref().unwrap_or("unknown revision")
        );
        for f in report.findings.iter().filter(|f| {
            f.layer == Layer::GitCluster && f.source == src.key.as_ref().map(ToString::to_string)
        }) {
            let _ = writeln!(out, "# {}", f.message);
        }
        out.push_str(body);
    }

    for layer in [Layer::ClusterNodeEni, Layer::DesiredNode] {
        // Group by object (layer 2) or node (layer 3), in report order.
        let mut groups: BTreeMap<String, Vec<&Finding>> = BTreeMap::new();
        for f in report.findings.iter().filter(|f| f.layer == layer) {
            let key = match layer {
                Layer::DesiredNode => {
                    format!("node/{}", f.node.as_deref().unwrap_or(&f.object.name))
                }
                _ => format!("{}/{}", f.object.kind.to_ascii_lowercase(), f.object.name),
            };
            groups.entry(key).or_default().push(f);
        }
        for (key, findings) in groups {
            let _ = writeln!(out, "\n# layer {}: {key}", layer.as_str());
            for f in &findings {
                let _ = writeln!(out, "# {}", f.message);
            }
            let (old, new) = finding_lines(&findings);
            let (a, b) = match layer {
                Layer::DesiredNode => (format!("{key}/spec"), format!("{key}/status")),
                _ => (
                    format!("{key} (implied by DPDKConfigs)"),
                    format!("{key} (live)"),
                ),
            };
            let diff = TextDiff::from_lines(&old, &new);
            out.push_str(
                &diff
                    .unified_diff()
                    .context_radius(3)
                    .header(&a, &b)
                    .to_string(),
            );
        }
    }
    out
}

/// Old and new text for a group of findings: one `field: value` line per side, the old
/// side annotated with the Git file and line that asked for it.
fn finding_lines(findings: &[&Finding]) -> (String, String) {
    let mut old = String::new();
    let mut new = String::new();
    for f in findings {
        let field = if f.field_path.is_empty() {
            "(object)".to_string()
        } else {
            f.field_path.clone()
        };
        let origin = match (&f.file, f.line) {
            (Some(file), Some(line)) => format!("  # {file}:{line}"),
            (Some(file), None) => format!("  # {file}"),
            _ => String::new(),
        };
        if !f.git.is_null() {
            let _ = writeln!(old, "{field}: {}{origin}", compact(&f.git));
        }
        if !f.live.is_null() {
            let _ = writeln!(new, "{field}: {}", compact(&f.live));
        }
    }
    (old, new)
}

fn compact(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
