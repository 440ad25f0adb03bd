//! What to apply and what to prune, decided without I/O: desired objects from Git, the
//! live objects, and the source's inventory in; a plan out.

use std::collections::{BTreeMap, BTreeSet};

use dpdk_bridge::api::InventoryEntry;
use dpdk_bridge::labels;
use serde_json::{Map, Value, json};

use crate::manifest::ManifestObject;

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

/// The plan for one revision.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
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

/// Decides what to apply, skip and prune.
pub fn plan(input: &PlanInput<'_>) -> Plan {
    let mut out = Plan::default();
    let mut declared = BTreeSet::new();
    for o in input.desired {
        declared.insert(o.name.clone());
        let body = apply_body(o, input.source_label, input.revision);
        match input.live.get(&o.name) {
            Some(live) => {
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
                let other_source = live.labels.get(labels::SOURCE_LABEL).filter(|s| {
                    s.as_str() != input.source_label
                        && live
                            .labels
                            .get(labels::MANAGED_BY_LABEL)
                            .map(String::as_str)
                            == Some(labels::MANAGED_BY_VALUE)
                });
                if let Some(other) = other_source {
                    out.untouched.push(Untouched {
                        name: o.name.clone(),
                        owned_by: None,
                        reason: format!(
                            "applied by another DPDKConfigSource ({other}); not applied over"
                        ),
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
            None => out.apply.push((o.name.clone(), body)),
        }
    }
    if input.prune {
        for entry in input.inventory {
            if declared.contains(&entry.name) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Manifests;
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
}
