//! What a checkout changes on the cluster: two planner outcomes (the live configs, and
//! the live configs with the checkout's) compared node by node and NodeENI by NodeENI,
//! each difference listed under the DPDKConfigs behind it. Pure.

use std::collections::{BTreeMap, BTreeSet};

use dpdk_bridge::api::{ConfigConflict, DPDKNodeStateSpec, DesiredDevice};
use dpdk_bridge::plan::{ConfigRollout, EniOutcome, Outcome};
use serde::Serialize;

use super::desired::{ChangeKind, ConfigChange};

/// One field's old and new value (`None`: unset, or the object has no such entry).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    pub field: String,
    pub old: Option<String>,
    pub new: Option<String>,
}

/// What happens to a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum NodeAction {
    /// A config starts selecting it: the enabled label, a DPDKNodeState.
    Enable,
    /// Its DPDKNodeState spec changes.
    Reconfigure,
    /// No config selects it any more: its devices go back, then label and state.
    TearDown,
}

/// One node's change: the DPDKNodeState spec fields that differ.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeChange {
    pub node: String,
    pub action: NodeAction,
    pub fields: Vec<FieldChange>,
}

/// One NodeENI's change: its DPDK spec fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EniChange {
    pub node_eni: String,
    pub fields: Vec<FieldChange>,
}

/// Everything one DPDKConfig is behind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigImpact {
    pub name: String,
    /// None: the config itself is unchanged, but changes elsewhere reach its nodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<ChangeKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    pub nodes: Vec<NodeChange>,
    pub node_enis: Vec<EniChange>,
    /// Conflicts it has with the checkout and not without.
    pub new_conflicts: Vec<ConfigConflict>,
    /// Conflicts it has without the checkout and not with it.
    pub resolved_conflicts: Vec<ConfigConflict>,
    /// The rollout's waves over its changed nodes, in order (the planner's prediction:
    /// each wave starts once the one before succeeded).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub waves: Vec<PlannedWave>,
}

/// One rollout wave: nodes whose DPDKNodeState specs are written together.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlannedWave {
    pub nodes: Vec<String>,
    /// Nodes matched by `spec.rollout.canarySelector`.
    pub canary: bool,
}

impl ConfigImpact {
    pub fn nodes_with(&self, action: NodeAction) -> impl Iterator<Item = &NodeChange> {
        self.nodes.iter().filter(move |n| n.action == action)
    }
}

/// The whole answer: per config, changed ones first, then by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Impact {
    pub configs: Vec<ConfigImpact>,
}

impl Impact {
    /// Something changes: a DPDKConfig, or what the cluster converges on.
    pub fn changed(&self) -> bool {
        self.configs.iter().any(|c| {
            c.change.is_some()
                || !c.nodes.is_empty()
                || !c.node_enis.is_empty()
                || !c.new_conflicts.is_empty()
                || !c.resolved_conflicts.is_empty()
        })
    }
}

/// Compares `before` (the live configs) with `after` (the checkout's in their place).
pub fn impact(before: &Outcome, after: &Outcome, changes: &[ConfigChange]) -> Impact {
    let changed: BTreeMap<&str, &ConfigChange> =
        changes.iter().map(|c| (c.name.as_str(), c)).collect();
    let mut by_config: BTreeMap<String, ConfigImpact> = changes
        .iter()
        .map(|c| (c.name.clone(), empty(&c.name, Some(c))))
        .collect();
    fn entry<'m>(
        by_config: &'m mut BTreeMap<String, ConfigImpact>,
        changed: &BTreeMap<&str, &ConfigChange>,
        name: &str,
    ) -> &'m mut ConfigImpact {
        by_config
            .entry(name.to_string())
            .or_insert_with(|| empty(name, changed.get(name).copied()))
    }
    for (nc, configs) in node_changes(before, after) {
        for c in attribute(&configs, &changed) {
            entry(&mut by_config, &changed, &c).nodes.push(nc.clone());
        }
    }
    for (ec, configs) in eni_changes(before, after) {
        for c in attribute(&configs, &changed) {
            entry(&mut by_config, &changed, &c)
                .node_enis
                .push(ec.clone());
        }
    }
    for (name, (new, resolved)) in conflict_changes(before, after) {
        let e = entry(&mut by_config, &changed, &name);
        e.new_conflicts = new;
        e.resolved_conflicts = resolved;
    }
    let mut configs: Vec<ConfigImpact> = by_config.into_values().collect();
    configs.sort_by_key(|c| (c.change.is_none(), c.name.clone()));
    Impact { configs }
}

/// Sets each changed config's waves from the planner's rollouts over the snapshot with
/// the checkout in place (`ClusterPlan::rollouts`): the waves the controller then takes.
pub fn add_waves(impact: &mut Impact, rollouts: &[ConfigRollout]) {
    for c in impact.configs.iter_mut().filter(|c| c.change.is_some()) {
        if let Some(r) = rollouts.iter().find(|r| r.config == c.name) {
            c.waves = r
                .waves
                .iter()
                .map(|w| PlannedWave {
                    nodes: w.nodes.clone(),
                    canary: w.canary,
                })
                .collect();
        }
    }
}

fn empty(name: &str, change: Option<&ConfigChange>) -> ConfigImpact {
    ConfigImpact {
        name: name.to_string(),
        change: change.map(|c| c.change),
        file: change.and_then(|c| c.file.clone()),
        nodes: Vec::new(),
        node_enis: Vec::new(),
        new_conflicts: Vec::new(),
        resolved_conflicts: Vec::new(),
        waves: Vec::new(),
    }
}

/// The changed configs among `configs`; when none is, all of them (the change reaches
/// them from elsewhere, e.g. an older config removed).
fn attribute(configs: &BTreeSet<String>, changed: &BTreeMap<&str, &ConfigChange>) -> Vec<String> {
    let ours: Vec<String> = configs
        .iter()
        .filter(|c| changed.contains_key(c.as_str()))
        .cloned()
        .collect();
    if ours.is_empty() {
        configs.iter().cloned().collect()
    } else {
        ours
    }
}

/// Every node whose desired DPDKNodeState differs, with the configs behind it on either side.
fn node_changes(before: &Outcome, after: &Outcome) -> Vec<(NodeChange, BTreeSet<String>)> {
    let names: BTreeSet<&String> = before.nodes.keys().chain(after.nodes.keys()).collect();
    names
        .into_iter()
        .filter_map(|n| {
            let (b, a) = (before.nodes.get(n), after.nodes.get(n));
            let action = match (b, a) {
                (None, Some(_)) => NodeAction::Enable,
                (Some(_), None) => NodeAction::TearDown,
                (Some(b), Some(a)) if b != a => NodeAction::Reconfigure,
                _ => return None,
            };
            let configs = b
                .into_iter()
                .chain(a)
                .flat_map(|s| s.configs.iter().cloned())
                .collect();
            let change = NodeChange {
                node: n.clone(),
                action,
                fields: spec_fields(b, a),
            };
            Some((change, configs))
        })
        .collect()
}

/// A field's name in the output and how to read it.
type Getter<T, V> = (&'static str, fn(&T) -> V);

/// The DPDKNodeState spec fields that differ, devices by `deviceIndex`.
pub fn spec_fields(
    b: Option<&DPDKNodeStateSpec>,
    a: Option<&DPDKNodeStateSpec>,
) -> Vec<FieldChange> {
    let mut out = Vec::new();
    let opt = |s: Option<&DPDKNodeStateSpec>, f: fn(&DPDKNodeStateSpec) -> String| s.map(f);
    let scalar: [Getter<DPDKNodeStateSpec, String>; 4] = [
        ("driverOptions.enableUnsafeNoIOMMU", |s| {
            s.driver_options.enable_unsafe_no_iommu.to_string()
        }),
        ("driverOptions.writeCombining", |s| {
            s.driver_options.write_combining.to_string()
        }),
        ("configs", |s| s.configs.join(",")),
        ("revision", |s| s.revision.clone().unwrap_or_default()),
    ];
    for (field, get) in scalar {
        push_if_changed(&mut out, field, opt(b, get), opt(a, get));
    }
    let devices = |s: Option<&DPDKNodeStateSpec>| -> BTreeMap<i32, DesiredDevice> {
        s.iter()
            .flat_map(|s| s.devices.iter())
            .map(|d| (d.device_index, d.clone()))
            .collect()
    };
    let (bd, ad) = (devices(b), devices(a));
    let indexes: BTreeSet<i32> = bd.keys().chain(ad.keys()).copied().collect();
    for i in indexes {
        device_fields(&mut out, i, bd.get(&i), ad.get(&i));
    }
    out
}

fn device_fields(
    out: &mut Vec<FieldChange>,
    i: i32,
    b: Option<&DesiredDevice>,
    a: Option<&DesiredDevice>,
) {
    let fields: [Getter<DesiredDevice, Option<String>>; 5] = [
        ("driver", |d| Some(d.driver.as_str().to_string())),
        ("resourceName", |d| Some(d.resource_name.clone())),
        ("nodeENI", |d| Some(d.node_eni.clone())),
        ("eniID", |d| d.eni_id.clone()),
        ("pciAddress", |d| d.pci_address.clone()),
    ];
    for (field, get) in fields {
        let name = format!("devices[deviceIndex={i}].{field}");
        push_if_changed(out, &name, b.and_then(get), a.and_then(get));
    }
}

fn push_if_changed(
    out: &mut Vec<FieldChange>,
    field: &str,
    old: Option<String>,
    new: Option<String>,
) {
    if old != new {
        out.push(FieldChange {
            field: field.to_string(),
            old,
            new,
        });
    }
}

/// Every NodeENI whose end values differ, with the configs behind it on either side.
fn eni_changes(before: &Outcome, after: &Outcome) -> Vec<(EniChange, BTreeSet<String>)> {
    let names: BTreeSet<&String> = before
        .node_enis
        .keys()
        .chain(after.node_enis.keys())
        .collect();
    names
        .into_iter()
        .filter_map(|n| {
            let (b, a) = (before.node_enis.get(n), after.node_enis.get(n));
            let fields = eni_fields(b, a);
            if fields.is_empty() {
                return None;
            }
            let configs = b
                .into_iter()
                .chain(a)
                .flat_map(|e| e.configs.iter().cloned())
                .collect();
            Some((
                EniChange {
                    node_eni: n.clone(),
                    fields,
                },
                configs,
            ))
        })
        .collect()
}

/// The NodeENI spec fields the controller writes: driven means `enableDPDK: true` with
/// the values; not driven means the controller's values released.
pub fn eni_fields(b: Option<&EniOutcome>, a: Option<&EniOutcome>) -> Vec<FieldChange> {
    let mut out = Vec::new();
    let fields: [Getter<EniOutcome, String>; 3] = [
        ("dpdkDriver", |e| e.driver.as_str().to_string()),
        ("dpdkResourceName", |e| e.resource_name.clone()),
        ("enableDPDK", |_| "true".to_string()),
    ];
    for (field, get) in fields {
        push_if_changed(&mut out, field, b.map(get), a.map(get));
    }
    out
}

/// Per config, the conflicts it gains and loses.
fn conflict_changes(
    before: &Outcome,
    after: &Outcome,
) -> BTreeMap<String, (Vec<ConfigConflict>, Vec<ConfigConflict>)> {
    let names: BTreeSet<&String> = before
        .conflicts
        .keys()
        .chain(after.conflicts.keys())
        .collect();
    let none = Vec::new();
    names
        .into_iter()
        .filter_map(|n| {
            let b = before.conflicts.get(n).unwrap_or(&none);
            let a = after.conflicts.get(n).unwrap_or(&none);
            let new: Vec<ConfigConflict> = a.iter().filter(|k| !b.contains(k)).cloned().collect();
            let gone: Vec<ConfigConflict> = b.iter().filter(|k| !a.contains(k)).cloned().collect();
            (!new.is_empty() || !gone.is_empty()).then(|| (n.clone(), (new, gone)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dpdk_bridge::api::{DpdkDriver, EffectiveDriverOptions};

    fn spec(config: &str, driver: DpdkDriver) -> DPDKNodeStateSpec {
        DPDKNodeStateSpec {
            driver_options: EffectiveDriverOptions::default(),
            devices: vec![DesiredDevice {
                device_index: 2,
                node_eni: "eni-a".into(),
                eni_id: Some("eni-1".into()),
                pci_address: None,
                resource_name: "intel.com/a".into(),
                driver,
            }],
            configs: vec![config.into()],
            revision: None,
        }
    }

    fn eni(config: &str, driver: DpdkDriver) -> EniOutcome {
        EniOutcome {
            driver,
            resource_name: "intel.com/a".into(),
            configs: vec![config.into()],
        }
    }

    fn modified(name: &str) -> ConfigChange {
        ConfigChange {
            name: name.into(),
            change: ChangeKind::Modified,
            file: Some("c.yaml".into()),
        }
    }

    fn field(f: &str, old: Option<&str>, new: Option<&str>) -> FieldChange {
        FieldChange {
            field: f.into(),
            old: old.map(str::to_string),
            new: new.map(str::to_string),
        }
    }

    #[test]
    fn a_driver_change_reconfigures_the_nodes_and_the_nodeeni_of_its_config_only() {
        let mut before = Outcome::default();
        before
            .nodes
            .insert("n1".into(), spec("a", DpdkDriver::VfioPci));
        before
            .nodes
            .insert("n2".into(), spec("b", DpdkDriver::VfioPci));
        before
            .node_enis
            .insert("eni-a".into(), eni("a", DpdkDriver::VfioPci));
        let mut after = before.clone();
        after
            .nodes
            .insert("n1".into(), spec("a", DpdkDriver::IgbUio));
        after
            .node_enis
            .insert("eni-a".into(), eni("a", DpdkDriver::IgbUio));
        let got = impact(&before, &after, &[modified("a")]);
        assert_eq!(got.configs.len(), 1, "{got:#?}");
        let a = &got.configs[0];
        assert_eq!(a.change, Some(ChangeKind::Modified));
        assert_eq!(
            a.nodes,
            vec![NodeChange {
                node: "n1".into(),
                action: NodeAction::Reconfigure,
                fields: vec![field(
                    "devices[deviceIndex=2].driver",
                    Some("vfio-pci"),
                    Some("igb_uio")
                )],
            }]
        );
        assert_eq!(
            a.node_enis,
            vec![EniChange {
                node_eni: "eni-a".into(),
                fields: vec![field("dpdkDriver", Some("vfio-pci"), Some("igb_uio"))],
            }]
        );
        assert!(got.changed());
    }

    #[test]
    fn nodes_leaving_and_joining_are_torn_down_and_enabled() {
        let mut before = Outcome::default();
        before
            .nodes
            .insert("old".into(), spec("a", DpdkDriver::VfioPci));
        before
            .node_enis
            .insert("eni-a".into(), eni("a", DpdkDriver::VfioPci));
        let mut after = Outcome::default();
        after
            .nodes
            .insert("new".into(), spec("a", DpdkDriver::VfioPci));
        let got = impact(&before, &after, &[modified("a")]);
        let a = &got.configs[0];
        let names = |act| {
            a.nodes_with(act)
                .map(|n| n.node.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(NodeAction::Enable), vec!["new"]);
        assert_eq!(names(NodeAction::TearDown), vec!["old"]);
        assert!(names(NodeAction::Reconfigure).is_empty());
        let released = &a.node_enis[0].fields;
        assert_eq!(
            released
                .iter()
                .map(|f| (f.field.as_str(), f.new.as_deref()))
                .collect::<Vec<_>>(),
            vec![
                ("dpdkDriver", None),
                ("dpdkResourceName", None),
                ("enableDPDK", None)
            ]
        );
    }

    #[test]
    fn the_same_outcome_is_no_change_and_a_new_conflict_is_listed() {
        let mut before = Outcome::default();
        before
            .nodes
            .insert("n1".into(), spec("a", DpdkDriver::VfioPci));
        before.conflicts.insert("a".into(), Vec::new());
        assert!(!impact(&before, &before, &[]).changed());
        let mut after = before.clone();
        let conflict = ConfigConflict {
            reason: "OverlappingConfig".into(),
            message: "x".into(),
            ..Default::default()
        };
        after.conflicts.insert("b".into(), vec![conflict.clone()]);
        let got = impact(&before, &after, &[]);
        assert_eq!(got.configs.len(), 1);
        assert_eq!(got.configs[0].name, "b");
        assert_eq!(got.configs[0].change, None);
        assert_eq!(got.configs[0].new_conflicts, vec![conflict]);
        assert!(got.changed());
    }

    #[test]
    fn waves_come_from_the_rollout_of_each_changed_config() {
        use dpdk_bridge::api::RolloutPhase;
        use dpdk_bridge::plan::rollout::{NodeRollout, RolloutNode, waves};
        let nodes: Vec<RolloutNode> = ["n3", "n1", "n2"]
            .iter()
            .map(|n| RolloutNode {
                name: n.to_string(),
                canary: *n == "n3",
                counted: true,
                state: NodeRollout::Pending,
            })
            .collect();
        let rollout = |config: &str| ConfigRollout {
            config: config.into(),
            generation: Some(2),
            phase: RolloutPhase::Progressing,
            budget: 2,
            nodes: nodes.clone(),
            matched: 3,
            updated_matched: 0,
            waves: waves(&nodes, 2),
        };
        let mut got = Impact {
            configs: vec![empty("a", Some(&modified("a"))), empty("b", None)],
        };
        add_waves(&mut got, &[rollout("a"), rollout("b")]);
        let planned = |w: &[&str], canary| PlannedWave {
            nodes: w.iter().map(|n| n.to_string()).collect(),
            canary,
        };
        assert_eq!(
            got.configs[0].waves,
            vec![planned(&["n3"], true), planned(&["n1", "n2"], false)],
            "canaries alone first, then by name in batches of the budget"
        );
        assert!(got.configs[1].waves.is_empty(), "only changed configs");
    }

    #[test]
    fn a_change_reaching_an_unchanged_config_is_listed_under_it() {
        // Config a is removed; b, unchanged, now wins node n1's device.
        let mut before = Outcome::default();
        let mut both = spec("a", DpdkDriver::VfioPci);
        both.configs.push("b".into());
        before.nodes.insert("n1".into(), both);
        let mut after = Outcome::default();
        after
            .nodes
            .insert("n1".into(), spec("b", DpdkDriver::IgbUio));
        let removed = ConfigChange {
            name: "a".into(),
            change: ChangeKind::Removed,
            file: None,
        };
        let got = impact(&before, &after, &[removed]);
        let names: Vec<&str> = got.configs.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            vec!["a"],
            "the changed config on either side takes it"
        );
        assert_eq!(got.configs[0].nodes[0].node, "n1");
        let unrelated = impact(&before, &after, &[]);
        let names: Vec<&str> = unrelated.configs.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["a", "b"]);
    }
}
