//! The snapshot, indexed: configs in age order, nodes by name and label, NodeENIs by
//! selector, DPDKNodeStates by node, and the lookups every phase asks of them. It owns no
//! decision; the phases own those. Indexes into it are typed ([`ConfigIx`], [`NodeIx`],
//! [`EniIx`]) so a phase's output says what it points into.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;

use super::{Kind, Snapshot};
use crate::api::{ConfigConflict, DPDKConfig, DPDKNodeState, NodeENI};
use crate::labels::{AGENT_MANAGER, CONTROLLER_MANAGER, NODE_ENABLED_LABEL, NODE_READY_LABEL};
use crate::ssa;

/// A DPDKConfig, by its place in [`Index::configs`] (age order: a smaller index is older).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ConfigIx(pub(crate) usize);

/// A Node, by its place in [`Snapshot::nodes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct NodeIx(pub(crate) usize);

/// A NodeENI, by its place in [`Snapshot::node_enis`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct EniIx(pub(crate) usize);

/// One value per config, indexed by [`ConfigIx`].
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct PerConfig<T>(Vec<T>);

impl<T: Clone> PerConfig<T> {
    pub(crate) fn filled(n: usize, value: T) -> Self {
        Self(vec![value; n])
    }
}

impl<T> PerConfig<T> {
    /// The values, oldest config first.
    pub(crate) fn iter(&self) -> std::slice::Iter<'_, T> {
        self.0.iter()
    }
}

impl<T> From<Vec<T>> for PerConfig<T> {
    /// Values in config age order.
    fn from(values: Vec<T>) -> Self {
        Self(values)
    }
}

impl<T> std::ops::Index<ConfigIx> for PerConfig<T> {
    type Output = T;
    fn index(&self, c: ConfigIx) -> &T {
        &self.0[c.0]
    }
}

impl<T> std::ops::IndexMut<ConfigIx> for PerConfig<T> {
    fn index_mut(&mut self, c: ConfigIx) -> &mut T {
        &mut self.0[c.0]
    }
}

/// The conflicts a phase found, per config. The status phase lists them, sorted.
pub(crate) type Conflicts = PerConfig<Vec<ConfigConflict>>;

impl Conflicts {
    pub(crate) fn none(n_configs: usize) -> Self {
        Self::filled(n_configs, Vec::new())
    }

    pub(crate) fn add(&mut self, c: ConfigIx, conflict: ConfigConflict) {
        self[c].push(conflict);
    }
}

/// The config age order: creationTimestamp, then name. The older config wins an overlap;
/// drift reports use the same order, so both name the same winner.
pub fn age_key(c: &DPDKConfig) -> (Option<Timestamp>, &str) {
    (
        c.metadata.creation_timestamp.as_ref().map(|t| t.0),
        name_of(&c.metadata),
    )
}

pub(crate) fn name_of(m: &ObjectMeta) -> &str {
    m.name.as_deref().unwrap_or("")
}

pub(crate) fn selector_matches(
    selector: &BTreeMap<String, String>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// The snapshot and its lookups.
pub(crate) struct Index<'s, 'a> {
    snap: &'s Snapshot<'a>,
    /// Every config in the snapshot, oldest first ([`age_key`]).
    configs: Vec<&'a DPDKConfig>,
    node_by_name: HashMap<&'a str, NodeIx>,
    node_by_label: HashMap<(&'a str, &'a str), Vec<NodeIx>>,
    eni_by_pair: HashMap<(&'a str, &'a str), Vec<EniIx>>,
    eni_match_all: Vec<EniIx>,
    states: HashMap<&'a str, &'a DPDKNodeState>,
}

impl<'s, 'a> Index<'s, 'a> {
    pub(crate) fn new(snap: &'s Snapshot<'a>) -> Self {
        let mut configs = snap.configs.clone();
        configs.sort_by(|a, b| age_key(a).cmp(&age_key(b)));
        let mut node_by_name = HashMap::new();
        let mut node_by_label: HashMap<(&str, &str), Vec<NodeIx>> = HashMap::new();
        for (i, n) in snap.nodes.iter().enumerate() {
            node_by_name.insert(name_of(n), NodeIx(i));
            for (k, v) in n.labels.iter().flatten() {
                node_by_label
                    .entry((k.as_str(), v.as_str()))
                    .or_default()
                    .push(NodeIx(i));
            }
        }
        let mut eni_by_pair: HashMap<(&str, &str), Vec<EniIx>> = HashMap::new();
        let mut eni_match_all = Vec::new();
        for (i, e) in snap.node_enis.iter().enumerate() {
            // Indexed under one selector pair; candidates are verified against the whole selector.
            match e.spec.node_selector.iter().next() {
                Some((k, v)) => eni_by_pair
                    .entry((k.as_str(), v.as_str()))
                    .or_default()
                    .push(EniIx(i)),
                None => eni_match_all.push(EniIx(i)),
            }
        }
        let states = snap
            .node_states
            .iter()
            .map(|s| (name_of(&s.metadata), *s))
            .collect();
        Self {
            snap,
            configs,
            node_by_name,
            node_by_label,
            eni_by_pair,
            eni_match_all,
            states,
        }
    }

    pub(crate) fn n_configs(&self) -> usize {
        self.configs.len()
    }

    /// Every config, oldest first.
    pub(crate) fn config_ixs(&self) -> impl Iterator<Item = ConfigIx> + use<> {
        (0..self.configs.len()).map(ConfigIx)
    }

    pub(crate) fn node_ixs(&self) -> impl Iterator<Item = NodeIx> + use<> {
        (0..self.snap.nodes.len()).map(NodeIx)
    }

    pub(crate) fn eni_ixs(&self) -> impl Iterator<Item = EniIx> + use<> {
        (0..self.snap.node_enis.len()).map(EniIx)
    }

    pub(crate) fn config(&self, c: ConfigIx) -> &'a DPDKConfig {
        self.configs[c.0]
    }

    /// A config's name.
    pub(crate) fn cname(&self, c: ConfigIx) -> &'a str {
        name_of(&self.configs[c.0].metadata)
    }

    /// Not being deleted.
    pub(crate) fn is_live(&self, c: ConfigIx) -> bool {
        self.configs[c.0].metadata.deletion_timestamp.is_none()
    }

    pub(crate) fn config_named(&self, name: &str) -> Option<&'a DPDKConfig> {
        self.configs
            .iter()
            .copied()
            .find(|c| name_of(&c.metadata) == name)
    }

    pub(crate) fn node(&self, n: NodeIx) -> &'a ObjectMeta {
        self.snap.nodes[n.0]
    }

    pub(crate) fn node_name(&self, n: NodeIx) -> &'a str {
        name_of(self.snap.nodes[n.0])
    }

    pub(crate) fn node_named(&self, name: &str) -> Option<NodeIx> {
        self.node_by_name.get(name).copied()
    }

    pub(crate) fn eni(&self, e: EniIx) -> &'a NodeENI {
        self.snap.node_enis[e.0]
    }

    pub(crate) fn eni_name(&self, e: EniIx) -> &'a str {
        name_of(&self.snap.node_enis[e.0].metadata)
    }

    /// Every DPDKNodeState, in snapshot order.
    pub(crate) fn node_states(&self) -> &'s [&'a DPDKNodeState] {
        &self.snap.node_states
    }

    /// The DPDKNodeState of a node, by node name.
    pub(crate) fn state(&self, node_name: &str) -> Option<&'a DPDKNodeState> {
        self.states.get(node_name).copied()
    }

    /// Nodes whose labels contain `selector`. An empty selector selects no node here:
    /// the CRD forbids it, and selecting the whole cluster by accident is worse.
    pub(crate) fn select_nodes(&self, selector: &BTreeMap<String, String>) -> Vec<NodeIx> {
        let Some(bucket) = selector
            .iter()
            .map(|(k, v)| self.node_by_label.get(&(k.as_str(), v.as_str())))
            .min_by_key(|b| b.map_or(0, |b| b.len()))
        else {
            return Vec::new();
        };
        bucket
            .map(|b| {
                b.iter()
                    .copied()
                    .filter(|&i| selector_matches(selector, self.node(i).labels.as_ref()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Nodes a NodeENI reaches: its selector's nodes plus nodes it has attachments on.
    pub(crate) fn eni_reach(&self, e: EniIx) -> BTreeSet<NodeIx> {
        let eni = self.eni(e);
        let mut out: BTreeSet<NodeIx> = if eni.spec.node_selector.is_empty() {
            self.node_ixs().collect()
        } else {
            self.select_nodes(&eni.spec.node_selector)
                .into_iter()
                .collect()
        };
        for a in eni.status.iter().flat_map(|s| s.attachments.iter()) {
            if let Some(i) = a.node_id.as_deref().and_then(|n| self.node_named(n)) {
                out.insert(i);
            }
        }
        out
    }

    /// NodeENIs whose selector matches node `n`, by name.
    pub(crate) fn eni_candidates(&self, n: NodeIx) -> Vec<EniIx> {
        let node = self.node(n);
        let mut out: Vec<EniIx> = self.eni_match_all.clone();
        for (k, v) in node.labels.iter().flatten() {
            if let Some(b) = self.eni_by_pair.get(&(k.as_str(), v.as_str())) {
                out.extend(b.iter().copied().filter(|&e| {
                    selector_matches(&self.eni(e).spec.node_selector, node.labels.as_ref())
                }));
            }
        }
        out.sort_by_key(|&e| self.eni_name(e));
        out.dedup();
        out
    }

    /// The device indexes NodeENI `e` has on node `n`, and whether they come from attachments.
    pub(crate) fn eni_indexes(&self, e: EniIx, node_name: &str) -> (BTreeSet<i32>, bool) {
        let eni = self.eni(e);
        let att: BTreeSet<i32> = eni
            .status
            .iter()
            .flat_map(|s| s.attachments.iter())
            .filter(|a| a.node_id.as_deref() == Some(node_name))
            .filter_map(|a| a.device_index)
            .collect();
        if !att.is_empty() {
            return (att, true);
        }
        let base = eni.spec.device_index.unwrap_or(1);
        let subnets = match (&eni.spec.subnet_ids, &eni.spec.subnet_names) {
            (Some(ids), _) if !ids.is_empty() => ids.len(),
            (_, Some(names)) if !names.is_empty() => names.len(),
            _ => 1,
        };
        ((0..subnets as i32).map(|i| base + i).collect(), false)
    }

    fn eni_id_for(&self, e: EniIx, node_name: &str, d: i32) -> Option<String> {
        self.eni(e)
            .status
            .iter()
            .flat_map(|s| s.attachments.iter())
            .find(|a| a.node_id.as_deref() == Some(node_name) && a.device_index == Some(d))
            .and_then(|a| a.eni_id.clone())
    }

    /// The NodeENI a mapping reaches on a node, and the ENI ID of its attachment there:
    /// attachment first, then spec.deviceIndex.
    pub(crate) fn resolve(
        &self,
        candidates: &[EniIx],
        node_name: &str,
        d: i32,
    ) -> Option<(EniIx, Option<String>)> {
        let mut spec_hit = None;
        for &e in candidates {
            let (idx, from_att) = self.eni_indexes(e, node_name);
            if idx.contains(&d) {
                if from_att {
                    return Some((e, self.eni_id_for(e, node_name, d)));
                }
                spec_hit.get_or_insert((e, None));
            }
        }
        spec_hit
    }

    /// The controller owns the node's `enabled` label.
    pub(crate) fn owned_label(&self, n: NodeIx) -> bool {
        ssa::owned_by(self.node(n), CONTROLLER_MANAGER, &ssa::enabled_label_path())
    }

    /// The node carries the agent's `ready=true` and no `enabled` label at all: nothing
    /// schedules the agent there any more, so its label would only keep the device plugin.
    /// A `ready` label someone else set, or one on a node another party still enables, stays.
    pub(crate) fn stale_ready_label(&self, n: NodeIx) -> bool {
        let meta = self.node(n);
        let label = |k: &str| meta.labels.as_ref().and_then(|l| l.get(k));
        label(NODE_ENABLED_LABEL).is_none()
            && label(NODE_READY_LABEL).map(String::as_str) == Some("true")
            && ssa::owned_by(meta, AGENT_MANAGER, &ssa::ready_label_path())
    }

    pub(crate) fn owns_any_eni_field(&self, e: EniIx) -> bool {
        ssa::NODEENI_PATHS
            .iter()
            .any(|p| ssa::owned_by(&self.eni(e).metadata, CONTROLLER_MANAGER, p))
    }

    /// The field conflicts the API server returned for this object at this resourceVersion.
    pub(crate) fn server_conflicts(
        &self,
        kind: Kind,
        name: &str,
        rv: Option<&str>,
    ) -> Vec<&'a ssa::FieldConflict> {
        self.snap
            .server_conflicts
            .iter()
            .filter(|c| c.kind == kind && c.name == name && Some(c.resource_version.as_str()) == rv)
            .flat_map(|c| c.conflicts.iter())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Settings;
    use crate::plan::tests::{Objects, attach, config, eni, node, pass};

    #[test]
    fn configs_are_indexed_oldest_first_then_by_name() {
        let objects = Objects {
            configs: vec![
                config("b", 0, &[("ng", "x")], &[]),
                config("a", 0, &[("ng", "x")], &[]),
                config("c", -5, &[("ng", "x")], &[]),
            ],
            ..Default::default()
        };
        let snap = objects.snapshot();
        let ix = Index::new(&snap);
        let names: Vec<&str> = ix.config_ixs().map(|c| ix.cname(c)).collect();
        assert_eq!(names, ["c", "a", "b"]);
        assert!(age_key(&objects.configs[1]) < age_key(&objects.configs[0]));
        assert!(age_key(&objects.configs[2]) < age_key(&objects.configs[1]));
    }

    #[test]
    fn an_empty_selector_selects_no_node_and_a_selector_needs_every_label() {
        let objects = Objects {
            nodes: vec![
                node("n1", &[("ng", "x"), ("zone", "a")]),
                node("n2", &[("ng", "x")]),
            ],
            ..Default::default()
        };
        let snap = objects.snapshot();
        let ix = Index::new(&snap);
        assert_eq!(ix.select_nodes(&BTreeMap::new()), Vec::<NodeIx>::new());
        let both: BTreeMap<String, String> = [("ng", "x"), ("zone", "a")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(ix.select_nodes(&both), vec![NodeIx(0)]);
    }

    #[test]
    fn a_mapping_resolves_to_an_attachment_before_a_spec_index() {
        let mut by_attachment = eni("by-attachment", &[("ng", "x")], 5, 1);
        attach(&mut by_attachment, "n1", 2);
        let objects = Objects {
            nodes: vec![node("n1", &[("ng", "x")])],
            enis: vec![eni("by-spec", &[("ng", "x")], 2, 1), by_attachment],
            ..Default::default()
        };
        let snap = objects.snapshot();
        let settings = Settings::default();
        let input = pass(&snap, &settings);
        let ix = &input.index;
        let candidates = ix.eni_candidates(NodeIx(0));
        assert_eq!(candidates, vec![EniIx(1), EniIx(0)], "sorted by name");
        assert_eq!(
            ix.resolve(&candidates, "n1", 2),
            Some((EniIx(1), Some("eni-n1-2".to_string())))
        );
        assert_eq!(
            ix.resolve(&candidates, "n1", 5),
            None,
            "attached elsewhere on n1"
        );
        assert_eq!(ix.resolve(&candidates, "n2", 2), Some((EniIx(0), None)));
    }
}
