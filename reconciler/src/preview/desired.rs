//! The DPDKConfigs the cluster would hold with a checkout applied: the live ones, with
//! those the checkout declares in their place, and (with a DPDKConfigSource) those the
//! source would prune marked deleted. Pure: the caller lists and loads.

use std::collections::BTreeMap;
use std::sync::Arc;

use dpdk_bridge::api::{DPDKConfig, InventoryEntry};
use dpdk_bridge::labels::REVISION_ANNOTATION;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use crate::manifest::ManifestObject;
use crate::source::plan::{self as source_plan, LiveObject, PlanInput};

/// Which live configs the checkout speaks for.
#[derive(Clone, Debug)]
pub enum Scope {
    /// No DPDKConfigSource: each config the checkout declares replaces the live one of its
    /// name; nothing is removed.
    Checkout,
    /// A DPDKConfigSource: its own plan decides what is applied, left alone (other
    /// owners) and pruned (its inventory, when `spec.prune`).
    Source {
        /// The `dpdk.aws.k8s/source` label value of the source.
        label: String,
        inventory: Vec<InventoryEntry>,
        prune: bool,
    },
}

/// How a DPDKConfig changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ChangeKind {
    Added,
    Modified,
    Removed,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "added",
            ChangeKind::Modified => "modified",
            ChangeKind::Removed => "removed",
        }
    }
}

/// One DPDKConfig the checkout changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConfigChange {
    pub name: String,
    pub change: ChangeKind,
    /// The file declaring it (none for a removed config).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// The configs with the checkout applied, and which of them changed.
#[derive(Clone, Debug, Default)]
pub struct Desired {
    pub configs: Vec<Arc<DPDKConfig>>,
    /// By name.
    pub changes: Vec<ConfigChange>,
}

/// What [`substitute`] reads.
pub struct Checkout<'a> {
    /// The checkout's valid DPDKConfigs.
    pub declared: &'a [ManifestObject],
    /// `<ref>@sha1:<sha>` of the checkout, when it is a Git repository.
    pub revision: Option<&'a str>,
    /// Creation time of configs the checkout adds (they are the youngest).
    pub now: Timestamp,
}

/// The live configs with `checkout` applied in `scope`.
pub fn substitute(live: &[Arc<DPDKConfig>], checkout: &Checkout<'_>, scope: &Scope) -> Desired {
    let by_name: BTreeMap<&str, &Arc<DPDKConfig>> = live
        .iter()
        .map(|c| (c.metadata.name.as_deref().unwrap_or_default(), c))
        .collect();
    let (applied, pruned) = decide(&by_name, checkout, scope);
    let declared: BTreeMap<&str, &ManifestObject> = checkout
        .declared
        .iter()
        .map(|o| (o.name.as_str(), o))
        .collect();
    let mut out = Desired::default();
    for (name, c) in &by_name {
        if let Some(o) = applied.get(name) {
            out.configs
                .push(Arc::new(modified(c, o, checkout.revision, scope)));
            out.changes
                .push(change(name, ChangeKind::Modified, Some(o)));
        } else if pruned.contains(name) {
            out.configs.push(Arc::new(deleted(c, checkout.now)));
            out.changes.push(change(name, ChangeKind::Removed, None));
        } else {
            out.configs.push(Arc::clone(c));
        }
    }
    for (name, o) in &declared {
        if applied.contains_key(name) && !by_name.contains_key(name) {
            out.configs.push(Arc::new(added(o, checkout, scope)));
            out.changes.push(change(name, ChangeKind::Added, Some(o)));
        }
    }
    out.changes.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn change(name: &str, kind: ChangeKind, o: Option<&ManifestObject>) -> ConfigChange {
    ConfigChange {
        name: name.to_string(),
        change: kind,
        file: o.map(|o| o.file.clone()),
    }
}

type Decision<'a> = (BTreeMap<&'a str, &'a ManifestObject>, Vec<&'a str>);

/// The declared objects that will be applied (changed or new), and the live names pruned.
fn decide<'a>(
    live: &BTreeMap<&'a str, &'a Arc<DPDKConfig>>,
    checkout: &Checkout<'a>,
    scope: &'a Scope,
) -> Decision<'a> {
    let declared = checkout.declared.iter().map(|o| (o.name.as_str(), o));
    match scope {
        Scope::Checkout => (
            declared
                .filter(|(name, o)| live.get(name).is_none_or(|c| c.spec != o.config.spec))
                .collect(),
            Vec::new(),
        ),
        Scope::Source {
            label,
            inventory,
            prune,
        } => {
            let live_objects: BTreeMap<String, LiveObject> = live
                .iter()
                .map(|(name, c)| {
                    let value = serde_json::to_value(c.as_ref()).unwrap_or_default();
                    (name.to_string(), source_plan::live_from_value(value))
                })
                .collect();
            let plan = source_plan::plan(&PlanInput {
                source_label: label,
                revision: checkout.revision.unwrap_or_default(),
                desired: checkout.declared,
                live: &live_objects,
                inventory,
                prune: *prune,
            });
            let apply: Vec<String> = plan.apply.into_iter().map(|(n, _)| n).collect();
            let applied = declared
                .filter(|(name, _)| apply.iter().any(|a| a == name))
                .collect();
            let pruned = live
                .keys()
                .copied()
                .filter(|name| plan.prune.iter().any(|p| p == name))
                .collect();
            (applied, pruned)
        }
    }
}

/// The revision annotation a changed config arrives with: the checkout's, when a source
/// applies it (with `Scope::Source`, or when the live config came from one).
fn revision_for(
    live: Option<&DPDKConfig>,
    revision: Option<&str>,
    scope: &Scope,
) -> Option<String> {
    let from_source = matches!(scope, Scope::Source { .. })
        || live.is_some_and(|c| {
            c.metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(REVISION_ANNOTATION))
        });
    revision.filter(|_| from_source).map(str::to_string)
}

/// The live config with the checkout's spec: a new generation.
fn modified(
    live: &DPDKConfig,
    o: &ManifestObject,
    revision: Option<&str>,
    scope: &Scope,
) -> DPDKConfig {
    let mut c = live.clone();
    c.spec = o.config.spec.clone();
    if c.spec != live.spec {
        c.metadata.generation = Some(live.metadata.generation.unwrap_or(0) + 1);
    }
    if let Some(rev) = revision_for(Some(live), revision, scope) {
        c.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(REVISION_ANNOTATION.into(), rev);
    }
    c
}

/// A config the checkout adds, as the API server would create it.
fn added(o: &ManifestObject, checkout: &Checkout<'_>, scope: &Scope) -> DPDKConfig {
    let mut c = o.config.clone();
    c.metadata.creation_timestamp = Some(Time(checkout.now));
    c.metadata.generation = Some(1);
    c.status = None;
    if let Some(rev) = revision_for(None, checkout.revision, scope) {
        c.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(REVISION_ANNOTATION.into(), rev);
    }
    c
}

/// A pruned config: deleted, its finalizer still holding it while its nodes are torn down.
fn deleted(live: &DPDKConfig, now: Timestamp) -> DPDKConfig {
    let mut c = live.clone();
    c.metadata.deletion_timestamp = Some(Time(now));
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Manifests;
    use crate::manifest::load::RawFile;
    use dpdk_bridge::api::DpdkDriver;
    use dpdk_bridge::labels::{MANAGED_BY_LABEL, MANAGED_BY_VALUE, SOURCE_LABEL};

    fn yaml(name: &str, driver: &str) -> String {
        format!(
            "apiVersion: networking.k8s.aws/v1alpha1\nkind: DPDKConfig\nmetadata:\n  name: {name}\nspec:\n  nodeSelector:\n    ng: multi-eni\n  resourceMapping:\n  - deviceIndex: 2\n    resourceName: intel.com/dev_2\n    driver: {driver}\n"
        )
    }

    fn load(files: &[(&str, String)]) -> Manifests {
        let m = Manifests::from_files(
            files
                .iter()
                .map(|(p, t)| RawFile {
                    path: p.to_string(),
                    bytes: t.clone().into_bytes(),
                })
                .collect(),
        );
        assert!(m.is_valid(), "{:?}", m.diagnostics);
        m
    }

    /// A live config as the API server holds the object declared in `file`.
    fn live(file: &str, name: &str, driver: &str, source: Option<&str>) -> Arc<DPDKConfig> {
        let m = load(&[(file, yaml(name, driver))]);
        let mut c = m.objects[0].config.clone();
        c.metadata.uid = Some(format!("uid-{name}"));
        c.metadata.generation = Some(3);
        c.metadata.creation_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        if let Some(label) = source {
            c.metadata.labels = Some(BTreeMap::from([
                (MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string()),
                (SOURCE_LABEL.to_string(), label.to_string()),
            ]));
            c.metadata.annotations = Some(BTreeMap::from([
                (REVISION_ANNOTATION.to_string(), "main@sha1:old".to_string()),
                (
                    dpdk_bridge::labels::ORIGIN_ANNOTATION.to_string(),
                    file.to_string(),
                ),
            ]));
        }
        Arc::new(c)
    }

    fn run(live: &[Arc<DPDKConfig>], m: &Manifests, scope: &Scope) -> Desired {
        substitute(
            live,
            &Checkout {
                declared: &m.objects,
                revision: Some("main@sha1:new"),
                now: Timestamp::from_second(1_000).expect("ts"),
            },
            scope,
        )
    }

    fn named<'d>(d: &'d Desired, name: &str) -> &'d DPDKConfig {
        d.configs
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(name))
            .expect("config")
    }

    #[test]
    fn a_changed_spec_replaces_the_live_one_as_a_new_generation() {
        let lives = [
            live("a.yaml", "a", "vfio-pci", None),
            live("b.yaml", "b", "vfio-pci", None),
        ];
        let m = load(&[
            ("a.yaml", yaml("a", "igb_uio")),
            ("b.yaml", yaml("b", "vfio-pci")),
        ]);
        let d = run(&lives, &m, &Scope::Checkout);
        assert_eq!(
            d.changes,
            vec![ConfigChange {
                name: "a".into(),
                change: ChangeKind::Modified,
                file: Some("a.yaml".into()),
            }]
        );
        let a = named(&d, "a");
        assert_eq!(a.spec.resource_mapping[0].driver, DpdkDriver::IgbUio);
        assert_eq!(
            a.metadata.uid.as_deref(),
            Some("uid-a"),
            "the live object's identity"
        );
        assert_eq!(a.metadata.generation, Some(4));
        assert!(
            a.metadata.annotations.is_none(),
            "not from a source: no revision is made up"
        );
        assert!(Arc::ptr_eq(&d.configs[1], &lives[1]), "b is left as it is");
    }

    #[test]
    fn without_a_source_a_config_the_checkout_lacks_stays_and_a_new_one_is_youngest() {
        let lives = [live("a.yaml", "a", "vfio-pci", None)];
        let m = load(&[("c.yaml", yaml("c", "vfio-pci"))]);
        let d = run(&lives, &m, &Scope::Checkout);
        assert_eq!(d.changes.len(), 1);
        assert_eq!(d.changes[0].change, ChangeKind::Added);
        assert_eq!(d.configs.len(), 2);
        let c = named(&d, "c");
        assert_eq!(
            c.metadata.creation_timestamp.as_ref().map(|t| t.0),
            Some(Timestamp::from_second(1_000).expect("ts"))
        );
        assert!(named(&d, "a").metadata.deletion_timestamp.is_none());
    }

    #[test]
    fn a_source_prunes_its_inventory_takes_the_revision_and_leaves_others_alone() {
        let ours = "dpdk-operator.prod";
        let lives = [
            live("a.yaml", "a", "vfio-pci", Some(ours)),
            live("gone.yaml", "gone", "vfio-pci", Some(ours)),
            live("x.yaml", "other", "vfio-pci", Some("dpdk-operator.other")),
        ];
        let m = load(&[
            ("a.yaml", yaml("a", "uio_pci_generic")),
            ("x.yaml", yaml("other", "igb_uio")),
        ]);
        let scope = Scope::Source {
            label: ours.into(),
            inventory: ["a", "gone"]
                .iter()
                .map(|n| source_plan::inventory_entry(n))
                .collect(),
            prune: true,
        };
        let d = run(&lives, &m, &scope);
        let changes: Vec<(&str, ChangeKind)> = d
            .changes
            .iter()
            .map(|c| (c.name.as_str(), c.change))
            .collect();
        assert_eq!(
            changes,
            vec![("a", ChangeKind::Modified), ("gone", ChangeKind::Removed)]
        );
        let a = named(&d, "a");
        assert_eq!(
            a.metadata
                .annotations
                .as_ref()
                .and_then(|x| x.get(REVISION_ANNOTATION)),
            Some(&"main@sha1:new".to_string())
        );
        assert!(named(&d, "gone").metadata.deletion_timestamp.is_some());
        assert_eq!(
            named(&d, "other").spec.resource_mapping[0].driver,
            DpdkDriver::VfioPci,
            "another source's config is not applied over"
        );
        let unchanged = run(
            &lives[..1],
            &load(&[("a.yaml", yaml("a", "vfio-pci"))]),
            &scope,
        );
        assert!(unchanged.changes.is_empty(), "{:?}", unchanged.changes);
    }
}
