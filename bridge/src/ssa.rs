//! Server-side apply helpers: who owns which field (from `metadata.managedFields`),
//! apply-conflict parsing, the apply configurations the DPDK controller sends, and
//! trimming managed fields so caches stay small.
//!
//! Field paths are written the way `FieldsV1` spells them, e.g.
//! `["f:spec", "f:enableDPDK"]` or `["f:metadata", "f:labels", "f:dpdk.aws.k8s/enabled"]`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry, ObjectMeta};
use serde_json::{Map, Value, json};

use crate::api::{DPDKNodeStateSpec, DpdkDriver};
use crate::labels::{CONTROLLER_MANAGER, NODE_ENABLED_LABEL, NODE_READY_LABEL};

/// The NodeENI spec fields the controller writes, as FieldsV1 paths.
pub const NODEENI_ENABLE_PATH: [&str; 2] = ["f:spec", "f:enableDPDK"];
pub const NODEENI_DRIVER_PATH: [&str; 2] = ["f:spec", "f:dpdkDriver"];
pub const NODEENI_RESOURCE_PATH: [&str; 2] = ["f:spec", "f:dpdkResourceName"];
/// Written only once the node agent reported the device's BDF (docs/multi-eni-controller.md).
pub const NODEENI_PCI_PATH: [&str; 2] = ["f:spec", "f:dpdkPCIAddress"];
/// All four, in the order enableDPDK, dpdkDriver, dpdkResourceName, dpdkPCIAddress.
pub const NODEENI_PATHS: [[&str; 2]; 4] = [
    NODEENI_ENABLE_PATH,
    NODEENI_DRIVER_PATH,
    NODEENI_RESOURCE_PATH,
    NODEENI_PCI_PATH,
];

/// A label on an object's metadata, as a FieldsV1 path.
fn label_path(label: &str) -> [String; 3] {
    [
        "f:metadata".to_string(),
        "f:labels".to_string(),
        format!("f:{label}"),
    ]
}

/// `dpdk.aws.k8s/enabled` on a Node.
pub fn enabled_label_path() -> [String; 3] {
    label_path(NODE_ENABLED_LABEL)
}

/// `dpdk.aws.k8s/ready` on a Node (set by the node agent).
pub fn ready_label_path() -> [String; 3] {
    label_path(NODE_READY_LABEL)
}

/// True when a FieldsV1 set contains `path` (the leaf or anything under it). The set is
/// either a FieldsV1 tree, as the API server sends it, or the compact form
/// [`trim_managed_fields`] leaves in caches.
pub fn fields_contain<S: AsRef<str>>(fields: &Value, path: &[S]) -> bool {
    if let Value::String(compact) = fields {
        return compact_contains(compact, path);
    }
    let mut cur = fields;
    for seg in path {
        match cur.get(seg.as_ref()) {
            Some(next) => cur = next,
            None => return false,
        }
    }
    true
}

// The compact form of a field set: its leaf paths in one string, paths ended by
// `PATH_END`, segments separated by `SEGMENT_SEP`. Neither character occurs in a FieldsV1
// key (field names, label keys, and `k:`/`v:` keys, whose JSON escapes control
// characters). A FieldsV1 tree is always a JSON object, so a string is never mistaken for
// one. A tree holds a path exactly when one of its leaf paths starts with it, so the
// answers are the tree's. One allocation of tens of bytes instead of a `serde_json::Map`
// per level of the tree (hundreds of bytes each, even with one key).
const PATH_END: char = '\0';
const SEGMENT_SEP: char = '\n';

/// The compact form of a FieldsV1 tree: every leaf path (a key whose value is `{}` or not
/// an object).
fn compact_fields(fields: &Value) -> Value {
    fn walk(v: &Value, prefix: &mut String, out: &mut String) {
        match v.as_object() {
            Some(m) if !m.is_empty() => {
                for (k, child) in m {
                    let len = prefix.len();
                    if len > 0 {
                        prefix.push(SEGMENT_SEP);
                    }
                    prefix.push_str(k);
                    walk(child, prefix, out);
                    prefix.truncate(len);
                }
            }
            _ if !prefix.is_empty() => {
                out.push_str(prefix);
                out.push(PATH_END);
            }
            _ => {}
        }
    }
    let mut out = String::new();
    walk(fields, &mut String::new(), &mut out);
    out.shrink_to_fit();
    Value::String(out)
}

/// [`fields_contain`] on the compact form.
fn compact_contains<S: AsRef<str>>(compact: &str, path: &[S]) -> bool {
    path.is_empty()
        || compact.split_terminator(PATH_END).any(|leaf| {
            let mut segs = leaf.split(SEGMENT_SEP);
            path.iter().all(|p| segs.next() == Some(p.as_ref()))
        })
}

fn is_main_resource(e: &ManagedFieldsEntry) -> bool {
    e.subresource.as_deref().unwrap_or("").is_empty()
}

fn entry_contains<S: AsRef<str>>(e: &ManagedFieldsEntry, path: &[S]) -> bool {
    e.fields_v1
        .as_ref()
        .is_some_and(|f| fields_contain(&f.0, path))
}

/// True when `manager` owns `path` on the main resource (not a subresource).
pub fn owned_by<S: AsRef<str>>(meta: &ObjectMeta, manager: &str, path: &[S]) -> bool {
    meta.managed_fields.iter().flatten().any(|e| {
        e.manager.as_deref() == Some(manager) && is_main_resource(e) && entry_contains(e, path)
    })
}

/// True when `manager` has an Apply entry on the main resource at all.
pub fn has_apply_entry(meta: &ObjectMeta, manager: &str) -> bool {
    meta.managed_fields.iter().flatten().any(|e| {
        e.manager.as_deref() == Some(manager)
            && e.operation.as_deref() == Some("Apply")
            && is_main_resource(e)
    })
}

/// Managers other than `except` that own `path` on the main resource, sorted and deduplicated.
pub fn other_owners<S: AsRef<str>>(meta: &ObjectMeta, path: &[S], except: &str) -> Vec<String> {
    let mut out: Vec<String> = meta
        .managed_fields
        .iter()
        .flatten()
        .filter(|e| {
            e.manager.as_deref() != Some(except) && is_main_resource(e) && entry_contains(e, path)
        })
        .filter_map(|e| e.manager.clone())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Keeps only the parts of `fields` under the given paths.
fn trim_fields<S: AsRef<str>>(fields: &Value, paths: &[&[S]]) -> Value {
    let mut out = Value::Object(Map::new());
    for path in paths {
        let mut src = fields;
        let mut found = true;
        for seg in path.iter() {
            match src.get(seg.as_ref()) {
                Some(v) => src = v,
                None => {
                    found = false;
                    break;
                }
            }
        }
        if !found {
            continue;
        }
        let mut dst = &mut out;
        let n = path.len();
        for (i, seg) in path.iter().enumerate() {
            let Some(obj) = dst.as_object_mut() else {
                break;
            };
            let next = obj
                .entry(seg.as_ref().to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if i + 1 == n {
                *next = src.clone();
            }
            dst = next;
        }
    }
    out
}

/// A `keep_manager` for [`trim_managed_fields`] that matches no manager: only entries owning
/// the given paths survive.
pub const NO_MANAGER: &str = "\u{0}";

/// Shrinks `metadata.managedFields` for caching: entries of `keep_manager` are kept
/// (with their fields trimmed to `paths`), other entries only when they own one of
/// `paths`, trimmed the same way and kept in a compact form (a string, not a tree; only
/// the functions of this module read it). Ownership answers for `paths` (and for
/// anything under them) are unchanged; the entries are never written back.
pub fn trim_managed_fields<S: AsRef<str>>(
    meta: &mut ObjectMeta,
    keep_manager: &str,
    paths: &[&[S]],
) {
    let Some(entries) = meta.managed_fields.take() else {
        return;
    };
    let kept: Vec<ManagedFieldsEntry> = entries
        .into_iter()
        .filter(|e| {
            e.manager.as_deref() == Some(keep_manager) || paths.iter().any(|p| entry_contains(e, p))
        })
        .map(|mut e| {
            e.fields_v1 = e
                .fields_v1
                .map(|f| FieldsV1(compact_fields(&trim_fields(&f.0, paths))));
            e.time = None;
            e.api_version = None;
            e.fields_type = None;
            e
        })
        .collect();
    meta.managed_fields = if kept.is_empty() { None } else { Some(kept) };
}

/// One field another manager holds, from an apply conflict (HTTP 409).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FieldConflict {
    pub manager: String,
    /// The field path as the server prints it, e.g. `.spec.dpdkResourceName`.
    pub field: String,
}

/// Reads the first Go-`%q`-quoted string in `s`.
fn first_quoted(s: &str) -> Option<String> {
    let start = s.find('"')?;
    let mut out = String::new();
    let mut chars = s[start + 1..].chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return Some(out),
            c => out.push(c),
        }
    }
    None
}

/// Parses the managers and fields of a server-side apply conflict. The API server lists
/// them as causes `{reason: FieldManagerConflict, message: conflict with "<manager>" ...,
/// field: .spec.x}`; without causes, the message is parsed.
pub fn parse_apply_conflicts(status: &kube::core::Status) -> Vec<FieldConflict> {
    let mut out = Vec::new();
    if let Some(details) = &status.details {
        for cause in &details.causes {
            if cause.reason == "FieldManagerConflict"
                && let Some(manager) = first_quoted(&cause.message)
            {
                out.push(FieldConflict {
                    manager,
                    field: cause.field.clone(),
                });
            }
        }
    }
    if out.is_empty() {
        // "Apply failed with 1 conflict: conflict with \"m\" using v1: .spec.x"
        for part in status.message.split("conflict with ").skip(1) {
            if let Some(manager) = first_quoted(part) {
                let field = part
                    .rsplit(": ")
                    .next()
                    .unwrap_or("")
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string();
                out.push(FieldConflict { manager, field });
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The DPDK fields the controller sets on a NodeENI.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DpdkFields {
    pub driver: DpdkDriver,
    pub resource_name: String,
    /// `enableDPDK: true`; left out (not false) until the agent bound every attached
    /// attachment, so the Multi-ENI Controller's ENI manager never binds first.
    pub enable: bool,
    /// `dpdkPCIAddress`: the BDF the agents reported, when the user set none.
    pub pci_address: Option<String>,
}

/// Apply configuration for a Node: the enabled label, or nothing (releases it). The UID
/// guards against writing to a Node that was deleted and re-created under the same name.
pub fn node_label_apply(node: &str, uid: Option<&str>, enabled: bool) -> Value {
    let mut meta = json!({ "name": node });
    if let Some(uid) = uid {
        meta["uid"] = json!(uid);
    }
    if enabled {
        meta["labels"] = json!({ NODE_ENABLED_LABEL: "true" });
    }
    json!({ "apiVersion": "v1", "kind": "Node", "metadata": meta })
}

/// Apply configuration for a NodeENI: the DPDK spec fields `fields` sets, or none of
/// them (releases the controller's ownership; a value someone else also set stays).
/// Never status: `status.attachments` is an atomic list owned by the Multi-ENI Controller.
pub fn nodeeni_apply(name: &str, uid: Option<&str>, fields: Option<&DpdkFields>) -> Value {
    let mut meta = json!({ "name": name });
    if let Some(uid) = uid {
        meta["uid"] = json!(uid);
    }
    let mut obj =
        json!({ "apiVersion": "networking.k8s.aws/v1alpha1", "kind": "NodeENI", "metadata": meta });
    if let Some(f) = fields {
        let mut spec = json!({
            "dpdkDriver": f.driver.as_str(),
            "dpdkResourceName": f.resource_name,
        });
        if f.enable {
            spec["enableDPDK"] = json!(true);
        }
        if let Some(pci) = &f.pci_address {
            spec["dpdkPCIAddress"] = json!(pci);
        }
        obj["spec"] = spec;
    }
    obj
}

/// Label the controller puts on the DPDKNodeStates it writes.
pub const NODE_STATE_MANAGED_BY: (&str, &str) =
    (crate::labels::MANAGED_BY_LABEL, CONTROLLER_MANAGER);

/// Apply configuration for a DPDKNodeState's spec (never its status: the agent's).
pub fn node_state_apply(
    node: &str,
    spec: &DPDKNodeStateSpec,
    annotations: &[(&str, &str)],
) -> Value {
    let mut meta =
        json!({ "name": node, "labels": { NODE_STATE_MANAGED_BY.0: NODE_STATE_MANAGED_BY.1 } });
    if !annotations.is_empty() {
        let ann: Map<String, Value> = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        meta["annotations"] = Value::Object(ann);
    }
    json!({ "apiVersion": "networking.k8s.aws/v1alpha1", "kind": "DPDKNodeState", "metadata": meta, "spec": spec })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

    fn entry(manager: &str, op: &str, fields: Value) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some(op.into()),
            fields_type: Some("FieldsV1".into()),
            fields_v1: Some(FieldsV1(fields)),
            api_version: Some("networking.k8s.aws/v1alpha1".into()),
            ..Default::default()
        }
    }

    fn meta(entries: Vec<ManagedFieldsEntry>) -> ObjectMeta {
        ObjectMeta {
            name: Some("x".into()),
            managed_fields: Some(entries),
            ..Default::default()
        }
    }

    #[test]
    fn ownership_is_read_from_managed_fields() {
        let m = meta(vec![
            entry(
                "dpdk-controller",
                "Apply",
                json!({"f:spec": {"f:enableDPDK": {}, "f:dpdkDriver": {}}}),
            ),
            entry(
                "platform-team",
                "Apply",
                json!({"f:spec": {"f:dpdkResourceName": {}, "f:nodeSelector": {".": {}}}}),
            ),
            entry(
                "eni-controller",
                "Update",
                json!({"f:status": {"f:attachments": {}}}),
            ),
        ]);
        assert!(owned_by(&m, "dpdk-controller", &NODEENI_ENABLE_PATH));
        assert!(!owned_by(&m, "dpdk-controller", &NODEENI_RESOURCE_PATH));
        assert_eq!(
            other_owners(&m, &NODEENI_RESOURCE_PATH, "dpdk-controller"),
            vec!["platform-team".to_string()]
        );
        assert!(other_owners(&m, &NODEENI_ENABLE_PATH, "dpdk-controller").is_empty());
        assert!(has_apply_entry(&m, "dpdk-controller"));
        assert!(!has_apply_entry(&m, "eni-controller"));
    }

    #[test]
    fn status_subresource_entries_do_not_count_as_spec_owners() {
        let mut e = entry("agent", "Update", json!({"f:spec": {"f:enableDPDK": {}}}));
        e.subresource = Some("status".into());
        let m = meta(vec![e]);
        assert!(other_owners(&m, &NODEENI_ENABLE_PATH, "dpdk-controller").is_empty());
    }

    #[test]
    fn label_path_matches_label_keys_with_slashes() {
        let m = meta(vec![entry(
            "dpdk-controller",
            "Apply",
            json!({"f:metadata": {"f:labels": {"f:dpdk.aws.k8s/enabled": {}}}}),
        )]);
        assert!(owned_by(&m, "dpdk-controller", &enabled_label_path()));
        assert!(!owned_by(&m, "someone", &enabled_label_path()));
    }

    #[test]
    fn trimming_keeps_ownership_answers_and_drops_the_rest() {
        let mut m = meta(vec![
            entry(
                "dpdk-controller",
                "Apply",
                json!({"f:spec": {"f:enableDPDK": {}, "f:dpdkDriver": {}, "f:dpdkResourceName": {}}}),
            ),
            entry(
                "platform-team",
                "Apply",
                json!({"f:spec": {"f:dpdkResourceName": {}, "f:nodeSelector": {".": {}}, "f:mtu": {}}}),
            ),
            entry(
                "eni-controller",
                "Update",
                json!({"f:status": {"f:attachments": {}}}),
            ),
        ]);
        let paths: Vec<&[&str]> = NODEENI_PATHS.iter().map(|p| p.as_slice()).collect();
        trim_managed_fields(&mut m, "dpdk-controller", &paths);
        let entries = m.managed_fields.clone().expect("entries kept");
        assert_eq!(entries.len(), 2, "the status-only entry is dropped");
        assert_eq!(
            entries[1].fields_v1.as_ref().map(|f| f.0.clone()),
            Some(json!("f:spec\nf:dpdkResourceName\u{0}")),
            "only the owned path is left, in the compact form"
        );
        assert!(owned_by(&m, "dpdk-controller", &NODEENI_DRIVER_PATH));
        assert_eq!(
            other_owners(&m, &NODEENI_RESOURCE_PATH, "dpdk-controller"),
            vec!["platform-team".to_string()]
        );
    }

    /// Every prefix of every path in `queries`, and a few near misses.
    fn probes() -> Vec<Vec<String>> {
        let queries: Vec<Vec<&str>> = vec![
            NODEENI_ENABLE_PATH.to_vec(),
            NODEENI_DRIVER_PATH.to_vec(),
            NODEENI_RESOURCE_PATH.to_vec(),
            NODEENI_PCI_PATH.to_vec(),
            vec!["f:metadata", "f:labels", "f:dpdk.aws.k8s/enabled"],
            vec!["f:metadata", "f:labels", "f:dpdk.aws.k8s/ready"],
            vec!["f:metadata", "f:finalizers", "v:\"dpdk.aws.k8s/teardown\""],
            vec!["f:metadata", "f:labels", "f:dpdk.aws.k8s"],
            vec!["f:spec", "f:enable"],
            vec!["f:spec", "f:enableDPDK", "."],
        ];
        let mut out: Vec<Vec<String>> = Vec::new();
        for q in queries {
            for n in 0..=q.len() {
                out.push(q[..n].iter().map(|s| s.to_string()).collect());
            }
        }
        out
    }

    #[test]
    fn compact_field_sets_answer_like_the_trees() {
        let trees = [
            json!({}),
            json!({"f:spec": {"f:enableDPDK": {}, "f:dpdkDriver": {}, "f:dpdkResourceName": {}}}),
            json!({"f:spec": {".": {}, "f:enableDPDK": {}}, "f:status": {"f:attachments": {}}}),
            json!({"f:metadata": {"f:labels": {".": {}, "f:dpdk.aws.k8s/enabled": {}, "f:kubernetes.io/hostname": {}}}}),
            json!({"f:metadata": {"f:finalizers": {".": {}, "v:\"dpdk.aws.k8s/teardown\"": {}}}}),
        ];
        for tree in &trees {
            let compact = compact_fields(tree);
            assert!(compact.is_string(), "{compact}");
            for p in probes() {
                assert_eq!(
                    fields_contain(&compact, &p),
                    fields_contain(tree, &p),
                    "{tree} at {p:?}"
                );
            }
        }
    }

    #[test]
    fn trimmed_entries_keep_every_ownership_answer_including_other_managers() {
        // As the API server sends a NodeENI after the controller applied and a platform
        // team took dpdkResourceName with a different value: the conflict the planner
        // reports (`other_owners`) must still be seen in the cache.
        let full = meta(vec![
            entry(
                "dpdk-controller",
                "Apply",
                json!({"f:spec": {"f:enableDPDK": {}, "f:dpdkDriver": {}}}),
            ),
            entry(
                "platform-team",
                "Apply",
                json!({"f:spec": {"f:dpdkResourceName": {}, "f:nodeSelector": {".": {}, "f:kubernetes.io/hostname": {}}, "f:deviceIndex": {}}}),
            ),
            entry(
                "kubectl-edit",
                "Update",
                json!({"f:spec": {"f:dpdkPCIAddress": {}}}),
            ),
            entry(
                "eni-controller",
                "Update",
                json!({"f:status": {".": {}, "f:attachments": {}}}),
            ),
        ]);
        let mut trimmed = full.clone();
        let paths: Vec<&[&str]> = NODEENI_PATHS.iter().map(|p| p.as_slice()).collect();
        trim_managed_fields(&mut trimmed, NO_MANAGER, &paths);
        assert_eq!(
            other_owners(&trimmed, &NODEENI_RESOURCE_PATH, CONTROLLER_MANAGER),
            vec!["platform-team".to_string()]
        );
        for manager in ["dpdk-controller", "platform-team", "kubectl-edit", "nobody"] {
            assert_eq!(
                has_apply_entry(&trimmed, manager),
                has_apply_entry(&full, manager)
            );
            for p in NODEENI_PATHS {
                assert_eq!(
                    owned_by(&trimmed, manager, &p),
                    owned_by(&full, manager, &p),
                    "{manager} {p:?}"
                );
                assert_eq!(
                    other_owners(&trimmed, &p, manager),
                    other_owners(&full, &p, manager),
                    "{manager} {p:?}"
                );
            }
        }
        let kept = trimmed.managed_fields.unwrap_or_default();
        assert!(
            kept.iter()
                .all(|e| e.fields_v1.as_ref().is_some_and(|f| f.0.is_string())
                    && e.time.is_none()
                    && e.fields_type.is_none()),
            "{kept:?}"
        );
    }

    #[test]
    fn apply_conflicts_are_parsed_from_causes() {
        let status: kube::core::Status = serde_json::from_value(json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 409, "reason": "Conflict",
            "message": "Apply failed with 2 conflicts: conflicts with \"platform-team\":\n- .spec.dpdkResourceName\n- .spec.dpdkDriver",
            "details": {"causes": [
                {"reason": "FieldManagerConflict", "message": "conflict with \"platform-team\"", "field": ".spec.dpdkResourceName"},
                {"reason": "FieldManagerConflict", "message": "conflict with \"kubectl-edit\" using networking.k8s.aws/v1alpha1 at 2026-01-01T00:00:00Z", "field": ".spec.dpdkDriver"}
            ]}
        }))
        .expect("status parses");
        let c = parse_apply_conflicts(&status);
        assert_eq!(
            c,
            vec![
                FieldConflict {
                    manager: "kubectl-edit".into(),
                    field: ".spec.dpdkDriver".into()
                },
                FieldConflict {
                    manager: "platform-team".into(),
                    field: ".spec.dpdkResourceName".into()
                },
            ]
        );
    }

    #[test]
    fn apply_conflicts_fall_back_to_the_message() {
        let status = kube::core::Status {
            code: 409,
            message: "Apply failed with 1 conflict: conflict with \"team \\\"a\\\"\" using v1: .metadata.labels.dpdk.aws.k8s/enabled".into(),
            ..Default::default()
        };
        let c = parse_apply_conflicts(&status);
        assert_eq!(
            c,
            vec![FieldConflict {
                manager: "team \"a\"".into(),
                field: ".metadata.labels.dpdk.aws.k8s/enabled".into()
            }]
        );
    }

    #[test]
    fn apply_configurations_carry_only_our_fields() {
        let f = DpdkFields {
            driver: DpdkDriver::VfioPci,
            resource_name: "intel.com/intel_sriov_netdevice_2".into(),
            enable: true,
            pci_address: None,
        };
        let v = nodeeni_apply("eni-a", Some("u1"), Some(&f));
        assert_eq!(
            v["spec"],
            json!({"enableDPDK": true, "dpdkDriver": "vfio-pci", "dpdkResourceName": "intel.com/intel_sriov_netdevice_2"})
        );
        // Before the agent bound: no enableDPDK at all (never false); after: with the BDF.
        let waiting = DpdkFields {
            enable: false,
            ..f.clone()
        };
        assert_eq!(
            nodeeni_apply("eni-a", None, Some(&waiting))["spec"],
            json!({"dpdkDriver": "vfio-pci", "dpdkResourceName": "intel.com/intel_sriov_netdevice_2"})
        );
        let bound = DpdkFields {
            pci_address: Some("0000:00:06.0".into()),
            ..f.clone()
        };
        assert_eq!(
            nodeeni_apply("eni-a", None, Some(&bound))["spec"]["dpdkPCIAddress"],
            "0000:00:06.0"
        );
        assert!(v.get("status").is_none());
        assert_eq!(v["metadata"]["uid"], "u1");
        let release = nodeeni_apply("eni-a", None, None);
        assert!(
            release.get("spec").is_none(),
            "release sends no spec at all, never false"
        );
        let label = node_label_apply("n1", None, true);
        assert_eq!(label["metadata"]["labels"]["dpdk.aws.k8s/enabled"], "true");
        assert!(
            node_label_apply("n1", None, false)["metadata"]
                .get("labels")
                .is_none()
        );
    }
}
