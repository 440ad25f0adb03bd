//! Layer 1 as a patch on the config repository: applied with `git apply` on a checkout at
//! the reported revision, the repository then describes the live cluster.
//!
//! Edits are made on the file text, guided by the manifest position index, so only the
//! lines that differ change: a scalar is replaced inside its span (its quoting kept), a
//! removed entry loses exactly its lines, a new entry is inserted after its siblings in
//! their indentation. Comments, key order and formatting elsewhere stay as they were.
//! Every edited document is parsed again and compared with the live object; if an edit
//! did not produce it (an exotic layout), that document is rewritten whole instead.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use dpdk_bridge::api::DPDKConfig;
use dpdk_bridge::labels;
use serde_json::{Map, Value};
use similar::TextDiff;

use super::engine::compare_config;
use super::model::{Finding, FindingKind, GitDocument, GitSource, Layer, LiveView};
use super::yaml_render::{Style, block_lines, entry_lines, item_lines, render_scalar};
use crate::manifest::position::{Node, NodeKind, Pos, PositionIndex, index_file, parent_pointer};
use dpdk_bridge::json_pointer::pointer_tokens;

/// One file's edits: the documents to remove, and the documents to edit with the
/// pointer → value changes of each.
type FileEdits = (BTreeSet<usize>, BTreeMap<usize, Vec<(String, Value)>>);

/// One file the patch touches. `None` means the file does not exist on that side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileChange {
    pub path: String,
    pub old: Option<String>,
    pub new: Option<String>,
}

/// The layer-1 findings of `src` (already filtered by ignore rules) as file changes,
/// sorted by path.
pub fn file_changes<'a>(
    src: &GitSource,
    findings: &[Arc<Finding>],
    live: impl Into<LiveView<'a>>,
) -> Vec<FileChange> {
    let live = live.into();
    let source = src.key.as_ref().map(ToString::to_string);
    let ours: Vec<&Finding> = findings
        .iter()
        .map(|f| f.as_ref())
        .filter(|f| f.layer == Layer::GitCluster && f.source == source)
        .collect();
    let live_cfg = |name: &str| {
        live.configs
            .iter()
            .copied()
            .find(|c| c.metadata.name.as_deref() == Some(name))
    };

    let mut per_file: BTreeMap<&str, FileEdits> = BTreeMap::new();
    let mut changes = Vec::new();
    for f in &ours {
        let doc_pos = src
            .documents
            .iter()
            .position(|d| d.is_dpdk_config() && d.name() == Some(f.object.name.as_str()));
        match (f.kind, doc_pos) {
            (FindingKind::Missing, Some(i)) => {
                per_file
                    .entry(src.documents[i].file.as_str())
                    .or_default()
                    .0
                    .insert(i);
            }
            (FindingKind::Modified, Some(i)) => {
                per_file
                    .entry(src.documents[i].file.as_str())
                    .or_default()
                    .1
                    .entry(i)
                    .or_default()
                    .push((f.field_path.clone(), f.live.clone()));
            }
            (FindingKind::Extra, _) => {
                if let (Some(path), Some(cfg)) = (&f.file, live_cfg(&f.object.name)) {
                    changes.push(FileChange {
                        path: path.clone(),
                        old: None,
                        new: Some(render_new_object(cfg)),
                    });
                }
            }
            _ => {}
        }
    }

    for (file, (removed, edited)) in per_file {
        let Some(text) = src.files.get(file) else {
            continue;
        };
        let style = Style::detect(
            src.documents
                .iter()
                .filter(|d| d.file == file)
                .map(|d| &d.positions),
        );
        let mut whole: BTreeSet<usize> = BTreeSet::new();
        let mut new_text = String::new();
        // Second round only for documents whose minimal edit failed the check.
        for _round in 0..2 {
            let mut edits = Vec::new();
            for &i in &removed {
                let (a, b) = src.documents[i].raw.full_lines();
                if b >= a {
                    edits.push(remove_lines(text, a, b));
                }
            }
            for (&i, diffs) in &edited {
                edits.extend(doc_edits(
                    text,
                    &src.documents[i],
                    diffs,
                    style,
                    whole.contains(&i),
                ));
            }
            new_text = apply_edits(text, edits);
            let failed: Vec<usize> = edited
                .keys()
                .copied()
                .filter(|&i| !whole.contains(&i))
                .filter(|&i| {
                    let doc = &src.documents[i];
                    let name = doc.name().unwrap_or_default();
                    let Some(cfg) = live_cfg(name) else {
                        return false;
                    };
                    !reparsed_matches(file, &new_text, name, cfg)
                })
                .collect();
            if failed.is_empty() {
                break;
            }
            whole.extend(failed);
        }
        let remaining = index_file(&new_text)
            .iter()
            .filter(|d| !d.raw.is_blank())
            .count();
        changes.push(FileChange {
            path: file.to_string(),
            old: Some(text.clone()),
            new: if remaining == 0 { None } else { Some(new_text) },
        });
    }
    changes.sort_by(|a, b| a.path.cmp(&b.path));
    changes
}

/// True when the document named `name` in `text` shows no difference to `cfg`.
fn reparsed_matches(file: &str, text: &str, name: &str, cfg: &DPDKConfig) -> bool {
    let docs = GitDocument::from_text(file, text);
    match docs
        .iter()
        .find(|d| d.is_dpdk_config() && d.name() == Some(name))
    {
        Some(doc) => compare_config(doc, cfg).is_empty(),
        None => false,
    }
}

/// A new file for an object the cluster has and Git does not: what a person would have
/// committed, without the server's and our own bookkeeping.
pub fn render_new_object(cfg: &DPDKConfig) -> String {
    let mut meta = Map::new();
    meta.insert(
        "name".into(),
        Value::String(cfg.metadata.name.clone().unwrap_or_default()),
    );
    let labels: Map<String, Value> = cfg
        .metadata
        .labels
        .iter()
        .flatten()
        .filter(|(k, v)| {
            k.as_str() != labels::SOURCE_LABEL
                && !(k.as_str() == labels::MANAGED_BY_LABEL
                    && v.as_str() == labels::MANAGED_BY_VALUE)
        })
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    if !labels.is_empty() {
        meta.insert("labels".into(), Value::Object(labels));
    }
    let annotations: Map<String, Value> = cfg
        .metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| {
            ![
                labels::REVISION_ANNOTATION,
                labels::ORIGIN_ANNOTATION,
                "kubectl.kubernetes.io/last-applied-configuration",
            ]
            .contains(&k.as_str())
        })
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    if !annotations.is_empty() {
        meta.insert("annotations".into(), Value::Object(annotations));
    }
    let mut obj = Map::new();
    obj.insert(
        "apiVersion".into(),
        Value::String(format!(
            "{}/{}",
            dpdk_bridge::api::GROUP,
            dpdk_bridge::api::VERSION
        )),
    );
    obj.insert("kind".into(), Value::String("DPDKConfig".into()));
    obj.insert("metadata".into(), Value::Object(meta));
    obj.insert(
        "spec".into(),
        serde_json::to_value(&cfg.spec).unwrap_or(Value::Null),
    );
    let mut lines = Vec::new();
    block_lines(&Value::Object(obj), 0, 0, Style::default(), &mut lines);
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// Renders file changes as a patch `git apply` accepts (with `-p1`, the default).
pub fn render_patch(changes: &[FileChange]) -> String {
    let mut out = String::new();
    for c in changes {
        let old = c.old.as_deref().unwrap_or("");
        let new = c.new.as_deref().unwrap_or("");
        if c.old == c.new {
            continue;
        }
        out.push_str(&format!("diff --git a/{p} b/{p}\n", p = c.path));
        let (a, b) = match (&c.old, &c.new) {
            (None, _) => {
                out.push_str("new file mode 100644\n");
                ("/dev/null".to_string(), format!("b/{}", c.path))
            }
            (_, None) => {
                out.push_str("deleted file mode 100644\n");
                (format!("a/{}", c.path), "/dev/null".to_string())
            }
            _ => (format!("a/{}", c.path), format!("b/{}", c.path)),
        };
        let diff = TextDiff::from_lines(old, new);
        out.push_str(
            &diff
                .unified_diff()
                .context_radius(3)
                .header(&a, &b)
                .to_string(),
        );
    }
    out
}

// ---------------------------------------------------------------------------------------
// Text edits.

/// Replace `text[start..end]` with `with`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Edit {
    start: usize,
    end: usize,
    with: String,
}

/// Byte offsets of line starts; line `n` (1-based) starts at `starts[n - 1]`.
fn line_starts(text: &str) -> Vec<usize> {
    let mut v = vec![0];
    v.extend(text.match_indices('\n').map(|(i, _)| i + 1));
    v
}

fn offset(text: &str, p: Pos) -> usize {
    let starts = line_starts(text);
    starts
        .get(p.line.saturating_sub(1))
        .map_or(text.len(), |s| (s + p.byte).min(text.len()))
}

/// Offset of the end of line `n` (before its `\r\n` or `\n`).
fn line_end(text: &str, n: usize) -> usize {
    let starts = line_starts(text);
    let Some(&s) = starts.get(n.saturating_sub(1)) else {
        return text.len();
    };
    let e = text[s..].find('\n').map_or(text.len(), |i| s + i);
    if e > s && text.as_bytes()[e - 1] == b'\r' {
        e - 1
    } else {
        e
    }
}

fn eol(text: &str) -> &'static str {
    if text.contains("\r\n") { "\r\n" } else { "\n" }
}

/// Deletes lines `a..=b` (1-based) with their line breaks.
fn remove_lines(text: &str, a: usize, b: usize) -> Edit {
    let starts = line_starts(text);
    let start = starts
        .get(a.saturating_sub(1))
        .copied()
        .unwrap_or(text.len());
    match starts.get(b) {
        Some(&next) => Edit {
            start,
            end: next,
            with: String::new(),
        },
        None if a > 1 => Edit {
            start: line_end(text, a - 1),
            end: text.len(),
            with: String::new(),
        },
        None => Edit {
            start: 0,
            end: text.len(),
            with: String::new(),
        },
    }
}

/// Inserts `lines` as new lines after line `n`: at the start of the next line, so a
/// removal of the lines before it does not overlap.
fn insert_after_line(text: &str, n: usize, lines: &[String]) -> Edit {
    let nl = eol(text);
    let starts = line_starts(text);
    match starts.get(n) {
        Some(&at) => {
            let mut with = String::new();
            for l in lines {
                with.push_str(l);
                with.push_str(nl);
            }
            Edit {
                start: at,
                end: at,
                with,
            }
        }
        None => {
            let mut with = String::new();
            for l in lines {
                with.push_str(nl);
                with.push_str(l);
            }
            Edit {
                start: text.len(),
                end: text.len(),
                with,
            }
        }
    }
}

/// Applies non-overlapping edits; insertions at the same offset keep their order.
fn apply_edits(text: &str, mut edits: Vec<Edit>) -> String {
    edits.sort_by_key(|e| (e.start, e.end));
    let mut out = String::with_capacity(text.len() + 256);
    let mut at = 0;
    for e in edits {
        if e.start < at {
            continue; // overlapping: the document check catches what this drops
        }
        out.push_str(&text[at..e.start]);
        out.push_str(&e.with);
        at = e.end;
    }
    out.push_str(&text[at..]);
    out
}

// ---------------------------------------------------------------------------------------
// Edits for one document.

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    /// Replace a scalar in place.
    Scalar(String),
    /// Delete an entry's lines.
    Remove(String),
    /// Append entries or items that Git lacks to this block collection.
    Insert(String),
    /// Rewrite this node's entry from the target value.
    Rerender(String),
}

impl Op {
    fn pointer(&self) -> &str {
        match self {
            Op::Scalar(p) | Op::Remove(p) | Op::Insert(p) | Op::Rerender(p) => p,
        }
    }
}

fn is_under(p: &str, ancestor: &str) -> bool {
    ancestor.is_empty()
        || p == ancestor
        || (p.starts_with(ancestor) && p.as_bytes().get(ancestor.len()) == Some(&b'/'))
}

fn is_block_value(v: &Value) -> bool {
    matches!(v, Value::Object(o) if !o.is_empty()) || matches!(v, Value::Array(a) if !a.is_empty())
}

/// The text edits that turn document `doc` into the live object, given its differing
/// fields (`pointer`, live value; null = absent live). `whole` rewrites the document.
fn doc_edits(
    text: &str,
    doc: &GitDocument,
    diffs: &[(String, Value)],
    style: Style,
    whole: bool,
) -> Vec<Edit> {
    let mut diffs = diffs.to_vec();
    // Git may spell both writeCombining and the seed's writeCombing; they must agree.
    if let Some((_, v)) = diffs
        .iter()
        .find(|(p, _)| p == "/spec/driverOptions/writeCombining")
        .cloned()
        && doc
            .value
            .pointer("/spec/driverOptions/writeCombing")
            .is_some()
    {
        diffs.push(("/spec/driverOptions/writeCombing".into(), v));
    }
    let target = apply_diffs(&doc.value, &diffs);
    let idx = &doc.positions;
    let mut ops: Vec<Op> = Vec::new();
    if whole {
        ops.push(Op::Rerender(String::new()));
    } else {
        for (p, live) in &diffs {
            ops.push(match idx.get(p) {
                Some(n) if live.is_null() => {
                    if key_is_compact(text, n) {
                        Op::Rerender(parent_pointer(p).unwrap_or_default().to_string())
                    } else {
                        Op::Remove(p.clone())
                    }
                }
                Some(n)
                    if matches!(
                        n.kind,
                        NodeKind::Scalar(_) | NodeKind::Empty | NodeKind::Alias
                    ) && !is_block_value(live) =>
                {
                    Op::Scalar(p.clone())
                }
                Some(_) => Op::Rerender(p.clone()),
                None => match idx.nearest(p) {
                    Some(a)
                        if !live.is_null()
                            && matches!(a.kind, NodeKind::Mapping | NodeKind::Sequence) =>
                    {
                        Op::Insert(a.pointer.clone())
                    }
                    Some(a) => Op::Rerender(a.pointer.clone()),
                    None => Op::Rerender(String::new()),
                },
            });
        }
    }
    // A removal that empties its block parent removes the parent (`labels:` with nothing
    // under it would read as null).
    for op in &mut ops {
        while let Op::Remove(p) = op {
            let Some(pp) = parent_pointer(p).filter(|pp| !pp.is_empty()) else {
                break;
            };
            let emptied = target.pointer(pp).is_none_or(|v| {
                matches!(v, Value::Object(o) if o.is_empty())
                    || matches!(v, Value::Array(a) if a.is_empty())
            });
            match idx.get(pp) {
                Some(parent)
                    if emptied
                        && matches!(parent.kind, NodeKind::Mapping | NodeKind::Sequence)
                        && !key_is_compact(text, parent) =>
                {
                    *op = Op::Remove(pp.to_string());
                }
                _ => break,
            }
        }
    }
    ops.sort();
    ops.dedup();
    let removed: Vec<String> = ops
        .iter()
        .filter_map(|o| {
            if let Op::Remove(p) = o {
                Some(p.clone())
            } else {
                None
            }
        })
        .collect();
    ops.retain(|o| {
        !removed
            .iter()
            .any(|r| r != o.pointer() && is_under(o.pointer(), r))
    });
    let rerendered: Vec<String> = ops
        .iter()
        .filter_map(|o| {
            if let Op::Rerender(p) = o {
                Some(p.clone())
            } else {
                None
            }
        })
        .collect();
    ops.retain(|o| match o {
        Op::Rerender(p) => !rerendered.iter().any(|r| r != p && is_under(p, r)),
        other => !rerendered.iter().any(|r| is_under(other.pointer(), r)),
    });

    let mut edits = Vec::new();
    for op in ops {
        let Some(n) = idx.get(op.pointer()) else {
            continue;
        };
        let value = target.pointer(op.pointer());
        match (op, value) {
            (Op::Scalar(_), Some(v)) => {
                let style = match n.kind {
                    NodeKind::Scalar(s) => Some(s),
                    _ => None,
                };
                let rendered = render_scalar(v, style);
                if n.kind == NodeKind::Empty {
                    let at = offset(text, n.value.start);
                    edits.push(Edit {
                        start: at,
                        end: at,
                        with: format!(" {rendered}"),
                    });
                } else {
                    edits.push(Edit {
                        start: offset(text, n.value.start),
                        end: offset(text, n.value.end),
                        with: rendered,
                    });
                }
            }
            (Op::Remove(_), _) | (Op::Rerender(_), None) => {
                edits.push(remove_lines(text, n.first_line, n.last_line))
            }
            (Op::Insert(p), Some(v)) => {
                let children: Vec<&Node> = idx.children(&p).collect();
                let child_indent = children.first().map_or(n.indent + style.unit, |c| c.indent);
                let mut lines = Vec::new();
                match (n.kind, v) {
                    (NodeKind::Mapping, Value::Object(o)) => {
                        let have: BTreeSet<String> = children
                            .iter()
                            .filter_map(|c| pointer_tokens(&c.pointer).pop())
                            .collect();
                        for (k, cv) in o.iter().filter(|(k, _)| !have.contains(k.as_str())) {
                            entry_lines(
                                &super::yaml_render::render_key(k),
                                cv,
                                child_indent,
                                style,
                                &mut lines,
                            );
                        }
                    }
                    (NodeKind::Sequence, Value::Array(_)) => {
                        // Appended items, from the diffs: removals elsewhere in the list
                        // shift the target's indices.
                        let mut appended: Vec<(usize, &Value)> = diffs
                            .iter()
                            .filter(|(dp, dv)| {
                                !dv.is_null() && parent_pointer(dp) == Some(p.as_str())
                            })
                            .filter_map(|(dp, dv)| {
                                Some((pointer_tokens(dp).pop()?.parse::<usize>().ok()?, dv))
                            })
                            .filter(|(i, _)| *i >= children.len())
                            .collect();
                        appended.sort_by_key(|(i, _)| *i);
                        for (_, item) in appended {
                            item_lines(item, child_indent, style, &mut lines);
                        }
                    }
                    _ => {
                        edits.push(rerender(text, idx, n, v, style));
                        continue;
                    }
                }
                edits.push(insert_after_line(text, n.last_line, &lines));
            }
            (Op::Rerender(_), Some(v)) => edits.push(rerender(text, idx, n, v, style)),
            _ => {}
        }
    }
    edits
}

/// True when the entry's key follows other content on its line (`- key: v`), so deleting
/// its lines would take the dash with it.
fn key_is_compact(text: &str, n: &Node) -> bool {
    let Some(k) = n.key else { return false };
    let start = offset(
        text,
        Pos {
            line: k.start.line,
            col: 1,
            byte: 0,
        },
    );
    let key_at = offset(text, k.start);
    !text[start..key_at].trim().is_empty()
}

/// Rewrites node `n`'s entry (key and value) as `v`.
fn rerender(text: &str, idx: &PositionIndex, n: &Node, v: &Value, style: Style) -> Edit {
    let nl = eol(text);
    let single_line = matches!(
        n.kind,
        NodeKind::Scalar(_) | NodeKind::Flow | NodeKind::Alias
    ) && n.value.start.line == n.value.end.line;
    let end = if single_line {
        offset(text, n.value.end)
    } else {
        line_end(text, n.last_line)
    };
    let parent_is_seq = parent_pointer(&n.pointer)
        .and_then(|pp| idx.get(pp))
        .is_some_and(|p| p.kind == NodeKind::Sequence);
    let mut lines = Vec::new();
    let start = match n.key {
        None => {
            // The document root.
            if is_block_value(v) {
                block_lines(v, n.indent, n.indent, style, &mut lines);
            } else {
                lines.push(format!(
                    "{}{}",
                    " ".repeat(n.indent),
                    render_scalar(v, None)
                ));
            }
            offset(text, n.value.start)
        }
        Some(k) if parent_is_seq => {
            item_lines(v, n.indent, style, &mut lines);
            offset(text, k.start)
        }
        Some(k) => {
            let key_text = &text[offset(text, k.start)..offset(text, k.end)];
            if n.kind == NodeKind::Flow {
                lines.push(format!(
                    "{}{key_text}: {}",
                    " ".repeat(n.indent),
                    super::yaml_render::render_flow(v)
                ));
            } else {
                entry_lines(key_text, v, n.indent, style, &mut lines);
            }
            offset(text, k.start)
        }
    };
    // The region starts at the key (or value): what precedes it on its line (indentation,
    // a dash) stays.
    if let Some(first) = lines.first_mut() {
        *first = first.trim_start().to_string();
    }
    Edit {
        start,
        end,
        with: lines.join(nl),
    }
}

/// The Git document with every live value set (null: removed), for rewriting nodes.
fn apply_diffs(doc: &Value, diffs: &[(String, Value)]) -> Value {
    let mut target = doc.clone();
    let sort_key = |p: &str| -> Vec<(u8, usize, String)> {
        pointer_tokens(p)
            .into_iter()
            .map(|t| {
                t.parse::<usize>()
                    .map_or((1, 0, t.clone()), |n| (0, n, String::new()))
            })
            .collect()
    };
    let mut sets: Vec<&(String, Value)> = diffs.iter().filter(|(_, v)| !v.is_null()).collect();
    sets.sort_by_key(|(p, _)| sort_key(p));
    for (p, v) in sets {
        set_pointer(&mut target, &pointer_tokens(p), v.clone());
    }
    let mut removes: Vec<&(String, Value)> = diffs.iter().filter(|(_, v)| v.is_null()).collect();
    removes.sort_by_key(|(p, _)| std::cmp::Reverse(sort_key(p)));
    for (p, _) in removes {
        remove_pointer(&mut target, &pointer_tokens(p));
    }
    target
}

fn set_pointer(root: &mut Value, tokens: &[String], v: Value) {
    let Some((last, parents)) = tokens.split_last() else {
        *root = v;
        return;
    };
    let mut cur = root;
    for (i, t) in parents.iter().enumerate() {
        let next_is_index = tokens
            .get(i + 1)
            .is_some_and(|n| n.parse::<usize>().is_ok());
        if !(cur.is_object() || cur.is_array()) {
            *cur = Value::Object(Map::new());
        }
        cur = match cur {
            Value::Object(o) => o.entry(t.clone()).or_insert_with(|| {
                if next_is_index {
                    Value::Array(Vec::new())
                } else {
                    Value::Object(Map::new())
                }
            }),
            Value::Array(a) => match t.parse::<usize>() {
                Ok(n) if n < a.len() => &mut a[n],
                Ok(_) => {
                    a.push(if next_is_index {
                        Value::Array(Vec::new())
                    } else {
                        Value::Object(Map::new())
                    });
                    let last = a.len() - 1;
                    &mut a[last]
                }
                Err(_) => return,
            },
            _ => return,
        };
        if cur.is_null() {
            *cur = if next_is_index {
                Value::Array(Vec::new())
            } else {
                Value::Object(Map::new())
            };
        }
    }
    if cur.is_null() {
        *cur = if last.parse::<usize>().is_ok() {
            Value::Array(Vec::new())
        } else {
            Value::Object(Map::new())
        };
    }
    match cur {
        Value::Object(o) => {
            o.insert(last.clone(), v);
        }
        Value::Array(a) => match last.parse::<usize>() {
            Ok(n) if n < a.len() => a[n] = v,
            Ok(_) => a.push(v),
            Err(_) => {}
        },
        _ => {}
    }
}

fn remove_pointer(root: &mut Value, tokens: &[String]) {
    let Some((last, parents)) = tokens.split_last() else {
        return;
    };
    let mut cur = root;
    for t in parents {
        cur = match cur {
            Value::Object(o) => match o.get_mut(t) {
                Some(c) => c,
                None => return,
            },
            Value::Array(a) => match t.parse::<usize>().ok().and_then(|n| a.get_mut(n)) {
                Some(c) => c,
                None => return,
            },
            _ => return,
        };
    }
    match cur {
        Value::Object(o) => {
            o.remove(last);
        }
        Value::Array(a) => {
            if let Ok(n) = last.parse::<usize>()
                && n < a.len()
            {
                a.remove(n);
            }
        }
        _ => {}
    }
}
