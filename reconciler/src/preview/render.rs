//! `plan`'s output: text for people (`+` enable, `~` change, `-` tear down or release,
//! `!` conflict), JSON for pipelines. Pure.

use std::fmt::Write as _;

use super::impact::{ConfigImpact, FieldChange, Impact, NodeAction};

/// Output format of `plan`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// The impact in `format`, ending in a newline.
pub fn render(impact: &Impact, format: Format) -> String {
    match format {
        Format::Text => text(impact),
        Format::Json => json(impact),
    }
}

/// `{"changed": bool, "summary": {...}, "configs": [...]}`.
pub fn json(impact: &Impact) -> String {
    let body = serde_json::json!({
        "changed": impact.changed(),
        "summary": Summary::of(impact),
        "configs": impact.configs,
    });
    let mut s = serde_json::to_string_pretty(&body).unwrap_or_default();
    s.push('\n');
    s
}

/// Counts over every config, each node and NodeENI once.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub configs_changed: usize,
    pub nodes_to_enable: usize,
    pub nodes_to_reconfigure: usize,
    pub nodes_to_tear_down: usize,
    pub node_enis_to_change: usize,
    pub new_conflicts: usize,
}

impl Summary {
    pub fn of(impact: &Impact) -> Summary {
        use std::collections::BTreeSet;
        let nodes = |a: NodeAction| {
            impact
                .configs
                .iter()
                .flat_map(|c| c.nodes_with(a).map(|n| n.node.as_str()))
                .collect::<BTreeSet<_>>()
                .len()
        };
        let enis: BTreeSet<&str> = impact
            .configs
            .iter()
            .flat_map(|c| c.node_enis.iter().map(|e| e.node_eni.as_str()))
            .collect();
        Summary {
            configs_changed: impact.configs.iter().filter(|c| c.change.is_some()).count(),
            nodes_to_enable: nodes(NodeAction::Enable),
            nodes_to_reconfigure: nodes(NodeAction::Reconfigure),
            nodes_to_tear_down: nodes(NodeAction::TearDown),
            node_enis_to_change: enis.len(),
            new_conflicts: impact.configs.iter().map(|c| c.new_conflicts.len()).sum(),
        }
    }
}

/// The report for people.
pub fn text(impact: &Impact) -> String {
    if !impact.changed() {
        return "No changes. The checkout's DPDKConfigs leave every node and NodeENI as it is.\n"
            .to_string();
    }
    let mut s = String::new();
    for c in &impact.configs {
        config_text(&mut s, c);
        s.push('\n');
    }
    let n = Summary::of(impact);
    let _ = writeln!(
        s,
        "Plan: {} DPDKConfig(s) changed; nodes: {} to enable, {} to reconfigure, {} to tear down; {} NodeENI(s) to change; {} new conflict(s).",
        n.configs_changed,
        n.nodes_to_enable,
        n.nodes_to_reconfigure,
        n.nodes_to_tear_down,
        n.node_enis_to_change,
        n.new_conflicts
    );
    s
}

fn config_text(s: &mut String, c: &ConfigImpact) {
    let what = c.change.map_or("unchanged, affected", |k| k.as_str());
    let _ = match &c.file {
        Some(f) => writeln!(s, "DPDKConfig {}: {what} ({f})", c.name),
        None => writeln!(s, "DPDKConfig {}: {what}", c.name),
    };
    if c.nodes.is_empty() && c.node_enis.is_empty() {
        s.push_str("  no node or NodeENI changes\n");
    }
    for (action, mark, verb) in [
        (NodeAction::Enable, '+', "enable"),
        (NodeAction::Reconfigure, '~', "reconfigure"),
        (NodeAction::TearDown, '-', "tear down"),
    ] {
        for n in c.nodes_with(action) {
            let _ = writeln!(s, "  {mark} node {} ({verb})", n.node);
            fields_text(s, &n.fields);
        }
    }
    for e in &c.node_enis {
        let released = e.fields.iter().all(|f| f.new.is_none());
        let (mark, verb) = if released {
            ('-', "release")
        } else {
            ('~', "update")
        };
        let _ = writeln!(s, "  {mark} NodeENI {} ({verb})", e.node_eni);
        fields_text(s, &e.fields);
    }
    for k in &c.new_conflicts {
        let _ = writeln!(s, "  ! new conflict {}: {}", k.reason, k.message);
    }
    for k in &c.resolved_conflicts {
        let _ = writeln!(s, "  ✓ resolved conflict {}: {}", k.reason, k.message);
    }
    for (i, wave) in c.waves.iter().enumerate() {
        let canary = if wave.canary { " (canary)" } else { "" };
        let _ = writeln!(s, "  wave {}{canary}: {}", i + 1, wave.nodes.join(", "));
    }
}

fn fields_text(s: &mut String, fields: &[FieldChange]) {
    let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(unset)".into());
    for f in fields {
        let _ = writeln!(s, "      {}: {} → {}", f.field, show(&f.old), show(&f.new));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preview::desired::ChangeKind;
    use crate::preview::impact::{EniChange, NodeChange, PlannedWave};

    fn field(f: &str, old: Option<&str>, new: Option<&str>) -> FieldChange {
        FieldChange {
            field: f.into(),
            old: old.map(str::to_string),
            new: new.map(str::to_string),
        }
    }

    fn sample() -> Impact {
        Impact {
            configs: vec![ConfigImpact {
                name: "dpdk".into(),
                change: Some(ChangeKind::Modified),
                file: Some("clusters/prod/dpdk.yaml".into()),
                nodes: vec![
                    NodeChange {
                        node: "n1".into(),
                        action: NodeAction::Reconfigure,
                        fields: vec![field(
                            "devices[deviceIndex=2].driver",
                            Some("vfio-pci"),
                            Some("igb_uio"),
                        )],
                    },
                    NodeChange {
                        node: "n2".into(),
                        action: NodeAction::TearDown,
                        fields: Vec::new(),
                    },
                ],
                node_enis: vec![EniChange {
                    node_eni: "eni-a".into(),
                    fields: vec![field("dpdkDriver", None, Some("igb_uio"))],
                }],
                new_conflicts: Vec::new(),
                resolved_conflicts: Vec::new(),
                waves: vec![
                    PlannedWave {
                        nodes: vec!["n1".into()],
                        canary: true,
                    },
                    PlannedWave {
                        nodes: vec!["n2".into()],
                        canary: false,
                    },
                ],
            }],
        }
    }

    #[test]
    fn text_lists_nodes_nodeenis_fields_waves_and_a_summary() {
        let t = text(&sample());
        for want in [
            "DPDKConfig dpdk: modified (clusters/prod/dpdk.yaml)\n",
            "  ~ node n1 (reconfigure)\n      devices[deviceIndex=2].driver: vfio-pci → igb_uio\n",
            "  - node n2 (tear down)\n",
            "  ~ NodeENI eni-a (update)\n      dpdkDriver: (unset) → igb_uio\n",
            "  wave 1 (canary): n1\n  wave 2: n2\n",
            "Plan: 1 DPDKConfig(s) changed; nodes: 0 to enable, 1 to reconfigure, 1 to tear down; 1 NodeENI(s) to change; 0 new conflict(s).\n",
        ] {
            assert!(t.contains(want), "missing {want:?} in:\n{t}");
        }
        assert!(text(&Impact::default()).starts_with("No changes."));
    }

    #[test]
    fn json_carries_the_same_facts() {
        let v: serde_json::Value = serde_json::from_str(&json(&sample())).expect("json");
        assert_eq!(v["changed"], true);
        assert_eq!(v["summary"]["nodesToReconfigure"], 1);
        assert_eq!(v["configs"][0]["change"], "modified");
        assert_eq!(v["configs"][0]["nodes"][0]["action"], "reconfigure");
        assert_eq!(
            v["configs"][0]["nodeEnis"][0]["fields"][0]["new"],
            "igb_uio"
        );
        assert_eq!(v["configs"][0]["waves"][1]["nodes"][0], "n2");
        assert_eq!(v["configs"][0]["waves"][0]["canary"], true);
    }
}
