//! Phase 1, claims: which nodes each config selects, and per node selected by a live
//! config, the device indexes it is asked for after overlap resolution (the oldest
//! config wins) and the NodeENI each one targets. Writes nothing.

use std::collections::{BTreeMap, HashMap};

use super::index::{ConfigIx, Conflicts, EniIx, Index, NodeIx, PerConfig};
use super::reason;
use crate::api::{ConfigConflict, DPDKConfig, DpdkDriver, EffectiveDriverOptions, ResourceMapping};

/// One device index a node is asked for, after overlap resolution.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Claim {
    pub(crate) device_index: i32,
    pub(crate) resource_name: String,
    pub(crate) driver: DpdkDriver,
    /// Configs asking for exactly this, oldest first.
    pub(crate) configs: Vec<ConfigIx>,
    /// The NodeENI and the ENI ID of its attachment on the node, when found.
    pub(crate) target: Option<(EniIx, Option<String>)>,
}

/// What one node selected by a live config is asked for.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct NodeClaims {
    pub(crate) node: NodeIx,
    /// The live configs selecting it, oldest first.
    pub(crate) configs: Vec<ConfigIx>,
    /// The oldest config's driver options, which apply.
    pub(crate) options: EffectiveDriverOptions,
    /// By device index.
    pub(crate) claims: Vec<Claim>,
}

/// A claim: its node, and its place in that node's [`NodeClaims::claims`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ClaimRef {
    pub(crate) node: NodeIx,
    pub(crate) claim: usize,
}

/// The output of the claims phase.
pub(crate) struct Claims {
    /// The nodes each config selects, live or not.
    pub(crate) matched: PerConfig<Vec<NodeIx>>,
    /// Every node a live config selects, in node order.
    pub(crate) nodes: Vec<NodeClaims>,
    /// Where each node of `nodes` is.
    pub(crate) by_node: HashMap<NodeIx, usize>,
    /// Overlaps between configs.
    pub(crate) conflicts: Conflicts,
}

impl Claims {
    pub(crate) fn new(
        matched: PerConfig<Vec<NodeIx>>,
        nodes: Vec<NodeClaims>,
        conflicts: Conflicts,
    ) -> Self {
        let by_node = nodes.iter().enumerate().map(|(i, w)| (w.node, i)).collect();
        Self {
            matched,
            nodes,
            by_node,
            conflicts,
        }
    }

    /// A claim [`Claims::targeted`] named.
    pub(crate) fn claim(&self, r: ClaimRef) -> &Claim {
        &self.nodes[self.by_node[&r.node]].claims[r.claim]
    }

    /// The claims of a node a live config selects.
    pub(crate) fn of_node(&self, n: NodeIx) -> Option<&NodeClaims> {
        self.by_node.get(&n).map(|&i| &self.nodes[i])
    }

    /// Some live config selects node `n`.
    pub(crate) fn is_matched(&self, n: NodeIx) -> bool {
        self.by_node.contains_key(&n)
    }

    /// Every claim with a target NodeENI, in node then device-index order.
    pub(crate) fn targeted(&self) -> impl Iterator<Item = (ClaimRef, EniIx)> + '_ {
        self.nodes.iter().flat_map(|nc| {
            nc.claims.iter().enumerate().filter_map(move |(claim, cl)| {
                let node = nc.node;
                cl.target
                    .as_ref()
                    .map(|(e, _)| (ClaimRef { node, claim }, *e))
            })
        })
    }
}

pub(crate) fn effective_options(c: &DPDKConfig) -> EffectiveDriverOptions {
    EffectiveDriverOptions {
        enable_unsafe_no_iommu: c.spec.driver_options.enable_unsafe_no_iommu,
        write_combining: c.spec.driver_options.effective_write_combining(),
    }
}

/// Runs the phase.
pub(crate) fn claims(ix: &Index<'_, '_>) -> Claims {
    let mut matched: PerConfig<Vec<NodeIx>> = PerConfig::filled(ix.n_configs(), Vec::new());
    let mut node_configs: BTreeMap<NodeIx, Vec<ConfigIx>> = BTreeMap::new();
    for c in ix.config_ixs() {
        let nodes = ix.select_nodes(&ix.config(c).spec.node_selector);
        if ix.is_live(c) {
            for &n in &nodes {
                node_configs.entry(n).or_default().push(c);
            }
        }
        matched[c] = nodes;
    }
    let mut conflicts = Conflicts::none(ix.n_configs());
    let nodes: Vec<NodeClaims> = node_configs
        .into_iter()
        .map(|(n, cfgs)| node_claims(ix, n, cfgs, &mut conflicts))
        .collect();
    Claims::new(matched, nodes, conflicts)
}

/// One node's claims: the configs' mappings merged, oldest first, then their targets.
fn node_claims(
    ix: &Index<'_, '_>,
    n: NodeIx,
    cfgs: Vec<ConfigIx>,
    conflicts: &mut Conflicts,
) -> NodeClaims {
    let node_name = ix.node_name(n);
    let oldest = cfgs[0];
    let options = effective_options(ix.config(oldest));
    let mut claims: Vec<Claim> = Vec::new();
    for &c in &cfgs {
        if c != oldest && effective_options(ix.config(c)) != options {
            let msg = format!(
                "node {node_name}: driverOptions differ from older DPDKConfig {}; its options apply",
                ix.cname(oldest)
            );
            conflicts.add(
                c,
                ConfigConflict {
                    reason: reason::OVERLAPPING_CONFIG.into(),
                    message: msg,
                    node: Some(node_name.into()),
                    other_config: Some(ix.cname(oldest).into()),
                    ..Default::default()
                },
            );
        }
        for m in &ix.config(c).spec.resource_mapping {
            if let Some(conflict) = add_mapping(ix, &mut claims, c, m, node_name) {
                conflicts.add(c, conflict);
            }
        }
    }
    claims.sort_by_key(|cl| cl.device_index);
    let candidates = ix.eni_candidates(n);
    for cl in claims.iter_mut() {
        cl.target = ix.resolve(&candidates, node_name, cl.device_index);
    }
    NodeClaims {
        node: n,
        configs: cfgs,
        options,
        claims,
    }
}

/// Adds config `c`'s mapping `m` to a node's claims, or returns the overlap when an older
/// config maps the same device index otherwise.
fn add_mapping(
    ix: &Index<'_, '_>,
    claims: &mut Vec<Claim>,
    c: ConfigIx,
    m: &ResourceMapping,
    node_name: &str,
) -> Option<ConfigConflict> {
    match claims
        .iter_mut()
        .find(|cl| cl.device_index == m.device_index)
    {
        None => {
            claims.push(Claim {
                device_index: m.device_index,
                resource_name: m.resource_name.clone(),
                driver: m.driver,
                configs: vec![c],
                target: None,
            });
            None
        }
        Some(cl) if cl.resource_name == m.resource_name && cl.driver == m.driver => {
            cl.configs.push(c);
            None
        }
        Some(cl) => {
            let winner = cl.configs[0];
            let msg = format!(
                "node {node_name} deviceIndex {}: older DPDKConfig {} maps it to {} ({}); this config's {} ({}) is not applied",
                m.device_index,
                ix.cname(winner),
                cl.resource_name,
                cl.driver,
                m.resource_name,
                m.driver
            );
            Some(ConfigConflict {
                reason: reason::OVERLAPPING_CONFIG.into(),
                message: msg,
                node: Some(node_name.into()),
                device_index: Some(m.device_index),
                other_config: Some(ix.cname(winner).to_string()),
                ..Default::default()
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::plan::tests::{Objects, RES2, attach, config, eni, node, t};

    const RES3: &str = "intel.com/intel_sriov_netdevice_3";

    #[test]
    fn the_older_config_wins_a_device_index_and_the_younger_gets_the_conflict() {
        let mut e = eni("e", &[("ng", "x")], 2, 1);
        attach(&mut e, "n1", 2);
        let objects = Objects {
            configs: vec![
                config("young", 10, &[("ng", "x")], &[(2, RES3)]),
                config("old", 0, &[("ng", "x")], &[(2, RES2)]),
            ],
            nodes: vec![node("n1", &[("ng", "x")]), node("n2", &[("ng", "y")])],
            enis: vec![e],
            ..Default::default()
        };
        let snap = objects.snapshot();
        let ix = Index::new(&snap);
        let claims = claims(&ix);
        let (old, young) = (ConfigIx(0), ConfigIx(1));
        assert_eq!(claims.matched[old], vec![NodeIx(0)]);
        assert_eq!(claims.matched[young], vec![NodeIx(0)]);
        assert_eq!(claims.nodes.len(), 1);
        let nc = claims.of_node(NodeIx(0)).expect("n1 is claimed");
        assert_eq!(nc.configs, vec![old, young]);
        assert_eq!(
            nc.claims,
            vec![Claim {
                device_index: 2,
                resource_name: RES2.into(),
                driver: DpdkDriver::VfioPci,
                configs: vec![old],
                target: Some((EniIx(0), Some("eni-n1-2".into()))),
            }]
        );
        assert!(claims.conflicts[old].is_empty());
        let k = &claims.conflicts[young];
        assert_eq!(k.len(), 1);
        assert_eq!(k[0].reason, reason::OVERLAPPING_CONFIG);
        assert_eq!(k[0].other_config.as_deref(), Some("old"));
        assert_eq!(k[0].device_index, Some(2));
        assert!(claims.of_node(NodeIx(1)).is_none());
    }

    #[test]
    fn a_deleted_config_matches_nodes_but_claims_nothing() {
        let mut gone = config("gone", 0, &[("ng", "x")], &[(2, RES2)]);
        gone.metadata.deletion_timestamp = Some(Time(t(50)));
        let objects = Objects {
            configs: vec![gone],
            nodes: vec![node("n1", &[("ng", "x")])],
            ..Default::default()
        };
        let snap = objects.snapshot();
        let claims = claims(&Index::new(&snap));
        assert_eq!(claims.matched[ConfigIx(0)], vec![NodeIx(0)]);
        assert!(claims.nodes.is_empty());
        assert!(!claims.is_matched(NodeIx(0)));
    }
}
