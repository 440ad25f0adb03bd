//! A position index for block-style YAML: which line and column every JSON pointer of a
//! document sits at.
//!
//! serde_yaml gives values but no positions, so this is a small, independent, line-based
//! scanner over the raw text. It is used for `file:line:col` errors (validation) and for
//! minimal line-level patches (drift): it records, for every node, the span of its key and
//! of its value, and the lines the entry occupies, so a caller can replace a scalar in
//! place while keeping comments, key order and formatting elsewhere.
//!
//! Supported: block mappings and block sequences (also a sequence at the same indent as
//! its parent key, the Kubernetes style), compact items (`- key: v`), comments, plain,
//! single- and double-quoted scalars (also multi-line), block scalars (`|`, `>`), anchors,
//! tags and aliases (the node after the properties is indexed), document markers (`---`,
//! `...`) and directives. Flow collections (`[..]`, `{..}`) are leaves: their own span is
//! recorded, not their children. Explicit keys (`? `) are leaves too.
//!
//! The scanner never panics, on any input: malformed text yields a partial index.
//!
//! Conventions:
//! - lines and columns are 1-based; columns count characters (Unicode scalar values);
//!   [`Pos::byte`] is the 0-based byte offset within the line, for slicing;
//! - a [`Span`] is half-open: `start` is the first character, `end` the position just
//!   after the last one (on the same line for single-line scalars);
//! - line numbers are absolute in the FILE, also for documents after the first.
//!
//! ```
//! use dpdk_reconciler::manifest::position::{index_file, NodeKind};
//! let text = "# a comment\napiVersion: v1\nkind: DPDKConfig\nspec:\n  resourceMapping:\n  - deviceIndex: 2 # two\n    resourceName: 'intel.com/x'\n";
//! let docs = index_file(text);
//! let node = docs[0].index.get("/spec/resourceMapping/0/deviceIndex").unwrap();
//! assert_eq!((node.key.unwrap().start.line, node.key.unwrap().start.col), (6, 5));
//! assert_eq!((node.value.start.col, node.value.end.col), (18, 19));
//! assert_eq!(node.kind, NodeKind::Scalar(dpdk_reconciler::manifest::position::ScalarStyle::Plain));
//! ```

use dpdk_bridge::json_pointer::escape_token;
use std::collections::HashMap;

/// Nesting deeper than this is not indexed (the node becomes an opaque leaf). serde_yaml
/// refuses nesting past 128 levels too; this keeps the scanner's recursion bounded.
const MAX_DEPTH: usize = 200;

/// A position in a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pos {
    /// 1-based line number in the file.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
    /// 0-based byte offset of this column within the line.
    pub byte: usize,
}

/// A half-open range of text: `start` inclusive, `end` exclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Span {
    pub start: Pos,
    pub end: Pos,
}

/// How a scalar is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScalarStyle {
    Plain,
    SingleQuoted,
    DoubleQuoted,
    /// `|` block scalar.
    Literal,
    /// `>` block scalar.
    Folded,
}

/// What a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NodeKind {
    /// A block mapping; its entries are indexed as children.
    Mapping,
    /// A block sequence; its items are indexed as children (`.../0`, `.../1`, ...).
    Sequence,
    /// A scalar; `value` spans its text including quotes (for block scalars: from the
    /// `|`/`>` header to the end of the last content line).
    Scalar(ScalarStyle),
    /// A flow collection (`[..]` or `{..}`), indexed as a leaf.
    Flow,
    /// An alias (`*name`), indexed as a leaf.
    Alias,
    /// No value (`key:` with nothing after it, or `-` alone): null. `value` is empty and
    /// sits right after the `:` or `-`.
    Empty,
}

/// Where one node (a mapping entry, a sequence item, or the document root) sits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// RFC 6901 JSON pointer, e.g. `/spec/resourceMapping/0/deviceIndex`; `""` for the root.
    pub pointer: String,
    /// The key of a mapping entry (including quotes), or the `-` of a sequence item;
    /// `None` for the document root.
    pub key: Option<Span>,
    /// The value: the scalar's text, the flow collection, or the whole block collection
    /// (from its first key or dash to the end of its last content).
    pub value: Span,
    pub kind: NodeKind,
    /// 0-based column (in bytes, which for indentation equals characters) of the key or
    /// the dash: the indentation a sibling inserted next to this node would use.
    pub indent: usize,
    /// First line of the entry (the key's or dash's line; the value's for the root).
    pub first_line: usize,
    /// Last line of the entry's value, inclusive. Trailing comments and blank lines are
    /// not part of it.
    pub last_line: usize,
}

impl Node {
    /// Where a message about this node should point: its key if it has one, else its value.
    pub fn key_or_value(&self) -> Pos {
        self.key.map(|k| k.start).unwrap_or(self.value.start)
    }
}

/// The position index of one YAML document.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PositionIndex {
    nodes: Vec<Node>,
    by_pointer: HashMap<String, usize>,
    first_line: usize,
}

impl PositionIndex {
    /// Indexes `text`, one YAML document, whose first line is line `first_line` (1-based)
    /// of its file. A leading `---` marker line is allowed (content after it is indexed).
    pub fn build(text: &str, first_line: usize) -> PositionIndex {
        let lines: Vec<&str> = text
            .split('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .collect();
        let mut scanner = Scanner {
            lines: &lines,
            first_line: first_line.max(1),
            nodes: Vec::new(),
        };
        scanner.document();
        let mut by_pointer = HashMap::with_capacity(scanner.nodes.len());
        for (i, n) in scanner.nodes.iter().enumerate() {
            // A duplicate key (invalid YAML) keeps its first position.
            by_pointer.entry(n.pointer.clone()).or_insert(i);
        }
        PositionIndex {
            nodes: scanner.nodes,
            by_pointer,
            first_line: first_line.max(1),
        }
    }

    /// The node at `pointer` (`""` is the root), if the document has it.
    pub fn get(&self, pointer: &str) -> Option<&Node> {
        self.by_pointer
            .get(pointer)
            .and_then(|&i| self.nodes.get(i))
    }

    /// Every indexed node, in document order (parents before their children).
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The direct children of the node at `pointer`, in document order.
    pub fn children<'a>(&'a self, pointer: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.nodes
            .iter()
            .filter(move |n| parent_pointer(&n.pointer) == Some(pointer))
    }

    /// The deepest indexed node on the path to `pointer`: the node itself when present,
    /// else its nearest ancestor (e.g. for a missing required field, its parent object).
    pub fn nearest(&self, pointer: &str) -> Option<&Node> {
        let mut p = pointer;
        loop {
            if let Some(n) = self.get(p) {
                return Some(n);
            }
            p = parent_pointer(p)?;
        }
    }

    /// Where a message about `pointer` should point: the key of the node (or of its nearest
    /// indexed ancestor), else the document's first line.
    pub fn locate(&self, pointer: &str) -> Pos {
        self.nearest(pointer)
            .map(Node::key_or_value)
            .unwrap_or(Pos {
                line: self.first_line,
                col: 1,
                byte: 0,
            })
    }

    /// Where a message about the VALUE at `pointer` should point: its value's start when
    /// the node exists, else like [`PositionIndex::locate`].
    pub fn locate_value(&self, pointer: &str) -> Pos {
        match self.get(pointer) {
            Some(n) if n.kind != NodeKind::Empty => n.value.start,
            Some(n) => n.key_or_value(),
            None => self.locate(pointer),
        }
    }
}

/// The pointer of the parent of `pointer`, `None` for the root.
pub fn parent_pointer(pointer: &str) -> Option<&str> {
    if pointer.is_empty() {
        return None;
    }
    pointer.rfind('/').map(|i| &pointer[..i])
}

/// One document of a multi-document YAML file, as raw text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawDocument {
    /// 0-based index among the documents this function returns for the file.
    pub index: usize,
    /// The `---` line that opens the document, if any (1-based).
    pub marker_line: Option<usize>,
    /// First line of the document's text (1-based): the line after its `---` marker, or
    /// the marker line itself when content follows the marker on that line.
    pub start_line: usize,
    /// Last line of the document's text, inclusive (before the next marker or `...`).
    /// `end_line < start_line` for an empty document at the end of a file.
    pub end_line: usize,
    /// The lines `start_line..=end_line`, joined with `\n` (no trailing newline added).
    pub text: String,
}

impl RawDocument {
    /// True when the document holds nothing but blank lines and comments (a null document).
    pub fn is_blank(&self) -> bool {
        self.text.lines().enumerate().all(|(i, l)| {
            // Content may follow the `---` on the marker line itself.
            let from = if i == 0 && self.marker_line == Some(self.start_line) {
                3
            } else {
                0
            };
            content_start(l.as_bytes(), from).is_none()
        })
    }

    /// Lines of the whole document including its `---` marker line: what to delete to
    /// remove the document from its file.
    pub fn full_lines(&self) -> (usize, usize) {
        (self.marker_line.unwrap_or(self.start_line), self.end_line)
    }
}

/// A document with its position index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexedDocument {
    pub raw: RawDocument,
    pub index: PositionIndex,
}

/// Splits a file into documents and indexes each one.
pub fn index_file(text: &str) -> Vec<IndexedDocument> {
    split_documents(text)
        .into_iter()
        .map(|raw| {
            let index = PositionIndex::build(&raw.text, raw.start_line);
            IndexedDocument { raw, index }
        })
        .collect()
}

/// True for a `---` document start marker (at column 0, followed by space, tab or EOL).
fn is_doc_start(line: &str) -> bool {
    line.starts_with("---") && matches!(line.as_bytes().get(3), None | Some(b' ') | Some(b'\t'))
}

/// True for a `...` document end marker.
fn is_doc_end(line: &str) -> bool {
    line.starts_with("...") && matches!(line.as_bytes().get(3), None | Some(b' ') | Some(b'\t'))
}

/// Splits a (multi-document) YAML file into its documents, with their line ranges.
///
/// A preamble before the first `---` that holds only comments, blank lines or directives
/// is not a document (YAML attaches it to the next one). A `---` at the end of the file
/// opens an empty (blank) document, as in YAML.
pub fn split_documents(text: &str) -> Vec<RawDocument> {
    let lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    // A trailing newline does not start another line.
    let n = if text.ends_with('\n') {
        lines.len().saturating_sub(1)
    } else {
        lines.len()
    };
    let mut docs = Vec::new();
    // State of the document being collected: (marker line, start line index, has content).
    let mut cur: Option<(Option<usize>, usize, bool)> = None;
    // Between documents (start of file, after `...`): only directives, comments, blanks.
    let mut preamble_start = 0usize;
    let finish =
        |docs: &mut Vec<RawDocument>, marker: Option<usize>, start: usize, end_excl: usize| {
            let body: Vec<&str> = lines
                .get(start..end_excl)
                .map(|s| s.to_vec())
                .unwrap_or_default();
            docs.push(RawDocument {
                index: docs.len(),
                marker_line: marker.map(|m| m + 1),
                start_line: start + 1,
                end_line: end_excl,
                text: body.join("\n"),
            });
        };
    for (i, line) in lines.iter().take(n).enumerate() {
        if is_doc_start(line) {
            if let Some((marker, start, has_content)) = cur.take()
                && (marker.is_some() || has_content)
            {
                finish(&mut docs, marker, start, i);
            }
            let rest_has_content = content_start(line.as_bytes(), 3).is_some();
            cur = Some((
                Some(i),
                if rest_has_content { i } else { i + 1 },
                rest_has_content,
            ));
            continue;
        }
        if is_doc_end(line) {
            if let Some((marker, start, has_content)) = cur.take()
                && (marker.is_some() || has_content)
            {
                finish(&mut docs, marker, start, i);
            }
            preamble_start = i + 1;
            continue;
        }
        let has = content_start(line.as_bytes(), 0).is_some();
        match cur.as_mut() {
            Some((_, _, c)) => *c |= has,
            None => {
                // Outside a document: directives and comments stay outside; content opens a
                // bare document that starts right after the previous document's end.
                if has && !line.starts_with('%') {
                    cur = Some((None, preamble_start, true));
                }
            }
        }
    }
    if let Some((marker, start, has_content)) = cur
        && (marker.is_some() || has_content)
    {
        finish(&mut docs, marker, start, n);
    }
    docs
}

/// Byte offset of the first non-space character at or after `from` that is not the start
/// of a comment; `None` when the rest of the line is blank or a comment.
fn content_start(line: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < line.len() && (line[i] == b' ' || line[i] == b'\t') {
        i += 1;
    }
    match line.get(i) {
        None | Some(b'#') => None,
        Some(_) => Some(i),
    }
}

/// Number of leading spaces.
fn indent_of(line: &[u8]) -> usize {
    line.iter().take_while(|&&b| b == b' ').count()
}

struct Scanner<'a> {
    lines: &'a [&'a str],
    first_line: usize,
    nodes: Vec<Node>,
}

impl<'a> Scanner<'a> {
    fn line(&self, li: usize) -> &'a [u8] {
        self.lines.get(li).map(|l| l.as_bytes()).unwrap_or(&[])
    }

    fn pos(&self, li: usize, byte: usize) -> Pos {
        let line = self.line(li);
        let byte = byte.min(line.len());
        // Columns count characters: every byte that is not a UTF-8 continuation byte.
        let col = line[..byte].iter().filter(|&&b| (b & 0xC0) != 0x80).count() + 1;
        Pos {
            line: self.first_line + li,
            col,
            byte,
        }
    }

    /// The next line at or after `li` with content (not blank, not only a comment).
    fn next_content(&self, li: usize) -> Option<usize> {
        (li..self.lines.len()).find(|&l| content_start(self.line(l), 0).is_some())
    }

    fn document(&mut self) {
        // Content may start on a `---` line.
        let (li, col) = match self.lines.first() {
            Some(first) if is_doc_start(first) => match content_start(first.as_bytes(), 3) {
                Some(c) => (0, c),
                None => match self.next_content(1) {
                    Some(l) => (l, indent_of(self.line(l))),
                    None => return,
                },
            },
            _ => match self.next_content(0) {
                Some(l) => (l, indent_of(self.line(l))),
                None => return,
            },
        };
        let col = skip_properties(self.line(li), col);
        if content_start(self.line(li), col).is_none() {
            // Properties alone on the first line (`--- !tag`): the node follows.
            if let Some(l) = self.next_content(li + 1) {
                let c = indent_of(self.line(l));
                self.node(l, c, String::new(), -1, None, 0);
            }
            return;
        }
        self.node(li, col, String::new(), -1, None, 0);
    }

    /// Scans the node that starts at line `li`, byte `col`, records it (with `key` as its
    /// key span) and its descendants, and returns (end of its value, next line to read).
    /// `parent` is the indentation of the enclosing block (-1 for the root).
    fn node(
        &mut self,
        li: usize,
        col: usize,
        pointer: String,
        parent: isize,
        key: Option<(Span, usize)>,
        depth: usize,
    ) -> (Pos, usize) {
        let line = self.line(li);
        let slot = self.nodes.len();
        let (first_line, indent) = match key {
            Some((k, ind)) => (k.start.line, ind),
            None => (self.first_line + li, col),
        };
        self.nodes.push(Node {
            pointer: pointer.clone(),
            key: key.map(|(k, _)| k),
            value: Span {
                start: self.pos(li, col),
                end: self.pos(li, col),
            },
            kind: NodeKind::Empty,
            indent,
            first_line,
            last_line: first_line,
        });
        let (kind, end, next) = if depth >= MAX_DEPTH {
            let end = line_content_end(line, col);
            (NodeKind::Flow, self.pos(li, end), li + 1)
        } else {
            match line.get(col) {
                Some(b'-') if matches!(line.get(col + 1), None | Some(b' ') | Some(b'\t')) => {
                    let (end, next) = self.sequence(li, col, &pointer, depth);
                    (NodeKind::Sequence, end, next)
                }
                Some(b'[') | Some(b'{') => {
                    let (eli, eb) = self.flow_end(li, col);
                    (NodeKind::Flow, self.pos(eli, eb), eli + 1)
                }
                Some(b'|') | Some(b'>') => {
                    let style = if line.get(col) == Some(&b'|') {
                        ScalarStyle::Literal
                    } else {
                        ScalarStyle::Folded
                    };
                    let (eli, eb) = self.block_scalar_end(li, parent);
                    (NodeKind::Scalar(style), self.pos(eli, eb), eli + 1)
                }
                Some(b'*') => {
                    let end = token_end(line, col);
                    (NodeKind::Alias, self.pos(li, end), li + 1)
                }
                Some(b'?') if matches!(line.get(col + 1), None | Some(b' ') | Some(b'\t')) => {
                    let end = line_content_end(line, col);
                    (NodeKind::Flow, self.pos(li, end), li + 1)
                }
                Some(_) if key_at(line, col).is_some() => {
                    let (end, next) = self.mapping(li, col, &pointer, depth);
                    (NodeKind::Mapping, end, next)
                }
                Some(b'"') | Some(b'\'') => {
                    let style = if line.get(col) == Some(&b'"') {
                        ScalarStyle::DoubleQuoted
                    } else {
                        ScalarStyle::SingleQuoted
                    };
                    let (eli, eb) = self.quoted_end(li, col);
                    (NodeKind::Scalar(style), self.pos(eli, eb), eli + 1)
                }
                Some(_) => {
                    let (eli, eb) = self.plain_end(li, col, parent);
                    (
                        NodeKind::Scalar(ScalarStyle::Plain),
                        self.pos(eli, eb),
                        eli + 1,
                    )
                }
                None => (NodeKind::Empty, self.pos(li, col), li + 1),
            }
        };
        if let Some(n) = self.nodes.get_mut(slot) {
            n.kind = kind;
            n.value.end = end;
            n.last_line = end.line.max(n.first_line);
        }
        (end, next)
    }

    /// A block mapping whose first key starts at (`li`, `col`); `col` is its indentation.
    fn mapping(&mut self, li: usize, col: usize, pointer: &str, depth: usize) -> (Pos, usize) {
        let mut li = li;
        let mut end = self.pos(li, col);
        let mut next_line = li + 1;
        loop {
            let line = self.line(li);
            let Some(k) = key_at(line, col) else { break };
            let key_span = Span {
                start: self.pos(li, col),
                end: self.pos(li, k.key_end),
            };
            let child = format!("{pointer}/{}", escape_token(&k.name));
            let vcol = skip_properties(line, k.colon + 1);
            let (e, next) = match content_start(line, vcol) {
                Some(v) => self.node(li, v, child, col as isize, Some((key_span, col)), depth + 1),
                None => {
                    let following = self.next_content(li + 1).filter(|&nl| {
                        let l = self.line(nl);
                        let ind = indent_of(l);
                        ind > col || (ind == col && is_dash(l, ind))
                    });
                    match following {
                        Some(nl) => {
                            let ind = indent_of(self.line(nl));
                            let c = skip_properties(self.line(nl), ind);
                            self.node(nl, c, child, col as isize, Some((key_span, col)), depth + 1)
                        }
                        None => {
                            let at = self.pos(li, k.colon + 1);
                            self.nodes.push(Node {
                                pointer: child,
                                key: Some(key_span),
                                value: Span { start: at, end: at },
                                kind: NodeKind::Empty,
                                indent: col,
                                first_line: key_span.start.line,
                                last_line: key_span.start.line,
                            });
                            (at, li + 1)
                        }
                    }
                }
            };
            end = e;
            next_line = next;
            match self.next_content(next) {
                Some(nl)
                    if nl > li
                        && indent_of(self.line(nl)) == col
                        && !is_dash(self.line(nl), col) =>
                {
                    li = nl
                }
                _ => break,
            }
        }
        (end, next_line)
    }

    /// A block sequence whose first `-` is at (`li`, `col`).
    fn sequence(&mut self, li: usize, col: usize, pointer: &str, depth: usize) -> (Pos, usize) {
        let mut li = li;
        let mut first = true;
        let mut i = 0usize;
        let mut end = self.pos(li, col);
        let mut next_line = li + 1;
        loop {
            let line = self.line(li);
            if !first && (indent_of(line) != col || !is_dash(line, col)) {
                break;
            }
            first = false;
            let dash = Span {
                start: self.pos(li, col),
                end: self.pos(li, col + 1),
            };
            let child = format!("{pointer}/{i}");
            let vcol = skip_properties(line, col + 1);
            let (e, next) = match content_start(line, vcol) {
                Some(v) => self.node(li, v, child, col as isize, Some((dash, col)), depth + 1),
                None => match self
                    .next_content(li + 1)
                    .filter(|&nl| indent_of(self.line(nl)) > col)
                {
                    Some(nl) => {
                        let ind = indent_of(self.line(nl));
                        let c = skip_properties(self.line(nl), ind);
                        self.node(nl, c, child, col as isize, Some((dash, col)), depth + 1)
                    }
                    None => {
                        let at = self.pos(li, col + 1);
                        self.nodes.push(Node {
                            pointer: child,
                            key: Some(dash),
                            value: Span { start: at, end: at },
                            kind: NodeKind::Empty,
                            indent: col,
                            first_line: dash.start.line,
                            last_line: dash.start.line,
                        });
                        (at, li + 1)
                    }
                },
            };
            end = e;
            next_line = next;
            i += 1;
            match self.next_content(next) {
                Some(nl) if nl > li => li = nl,
                _ => break,
            }
        }
        (end, next_line)
    }

    /// End (line index, byte) of a flow collection opening at (`li`, `col`).
    fn flow_end(&self, li: usize, col: usize) -> (usize, usize) {
        let mut depth = 0usize;
        let mut quote: Option<u8> = None;
        let mut last = (li, col + 1);
        for l in li..self.lines.len() {
            let line = self.line(l);
            let mut b = if l == li { col } else { 0 };
            while b < line.len() {
                let c = line[b];
                match quote {
                    Some(q) => {
                        if c == b'\\' && q == b'"' {
                            b += 1;
                        } else if c == q {
                            if q == b'\'' && line.get(b + 1) == Some(&b'\'') {
                                b += 1;
                            } else {
                                quote = None;
                            }
                        }
                    }
                    None => match c {
                        b'"' | b'\'' => quote = Some(c),
                        b'#' if b == 0 || matches!(line.get(b - 1), Some(b' ') | Some(b'\t')) => {
                            break;
                        }
                        b'[' | b'{' => depth += 1,
                        b']' | b'}' => {
                            depth = depth.saturating_sub(1);
                            if depth == 0 {
                                return (l, b + 1);
                            }
                        }
                        _ => {}
                    },
                }
                b += 1;
            }
            if let Some(e) = content_end(line) {
                last = (l, e);
            }
        }
        // Unterminated: the rest of the document.
        last
    }

    /// End of a quoted scalar opening at (`li`, `col`).
    fn quoted_end(&self, li: usize, col: usize) -> (usize, usize) {
        let q = self.line(li).get(col).copied().unwrap_or(b'"');
        let mut last = (li, col + 1);
        for l in li..self.lines.len() {
            let line = self.line(l);
            let mut b = if l == li { col + 1 } else { 0 };
            while b < line.len() {
                let c = line[b];
                if q == b'"' && c == b'\\' {
                    b += 2;
                    continue;
                }
                if c == q {
                    if q == b'\'' && line.get(b + 1) == Some(&b'\'') {
                        b += 2;
                        continue;
                    }
                    return (l, b + 1);
                }
                b += 1;
            }
            if let Some(e) = content_end(line) {
                last = (l, e);
            }
        }
        last
    }

    /// End of a block scalar whose header is on line `li`: its content is every following
    /// line that is blank or indented deeper than `parent`.
    fn block_scalar_end(&self, li: usize, parent: isize) -> (usize, usize) {
        let mut last = (li, line_content_end(self.line(li), 0));
        for l in li + 1..self.lines.len() {
            let line = self.line(l);
            let blank = line.iter().all(|&b| b == b' ' || b == b'\t');
            if blank {
                continue;
            }
            if (indent_of(line) as isize) <= parent {
                break;
            }
            last = (l, trimmed_len(line));
        }
        last
    }

    /// End of a plain scalar starting at (`li`, `col`), including continuation lines
    /// indented deeper than `parent`.
    fn plain_end(&self, li: usize, col: usize, parent: isize) -> (usize, usize) {
        let mut last = (li, line_content_end(self.line(li), col));
        let mut l = li + 1;
        while l < self.lines.len() {
            let line = self.line(l);
            let Some(c) = content_start(line, 0) else {
                if line.iter().all(|&b| b == b' ' || b == b'\t') {
                    // Blank lines may sit inside a multi-line plain scalar.
                    l += 1;
                    continue;
                }
                // A comment line ends it.
                break;
            };
            if (indent_of(line) as isize) <= parent || key_at(line, c).is_some() {
                break;
            }
            last = (l, line_content_end(line, c));
            l += 1;
        }
        last
    }
}

/// A mapping key found on a line.
struct KeyAt {
    /// Unquoted key text.
    name: String,
    /// Byte just after the key (after its closing quote).
    key_end: usize,
    /// Byte of the `:` indicator.
    colon: usize,
}

/// The mapping key starting at `col`, if the text there is `key:` followed by space/EOL.
fn key_at(line: &[u8], col: usize) -> Option<KeyAt> {
    let first = *line.get(col)?;
    if first == b'"' || first == b'\'' {
        let mut b = col + 1;
        let mut raw = Vec::new();
        loop {
            let c = *line.get(b)?;
            if first == b'"' && c == b'\\' {
                raw.push(c);
                raw.push(*line.get(b + 1)?);
                b += 2;
                continue;
            }
            if c == first {
                if first == b'\'' && line.get(b + 1) == Some(&b'\'') {
                    raw.push(b'\'');
                    b += 2;
                    continue;
                }
                break;
            }
            raw.push(c);
            b += 1;
        }
        let key_end = b + 1;
        let mut c = key_end;
        while matches!(line.get(c), Some(b' ') | Some(b'\t')) {
            c += 1;
        }
        if line.get(c) != Some(&b':') || !matches!(line.get(c + 1), None | Some(b' ') | Some(b'\t'))
        {
            return None;
        }
        let text = String::from_utf8_lossy(&raw).into_owned();
        let name = if first == b'"' {
            unescape_double(&text)
        } else {
            text
        };
        return Some(KeyAt {
            name,
            key_end,
            colon: c,
        });
    }
    // Indicators that cannot start a plain key.
    if matches!(
        first,
        b'[' | b'{'
            | b']'
            | b'}'
            | b'#'
            | b'|'
            | b'>'
            | b'*'
            | b'&'
            | b'!'
            | b'%'
            | b'@'
            | b'`'
            | b','
    ) {
        return None;
    }
    if matches!(first, b'-' | b'?' | b':')
        && matches!(line.get(col + 1), None | Some(b' ') | Some(b'\t'))
    {
        return None;
    }
    let mut b = col;
    while b < line.len() {
        let c = line[b];
        if c == b'#' && b > col && matches!(line.get(b - 1), Some(b' ') | Some(b'\t')) {
            return None;
        }
        if c == b':' && b > col && matches!(line.get(b + 1), None | Some(b' ') | Some(b'\t')) {
            let mut e = b;
            while e > col && matches!(line.get(e - 1), Some(b' ') | Some(b'\t')) {
                e -= 1;
            }
            let name = String::from_utf8_lossy(line.get(col..e).unwrap_or(&[])).into_owned();
            return Some(KeyAt {
                name,
                key_end: e,
                colon: b,
            });
        }
        b += 1;
    }
    None
}

/// Resolves the common escapes of a double-quoted key; others are kept as written.
fn unescape_double(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('"') => out.push('"'),
            Some('\\') => out.push('\\'),
            Some('/') => out.push('/'),
            Some('0') => out.push('\0'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// True when the line has a `-` sequence indicator at `col`.
fn is_dash(line: &[u8], col: usize) -> bool {
    line.get(col) == Some(&b'-') && matches!(line.get(col + 1), None | Some(b' ') | Some(b'\t'))
}

/// Skips anchors (`&a`) and tags (`!t`, `!!str`, `!<...>`) and the spaces after them.
fn skip_properties(line: &[u8], col: usize) -> usize {
    let mut b = col;
    loop {
        while matches!(line.get(b), Some(b' ') | Some(b'\t')) {
            b += 1;
        }
        match line.get(b) {
            Some(b'&') | Some(b'!') => b = token_end(line, b),
            _ => return b,
        }
    }
}

/// End of a token (up to a space or EOL).
fn token_end(line: &[u8], col: usize) -> usize {
    let mut b = col;
    while b < line.len() && line[b] != b' ' && line[b] != b'\t' {
        b += 1;
    }
    b.max(col + 1).min(line.len().max(col))
}

/// End of the content of a line from `col` on, before a ` #` comment and trailing spaces.
fn line_content_end(line: &[u8], col: usize) -> usize {
    let mut end = line.len();
    let mut b = col;
    while b < line.len() {
        if line[b] == b'#' && b > col && matches!(line.get(b - 1), Some(b' ') | Some(b'\t')) {
            end = b;
            break;
        }
        b += 1;
    }
    while end > col && matches!(line.get(end - 1), Some(b' ') | Some(b'\t')) {
        end -= 1;
    }
    end.max(col.min(line.len()))
}

/// End of the line's content (before a comment), `None` for blank or comment-only lines.
fn content_end(line: &[u8]) -> Option<usize> {
    content_start(line, 0).map(|c| line_content_end(line, c))
}

/// Length of the line without trailing spaces.
fn trimmed_len(line: &[u8]) -> usize {
    let mut e = line.len();
    while e > 0 && matches!(line[e - 1], b' ' | b'\t') {
        e -= 1;
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use dpdk_bridge::json_pointer::pointer_of;

    fn at(idx: &PositionIndex, p: &str) -> (usize, usize) {
        let n = idx.get(p).unwrap_or_else(|| {
            panic!(
                "{p} not indexed; have {:?}",
                idx.nodes().iter().map(|n| &n.pointer).collect::<Vec<_>>()
            )
        });
        let k = n.key_or_value();
        (k.line, k.col)
    }

    fn val<'t>(text: &'t str, idx: &PositionIndex, p: &str) -> &'t str {
        let n = idx.get(p).expect("indexed");
        assert_eq!(n.value.start.line, n.value.end.line, "single-line value");
        let line = text.lines().nth(n.value.start.line - 1).expect("line");
        &line[n.value.start.byte..n.value.end.byte]
    }

    /// The seed's DPDKConfig as `examples-repo/` keeps it (comments included).
    use dpdk_testenv::fixtures::SEED_DPDKCONFIG as SEED;

    #[test]
    fn seed_document_positions() {
        let idx = PositionIndex::build(SEED, 1);
        assert_eq!(at(&idx, "/kind"), (3, 1));
        assert_eq!(val(SEED, &idx, "/kind"), "DPDKConfig");
        assert_eq!(at(&idx, "/metadata/name"), (5, 3));
        assert_eq!(val(SEED, &idx, "/metadata/name"), "default-dpdk-config");
        assert_eq!(at(&idx, "/spec/driverOptions/writeCombing"), (14, 5));
        assert_eq!(at(&idx, "/spec/resourceMapping"), (15, 3));
        assert_eq!(
            idx.get("/spec/resourceMapping").map(|n| n.kind),
            Some(NodeKind::Sequence)
        );
        // Sequence items point at their dash.
        assert_eq!(at(&idx, "/spec/resourceMapping/0"), (18, 3));
        assert_eq!(at(&idx, "/spec/resourceMapping/0/deviceIndex"), (18, 5));
        assert_eq!(val(SEED, &idx, "/spec/resourceMapping/0/deviceIndex"), "2");
        assert_eq!(at(&idx, "/spec/resourceMapping/0/driver"), (20, 5));
        assert_eq!(
            val(SEED, &idx, "/spec/resourceMapping/0/driver"),
            "vfio-pci"
        );
        let spec = idx.get("/spec").expect("spec");
        assert_eq!(
            (spec.first_line, spec.last_line, spec.kind),
            (6, 20, NodeKind::Mapping)
        );
        let root = idx.get("").expect("root");
        assert_eq!((root.first_line, root.last_line), (2, 20));
        assert_eq!(
            idx.children("/spec")
                .map(|n| n.pointer.as_str())
                .collect::<Vec<_>>(),
            vec![
                "/spec/nodeSelector",
                "/spec/driverOptions",
                "/spec/resourceMapping"
            ]
        );
    }

    #[test]
    fn comments_quotes_and_escaped_keys() {
        let text = "# header\nmetadata:   # trailing\n  labels:\n    \"app.kubernetes.io/name\": 'it''s'   # c\n    a~b: \"x # not a comment\"\n  # between\n  name: plain value # comment\n";
        let idx = PositionIndex::build(text, 1);
        assert_eq!(at(&idx, "/metadata/labels/app.kubernetes.io~1name"), (4, 5));
        assert_eq!(
            val(text, &idx, "/metadata/labels/app.kubernetes.io~1name"),
            "'it''s'"
        );
        assert_eq!(
            idx.get("/metadata/labels/app.kubernetes.io~1name")
                .map(|n| n.kind),
            Some(NodeKind::Scalar(ScalarStyle::SingleQuoted))
        );
        assert_eq!(
            val(text, &idx, "/metadata/labels/a~0b"),
            "\"x # not a comment\""
        );
        assert_eq!(val(text, &idx, "/metadata/name"), "plain value");
        assert_eq!(at(&idx, "/metadata/name"), (7, 3));
    }

    #[test]
    fn indented_sequences_nested_and_compact() {
        let text = "a:\n  - x\n  -   y: 1\n      z: [1, 2,\n        3]\n  -\n    - deep\n  - - p\n    - q\nb: {k: v}\n";
        let idx = PositionIndex::build(text, 1);
        assert_eq!(val(text, &idx, "/a/0"), "x");
        assert_eq!(at(&idx, "/a/1/y"), (3, 7));
        assert_eq!(at(&idx, "/a/1/z"), (4, 7));
        let z = idx.get("/a/1/z").expect("z");
        assert_eq!(
            (
                z.kind,
                z.value.start.line,
                z.value.end.line,
                z.value.end.col
            ),
            (NodeKind::Flow, 4, 5, 11)
        );
        assert!(idx.get("/a/1/z/0").is_none(), "flow collections are leaves");
        assert_eq!(val(text, &idx, "/a/2/0"), "deep");
        assert_eq!(val(text, &idx, "/a/3/0"), "p");
        assert_eq!(val(text, &idx, "/a/3/1"), "q");
        assert_eq!(idx.get("/b").map(|n| n.kind), Some(NodeKind::Flow));
    }

    #[test]
    fn block_scalars_multiline_plain_anchors_and_empty() {
        let text = "a: |\n  line one\n\n  line two\nb: >-\n   folded\nc: &anc\n  d: 1\ne: *anc\nf:\ng: first\n  continued\nh: !!str 5\n";
        let idx = PositionIndex::build(text, 10);
        let a = idx.get("/a").expect("a");
        assert_eq!(
            (a.kind, a.value.start.line, a.value.end.line),
            (NodeKind::Scalar(ScalarStyle::Literal), 10, 13)
        );
        assert_eq!(idx.get("/b").map(|n| n.last_line), Some(15));
        assert_eq!(at(&idx, "/c/d"), (17, 3));
        assert_eq!(idx.get("/e").map(|n| n.kind), Some(NodeKind::Alias));
        let f = idx.get("/f").expect("f");
        assert_eq!((f.kind, f.value.start.col), (NodeKind::Empty, 3));
        let g = idx.get("/g").expect("g");
        assert_eq!((g.value.start.line, g.value.end.line), (20, 21));
        assert_eq!(
            idx.get("/h").map(|n| (n.value.start.col, n.value.end.col)),
            Some((10, 11))
        );
    }

    #[test]
    fn locate_falls_back_to_the_nearest_ancestor() {
        let idx = PositionIndex::build(SEED, 1);
        assert_eq!(idx.locate("/spec/resourceMapping/0/missing").line, 18);
        assert_eq!(
            idx.locate_value("/spec/resourceMapping/0/deviceIndex").col,
            18
        );
        assert_eq!(
            idx.locate("/nope/deeper"),
            // The root starts at its first key (line 2; line 1 is a comment).
            Pos {
                line: 2,
                col: 1,
                byte: 0
            }
        );
    }

    #[test]
    fn split_multi_document_files() {
        let text = "# preamble\n%YAML 1.2\n---\na: 1\n---\n# only a comment\n--- # c\nb: 2\n...\n# after end\nc: 3\n---\n";
        let docs = split_documents(text);
        assert_eq!(docs.len(), 5, "{docs:#?}");
        assert_eq!(
            (
                docs[0].marker_line,
                docs[0].start_line,
                docs[0].end_line,
                docs[0].text.as_str()
            ),
            (Some(3), 4, 4, "a: 1")
        );
        assert!(docs[1].is_blank());
        assert_eq!((docs[2].start_line, docs[2].text.as_str()), (8, "b: 2"));
        assert_eq!(
            (docs[3].marker_line, docs[3].start_line, docs[3].end_line),
            (None, 10, 11)
        );
        assert!(docs[4].is_blank());
        let idx = index_file(text);
        assert_eq!(at(&idx[2].index, "/b"), (8, 1));
        assert_eq!(at(&idx[3].index, "/c"), (11, 1));
        let single = split_documents("a: 1\n");
        assert_eq!(single.len(), 1);
        assert_eq!(
            (
                single[0].start_line,
                single[0].end_line,
                single[0].marker_line
            ),
            (1, 1, None)
        );
        assert!(split_documents("# nothing\n").is_empty());
    }

    #[test]
    fn content_on_the_marker_line_and_crlf() {
        let docs = index_file("--- {a: 1}\r\n---\r\nk: v\r\n");
        assert_eq!(docs.len(), 2);
        assert_eq!(
            docs[0].index.get("").map(|n| (n.kind, n.value.start.col)),
            Some((NodeKind::Flow, 5))
        );
        assert_eq!(at(&docs[1].index, "/k"), (3, 1));
        assert_eq!(docs[1].index.get("/k").map(|n| n.value.end.col), Some(5));
    }

    #[test]
    fn columns_count_characters() {
        let text = "é: ü\nx: \"ä\"\n";
        let idx = PositionIndex::build(text, 1);
        assert_eq!(
            idx.get("/é")
                .map(|n| (n.value.start.col, n.value.start.byte)),
            Some((4, 4))
        );
        assert_eq!(val(text, &idx, "/x"), "\"ä\"");
    }

    #[test]
    fn pointers() {
        assert_eq!(
            pointer_of(["spec", "nodeSelector", "a/b~c"]),
            "/spec/nodeSelector/a~1b~0c"
        );
        assert_eq!(parent_pointer("/a/b"), Some("/a"));
        assert_eq!(parent_pointer("/a"), Some(""));
        assert_eq!(parent_pointer(""), None);
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let text = "- ".repeat(5000) + "x\n";
        let idx = PositionIndex::build(&text, 1);
        assert!(idx.nodes().len() <= MAX_DEPTH + 2);
    }
}
