//! Small YAML writer for the lines a patch inserts or rewrites: block style, in the
//! indentation style of the file it goes into, scalars quoted only when they must be.

use serde_json::Value;

use crate::manifest::position::{NodeKind, PositionIndex, ScalarStyle};

/// Indentation style of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Style {
    /// Spaces per nesting level of mappings.
    pub unit: usize,
    /// True when sequences under a key are indented (`key:\n  - a`), false for the
    /// Kubernetes style (`key:\n- a`).
    pub seq_indent: bool,
}

impl Default for Style {
    fn default() -> Self {
        Style {
            unit: 2,
            seq_indent: false,
        }
    }
}

impl Style {
    /// Guesses the style from a file's indexed documents; the default when they don't say.
    pub fn detect<'a>(indexes: impl IntoIterator<Item = &'a PositionIndex>) -> Style {
        let mut unit = None;
        let mut seq_indent = None;
        for idx in indexes {
            for n in idx.nodes() {
                if n.key.is_none() || n.pointer.is_empty() {
                    continue;
                }
                let parent_is_item = n
                    .pointer
                    .rsplit('/')
                    .next()
                    .is_some_and(|t| t.parse::<usize>().is_ok());
                if parent_is_item {
                    continue;
                }
                match n.kind {
                    NodeKind::Mapping if unit.is_none() => {
                        if let Some(child) = idx.children(&n.pointer).next() {
                            // A mapping under a sequence item has its own column; use
                            // key → child steps of plain mappings only.
                            if child.indent > n.indent
                                && n.key.is_some_and(|k| k.start.byte == n.indent)
                            {
                                unit = Some(child.indent - n.indent);
                            }
                        }
                    }
                    NodeKind::Sequence if seq_indent.is_none() => {
                        if let Some(item) = idx.children(&n.pointer).next() {
                            seq_indent = Some(item.indent > n.indent);
                        }
                    }
                    _ => {}
                }
            }
        }
        let mut style = Style::default();
        if let Some(u) = unit.filter(|u| (1..=8).contains(u)) {
            style.unit = u;
        }
        if let Some(s) = seq_indent {
            style.seq_indent = s;
        }
        style
    }
}

/// True when `s` can be written as a plain scalar and reads back as the same string.
pub fn plain_ok(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    if s.len() > 1024 || !(first.is_ascii_alphanumeric() || matches!(first, '_' | '/' | '.')) {
        return false;
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-' | '@' | '+' | '='))
    {
        return false;
    }
    const SPECIAL: [&str; 12] = [
        "true", "false", "yes", "no", "on", "off", "y", "n", "null", "~", ".inf", ".nan",
    ];
    if SPECIAL.iter().any(|w| s.eq_ignore_ascii_case(w)) {
        return false;
    }
    // Anything a YAML 1.1 or 1.2 reader could take for a number, a date or a time.
    let numeric_chars = s
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | '_' | 'e' | 'E' | ':'));
    if (first.is_ascii_digit() || first == '.') && numeric_chars {
        return false;
    }
    let lower = s.to_ascii_lowercase();
    if lower.starts_with("0x") || lower.starts_with("0o") || lower.starts_with("0b") {
        return false;
    }
    true
}

/// A double-quoted YAML scalar (JSON string syntax is valid YAML).
pub fn double_quoted(s: &str) -> String {
    serde_json::to_string(s)
        .unwrap_or_else(|_| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")))
}

/// A scalar, in the style the replaced text used where that style can hold the value.
pub fn render_scalar(v: &Value, style: Option<ScalarStyle>) -> String {
    match v {
        Value::String(s) => match style {
            Some(ScalarStyle::DoubleQuoted) => double_quoted(s),
            Some(ScalarStyle::SingleQuoted) if !s.contains(['\n', '\r', '\t']) => {
                format!("'{}'", s.replace('\'', "''"))
            }
            _ if plain_ok(s) => s.clone(),
            _ => double_quoted(s),
        },
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(a) if a.is_empty() => "[]".into(),
        Value::Object(o) if o.is_empty() => "{}".into(),
        other => render_flow(other),
    }
}

/// A mapping key.
pub fn render_key(k: &str) -> String {
    if plain_ok(k) {
        k.to_string()
    } else {
        double_quoted(k)
    }
}

/// A single-line flow rendering (`{a: b, c: [1, 2]}`).
pub fn render_flow(v: &Value) -> String {
    match v {
        Value::Object(o) => {
            let items: Vec<String> = o
                .iter()
                .map(|(k, v)| format!("{}: {}", render_key(k), render_flow(v)))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(render_flow).collect::<Vec<_>>().join(", ")
        ),
        scalar => render_scalar(scalar, None),
    }
}

fn is_block(v: &Value) -> bool {
    match v {
        Value::Object(o) => !o.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => false,
    }
}

/// Keys of an object in a readable order: the order DPDKConfig manifests use, then the rest.
fn ordered_keys(o: &serde_json::Map<String, Value>) -> Vec<&String> {
    const ORDER: [&str; 12] = [
        "apiVersion",
        "kind",
        "metadata",
        "name",
        "namespace",
        "labels",
        "annotations",
        "spec",
        "nodeSelector",
        "driverOptions",
        "resourceMapping",
        "deviceIndex",
    ];
    const LATE: [&str; 3] = ["enableUnsafeNoIOMMU", "resourceName", "driver"];
    let mut keys: Vec<&String> = o.keys().collect();
    keys.sort_by_key(|k| {
        ORDER
            .iter()
            .position(|o| o == k)
            .map(|p| (0, p))
            .or_else(|| LATE.iter().position(|o| o == k).map(|p| (1, p)))
            .unwrap_or((2, 0))
    });
    keys
}

/// The lines of `key: value` with the key at column `indent`.
pub fn entry_lines(key_text: &str, v: &Value, indent: usize, style: Style, out: &mut Vec<String>) {
    let pad = " ".repeat(indent);
    if !is_block(v) {
        out.push(format!("{pad}{key_text}: {}", render_scalar(v, None)));
        return;
    }
    out.push(format!("{pad}{key_text}:"));
    block_lines(
        v,
        indent + style.unit,
        if style.seq_indent {
            indent + style.unit
        } else {
            indent
        },
        style,
        out,
    );
}

/// The lines of a non-empty block collection: mapping keys at `map_indent`, sequence
/// dashes at `seq_indent`.
pub fn block_lines(
    v: &Value,
    map_indent: usize,
    seq_indent: usize,
    style: Style,
    out: &mut Vec<String>,
) {
    match v {
        Value::Object(o) => {
            for k in ordered_keys(o) {
                entry_lines(&render_key(k), &o[k.as_str()], map_indent, style, out);
            }
        }
        Value::Array(a) => {
            for item in a {
                item_lines(item, seq_indent, style, out);
            }
        }
        scalar => out.push(format!(
            "{}{}",
            " ".repeat(map_indent),
            render_scalar(scalar, None)
        )),
    }
}

/// The lines of one sequence item with its dash at column `indent` (compact style:
/// `- first: 1` then the other keys under `first`).
pub fn item_lines(v: &Value, indent: usize, style: Style, out: &mut Vec<String>) {
    let pad = " ".repeat(indent);
    if !is_block(v) {
        out.push(format!("{pad}- {}", render_scalar(v, None)));
        return;
    }
    let mut inner = Vec::new();
    block_lines(v, indent + 2, indent + 2, style, &mut inner);
    for (i, line) in inner.into_iter().enumerate() {
        if i == 0 {
            out.push(format!("{pad}- {}", &line[(indent + 2).min(line.len())..]));
        } else {
            out.push(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plain_scalars_only_when_they_read_back_as_strings() {
        for s in [
            "vfio-pci",
            "intel.com/intel_sriov_netdevice_2",
            "multi-eni",
            "igb_uio",
        ] {
            assert!(plain_ok(s), "{s}");
        }
        for s in [
            "",
            "true",
            "No",
            "1",
            "10.0.0.1",
            "0x1f",
            "1e3",
            "a b",
            "a: b",
            "#x",
            "-1",
            "2024-01-01",
            "~",
        ] {
            assert!(!plain_ok(s), "{s}");
        }
    }

    #[test]
    fn scalars_keep_the_quoting_they_replace() {
        assert_eq!(
            render_scalar(&json!("a/b"), Some(ScalarStyle::DoubleQuoted)),
            "\"a/b\""
        );
        assert_eq!(
            render_scalar(&json!("it's"), Some(ScalarStyle::SingleQuoted)),
            "'it''s'"
        );
        assert_eq!(
            render_scalar(&json!("a/b"), Some(ScalarStyle::Plain)),
            "a/b"
        );
        assert_eq!(
            render_scalar(&json!("yes"), Some(ScalarStyle::Plain)),
            "\"yes\""
        );
        assert_eq!(
            render_scalar(&json!(false), Some(ScalarStyle::DoubleQuoted)),
            "false"
        );
    }

    #[test]
    fn items_are_compact_and_follow_the_sequence_style() {
        let mut out = Vec::new();
        let v = json!({"resourceMapping": [{"deviceIndex": 3, "resourceName": "a/b", "driver": "igb_uio"}]});
        block_lines(
            &v,
            2,
            2,
            Style {
                unit: 2,
                seq_indent: true,
            },
            &mut out,
        );
        assert_eq!(
            out,
            vec![
                "  resourceMapping:",
                "    - deviceIndex: 3",
                "      resourceName: a/b",
                "      driver: igb_uio"
            ]
        );
        out.clear();
        block_lines(
            &v,
            2,
            2,
            Style {
                unit: 2,
                seq_indent: false,
            },
            &mut out,
        );
        assert_eq!(
            out,
            vec![
                "  resourceMapping:",
                "  - deviceIndex: 3",
                "    resourceName: a/b",
                "    driver: igb_uio"
            ]
        );
    }
}
