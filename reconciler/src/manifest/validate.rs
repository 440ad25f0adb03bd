//! Offline validation of DPDKConfig documents: the CRD's structural schema (generated from
//! the same Rust types the API server gets), its CEL rules re-implemented in Rust, unknown
//! fields, metadata, and the cross-file rules (duplicate names).
//!
//! Everything here is pure: documents in, diagnostics and objects out.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use dpdk_bridge::api::{DPDKConfig, GROUP, VERSION};
use dpdk_bridge::labels;
use kube::CustomResourceExt;
use serde_json::{Map, Value};

use super::budget;
use super::diagnostic::{Code, Diagnostic};
use super::load::YamlLimits;
use super::position::{IndexedDocument, PositionIndex, index_file};
use super::{ManifestFile, ManifestObject, SkippedDocument};
use dpdk_bridge::json_pointer::escape_token;

/// The kind this loader applies.
pub const KIND: &str = "DPDKConfig";

/// The openAPIV3Schema of the DPDKConfig CRD, as JSON.
pub fn dpdkconfig_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let crd = DPDKConfig::crd();
        crd.spec
            .versions
            .iter()
            .find(|v| v.name == VERSION)
            .and_then(|v| v.schema.as_ref())
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .and_then(|s| serde_json::to_value(s).ok())
            .unwrap_or(Value::Null)
    })
}

/// Results of parsing and validating one file.
pub(crate) struct FileResult {
    pub file: ManifestFile,
    pub objects: Vec<ManifestObject>,
    pub skipped: Vec<SkippedDocument>,
    pub diagnostics: Vec<Diagnostic>,
}

/// Parses one file (multi-document) and validates every DPDKConfig in it.
pub(crate) fn check_file(
    path: &str,
    bytes: &[u8],
    file_index: usize,
    limits: &YamlLimits,
) -> FileResult {
    let mut out = FileResult {
        file: ManifestFile {
            path: path.to_string(),
            text: String::new(),
            documents: Vec::new(),
        },
        objects: Vec::new(),
        skipped: Vec::new(),
        diagnostics: Vec::new(),
    };
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let line = bytes[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1;
            out.diagnostics.push(Diagnostic::error(
                Code::InvalidYaml,
                path,
                line,
                1,
                format!("not valid UTF-8 ({e})"),
            ));
            return out;
        }
    };
    out.file.text = text.to_string();
    out.file.documents = index_file(text);
    for (di, doc) in out.file.documents.iter().enumerate() {
        if doc.raw.is_blank() {
            continue;
        }
        let mut diags = Vec::new();
        match check_document(path, doc, limits, &mut diags) {
            DocOutcome::Object { name, body, config } => out.objects.push(ManifestObject {
                name,
                file: path.to_string(),
                file_index,
                document: di,
                line: doc.raw.start_line,
                body,
                config: *config,
            }),
            DocOutcome::Skipped(mut s) => {
                s.document = di;
                out.skipped.push(s)
            }
            DocOutcome::Invalid | DocOutcome::Empty => {}
        }
        out.diagnostics.append(&mut diags);
    }
    out
}

enum DocOutcome {
    Object {
        name: String,
        body: Value,
        config: Box<DPDKConfig>,
    },
    Skipped(SkippedDocument),
    Invalid,
    Empty,
}

fn check_document(
    file: &str,
    doc: &IndexedDocument,
    limits: &YamlLimits,
    diags: &mut Vec<Diagnostic>,
) -> DocOutcome {
    let index = &doc.index;
    let start = (doc.raw.start_line, 1);
    // The budget first: an alias bomb or a deep document is refused before serde_yaml
    // builds its value.
    if let Err(b) = budget::check(&doc.raw.text, limits) {
        diags.push(Diagnostic::error(
            Code::TooLarge,
            file,
            doc.raw.start_line + b.line.saturating_sub(1),
            b.col,
            b.message,
        ));
        return DocOutcome::Invalid;
    }
    let yaml: serde_yaml::Value = match serde_yaml::from_str(&doc.raw.text) {
        Ok(v) => v,
        Err(e) => {
            let mut at = e
                .location()
                .map(|l| {
                    (
                        doc.raw.start_line + l.line().saturating_sub(1),
                        l.column().max(1),
                    )
                })
                .unwrap_or(start);
            // serde_yaml reports a duplicate key at its mapping; point at the second key.
            if e.to_string().contains("duplicate entry") {
                let mut seen = std::collections::HashSet::new();
                if let Some(n) = index
                    .nodes()
                    .iter()
                    .find(|n| !seen.insert(n.pointer.as_str()))
                {
                    let p = n.key_or_value();
                    at = (p.line, p.col);
                }
            }
            let (line, col) = at;
            diags.push(Diagnostic::error(
                Code::InvalidYaml,
                file,
                line,
                col,
                format!("invalid YAML: {}", strip_location(&e.to_string())),
            ));
            return DocOutcome::Invalid;
        }
    };
    if yaml.is_null() {
        return DocOutcome::Empty;
    }
    let value = match yaml_to_json(yaml, "") {
        Ok(v) => v,
        Err((pointer, msg)) => {
            let p = index.locate(&pointer);
            diags.push(
                Diagnostic::error(Code::InvalidYaml, file, p.line, p.col, msg)
                    .with_pointer(pointer),
            );
            return DocOutcome::Invalid;
        }
    };
    let Value::Object(obj) = value else {
        diags.push(Diagnostic::error(
            Code::NotAnObject,
            file,
            start.0,
            start.1,
            format!(
                "a document must be a Kubernetes object (a mapping), found {}",
                type_name(&value)
            ),
        ));
        return DocOutcome::Invalid;
    };
    let api_version = obj.get("apiVersion");
    let kind = obj.get("kind");
    let name = obj
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let (api_version, kind) = match (api_version, kind) {
        (None, None) => {
            return DocOutcome::Skipped(SkippedDocument {
                file: file.to_string(),
                document: 0,
                line: start.0,
                api_version: String::new(),
                kind: String::new(),
                name,
                reason: "not a Kubernetes object (no apiVersion or kind)".to_string(),
            });
        }
        (Some(Value::String(a)), Some(Value::String(k))) => (a.clone(), k.clone()),
        (a, k) => {
            let (ptr, what) = match (a, k) {
                (Some(Value::String(_)), _) => ("/kind", "kind"),
                _ => ("/apiVersion", "apiVersion"),
            };
            let p = index.locate(ptr);
            diags.push(
                Diagnostic::error(
                    Code::NotAnObject,
                    file,
                    p.line,
                    p.col,
                    format!("{what} must be set to a string"),
                )
                .with_pointer(ptr),
            );
            return DocOutcome::Invalid;
        }
    };
    let group = api_version.split_once('/').map(|(g, _)| g).unwrap_or("");
    if kind != KIND || group != GROUP {
        return DocOutcome::Skipped(SkippedDocument {
            file: file.to_string(),
            document: 0,
            line: start.0,
            reason: format!(
                "kind {kind} ({api_version}) is not applied by dpdk-reconciler; only {GROUP}/{VERSION} {KIND}"
            ),
            api_version,
            kind,
            name,
        });
    }
    if api_version != format!("{GROUP}/{VERSION}") {
        let p = index.locate_value("/apiVersion");
        diags.push(
            Diagnostic::error(
                Code::UnsupportedVersion,
                file,
                p.line,
                p.col,
                format!("apiVersion {api_version} is not served; use {GROUP}/{VERSION}"),
            )
            .with_pointer("/apiVersion"),
        );
        return DocOutcome::Invalid;
    }

    let mut ctx = DocumentDiagnostics {
        file,
        index,
        diags,
        errors: 0,
    };
    let body = ctx.object_root(obj);
    if ctx.errors > 0 {
        return DocOutcome::Invalid;
    }
    let name = body
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    match serde_json::from_value::<DPDKConfig>(body.clone()) {
        Ok(config) => DocOutcome::Object {
            name,
            body,
            config: Box::new(config),
        },
        Err(e) => {
            ctx.diags.push(Diagnostic::error(
                Code::SchemaViolation,
                file,
                start.0,
                start.1,
                format!("not a valid DPDKConfig: {e}"),
            ));
            DocOutcome::Invalid
        }
    }
}

/// serde_yaml's messages end with " at line L column C"; the position is reported separately.
fn strip_location(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) if msg[i..].contains(" column ") => msg[..i].to_string(),
        _ => msg.to_string(),
    }
}

/// Converts YAML to JSON the way kubectl does (non-string keys become strings; tags are
/// ignored). Errors name the JSON pointer of the offending node.
fn yaml_to_json(v: serde_yaml::Value, pointer: &str) -> Result<Value, (String, String)> {
    use serde_yaml::Value as Y;
    Ok(match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                match serde_json::Number::from_f64(f) {
                    Some(num) => Value::Number(num),
                    None => {
                        return Err((
                            pointer.to_string(),
                            format!("{f} cannot be represented in JSON"),
                        ));
                    }
                }
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                out.push(yaml_to_json(item, &format!("{pointer}/{i}"))?);
            }
            Value::Array(out)
        }
        Y::Mapping(m) => {
            let mut out = Map::new();
            for (k, val) in m {
                let key = match k {
                    Y::String(s) => s,
                    Y::Bool(b) => b.to_string(),
                    Y::Number(n) => n.to_string(),
                    Y::Null => "null".to_string(),
                    _ => {
                        return Err((
                            pointer.to_string(),
                            "mapping keys must be strings, numbers or booleans".to_string(),
                        ));
                    }
                };
                let child = format!("{pointer}/{}", escape_token(&key));
                let jv = yaml_to_json(val, &child)?;
                out.insert(key, jv);
            }
            Value::Object(out)
        }
        Y::Tagged(t) => yaml_to_json(t.value, pointer)?,
    })
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// One step of a path: a map key or a list index, and whether the parent is a free-form
/// map (shown as `parent[key]` in messages).
#[derive(Clone)]
enum Seg {
    Field(String),
    MapKey(String),
    Index(usize),
}

/// Where the schema walk of one document reports: the file, its positions, the list of
/// diagnostics and how many of them are errors.
struct DocumentDiagnostics<'a> {
    file: &'a str,
    index: &'a PositionIndex,
    diags: &'a mut Vec<Diagnostic>,
    errors: usize,
}

fn pointer(path: &[Seg]) -> String {
    let mut out = String::new();
    for s in path {
        out.push('/');
        match s {
            Seg::Field(k) | Seg::MapKey(k) => out.push_str(&escape_token(k)),
            Seg::Index(i) => out.push_str(&i.to_string()),
        }
    }
    out
}

/// `spec.resourceMapping[0].deviceIndex`, `spec.nodeSelector[kubernetes.io/os]`.
fn field_path(path: &[Seg]) -> String {
    let mut out = String::new();
    for s in path {
        match s {
            Seg::Field(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::MapKey(k) => {
                out.push('[');
                out.push_str(k);
                out.push(']');
            }
            Seg::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
    out
}

/// Where a finding points: the value for value errors, the key for field errors.
#[derive(Clone, Copy)]
enum At {
    Key,
    Value,
}

impl DocumentDiagnostics<'_> {
    fn push(&mut self, code: Code, path: &[Seg], at: At, message: String) {
        let ptr = pointer(path);
        let p = match at {
            At::Key => self.index.locate(&ptr),
            At::Value => self.index.locate_value(&ptr),
        };
        let shown = field_path(path);
        let msg = if shown.is_empty() {
            message
        } else {
            format!("{shown}: {message}")
        };
        self.errors += 1;
        self.diags
            .push(Diagnostic::error(code, self.file, p.line, p.col, msg).with_pointer(ptr));
    }

    fn warn(&mut self, code: Code, path: &[Seg], message: String) {
        let ptr = pointer(path);
        let p = self.index.locate(&ptr);
        let shown = field_path(path);
        let msg = if shown.is_empty() {
            message
        } else {
            format!("{shown}: {message}")
        };
        self.diags
            .push(Diagnostic::warning(code, self.file, p.line, p.col, msg).with_pointer(ptr));
    }

    /// Checks the top level of a DPDKConfig and returns the body to apply.
    fn object_root(&mut self, obj: Map<String, Value>) -> Value {
        let schema = dpdkconfig_schema();
        let mut body = Map::new();
        for (k, v) in obj {
            let path = vec![Seg::Field(k.clone())];
            match k.as_str() {
                "apiVersion" | "kind" => {
                    body.insert(k, v);
                }
                "metadata" => {
                    let m = self.metadata(v, &path);
                    body.insert(k, m);
                }
                "status" => self.warn(
                    Code::IgnoredField,
                    &path,
                    "status is written by the controller; the value in Git is ignored".to_string(),
                ),
                _ => match schema.get("properties").and_then(|p| p.get(&k)) {
                    Some(sub) => {
                        let mut path = path;
                        if let Some(clean) = self.walk(v, sub, &mut path) {
                            body.insert(k, clean);
                        }
                    }
                    None => self.unknown_field(
                        &path,
                        &k,
                        &["apiVersion", "kind", "metadata", "spec", "status"],
                    ),
                },
            }
        }
        if !body.contains_key("metadata") {
            self.push(
                Code::InvalidMetadata,
                &[],
                At::Key,
                "metadata.name is required".to_string(),
            );
        }
        for req in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(r) = req.as_str()
                && !body.contains_key(r)
            {
                self.push(
                    Code::SchemaViolation,
                    &[],
                    At::Key,
                    format!("{r} is required"),
                );
            }
        }
        Value::Object(body)
    }

    fn unknown_field(&mut self, path: &[Seg], key: &str, known: &[&str]) {
        let hint = suggest(key, known)
            .map(|s| format!(" (did you mean {s:?}?)"))
            .unwrap_or_default();
        let parent = field_path(&path[..path.len().saturating_sub(1)]);
        let where_ = if parent.is_empty() {
            "the object".to_string()
        } else {
            parent
        };
        // Report at the key itself, but name the field without repeating it as a prefix.
        let ptr = pointer(path);
        let p = self.index.locate(&ptr);
        self.errors += 1;
        self.diags.push(
            Diagnostic::error(
                Code::UnknownField,
                self.file,
                p.line,
                p.col,
                format!("unknown field {key:?} in {where_}{hint}"),
            )
            .with_pointer(ptr),
        );
    }

    fn metadata(&mut self, v: Value, path: &[Seg]) -> Value {
        let Value::Object(m) = v else {
            self.push(
                Code::InvalidMetadata,
                path,
                At::Value,
                "must be a mapping".to_string(),
            );
            return Value::Null;
        };
        const KNOWN: &[&str] = &["name", "labels", "annotations", "namespace"];
        const SERVER_SET: &[&str] = &[
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
            "selfLink",
            "ownerReferences",
            "finalizers",
        ];
        let mut out = Map::new();
        for (k, val) in m {
            let mut p = path.to_vec();
            p.push(Seg::Field(k.clone()));
            match k.as_str() {
                "name" => match &val {
                    Value::String(s) => {
                        if let Err(e) = check_dns_subdomain(s) {
                            self.push(Code::InvalidMetadata, &p, At::Value, e);
                        }
                        out.insert(k, val);
                    }
                    other => self.push(
                        Code::InvalidMetadata,
                        &p,
                        At::Value,
                        format!("must be a string, found {}", type_name(other)),
                    ),
                },
                "labels" | "annotations" => {
                    let is_labels = k == "labels";
                    if let Some(clean) = self.string_map(val, &p, is_labels) {
                        out.insert(k, clean);
                    }
                }
                "namespace" => self.warn(
                    Code::IgnoredField,
                    &p,
                    "DPDKConfig is cluster-scoped; metadata.namespace is ignored".to_string(),
                ),
                "generateName" => self.push(
                    Code::InvalidMetadata,
                    &p,
                    At::Key,
                    "objects applied from Git need a fixed metadata.name; generateName is not supported".to_string(),
                ),
                s if SERVER_SET.contains(&s) => self.push(
                    Code::InvalidMetadata,
                    &p,
                    At::Key,
                    "is set by the API server or controllers; remove it from the manifest".to_string(),
                ),
                _ => self.unknown_field(&p, &k, KNOWN),
            }
        }
        if !out.contains_key("name") {
            self.push(
                Code::InvalidMetadata,
                path,
                At::Key,
                "metadata.name is required".to_string(),
            );
        }
        Value::Object(out)
    }

    fn string_map(&mut self, v: Value, path: &[Seg], labels_map: bool) -> Option<Value> {
        let m = match v {
            Value::Object(m) => m,
            Value::Null => return None,
            other => {
                self.push(
                    Code::InvalidMetadata,
                    path,
                    At::Value,
                    format!("must be a mapping, found {}", type_name(&other)),
                );
                return None;
            }
        };
        for (k, val) in &m {
            let mut p = path.to_vec();
            p.push(Seg::MapKey(k.clone()));
            if let Err(e) = check_qualified_name(k) {
                self.push(
                    Code::InvalidMetadata,
                    &p,
                    At::Key,
                    format!("invalid key: {e}"),
                );
            }
            match val {
                Value::String(s) => {
                    if labels_map && let Err(e) = check_label_value(s) {
                        self.push(Code::InvalidMetadata, &p, At::Value, e);
                    }
                }
                other => self.push(
                    Code::InvalidMetadata,
                    &p,
                    At::Value,
                    format!("must be a string, found {} (quote it)", type_name(other)),
                ),
            }
            if labels_map && (k == labels::MANAGED_BY_LABEL || k == labels::SOURCE_LABEL) {
                self.warn(
                    Code::IgnoredField,
                    &p,
                    "is set by dpdk-reconciler when applying; the value in Git is replaced"
                        .to_string(),
                );
            }
            if !labels_map && (k == labels::REVISION_ANNOTATION || k == labels::ORIGIN_ANNOTATION) {
                self.warn(
                    Code::IgnoredField,
                    &p,
                    "is set by dpdk-reconciler when applying; the value in Git is replaced"
                        .to_string(),
                );
            }
            if k == labels::ARGOCD_INSTANCE_LABEL
                || k == labels::ARGOCD_TRACKING_ANNOTATION
                || k == labels::FLUX_KUSTOMIZE_NAME_LABEL
            {
                self.warn(
                    Code::IgnoredField,
                    &p,
                    "marks the object as owned by Argo CD or Flux: a DPDKConfigSource will not update or prune it once it carries this marker".to_string(),
                );
            }
        }
        Some(Value::Object(m))
    }

    /// Validates `v` against `schema`; returns the value to apply (nulls of non-nullable
    /// fields dropped, as the API server prunes them) or None when it is dropped.
    fn walk(&mut self, v: Value, schema: &Value, path: &mut Vec<Seg>) -> Option<Value> {
        if v.is_null() {
            if schema.get("nullable").and_then(Value::as_bool) == Some(true) {
                return Some(v);
            }
            self.warn(
                Code::IgnoredField,
                path,
                "null value; the field is left unset".to_string(),
            );
            return None;
        }
        let int_or_string = schema
            .get("x-kubernetes-int-or-string")
            .and_then(Value::as_bool)
            == Some(true);
        if int_or_string && !(v.is_string() || v.is_i64() || v.is_u64()) {
            self.push(
                Code::SchemaViolation,
                path,
                At::Value,
                format!("must be an integer or a string, found {}", type_name(&v)),
            );
            return Some(v);
        }
        let ty = schema.get("type").and_then(Value::as_str).unwrap_or("");
        if !type_matches(ty, &v) {
            self.push(
                Code::SchemaViolation,
                path,
                At::Value,
                format!("must be of type {ty}, found {}", type_name(&v)),
            );
            // Kept, so the field does not also read as missing.
            return Some(v);
        }
        let out = match v {
            Value::Object(m) => Value::Object(self.object(m, schema, path)),
            Value::Array(items) => Value::Array(self.array(items, schema, path)),
            scalar => {
                self.scalar(&scalar, schema, path);
                scalar
            }
        };
        self.rules(&out, schema, path);
        Some(out)
    }

    fn object(
        &mut self,
        m: Map<String, Value>,
        schema: &Value,
        path: &mut Vec<Seg>,
    ) -> Map<String, Value> {
        let props = schema.get("properties").and_then(Value::as_object);
        let additional = schema.get("additionalProperties");
        let preserve = schema
            .get("x-kubernetes-preserve-unknown-fields")
            .and_then(Value::as_bool)
            == Some(true);
        if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64)
            && m.len() as u64 > max
        {
            self.push(
                Code::SchemaViolation,
                path,
                At::Key,
                format!("must have at most {max} entries"),
            );
        }
        let mut out = Map::new();
        for (k, val) in m {
            if let Some(sub) = props.and_then(|p| p.get(&k)) {
                path.push(Seg::Field(k.clone()));
                if let Some(clean) = self.walk(val, sub, path) {
                    out.insert(k, clean);
                }
                path.pop();
            } else if let Some(sub) = additional.filter(|a| a.is_object()) {
                path.push(Seg::MapKey(k.clone()));
                if let Some(clean) = self.walk(val, sub, path) {
                    out.insert(k, clean);
                }
                path.pop();
            } else if preserve || additional.and_then(Value::as_bool) == Some(true) {
                out.insert(k, val);
            } else {
                // The deprecated spelling is never suggested.
                let known: Vec<&str> = props
                    .map(|p| {
                        p.keys()
                            .map(String::as_str)
                            .filter(|k| *k != "writeCombing")
                            .collect()
                    })
                    .unwrap_or_default();
                path.push(Seg::Field(k.clone()));
                self.unknown_field(path, &k, &known);
                path.pop();
            }
        }
        for req in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(r) = req.as_str()
                && !out.contains_key(r)
            {
                let shown = field_path(path);
                let msg = if shown.is_empty() {
                    format!("{r} is required")
                } else {
                    format!("{shown}.{r} is required")
                };
                let ptr = pointer(path);
                let p = self.index.locate(&ptr);
                self.errors += 1;
                self.diags.push(
                    Diagnostic::error(Code::SchemaViolation, self.file, p.line, p.col, msg)
                        .with_pointer(format!("{ptr}/{}", escape_token(r))),
                );
            }
        }
        // The seed guide's misspelling: accepted, honoured, and flagged.
        if props.is_some_and(|p| p.contains_key("writeCombing") && p.contains_key("writeCombining"))
            && out.contains_key("writeCombing")
        {
            path.push(Seg::Field("writeCombing".to_string()));
            self.warn(
                Code::DeprecatedField,
                path,
                "writeCombing is the seed guide's misspelling of writeCombining; it is honoured as writeCombining, but rename it".to_string(),
            );
            path.pop();
        }
        out
    }

    fn array(&mut self, items: Vec<Value>, schema: &Value, path: &mut Vec<Seg>) -> Vec<Value> {
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
            && items.len() as u64 > max
        {
            self.push(
                Code::SchemaViolation,
                path,
                At::Key,
                format!("must have at most {max} items"),
            );
        }
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
            && (items.len() as u64) < min
        {
            self.push(
                Code::SchemaViolation,
                path,
                At::Key,
                format!("must have at least {min} items"),
            );
        }
        let item_schema = schema.get("items").cloned().unwrap_or(Value::Null);
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            path.push(Seg::Index(i));
            if let Some(clean) = self.walk(item, &item_schema, path) {
                out.push(clean);
            }
            path.pop();
        }
        // list-type map: each key combination at most once (the duplicate deviceIndex rule).
        if schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map") {
            let keys: Vec<&str> = schema
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let mut seen: HashMap<String, usize> = HashMap::new();
            for (i, item) in out.iter().enumerate() {
                let key: Vec<String> = keys
                    .iter()
                    .map(|k| item.get(*k).map(Value::to_string).unwrap_or_default())
                    .collect();
                let shown = keys
                    .iter()
                    .zip(&key)
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                if let Some(&first) = seen.get(&key.join("\u{0}")) {
                    let mut p_first = path.clone();
                    p_first.push(Seg::Index(first));
                    let first_line = self.index.locate(&pointer(&p_first)).line;
                    path.push(Seg::Index(i));
                    if let Some(k0) = keys.first() {
                        path.push(Seg::Field(k0.to_string()));
                    }
                    let list = field_path(&path[..path.len().saturating_sub(2)]);
                    self.push(
                        Code::DuplicateKey,
                        path,
                        At::Value,
                        format!("duplicate {shown}: already mapped at line {first_line}; {list} is keyed by {}", keys.join(", ")),
                    );
                    if !keys.is_empty() {
                        path.pop();
                    }
                    path.pop();
                } else {
                    seen.insert(key.join("\u{0}"), i);
                }
            }
        }
        out
    }

    fn scalar(&mut self, v: &Value, schema: &Value, path: &[Seg]) {
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
            && !allowed.contains(v)
        {
            let list = allowed
                .iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            self.push(
                Code::SchemaViolation,
                path,
                At::Value,
                format!("unsupported value {v}: supported values: {list}"),
            );
        }
        if let Some(n) = v.as_f64() {
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
                && n < min
            {
                self.push(
                    Code::SchemaViolation,
                    path,
                    At::Value,
                    format!("must be >= {min}, found {v}"),
                );
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
                && n > max
            {
                self.push(
                    Code::SchemaViolation,
                    path,
                    At::Value,
                    format!("must be <= {max}, found {v}"),
                );
            }
            let range = match schema.get("format").and_then(Value::as_str) {
                Some("int32") => Some((i32::MIN as f64, i32::MAX as f64)),
                Some("int64") => Some((i64::MIN as f64, i64::MAX as f64)),
                _ => None,
            };
            if let Some((lo, hi)) = range
                && (n < lo || n > hi)
            {
                self.push(
                    Code::SchemaViolation,
                    path,
                    At::Value,
                    format!("{v} is out of range"),
                );
            }
        }
        if let Some(s) = v.as_str() {
            let len = s.chars().count() as u64;
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                && len < min
            {
                self.push(
                    Code::SchemaViolation,
                    path,
                    At::Value,
                    format!("must be at least {min} characters long"),
                );
            }
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && len > max
            {
                self.push(
                    Code::SchemaViolation,
                    path,
                    At::Value,
                    format!("must be at most {max} characters long"),
                );
            }
        }
    }

    /// The CRD's CEL rules (`x-kubernetes-validations`), evaluated by their Rust twins.
    fn rules(&mut self, v: &Value, schema: &Value, path: &[Seg]) {
        for rule in schema
            .get("x-kubernetes-validations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let text = rule.get("rule").and_then(Value::as_str).unwrap_or("");
            let message = rule
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| format!("failed rule: {text}"));
            // A rule without an offline twin passes here; the unit test
            // `every_cel_rule_has_an_offline_twin` keeps the table complete.
            if cel_rule(text, v) == Some(false) {
                let code = if path
                    .last()
                    .is_some_and(|s| matches!(s, Seg::Field(f) if f == "deviceIndex"))
                {
                    Code::PrimaryEni
                } else {
                    Code::RuleViolation
                };
                // The CEL messages already name their field; don't repeat the path.
                let ptr = pointer(path);
                let p = self.index.locate_value(&ptr);
                self.errors += 1;
                self.diags.push(
                    Diagnostic::error(code, self.file, p.line, p.col, message).with_pointer(ptr),
                );
            }
        }
    }
}

fn type_matches(ty: &str, v: &Value) -> bool {
    match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        _ => true,
    }
}

/// The CEL rules of the DPDKConfig CRD, in Rust. `None` for a rule without a twin.
pub fn cel_rule(rule: &str, v: &Value) -> Option<bool> {
    const WRITE_COMBING: &str = "!has(self.writeCombining) || !has(self.writeCombing) || self.writeCombining == self.writeCombing";
    const INT_OR_PERCENT: &str =
        "type(self) == int ? self >= 1 : self.matches('^(100|[1-9]?[0-9])%$')";
    const RESOURCE_NAME: &str = r"self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$')";
    Some(match rule {
        "size(self) > 0" => match v {
            Value::Object(m) => !m.is_empty(),
            Value::Array(a) => !a.is_empty(),
            Value::String(s) => !s.is_empty(),
            _ => true,
        },
        "self >= 1" => v.as_f64().is_none_or(|n| n >= 1.0),
        WRITE_COMBING => {
            let a = v.get("writeCombining").filter(|x| !x.is_null());
            let b = v.get("writeCombing").filter(|x| !x.is_null());
            match (a, b) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
        }
        RESOURCE_NAME => v.as_str().is_none_or(is_extended_resource_name),
        INT_OR_PERCENT => match v {
            Value::String(s) => s
                .strip_suffix('%')
                .filter(|p| {
                    p == &"100"
                        || (p.len() <= 2 && !p.is_empty() && !(p.len() == 2 && p.starts_with('0')))
                })
                .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit())),
            v => v.as_f64().is_none_or(|n| n >= 1.0),
        },
        _ => return None,
    })
}

/// `<domain>/<name>`: a DNS subdomain (lowercase labels joined by dots), a slash, and a name
/// of alphanumerics, `-`, `_`, `.` that starts and ends alphanumeric.
pub fn is_extended_resource_name(s: &str) -> bool {
    let Some((domain, name)) = s.split_once('/') else {
        return false;
    };
    let label_ok = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    };
    let nb = name.as_bytes();
    domain.split('.').all(label_ok)
        && !nb.is_empty()
        && nb
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && nb[0].is_ascii_alphanumeric()
        && nb[nb.len() - 1].is_ascii_alphanumeric()
}

/// RFC 1123 subdomain, as Kubernetes requires of most object names.
pub fn check_dns_subdomain(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a valid name: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (at most 253)"
        ))
    }
}

/// A label or annotation key: `[prefix/]name`.
fn check_qualified_name(s: &str) -> Result<(), String> {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix {
        check_dns_subdomain(p).map_err(|_| format!("prefix {p:?} must be a DNS subdomain"))?;
    }
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?}: name part must be 1-63 alphanumerics, '-', '_' or '.', starting and ending alphanumeric"
        ))
    }
}

fn check_label_value(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let ok = b.is_empty()
        || (b.len() <= 63
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid label value {s:?}: at most 63 alphanumerics, '-', '_' or '.', starting and ending alphanumeric"
        ))
    }
}

/// The closest known name, for "did you mean" hints.
fn suggest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| {
            (
                edit_distance(&key.to_ascii_lowercase(), &k.to_ascii_lowercase()),
                *k,
            )
        })
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Cross-file rule: every object name at most once. Reports each later occurrence,
/// naming the first.
pub(crate) fn check_duplicate_names(
    objects: &[ManifestObject],
    files: &[ManifestFile],
) -> Vec<Diagnostic> {
    let mut first: BTreeMap<&str, &ManifestObject> = BTreeMap::new();
    let mut out = Vec::new();
    for o in objects {
        match first.get(o.name.as_str()) {
            None => {
                first.insert(&o.name, o);
            }
            Some(prev) => {
                let here = files
                    .get(o.file_index)
                    .and_then(|f| f.documents.get(o.document))
                    .map(|d| d.index.locate_value("/metadata/name"));
                let there = files
                    .get(prev.file_index)
                    .and_then(|f| f.documents.get(prev.document))
                    .map(|d| d.index.locate_value("/metadata/name"));
                let (line, col) = here.map(|p| (p.line, p.col)).unwrap_or((o.line, 1));
                let there = there
                    .map(|p| format!("{}:{}:{}", prev.file, p.line, p.col))
                    .unwrap_or_else(|| prev.file.clone());
                out.push(
                    Diagnostic::error(
                        Code::DuplicateName,
                        &o.file,
                        line,
                        col,
                        format!(
                            "duplicate DPDKConfig name {:?}: already declared at {there}",
                            o.name
                        ),
                    )
                    .with_pointer("/metadata/name"),
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules_in(schema: &Value, out: &mut Vec<String>) {
        match schema {
            Value::Object(m) => {
                if let Some(Value::Array(rs)) = m.get("x-kubernetes-validations") {
                    out.extend(
                        rs.iter()
                            .filter_map(|r| r.get("rule").and_then(Value::as_str))
                            .map(str::to_string),
                    );
                }
                m.values().for_each(|v| rules_in(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| rules_in(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_cel_rule_has_an_offline_twin() {
        let mut rules = Vec::new();
        rules_in(dpdkconfig_schema(), &mut rules);
        assert!(
            rules.len() >= 4,
            "expected the CRD's CEL rules, found {rules:?}"
        );
        for r in rules {
            assert!(
                cel_rule(&r, &Value::Null).is_some(),
                "CEL rule without an offline twin in validate.rs: {r}"
            );
        }
    }

    #[test]
    fn every_schema_keyword_is_understood() {
        const HANDLED: &[&str] = &[
            "type",
            "properties",
            "additionalProperties",
            "required",
            "items",
            "enum",
            "minimum",
            "maximum",
            "minLength",
            "maxLength",
            "maxItems",
            "minItems",
            "maxProperties",
            "nullable",
            "format",
            "x-kubernetes-list-type",
            "x-kubernetes-list-map-keys",
            "x-kubernetes-validations",
            "x-kubernetes-int-or-string",
            "default",
            "description",
            "title",
        ];
        fn walk(s: &Value, path: &str) {
            let Value::Object(m) = s else { return };
            for (k, v) in m {
                assert!(
                    HANDLED.contains(&k.as_str()),
                    "schema keyword {k} at {path} is not enforced offline"
                );
                match k.as_str() {
                    "properties" => {
                        for (p, sub) in v.as_object().into_iter().flatten() {
                            walk(sub, &format!("{path}.{p}"));
                        }
                    }
                    "items" | "additionalProperties" => walk(v, &format!("{path}[]")),
                    _ => {}
                }
            }
        }
        walk(dpdkconfig_schema(), "");
    }

    #[test]
    fn max_unavailable_is_a_count_or_a_percentage() {
        let rule = "type(self) == int ? self >= 1 : self.matches('^(100|[1-9]?[0-9])%$')";
        for ok in [
            json!("25%"),
            json!("0%"),
            json!("100%"),
            json!("9%"),
            json!(3),
        ] {
            assert_eq!(cel_rule(rule, &ok), Some(true), "{ok}");
        }
        for bad in [
            json!("101%"),
            json!("25"),
            json!("05%"),
            json!("%"),
            json!("x%"),
            json!(0),
        ] {
            assert_eq!(cel_rule(rule, &bad), Some(false), "{bad}");
        }
    }

    #[test]
    fn extended_resource_names() {
        assert!(is_extended_resource_name(
            "intel.com/intel_sriov_netdevice_2"
        ));
        assert!(is_extended_resource_name("example.com/dpdk-1"));
        assert!(!is_extended_resource_name("intel_sriov_netdevice_2"));
        assert!(!is_extended_resource_name("Intel.com/x"));
        assert!(!is_extended_resource_name("intel.com/"));
        assert!(!is_extended_resource_name("intel.com/x_"));
        assert!(!is_extended_resource_name("a/b/c"));
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            suggest("writeCombinig", &["writeCombining", "enableUnsafeNoIOMMU"]),
            Some("writeCombining")
        );
        assert_eq!(
            suggest("deviceindex", &["deviceIndex", "driver"]),
            Some("deviceIndex")
        );
        assert_eq!(suggest("zzz", &["deviceIndex"]), None);
    }
}
