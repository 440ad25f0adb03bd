//! GetPreferredAllocation: a NUMA-aware pick. Pure.
//!
//! - Every `must_include` device is in the answer (the kubelet needs them, e.g. from
//!   an init container).
//! - The rest comes from ONE NUMA node when one can supply it: the node most of the
//!   must-include devices sit on first, then the node with the fewest free devices
//!   that still fits (best fit, so larger groups stay whole for larger pods).
//! - When no single node fits, the fewest nodes are used, largest first.
//! - Devices without NUMA affinity come last. Ties break on node id, then BDF, so
//!   the answer is deterministic.

use std::collections::BTreeMap;

/// Picks `size` devices from `available`, including `must_include`. `numa` gives a
/// device's NUMA node (`None` = no affinity).
pub fn preferred_allocation(
    available: &[String],
    must_include: &[String],
    size: usize,
    numa: impl Fn(&str) -> Option<u32>,
) -> Vec<String> {
    let mut chosen: Vec<String> = Vec::new();
    for id in must_include {
        if !chosen.contains(id) {
            chosen.push(id.clone());
        }
    }
    if chosen.len() >= size {
        return chosen;
    }
    let remaining = size - chosen.len();

    // Free devices per NUMA node (None sorts first in a BTreeMap; handled below).
    let mut groups: BTreeMap<Option<u32>, Vec<&String>> = BTreeMap::new();
    for id in available {
        if !chosen.contains(id) && !groups.values().any(|g| g.contains(&id)) {
            groups.entry(numa(id)).or_default().push(id);
        }
    }
    for g in groups.values_mut() {
        g.sort();
    }

    // The node the must-include devices favour, if any.
    let mut must_nodes: BTreeMap<u32, usize> = BTreeMap::new();
    for id in &chosen {
        if let Some(n) = numa(id) {
            *must_nodes.entry(n).or_default() += 1;
        }
    }
    let home = must_nodes
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        .map(|(n, _)| *n);

    // One node that fits everything that is left.
    let single = groups
        .iter()
        .filter(|(node, ids)| node.is_some() && ids.len() >= remaining)
        .min_by_key(|(node, ids)| (*node != &home, ids.len(), **node))
        .map(|(node, _)| *node);
    let order: Vec<Option<u32>> = match single {
        Some(node) => vec![node],
        None => {
            let mut nodes: Vec<(&Option<u32>, usize)> =
                groups.iter().map(|(n, ids)| (n, ids.len())).collect();
            nodes.sort_by_key(|(n, len)| (n.is_none(), **n != home, std::cmp::Reverse(*len), **n));
            nodes.into_iter().map(|(n, _)| *n).collect()
        }
    };
    for node in order {
        for id in groups.get(&node).into_iter().flatten() {
            if chosen.len() == size {
                return chosen;
            }
            chosen.push((*id).clone());
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// a* on node 0, b* on node 1, x without affinity.
    fn numa(id: &str) -> Option<u32> {
        match id.chars().next() {
            Some('a') => Some(0),
            Some('b') => Some(1),
            _ => None,
        }
    }

    #[test]
    fn prefers_one_node_that_fits_best() {
        let avail = ids(&["a1", "a2", "a3", "b1", "b2", "x1"]);
        assert_eq!(
            preferred_allocation(&avail, &[], 2, numa),
            ids(&["b1", "b2"]),
            "node 1 fits 2 exactly"
        );
        assert_eq!(
            preferred_allocation(&avail, &[], 3, numa),
            ids(&["a1", "a2", "a3"])
        );
        assert_eq!(preferred_allocation(&avail, &[], 1, numa), ids(&["b1"]));
    }

    #[test]
    fn must_include_is_honoured_and_pulls_towards_its_node() {
        let avail = ids(&["a1", "a2", "a3", "b1", "b2"]);
        assert_eq!(
            preferred_allocation(&avail, &ids(&["a2"]), 2, numa),
            ids(&["a2", "a1"])
        );
        assert_eq!(
            preferred_allocation(&avail, &ids(&["b2", "a1"]), 2, numa),
            ids(&["b2", "a1"])
        );
        assert_eq!(
            preferred_allocation(&avail, &ids(&["a1", "a2", "a3"]), 2, numa),
            ids(&["a1", "a2", "a3"])
        );
    }

    #[test]
    fn spans_the_fewest_nodes_when_none_fits() {
        let avail = ids(&["a1", "a2", "b1", "b2", "b3", "x1"]);
        assert_eq!(
            preferred_allocation(&avail, &[], 4, numa),
            ids(&["b1", "b2", "b3", "a1"])
        );
        assert_eq!(
            preferred_allocation(&avail, &[], 6, numa),
            ids(&["b1", "b2", "b3", "a1", "a2", "x1"])
        );
        assert_eq!(
            preferred_allocation(&avail, &[], 9, numa).len(),
            6,
            "never invents devices"
        );
    }

    #[test]
    fn devices_without_affinity_are_last_resort() {
        let avail = ids(&["x1", "x2", "a1"]);
        assert_eq!(preferred_allocation(&avail, &[], 1, numa), ids(&["a1"]));
        assert_eq!(
            preferred_allocation(&ids(&["x2", "x1"]), &[], 1, numa),
            ids(&["x1"])
        );
    }
}
