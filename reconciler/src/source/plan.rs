//! The pure steps of a source reconcile, decided without I/O: what to apply and what to
//! prune (desired objects from Git, the live objects and the source's inventory in; a
//! [`SourcePlan`] out), the new inventory after the writes, and the status message and
//! condition of an [`Attempt`]. [`super::reconcile`] does the I/O around them.

use std::collections::{BTreeMap, BTreeSet};

use dpdk_bridge::api::{DPDKConfigSourceStatus, InventoryEntry};
use dpdk_bridge::conditions::{self, Health};
use dpdk_bridge::labels;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Map, Value, json};

use crate::manifest::{ManifestObject, Manifests};
use crate::{Error, ErrorKind};

/// How many diagnostics the status message lists before "and N more".
pub const STATUS_DIAGNOSTICS: usize = 5;

/// Who else manages an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OwnedBy {
    ArgoCd,
    Flux,
}

impl OwnedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            OwnedBy::ArgoCd => "argocd",
            OwnedBy::Flux => "flux",
        }
    }
}

/// Argo CD or Flux markers on a live object.
pub fn owned_by(
    labels_: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> Option<OwnedBy> {
    if annotations.contains_key(labels::ARGOCD_TRACKING_ANNOTATION)
        || labels_.contains_key(labels::ARGOCD_INSTANCE_LABEL)
    {
        Some(OwnedBy::ArgoCd)
    } else if labels_.contains_key(labels::FLUX_KUSTOMIZE_NAME_LABEL) {
        Some(OwnedBy::Flux)
    } else {
        None
    }
}

/// What the planner needs of a live DPDKConfig.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LiveObject {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// The whole object as JSON, to tell whether an apply would change anything.
    pub value: Value,
}

/// An object left alone, and why.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Untouched {
    pub name: String,
    pub owned_by: Option<OwnedBy>,
    pub reason: String,
}

/// The plan for one revision of one source.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SourcePlan {
    /// Objects to server-side apply: (name, body with our labels and annotations).
    pub apply: Vec<(String, Value)>,
    /// Objects already as declared at this revision: no write.
    pub unchanged: Vec<String>,
    /// Inventory entries to delete.
    pub prune: Vec<String>,
    /// Objects neither applied nor pruned (Argo CD / Flux markers, relabelled, another source).
    pub untouched: Vec<Untouched>,
}

/// Inputs of [`plan`].
pub struct PlanInput<'a> {
    /// `<namespace>.<name>` of the source.
    pub source_label: &'a str,
    pub revision: &'a str,
    pub desired: &'a [ManifestObject],
    pub live: &'a BTreeMap<String, LiveObject>,
    pub inventory: &'a [InventoryEntry],
    pub prune: bool,
}

/// The body applied for `o`: what Git declares plus our labels and annotations.
pub fn apply_body(o: &ManifestObject, source_label: &str, revision: &str) -> Value {
    let mut body = o.body.clone();
    if let Some(obj) = body.as_object_mut() {
        let meta = obj.entry("metadata").or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut() {
            let labels_ = meta.entry("labels").or_insert_with(|| json!({}));
            if let Some(l) = labels_.as_object_mut() {
                l.insert(
                    labels::MANAGED_BY_LABEL.into(),
                    json!(labels::MANAGED_BY_VALUE),
                );
                l.insert(labels::SOURCE_LABEL.into(), json!(source_label));
            }
            let ann = meta.entry("annotations").or_insert_with(|| json!({}));
            if let Some(a) = ann.as_object_mut() {
                a.insert(labels::REVISION_ANNOTATION.into(), json!(revision));
                a.insert(labels::ORIGIN_ANNOTATION.into(), json!(o.file));
            }
        }
    }
    body
}

/// `body` without the revision annotation, for the "already applied?" comparison.
fn without_revision(body: &Value) -> Value {
    let mut b = body.clone();
    if let Some(a) = b
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        a.remove(labels::REVISION_ANNOTATION);
    }
    b
}

/// True when every field of `want` is present in `have` with the same value (lists must
/// match element by element).
pub fn contains(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Object(h), Value::Object(w)) => w
            .iter()
            .all(|(k, wv)| h.get(k).is_some_and(|hv| contains(hv, wv))),
        (Value::Array(h), Value::Array(w)) => {
            h.len() == w.len() && h.iter().zip(w).all(|(a, b)| contains(a, b))
        }
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (a, b) => a == b,
    }
}

fn is_ours(live: &LiveObject, source_label: &str) -> bool {
    live.labels
        .get(labels::MANAGED_BY_LABEL)
        .map(String::as_str)
        == Some(labels::MANAGED_BY_VALUE)
        && live.labels.get(labels::SOURCE_LABEL).map(String::as_str) == Some(source_label)
}

/// Decides what to apply, skip and prune: [`to_apply`] and [`to_prune`] together.
pub fn plan(input: &PlanInput<'_>) -> SourcePlan {
    let applies = to_apply(input);
    let prunes = to_prune(input);
    let mut untouched = applies.untouched;
    untouched.extend(prunes.untouched);
    SourcePlan {
        apply: applies.apply,
        unchanged: applies.unchanged,
        prune: prunes.prune,
        untouched,
    }
}

/// What to apply: each object Git declares, unless its live copy already holds it or
/// someone else (Argo CD, Flux, another source) manages it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Applies {
    pub apply: Vec<(String, Value)>,
    pub unchanged: Vec<String>,
    pub untouched: Vec<Untouched>,
}

/// Decides what to apply (see [`Applies`]).
pub fn to_apply(input: &PlanInput<'_>) -> Applies {
    let mut out = Applies::default();
    for o in input.desired {
        let body = apply_body(o, input.source_label, input.revision);
        let Some(live) = input.live.get(&o.name) else {
            out.apply.push((o.name.clone(), body));
            continue;
        };
        if let Some(by) = owned_by(&live.labels, &live.annotations) {
            out.untouched.push(Untouched {
                name: o.name.clone(),
                owned_by: Some(by),
                reason: format!(
                    "carries {} ownership markers; not applied over",
                    by.as_str()
                ),
            });
            continue;
        }
        if let Some(other) = other_source(live, input.source_label) {
            out.untouched.push(Untouched {
                name: o.name.clone(),
                owned_by: None,
                reason: format!("applied by another DPDKConfigSource ({other}); not applied over"),
            });
            continue;
        }
        // Unchanged content is not rewritten just to bump the revision annotation:
        // the annotation records the revision the object's content last came from,
        // and a commit that leaves an object alone costs no write (nor a cascade of
        // DPDK controller status updates).
        if contains(&live.value, &without_revision(&body)) {
            out.unchanged.push(o.name.clone());
        } else {
            out.apply.push((o.name.clone(), body));
        }
    }
    out
}

/// The `dpdk.aws.k8s/source` of another DPDKConfigSource that applied `live`.
fn other_source<'a>(live: &'a LiveObject, source_label: &str) -> Option<&'a String> {
    live.labels.get(labels::SOURCE_LABEL).filter(|s| {
        s.as_str() != source_label
            && live
                .labels
                .get(labels::MANAGED_BY_LABEL)
                .map(String::as_str)
                == Some(labels::MANAGED_BY_VALUE)
    })
}

/// What to prune: inventory entries Git no longer declares that still exist and still
/// carry this source's labels (and no Argo CD / Flux markers).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Prunes {
    pub prune: Vec<String>,
    pub untouched: Vec<Untouched>,
}

/// Decides what to prune (see [`Prunes`]); nothing when `spec.prune` is false.
pub fn to_prune(input: &PlanInput<'_>) -> Prunes {
    let mut out = Prunes::default();
    if !input.prune {
        return out;
    }
    let declared: BTreeSet<&str> = input.desired.iter().map(|o| o.name.as_str()).collect();
    for entry in input.inventory {
        if declared.contains(entry.name.as_str()) {
            continue;
        }
        let Some(live) = input.live.get(&entry.name) else {
            // Already gone.
            continue;
        };
        if let Some(by) = owned_by(&live.labels, &live.annotations) {
            out.untouched.push(Untouched {
                name: entry.name.clone(),
                owned_by: Some(by),
                reason: format!("carries {} ownership markers; not pruned", by.as_str()),
            });
        } else if !is_ours(live, input.source_label) {
            out.untouched.push(Untouched {
                name: entry.name.clone(),
                owned_by: None,
                reason: "no longer carries this source's labels; not pruned".to_string(),
            });
        } else {
            out.prune.push(entry.name.clone());
        }
    }
    out
}

/// The inventory entry of a DPDKConfig.
pub fn inventory_entry(name: &str) -> InventoryEntry {
    InventoryEntry {
        api_version: format!("{}/{}", dpdk_bridge::api::GROUP, dpdk_bridge::api::VERSION),
        kind: "DPDKConfig".to_string(),
        name: name.to_string(),
        namespace: None,
    }
}

/// Labels and annotations of a JSON object's metadata.
pub fn live_from_value(value: Value) -> LiveObject {
    let map = |k: &str| -> BTreeMap<String, String> {
        value
            .get("metadata")
            .and_then(|m| m.get(k))
            .and_then(Value::as_object)
            .map(|m: &Map<String, Value>| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default()
    };
    LiveObject {
        labels: map("labels"),
        annotations: map("annotations"),
        value,
    }
}

/// One object whose write (apply or delete) the API server refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteFailure {
    pub name: String,
    /// `DPDKConfig <name>: <error>` or `pruning DPDKConfig <name>: <error>`.
    pub message: String,
    pub kind: ErrorKind,
}

/// How the API server answered one kind of write (applies, or prunes) of a revision.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WriteResults {
    /// Objects written (applied) or gone (pruned).
    pub done: Vec<String>,
    pub failed: Vec<WriteFailure>,
}

/// What to prune once the applies are done: the plan's prunes when every apply
/// succeeded, else nothing (apply, then prune: a rename whose new object is refused must
/// not delete the old one).
pub fn to_prune_after<'a>(plan: &'a SourcePlan, applied: &WriteResults) -> &'a [String] {
    if applied.failed.is_empty() {
        &plan.prune
    } else {
        &[]
    }
}

/// The prunes [`to_prune_after`] held back.
pub fn prune_withheld(plan: &SourcePlan, applied: &WriteResults) -> Vec<String> {
    if applied.failed.is_empty() {
        Vec::new()
    } else {
        plan.prune.clone()
    }
}

/// The inventory after a revision: what this source now manages. When every apply
/// succeeded: the objects applied or unchanged, and prunes that failed (a later revision
/// retries them). When an apply failed: the previous inventory (nothing was pruned, and
/// an object whose apply failed may still be ours) plus what was applied or unchanged.
pub fn next_inventory(
    old: &[InventoryEntry],
    plan: &SourcePlan,
    applied: &WriteResults,
    pruned: &WriteResults,
) -> Vec<InventoryEntry> {
    let mut names: BTreeSet<&str> = applied.done.iter().map(String::as_str).collect();
    names.extend(plan.unchanged.iter().map(String::as_str));
    names.extend(pruned.failed.iter().map(|f| f.name.as_str()));
    if !applied.failed.is_empty() {
        names.extend(old.iter().map(|e| e.name.as_str()));
    }
    names.into_iter().map(inventory_entry).collect()
}

/// A revision whose writes were attempted: what the status and the metrics report.
#[derive(Clone, Debug, PartialEq)]
pub struct AppliedRevision {
    pub revision: String,
    /// DPDKConfigs the revision declares.
    pub objects: usize,
    pub applied: WriteResults,
    pub unchanged: usize,
    pub pruned: WriteResults,
    /// Prunes held back because an apply failed.
    pub prune_withheld: Vec<String>,
    pub untouched: Vec<Untouched>,
    pub inventory: Vec<InventoryEntry>,
}

impl AppliedRevision {
    /// Every refused write, applies first.
    pub fn failures(&self) -> impl Iterator<Item = &WriteFailure> {
        self.applied.failed.iter().chain(&self.pruned.failed)
    }

    /// True when every write succeeded.
    pub fn complete(&self) -> bool {
        self.failures().next().is_none()
    }

    /// The error of a partly failed revision, of the kind most worth retrying soon.
    pub fn error(&self) -> Option<Error> {
        let kind = ErrorKind::most_retryable(self.failures().map(|f| f.kind))?;
        Some(Error::ApplyFailed {
            revision: self.revision.clone(),
            failures: self.failures().map(|f| f.message.clone()).collect(),
            kind,
        })
    }
}

/// How far one pass over a revision got.
#[derive(Debug)]
pub enum Attempt {
    /// Stopped before any write: the revision when it was fetched, and why.
    Failed {
        revision: Option<String>,
        error: Error,
    },
    /// `mode: ReportOnly`: loaded and valid, nothing written.
    Loaded { revision: String, objects: usize },
    /// Writes attempted (all, or some, succeeded).
    Applied(AppliedRevision),
}

impl Attempt {
    /// The revision fetched, when the pass got that far.
    pub fn revision(&self) -> Option<&str> {
        match self {
            Attempt::Failed { revision, .. } => revision.as_deref(),
            Attempt::Loaded { revision, .. } => Some(revision),
            Attempt::Applied(a) => Some(&a.revision),
        }
    }

    /// The error to retry, if the pass did not finish.
    pub fn into_error(self) -> Option<Error> {
        match self {
            Attempt::Failed { error, .. } => Some(error),
            Attempt::Loaded { .. } => None,
            Attempt::Applied(a) => a.error(),
        }
    }
}

/// The Stalled reason of a failure (docs/git-sources.md, "A bad revision applies nothing").
pub fn stalled_reason(e: &Error) -> &'static str {
    match e {
        Error::InvalidSpec { .. } => "InvalidSpec",
        Error::InvalidRevision { .. } | Error::Task { task: "loader", .. } => "ValidationFailed",
        Error::Kube { .. } | Error::ApplyFailed { .. } => "ApplyFailed",
        _ => "FetchFailed",
    }
}

/// `revision X rejected, nothing applied: file:line:col: msg; ...; and N more`.
pub fn rejected_message(revision: &str, m: &Manifests) -> String {
    let errors: Vec<String> = m.errors().map(|d| d.to_string()).collect();
    let mut msg = format!("revision {revision} rejected, nothing applied: ");
    msg.push_str(
        &errors
            .iter()
            .take(STATUS_DIAGNOSTICS)
            .cloned()
            .collect::<Vec<_>>()
            .join("; "),
    );
    if errors.len() > STATUS_DIAGNOSTICS {
        msg.push_str(&format!("; and {} more", errors.len() - STATUS_DIAGNOSTICS));
    }
    msg
}

/// The Ready message of an applied revision: counts, or the failed writes, then the
/// objects left alone.
pub fn applied_message(a: &AppliedRevision) -> String {
    let mut message = if a.complete() {
        format!(
            "Applied revision {}: {} DPDKConfigs ({} written, {} unchanged), {} pruned",
            a.revision,
            a.objects,
            a.applied.done.len(),
            a.unchanged,
            a.pruned.done.len()
        )
    } else {
        let failures: Vec<&str> = a.failures().map(|f| f.message.as_str()).collect();
        let mut m = format!(
            "Applying revision {} failed: {}",
            a.revision,
            failures.join("; ")
        );
        if !a.prune_withheld.is_empty() {
            m.push_str(&format!(
                "; not pruned while an apply fails: {}",
                a.prune_withheld.join(", ")
            ));
        }
        m
    };
    if !a.untouched.is_empty() {
        let list: Vec<String> = a
            .untouched
            .iter()
            .map(|u| match u.owned_by {
                Some(by) => format!("{} (ownedBy: {})", u.name, by.as_str()),
                None => format!("{} ({})", u.name, u.reason),
            })
            .collect();
        message.push_str(&format!("; left alone: {}", list.join(", ")));
    }
    message
}

/// The kstatus health of an attempt.
pub fn health(attempt: &Attempt) -> Health {
    match attempt {
        Attempt::Failed { error, .. } => Health::Stalled {
            reason: stalled_reason(error).into(),
            message: error.to_string(),
        },
        Attempt::Loaded { revision, objects } => Health::Ready {
            reason: "ReportOnly".into(),
            message: format!(
                "Loaded revision {revision} ({objects} DPDKConfigs); mode ReportOnly applies nothing"
            ),
        },
        Attempt::Applied(a) if a.complete() => Health::Ready {
            reason: "Applied".into(),
            message: applied_message(a),
        },
        Attempt::Applied(a) => Health::Stalled {
            reason: "ApplyFailed".into(),
            message: applied_message(a),
        },
    }
}

/// When and for what the status is written.
pub struct StatusStamp<'a> {
    pub generation: Option<i64>,
    /// Set when a verified webhook asked for this pass.
    pub webhook_at: Option<&'a Time>,
    pub now: &'a Time,
}

/// The status after `attempt`: conditions, revisions, the inventory (only written by an
/// applied revision) and the webhook time.
pub fn record_status(st: &mut DPDKConfigSourceStatus, attempt: &Attempt, at: &StatusStamp<'_>) {
    conditions::apply_health(&mut st.conditions, &health(attempt), at.generation, at.now);
    st.observed_generation = at.generation;
    if let Some(rev) = attempt.revision() {
        st.last_fetched_revision = Some(rev.to_string());
        st.last_attempted_revision = Some(rev.to_string());
    }
    if let Attempt::Applied(a) = attempt {
        if a.complete() {
            st.last_applied_revision = Some(a.revision.clone());
        }
        st.inventory = a.inventory.clone();
    }
    if let Some(t) = at.webhook_at {
        st.last_handled_webhook_at = Some(t.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::load::RawFile;

    fn objects(names: &[&str]) -> Vec<ManifestObject> {
        let files = names
            .iter()
            .map(|n| RawFile {
                path: format!("prod/{n}.yaml"),
                bytes: format!(
                    "apiVersion: networking.k8s.aws/v1alpha1\nkind: DPDKConfig\nmetadata:\n  name: {n}\nspec:\n  nodeSelector:\n    ng: a\n"
                )
                .into_bytes(),
            })
            .collect();
        let m = Manifests::from_files(files);
        assert!(m.is_valid());
        m.objects
    }

    fn live(labels_: &[(&str, &str)], annotations: &[(&str, &str)]) -> LiveObject {
        let l: BTreeMap<String, String> = labels_
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let a: BTreeMap<String, String> = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        LiveObject {
            value: json!({"metadata": {"labels": l, "annotations": a}}),
            labels: l,
            annotations: a,
        }
    }

    const OURS: &[(&str, &str)] = &[
        (labels::MANAGED_BY_LABEL, "dpdk-reconciler"),
        (labels::SOURCE_LABEL, "ns.src"),
    ];

    #[test]
    fn applies_new_skips_unchanged_and_prunes_only_ours() {
        let desired = objects(&["a", "b"]);
        let mut live_objs = BTreeMap::new();
        // b is exactly as Git declares it at this revision.
        let b_body = apply_body(&desired[1], "ns.src", "main@sha1:1");
        live_objs.insert("b".to_string(), live_from_value(b_body));
        live_objs.insert("gone".to_string(), live(OURS, &[]));
        live_objs.insert(
            "relabelled".to_string(),
            live(&[(labels::MANAGED_BY_LABEL, "someone-else")], &[]),
        );
        live_objs.insert(
            "argo".to_string(),
            live(OURS, &[(labels::ARGOCD_TRACKING_ANNOTATION, "app:x")]),
        );
        let inventory: Vec<_> = ["b", "gone", "relabelled", "argo", "already-deleted"]
            .iter()
            .map(|n| inventory_entry(n))
            .collect();
        let p = plan(&PlanInput {
            source_label: "ns.src",
            revision: "main@sha1:1",
            desired: &desired,
            live: &live_objs,
            inventory: &inventory,
            prune: true,
        });
        assert_eq!(
            p.apply.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            vec!["a"]
        );
        assert_eq!(p.unchanged, vec!["b"]);
        assert_eq!(p.prune, vec!["gone"]);
        let untouched: Vec<(&str, Option<OwnedBy>)> = p
            .untouched
            .iter()
            .map(|u| (u.name.as_str(), u.owned_by))
            .collect();
        assert_eq!(
            untouched,
            vec![("relabelled", None), ("argo", Some(OwnedBy::ArgoCd))]
        );
        let body = &p.apply[0].1;
        assert_eq!(
            body["metadata"]["labels"][labels::SOURCE_LABEL],
            json!("ns.src")
        );
        assert_eq!(
            body["metadata"]["annotations"][labels::REVISION_ANNOTATION],
            json!("main@sha1:1")
        );
        assert_eq!(
            body["metadata"]["annotations"][labels::ORIGIN_ANNOTATION],
            json!("prod/a.yaml")
        );

        // A new revision that leaves b as it is does not rewrite b; prune=false keeps gone.
        let p = plan(&PlanInput {
            source_label: "ns.src",
            revision: "main@sha1:2",
            desired: &desired,
            live: &live_objs,
            inventory: &inventory,
            prune: false,
        });
        assert_eq!(
            p.apply.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            vec!["a"]
        );
        assert_eq!(p.unchanged, vec!["b"]);
        assert!(p.prune.is_empty());
        // A changed spec or a moved file is applied (with the new revision).
        let mut moved = desired[1].clone();
        moved.file = "prod/elsewhere.yaml".into();
        let p = plan(&PlanInput {
            source_label: "ns.src",
            revision: "main@sha1:2",
            desired: std::slice::from_ref(&moved),
            live: &live_objs,
            inventory: &[],
            prune: false,
        });
        assert_eq!(p.apply.len(), 1);
        assert_eq!(
            p.apply[0].1["metadata"]["annotations"][labels::REVISION_ANNOTATION],
            json!("main@sha1:2")
        );
    }

    #[test]
    fn foreign_owners_are_never_applied_over() {
        let desired = objects(&["f", "i", "o"]);
        let mut live_objs = BTreeMap::new();
        live_objs.insert(
            "f".to_string(),
            live(&[(labels::FLUX_KUSTOMIZE_NAME_LABEL, "apps")], &[]),
        );
        live_objs.insert(
            "i".to_string(),
            live(&[(labels::ARGOCD_INSTANCE_LABEL, "app")], &[]),
        );
        live_objs.insert(
            "o".to_string(),
            live(
                &[
                    (labels::MANAGED_BY_LABEL, "dpdk-reconciler"),
                    (labels::SOURCE_LABEL, "other.src"),
                ],
                &[],
            ),
        );
        let p = plan(&PlanInput {
            source_label: "ns.src",
            revision: "r",
            desired: &desired,
            live: &live_objs,
            inventory: &[],
            prune: true,
        });
        assert!(p.apply.is_empty());
        let owners: Vec<Option<OwnedBy>> = p.untouched.iter().map(|u| u.owned_by).collect();
        assert_eq!(
            owners,
            vec![Some(OwnedBy::Flux), Some(OwnedBy::ArgoCd), None]
        );
        assert!(p.untouched[2].reason.contains("other.src"));
    }

    #[test]
    fn contains_compares_declared_fields_only() {
        assert!(contains(
            &json!({"a": 1, "b": {"c": [1, 2], "d": 0}}),
            &json!({"b": {"c": [1, 2]}})
        ));
        assert!(!contains(
            &json!({"b": {"c": [1]}}),
            &json!({"b": {"c": [1, 2]}})
        ));
        assert!(!contains(&json!({"a": 1}), &json!({"a": 2})));
        assert!(contains(&json!({"a": 1.0}), &json!({"a": 1})));
    }

    fn names(v: &[(String, Value)]) -> Vec<&str> {
        v.iter().map(|(n, _)| n.as_str()).collect()
    }

    #[test]
    fn to_apply_writes_new_and_changed_objects_only() {
        let desired = objects(&["new", "same", "changed"]);
        let mut live_objs = BTreeMap::new();
        live_objs.insert(
            "same".to_string(),
            live_from_value(apply_body(&desired[1], "ns.src", "main@sha1:0")),
        );
        let mut changed = apply_body(&desired[2], "ns.src", "main@sha1:0");
        changed["spec"]["nodeSelector"]["ng"] = json!("b");
        live_objs.insert("changed".to_string(), live_from_value(changed));
        let a = to_apply(&PlanInput {
            source_label: "ns.src",
            revision: "main@sha1:1",
            desired: &desired,
            live: &live_objs,
            inventory: &[],
            prune: true,
        });
        assert_eq!(names(&a.apply), vec!["new", "changed"]);
        assert_eq!(a.unchanged, vec!["same"]);
        assert!(a.untouched.is_empty());
    }

    #[test]
    fn to_prune_deletes_only_ours_that_git_dropped() {
        let desired = objects(&["kept"]);
        let mut live_objs = BTreeMap::new();
        for n in ["kept", "gone"] {
            live_objs.insert(n.to_string(), live(OURS, &[]));
        }
        live_objs.insert(
            "other".to_string(),
            live(&[(labels::SOURCE_LABEL, "ns.other")], &[]),
        );
        let inventory: Vec<_> = ["kept", "gone", "other", "deleted"]
            .iter()
            .map(|n| inventory_entry(n))
            .collect();
        let input = |prune| PlanInput {
            source_label: "ns.src",
            revision: "r",
            desired: &desired,
            live: &live_objs,
            inventory: &inventory,
            prune,
        };
        let p = to_prune(&input(true));
        assert_eq!(p.prune, vec!["gone"]);
        assert_eq!(
            p.untouched
                .iter()
                .map(|u| u.name.as_str())
                .collect::<Vec<_>>(),
            vec!["other"]
        );
        assert_eq!(to_prune(&input(false)), Prunes::default());
    }

    fn failure(name: &str, kind: ErrorKind) -> WriteFailure {
        WriteFailure {
            name: name.into(),
            message: format!("DPDKConfig {name}: refused"),
            kind,
        }
    }

    fn done(names: &[&str]) -> WriteResults {
        WriteResults {
            done: names.iter().map(|n| n.to_string()).collect(),
            failed: Vec::new(),
        }
    }

    fn inventory_names(inv: &[InventoryEntry]) -> Vec<&str> {
        inv.iter().map(|e| e.name.as_str()).collect()
    }

    #[test]
    fn the_new_inventory_is_what_the_source_now_manages() {
        let plan = SourcePlan {
            apply: vec![("a".into(), json!({})), ("b".into(), json!({}))],
            unchanged: vec!["u".into()],
            prune: vec!["p".into(), "q".into()],
            untouched: Vec::new(),
        };
        let old: Vec<_> = ["b", "u", "p", "q"]
            .iter()
            .map(|n| inventory_entry(n))
            .collect();
        // Everything succeeded: applied and unchanged, not the pruned.
        let inv = next_inventory(&old, &plan, &done(&["a", "b"]), &done(&["p", "q"]));
        assert_eq!(inventory_names(&inv), vec!["a", "b", "u"]);
        // A failed prune stays in it, to be retried.
        let pruned = WriteResults {
            done: vec!["p".into()],
            failed: vec![failure("q", ErrorKind::Conflict)],
        };
        let inv = next_inventory(&old, &plan, &done(&["a", "b"]), &pruned);
        assert_eq!(inventory_names(&inv), vec!["a", "b", "q", "u"]);
    }

    #[test]
    fn a_failed_apply_prunes_nothing_and_keeps_the_previous_inventory() {
        let plan = SourcePlan {
            apply: vec![("a".into(), json!({})), ("b".into(), json!({}))],
            unchanged: vec!["u".into()],
            prune: vec!["p".into()],
            untouched: Vec::new(),
        };
        let old: Vec<_> = ["u", "p"].iter().map(|n| inventory_entry(n)).collect();
        let applied = WriteResults {
            done: vec!["a".into()],
            failed: vec![failure("b", ErrorKind::InvalidInput)],
        };
        assert!(to_prune_after(&plan, &applied).is_empty());
        assert_eq!(prune_withheld(&plan, &applied), vec!["p"]);
        let inv = next_inventory(&old, &plan, &applied, &WriteResults::default());
        assert_eq!(inventory_names(&inv), vec!["a", "p", "u"]);
        // Every apply succeeded: the plan's prunes go ahead.
        assert_eq!(to_prune_after(&plan, &done(&["a", "b"])), ["p".to_string()]);
        assert!(prune_withheld(&plan, &done(&["a", "b"])).is_empty());
    }

    fn applied_revision(applied: WriteResults, pruned: WriteResults) -> AppliedRevision {
        AppliedRevision {
            revision: "main@sha1:2".into(),
            objects: 2,
            applied,
            unchanged: 1,
            pruned,
            prune_withheld: Vec::new(),
            untouched: vec![Untouched {
                name: "argo".into(),
                owned_by: Some(OwnedBy::ArgoCd),
                reason: String::new(),
            }],
            inventory: vec![inventory_entry("a")],
        }
    }

    fn stamp_at(now: &Time) -> StatusStamp<'_> {
        StatusStamp {
            generation: Some(3),
            webhook_at: Some(now),
            now,
        }
    }

    fn condition(st: &DPDKConfigSourceStatus, t: &str) -> (String, String, String) {
        let c = conditions::find(&st.conditions, t).expect("condition");
        (c.status.clone(), c.reason.clone(), c.message.clone())
    }

    #[test]
    fn an_applied_revision_is_ready_with_counts_and_its_inventory() {
        let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let mut st = DPDKConfigSourceStatus::default();
        let a = applied_revision(done(&["a"]), done(&["old"]));
        record_status(&mut st, &Attempt::Applied(a), &stamp_at(&now));
        assert_eq!(
            condition(&st, "Ready"),
            (
                "True".into(),
                "Applied".into(),
                "Applied revision main@sha1:2: 2 DPDKConfigs (1 written, 1 unchanged), 1 pruned; left alone: argo (ownedBy: argocd)".into()
            )
        );
        assert_eq!(st.last_applied_revision.as_deref(), Some("main@sha1:2"));
        assert_eq!(st.last_attempted_revision.as_deref(), Some("main@sha1:2"));
        assert_eq!(inventory_names(&st.inventory), vec!["a"]);
        assert_eq!(st.observed_generation, Some(3));
        assert_eq!(st.last_handled_webhook_at, Some(now));
    }

    #[test]
    fn a_partly_failed_revision_is_stalled_names_the_failures_and_keeps_the_last_good() {
        let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let mut st = DPDKConfigSourceStatus {
            last_applied_revision: Some("main@sha1:1".into()),
            ..Default::default()
        };
        let applied = WriteResults {
            done: vec!["a".into()],
            failed: vec![failure("b", ErrorKind::InvalidInput)],
        };
        let mut a = applied_revision(applied, WriteResults::default());
        a.prune_withheld = vec!["old".into()];
        let attempt = Attempt::Applied(a);
        record_status(&mut st, &attempt, &stamp_at(&now));
        let (status, reason, message) = condition(&st, "Stalled");
        assert_eq!((status.as_str(), reason.as_str()), ("True", "ApplyFailed"));
        assert_eq!(
            message,
            "Applying revision main@sha1:2 failed: DPDKConfig b: refused; not pruned while an apply fails: old; left alone: argo (ownedBy: argocd)"
        );
        assert_eq!(st.last_applied_revision.as_deref(), Some("main@sha1:1"));
        assert_eq!(st.last_attempted_revision.as_deref(), Some("main@sha1:2"));
        let err = attempt.into_error().expect("an error to retry");
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn failures_stall_with_their_reason_and_report_only_is_ready() {
        let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let cases = [
            (
                Error::InvalidSpec {
                    field: "spec.ref",
                    message: "spec.ref must set one of branch, tag or commit".into(),
                },
                None,
                "InvalidSpec",
            ),
            (
                Error::Fetch("fetching branch main from https://h/r: 404".into()),
                None,
                "FetchFailed",
            ),
            (
                Error::InvalidRevision {
                    revision: "main@sha1:2".into(),
                    message: "revision main@sha1:2 rejected, nothing applied: x".into(),
                },
                Some("main@sha1:2".to_string()),
                "ValidationFailed",
            ),
        ];
        for (error, revision, reason) in cases {
            let message = error.to_string();
            let mut st = DPDKConfigSourceStatus::default();
            let attempt = Attempt::Failed {
                revision: revision.clone(),
                error,
            };
            record_status(&mut st, &attempt, &stamp_at(&now));
            assert_eq!(
                condition(&st, "Stalled"),
                ("True".into(), reason.into(), message)
            );
            assert_eq!(st.last_attempted_revision, revision, "{reason}");
            assert!(st.last_applied_revision.is_none());
            assert!(st.inventory.is_empty());
        }
        let mut st = DPDKConfigSourceStatus::default();
        let loaded = Attempt::Loaded {
            revision: "main@sha1:3".into(),
            objects: 4,
        };
        record_status(&mut st, &loaded, &stamp_at(&now));
        assert_eq!(
            condition(&st, "Ready"),
            (
                "True".into(),
                "ReportOnly".into(),
                "Loaded revision main@sha1:3 (4 DPDKConfigs); mode ReportOnly applies nothing"
                    .into()
            )
        );
        assert_eq!(st.last_fetched_revision.as_deref(), Some("main@sha1:3"));
        assert!(st.last_applied_revision.is_none());
        assert!(loaded.into_error().is_none());
    }

    #[test]
    fn a_rejected_revision_lists_five_errors_and_counts_the_rest() {
        let files = (0..7)
            .map(|i| RawFile {
                path: format!("p/{i}.yaml"),
                bytes: b"kind: DPDKConfig\nmetadata: [\n".to_vec(),
            })
            .collect();
        let m = Manifests::from_files(files);
        let msg = rejected_message("main@sha1:9", &m);
        assert!(
            msg.starts_with("revision main@sha1:9 rejected, nothing applied: p/0.yaml:"),
            "{msg}"
        );
        assert_eq!(msg.matches("; ").count(), STATUS_DIAGNOSTICS, "{msg}");
        assert!(msg.ends_with("; and 2 more"), "{msg}");
    }
}
