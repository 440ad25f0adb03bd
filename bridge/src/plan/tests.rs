use std::collections::BTreeMap;

use super::*;
use crate::api::{
    ConfigConflict, DPDKConfigSpec, DPDKNodeStateStatus, DeviceStatus, DpdkDriver, DriverOptions,
    ENIAttachment, EffectiveDriverOptions, NodeENISpec, NodeENIStatus, ResourceMapping, SyncStatus,
};
use crate::conditions;
use crate::labels::{
    AGENT_MANAGER, CONFIG_FINALIZER, CONTROLLER_MANAGER, NODE_ENABLED_LABEL, NODE_READY_LABEL,
    REVISION_ANNOTATION,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry, Time};
use serde_json::{Value, json};

pub(super) const RES2: &str = "intel.com/intel_sriov_netdevice_2";

pub(super) fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + secs).expect("timestamp")
}

pub(super) fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub(super) fn config(
    name: &str,
    created: i64,
    selector: &[(&str, &str)],
    mappings: &[(i32, &str)],
) -> DPDKConfig {
    let mut c = DPDKConfig::new(
        name,
        DPDKConfigSpec {
            node_selector: labels(selector),
            driver_options: DriverOptions::default(),
            resource_mapping: mappings
                .iter()
                .map(|(d, r)| ResourceMapping {
                    device_index: *d,
                    resource_name: r.to_string(),
                    driver: DpdkDriver::VfioPci,
                })
                .collect(),
            rollout: None,
        },
    );
    c.metadata.uid = Some(format!("uid-{name}"));
    c.metadata.generation = Some(1);
    c.metadata.creation_timestamp = Some(Time(t(created)));
    c
}

pub(super) fn node(name: &str, l: &[(&str, &str)]) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        uid: Some(format!("uid-{name}")),
        labels: Some(labels(l)),
        resource_version: Some("1".into()),
        ..Default::default()
    }
}

pub(super) fn eni(
    name: &str,
    selector: &[(&str, &str)],
    device_index: i32,
    subnets: usize,
) -> NodeENI {
    let mut e = NodeENI::new(
        name,
        NodeENISpec {
            node_selector: labels(selector),
            device_index: Some(device_index),
            subnet_ids: if subnets > 1 {
                Some((0..subnets).map(|i| format!("subnet-{i}")).collect())
            } else {
                None
            },
            subnet_id: if subnets == 1 {
                Some("subnet-0".into())
            } else {
                None
            },
            ..Default::default()
        },
    );
    e.metadata.uid = Some(format!("uid-{name}"));
    e.metadata.resource_version = Some("1".into());
    e
}

pub(super) fn attach(e: &mut NodeENI, node: &str, d: i32) {
    let st = e.status.get_or_insert_with(NodeENIStatus::default);
    st.attachments.push(ENIAttachment {
        node_id: Some(node.into()),
        device_index: Some(d),
        eni_id: Some(format!("eni-{node}-{d}")),
        status: Some("attached".into()),
        ..Default::default()
    });
}

pub(super) fn entry(manager: &str, fields: Value) -> ManagedFieldsEntry {
    ManagedFieldsEntry {
        manager: Some(manager.into()),
        operation: Some("Apply".into()),
        fields_type: Some("FieldsV1".into()),
        fields_v1: Some(FieldsV1(fields)),
        ..Default::default()
    }
}

pub(super) fn set_owner(meta: &mut ObjectMeta, manager: &str, fields: Value) {
    let entries = meta.managed_fields.get_or_insert_with(Vec::new);
    entries.retain(|e| e.manager.as_deref() != Some(manager));
    if fields.as_object().is_some_and(|o| !o.is_empty()) {
        entries.push(entry(manager, fields));
    }
}

fn bump(meta: &mut ObjectMeta) {
    let rv: u64 = meta
        .resource_version
        .as_deref()
        .unwrap_or("0")
        .parse()
        .unwrap_or(0);
    meta.resource_version = Some((rv + 1).to_string());
}

/// The objects a phase's unit test plans over.
#[derive(Default)]
pub(super) struct Objects {
    pub(super) configs: Vec<DPDKConfig>,
    pub(super) nodes: Vec<ObjectMeta>,
    pub(super) enis: Vec<NodeENI>,
    pub(super) states: Vec<DPDKNodeState>,
}

impl Objects {
    pub(super) fn snapshot(&self) -> Snapshot<'_> {
        Snapshot {
            configs: self.configs.iter().collect(),
            nodes: self.nodes.iter().collect(),
            node_enis: self.enis.iter().collect(),
            node_states: self.states.iter().collect(),
            server_conflicts: Vec::new(),
        }
    }
}

/// A pass over `snap` at `t(100)`.
pub(super) fn pass<'s, 'a>(snap: &'s Snapshot<'a>, settings: &'s Settings) -> PassInput<'s, 'a> {
    PassInput {
        index: index::Index::new(snap),
        settings,
        now: t(100),
    }
}

/// What the device plugin advertises for a spec: every device healthy.
pub(super) fn advertised(spec: &DPDKNodeStateSpec) -> crate::api::DevicePluginStatus {
    let mut by_name: BTreeMap<&str, i32> = BTreeMap::new();
    for d in &spec.devices {
        *by_name.entry(d.resource_name.as_str()).or_default() += 1;
    }
    crate::api::DevicePluginStatus {
        resources: by_name
            .into_iter()
            .map(|(name, n)| crate::api::AdvertisedResource {
                resource_name: name.into(),
                advertised: n,
                healthy: n,
            })
            .collect(),
        last_registration_time: None,
    }
}

/// A tiny API server: applies the planner's writes the way SSA would, so tests can
/// run pass after pass.
#[derive(Default)]
pub(super) struct World {
    pub(super) configs: Vec<DPDKConfig>,
    pub(super) nodes: Vec<ObjectMeta>,
    pub(super) enis: Vec<NodeENI>,
    pub(super) states: Vec<DPDKNodeState>,
    pub(super) server_conflicts: Vec<ServerConflict>,
    pub(super) settings: Settings,
    pub(super) now: Timestamp,
}

impl World {
    pub(super) fn new() -> Self {
        World {
            now: t(100),
            ..Default::default()
        }
    }

    pub(super) fn snapshot(&self) -> Snapshot<'_> {
        Snapshot {
            configs: self.configs.iter().collect(),
            nodes: self.nodes.iter().collect(),
            node_enis: self.enis.iter().collect(),
            node_states: self.states.iter().collect(),
            server_conflicts: self.server_conflicts.iter().collect(),
        }
    }

    pub(super) fn plan(&self) -> ClusterPlan {
        plan(&self.snapshot(), &self.settings, self.now)
    }

    pub(super) fn apply(&mut self, plan: &ClusterPlan) {
        for w in &plan.writes {
            self.write(w);
        }
    }

    /// Plans and applies until a pass plans nothing; returns every write made.
    pub(super) fn converge(&mut self) -> Vec<Write> {
        let mut all = Vec::new();
        for _ in 0..20 {
            let p = self.plan();
            if p.writes.is_empty() {
                return all;
            }
            self.apply(&p);
            all.extend(p.writes);
        }
        panic!(
            "no convergence after 20 passes; last writes: {:?}",
            self.plan().writes
        );
    }

    pub(super) fn write(&mut self, w: &Write) {
        match w {
            Write::AddFinalizer { config } => {
                let c = self
                    .configs
                    .iter_mut()
                    .find(|c| c.metadata.name.as_deref() == Some(config))
                    .expect("config");
                c.metadata
                    .finalizers
                    .get_or_insert_with(Vec::new)
                    .push(CONFIG_FINALIZER.into());
                set_owner(
                    &mut c.metadata,
                    CONTROLLER_MANAGER,
                    json!({"f:metadata": {"f:finalizers": {format!("v:\"{CONFIG_FINALIZER}\""): {}}}}),
                );
            }
            Write::RemoveFinalizer { config, .. } => {
                let c = self
                    .configs
                    .iter_mut()
                    .find(|c| c.metadata.name.as_deref() == Some(config))
                    .expect("config");
                c.metadata
                    .finalizers
                    .get_or_insert_with(Vec::new)
                    .retain(|f| f != CONFIG_FINALIZER);
                if c.metadata.deletion_timestamp.is_some()
                    && c.metadata.finalizers.as_ref().is_none_or(|f| f.is_empty())
                {
                    self.configs
                        .retain(|c| c.metadata.name.as_deref() != Some(config));
                }
            }
            Write::ConfigStatus { config, status } => {
                let c = self
                    .configs
                    .iter_mut()
                    .find(|c| c.metadata.name.as_deref() == Some(config))
                    .expect("config");
                c.status = Some(status.clone());
            }
            Write::ApplyNodeState {
                node,
                spec,
                teardown_since,
                rollout,
            } => {
                let idx = self
                    .states
                    .iter()
                    .position(|s| s.metadata.name.as_deref() == Some(node));
                let s = match idx {
                    Some(i) => &mut self.states[i],
                    None => {
                        let mut s = DPDKNodeState::new(node, spec.clone());
                        s.metadata.uid = Some(format!("uid-state-{node}"));
                        s.metadata.generation = Some(1);
                        self.states.push(s);
                        self.states.last_mut().expect("pushed")
                    }
                };
                if s.spec != *spec {
                    s.spec = spec.clone();
                    s.metadata.generation = Some(s.metadata.generation.unwrap_or(0) + 1);
                }
                s.metadata.labels = Some(labels(&[ssa::NODE_STATE_MANAGED_BY]));
                let mut ann = rollout.annotations();
                if let Some(v) = teardown_since {
                    ann.push((TEARDOWN_SINCE_ANNOTATION, v));
                }
                s.metadata.annotations = (!ann.is_empty()).then(|| labels(&ann));
                set_owner(&mut s.metadata, CONTROLLER_MANAGER, json!({"f:spec": {}}));
            }
            Write::DeleteNodeState { node, .. } => self
                .states
                .retain(|s| s.metadata.name.as_deref() != Some(node)),
            Write::SetNodeLabel { node, .. } => {
                self.label_node(node, NODE_ENABLED_LABEL, "true", CONTROLLER_MANAGER)
            }
            Write::ReleaseNodeLabel { node, .. } => {
                let n = self.node_mut(node);
                set_owner(n, CONTROLLER_MANAGER, json!({}));
                if ssa::other_owners(n, &ssa::enabled_label_path(), CONTROLLER_MANAGER).is_empty() {
                    n.labels
                        .get_or_insert_with(BTreeMap::new)
                        .remove(NODE_ENABLED_LABEL);
                }
                bump(n);
            }
            Write::RemoveReadyLabel { node, .. } => {
                let n = self.node_mut(node);
                n.labels
                    .get_or_insert_with(BTreeMap::new)
                    .remove(NODE_READY_LABEL);
                set_owner(n, AGENT_MANAGER, json!({}));
                bump(n);
            }
            Write::ApplyNodeEni { name, fields, .. } => {
                let e = self
                    .enis
                    .iter_mut()
                    .find(|e| e.metadata.name.as_deref() == Some(name))
                    .expect("eni");
                if fields.enable {
                    e.spec.enable_dpdk = Some(true);
                } else if ssa::owned_by(&e.metadata, CONTROLLER_MANAGER, &ssa::NODEENI_ENABLE_PATH)
                {
                    e.spec.enable_dpdk = None;
                }
                if fields.pci_address.is_some() {
                    e.spec.dpdk_pci_address = fields.pci_address.clone();
                }
                e.spec.dpdk_driver = Some(fields.driver.as_str().into());
                e.spec.dpdk_resource_name = Some(fields.resource_name.clone());
                // Force or not, the applier ends up the owner; others lose changed fields.
                if let Some(entries) = e.metadata.managed_fields.as_mut() {
                    for en in entries.iter_mut() {
                        if let Some(f) = en
                            .fields_v1
                            .as_mut()
                            .and_then(|f| f.0.get_mut("f:spec"))
                            .and_then(|s| s.as_object_mut())
                        {
                            f.remove("f:dpdkResourceName");
                            f.remove("f:dpdkDriver");
                        }
                    }
                }
                let mut owned = json!({"f:dpdkDriver": {}, "f:dpdkResourceName": {}});
                if fields.enable {
                    owned["f:enableDPDK"] = json!({});
                }
                if fields.pci_address.is_some() {
                    owned["f:dpdkPCIAddress"] = json!({});
                }
                set_owner(
                    &mut e.metadata,
                    CONTROLLER_MANAGER,
                    json!({"f:spec": owned}),
                );
                bump(&mut e.metadata);
            }
            Write::ReleaseNodeEni { name, .. } => {
                let e = self
                    .enis
                    .iter_mut()
                    .find(|e| e.metadata.name.as_deref() == Some(name))
                    .expect("eni");
                set_owner(&mut e.metadata, CONTROLLER_MANAGER, json!({}));
                let owned =
                    |p: &[&str]| !ssa::other_owners(&e.metadata, p, CONTROLLER_MANAGER).is_empty();
                let (a, b, c) = (
                    owned(&ssa::NODEENI_ENABLE_PATH),
                    owned(&ssa::NODEENI_DRIVER_PATH),
                    owned(&ssa::NODEENI_RESOURCE_PATH),
                );
                if !a {
                    e.spec.enable_dpdk = None;
                }
                if !b {
                    e.spec.dpdk_driver = None;
                }
                if !c {
                    e.spec.dpdk_resource_name = None;
                }
                if !owned(&ssa::NODEENI_PCI_PATH) {
                    e.spec.dpdk_pci_address = None;
                }
                bump(&mut e.metadata);
            }
        }
    }

    pub(super) fn state(&self, node: &str) -> Option<&DPDKNodeState> {
        self.states
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(node))
    }

    pub(super) fn cfg(&self, name: &str) -> Option<&DPDKConfig> {
        self.configs
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(name))
    }

    pub(super) fn eni(&self, name: &str) -> &NodeENI {
        self.enis
            .iter()
            .find(|e| e.metadata.name.as_deref() == Some(name))
            .expect("eni")
    }

    /// The node's `enabled` label.
    pub(super) fn node_label(&self, node: &str) -> Option<&str> {
        self.label(node, NODE_ENABLED_LABEL)
    }

    /// The node agent: reports the spec as done (bound devices) at the current generation.
    pub(super) fn agent_reports(&mut self, node: &str) {
        let s = self
            .states
            .iter_mut()
            .find(|s| s.metadata.name.as_deref() == Some(node))
            .expect("state");
        s.status = Some(DPDKNodeStateStatus {
            observed_generation: s.metadata.generation,
            sync_status: Some(SyncStatus::Succeeded),
            devices: s
                .spec
                .devices
                .iter()
                .map(|d| DeviceStatus {
                    device_index: d.device_index,
                    bound: true,
                    ..Default::default()
                })
                .collect(),
            device_plugin: Some(advertised(&s.spec)),
            ..Default::default()
        });
    }

    pub(super) fn node_mut(&mut self, node: &str) -> &mut ObjectMeta {
        self.nodes
            .iter_mut()
            .find(|n| n.name.as_deref() == Some(node))
            .expect("node")
    }

    /// A label set by `manager` with server-side apply.
    pub(super) fn label_node(&mut self, node: &str, key: &str, value: &str, manager: &str) {
        let n = self.node_mut(node);
        n.labels
            .get_or_insert_with(BTreeMap::new)
            .insert(key.into(), value.into());
        set_owner(
            n,
            manager,
            json!({"f:metadata": {"f:labels": {format!("f:{key}"): {}}}}),
        );
        bump(n);
    }

    pub(super) fn label(&self, node: &str, key: &str) -> Option<&str> {
        self.nodes
            .iter()
            .find(|n| n.name.as_deref() == Some(node))
            .and_then(|n| n.labels.as_ref())
            .and_then(|l| l.get(key))
            .map(String::as_str)
    }

    pub(super) fn delete_config(&mut self, name: &str) {
        let now = self.now;
        let c = self
            .configs
            .iter_mut()
            .find(|c| c.metadata.name.as_deref() == Some(name))
            .expect("config");
        c.metadata.deletion_timestamp = Some(Time(now));
    }
}

/// The seed guide's world: nodes labelled ng=multi-eni, a NodeENI at deviceIndex 2
/// attached on each, and the seed's DPDKConfig (writeCombing: true).
pub(super) fn seed_world(nodes: usize) -> World {
    let mut w = World::new();
    let mut e = eni("multi-eni-dpdk", &[("ng", "multi-eni")], 2, 1);
    for i in 0..nodes {
        let name = format!("node-{i}");
        w.nodes.push(node(&name, &[("ng", "multi-eni")]));
        attach(&mut e, &name, 2);
    }
    w.enis.push(e);
    let mut c = config(
        "default-dpdk-config",
        0,
        &[("ng", "multi-eni")],
        &[(2, RES2)],
    );
    c.spec.driver_options.write_combing = Some(true);
    w.configs.push(c);
    w
}

fn conflicts_of<'w>(w: &'w World, config: &str) -> &'w [ConfigConflict] {
    w.cfg(config)
        .and_then(|c| c.status.as_ref())
        .map(|s| s.conflicts.as_slice())
        .unwrap_or(&[])
}

fn ready_condition(w: &World, config: &str) -> (String, String) {
    let c = w
        .cfg(config)
        .and_then(|c| c.status.as_ref())
        .expect("status");
    let r = conditions::find(&c.conditions, conditions::READY).expect("Ready condition");
    (r.status.clone(), r.reason.clone())
}

#[test]
fn seed_scenario_converges_then_plans_nothing() {
    let mut w = seed_world(2);
    let first = w.plan();
    assert!(first.writes.contains(&Write::AddFinalizer {
        config: "default-dpdk-config".into()
    }));
    assert_eq!(
        first
            .writes
            .iter()
            .filter(|x| matches!(x, Write::SetNodeLabel { .. }))
            .count(),
        2
    );
    assert_eq!(
        first
            .writes
            .iter()
            .filter(|x| matches!(x, Write::ApplyNodeEni { .. }))
            .count(),
        1
    );
    assert_eq!(
        first
            .writes
            .iter()
            .filter(|x| matches!(x, Write::ApplyNodeState { .. }))
            .count(),
        2
    );
    let stages: Vec<u8> = first.writes.iter().map(Write::stage).collect();
    assert!(
        stages.windows(2).all(|p| p[0] <= p[1]),
        "writes come in stage order: {stages:?}"
    );
    assert!(
        first
            .events
            .iter()
            .any(|e| e.reason == reason::DEPRECATED_WRITE_COMBING && e.warning)
    );
    w.apply(&first);
    // The next pass only updates the status with what it now observes.
    let second = w.plan();
    assert!(
        second
            .writes
            .iter()
            .all(|x| matches!(x, Write::ConfigStatus { .. })),
        "{:?}",
        second.writes
    );
    w.apply(&second);
    assert!(
        w.plan().writes.is_empty(),
        "a converged world plans zero writes: {:?}",
        w.plan().writes
    );

    let eni = w.eni("multi-eni-dpdk");
    assert_eq!(eni.spec.enable_dpdk, Some(true));
    assert_eq!(eni.spec.dpdk_driver.as_deref(), Some("vfio-pci"));
    assert_eq!(eni.spec.dpdk_resource_name.as_deref(), Some(RES2));
    assert_eq!(w.node_label("node-0"), Some("true"));
    let s = w.state("node-1").expect("one DPDKNodeState per node");
    assert_eq!(
        s.spec.driver_options,
        EffectiveDriverOptions {
            enable_unsafe_no_iommu: true,
            write_combining: true
        }
    );
    assert_eq!(s.spec.devices.len(), 1);
    assert_eq!(s.spec.devices[0].device_index, 2);
    assert_eq!(s.spec.devices[0].eni_id.as_deref(), Some("eni-node-1-2"));
    assert_eq!(s.spec.configs, vec!["default-dpdk-config".to_string()]);
    let st = w
        .cfg("default-dpdk-config")
        .and_then(|c| c.status.clone())
        .expect("status");
    assert_eq!((st.matched_nodes, st.ready_nodes), (2, 0));
    assert_eq!(st.updated_node_enis, vec!["multi-eni-dpdk".to_string()]);
    assert_eq!(
        ready_condition(&w, "default-dpdk-config"),
        ("False".into(), "Progressing".into())
    );

    // The agent reports; the config turns Ready with the right counts, then rests.
    w.agent_reports("node-0");
    w.agent_reports("node-1");
    let p = w.plan();
    assert_eq!(p.writes.len(), 1, "{:?}", p.writes);
    assert!(
        p.events.is_empty(),
        "writeCombing is warned once per generation: {:?}",
        p.events
    );
    w.apply(&p);
    let st = w
        .cfg("default-dpdk-config")
        .and_then(|c| c.status.clone())
        .expect("status");
    assert_eq!((st.matched_nodes, st.ready_nodes), (2, 2));
    assert_eq!(
        st.nodes_ready,
        vec!["node-0".to_string(), "node-1".to_string()]
    );
    assert_eq!(
        ready_condition(&w, "default-dpdk-config"),
        ("True".into(), "NodesReady".into())
    );
    w.now = t(5000);
    assert!(
        w.plan().writes.is_empty(),
        "time passing alone plans nothing"
    );
}

#[test]
fn revision_annotation_becomes_last_applied_revision_and_state_revision() {
    let mut w = seed_world(1);
    let rev = "main@sha1:0123456789abcdef0123456789abcdef01234567";
    w.configs[0].metadata.annotations = Some(labels(&[(REVISION_ANNOTATION, rev)]));
    w.converge();
    let st = w
        .cfg("default-dpdk-config")
        .and_then(|c| c.status.clone())
        .expect("status");
    assert_eq!(st.last_applied_revision.as_deref(), Some(rev));
    assert_eq!(
        w.state("node-0")
            .and_then(|s| s.spec.revision.clone())
            .as_deref(),
        Some(rev)
    );
}

#[test]
fn attachment_index_wins_over_spec_index() {
    let mut w = World::new();
    w.nodes.push(node("n1", &[("g", "a")]));
    // Spec says 2, but the ENI controller attached it at 3 on n1.
    let mut a = eni("eni-a", &[("g", "a")], 2, 1);
    attach(&mut a, "n1", 3);
    // Spec says 2 and nothing is attached yet: the fallback for index 2.
    let b = eni("eni-b", &[("g", "a")], 2, 1);
    w.enis.extend([a, b]);
    w.configs.push(config(
        "c",
        0,
        &[("g", "a")],
        &[(2, "x.com/two"), (3, "x.com/three")],
    ));
    w.converge();
    let s = w.state("n1").expect("state");
    let by_index: Vec<(i32, &str, Option<&str>)> = s
        .spec
        .devices
        .iter()
        .map(|d| (d.device_index, d.node_eni.as_str(), d.eni_id.as_deref()))
        .collect();
    assert_eq!(
        by_index,
        vec![(2, "eni-b", None), (3, "eni-a", Some("eni-n1-3"))]
    );
    assert_eq!(
        w.eni("eni-a").spec.dpdk_resource_name.as_deref(),
        Some("x.com/three")
    );
    assert_eq!(
        w.eni("eni-b").spec.dpdk_resource_name.as_deref(),
        Some("x.com/two")
    );
}

#[test]
fn multi_subnet_nodeeni_fully_mapped_is_enabled() {
    let mut w = World::new();
    w.nodes.push(node("n1", &[("g", "a")]));
    w.enis.push(eni("eni-ms", &[("g", "a")], 2, 2));
    w.configs
        .push(config("c", 0, &[("g", "a")], &[(2, RES2), (3, RES2)]));
    w.converge();
    assert!(
        conflicts_of(&w, "c").is_empty(),
        "{:?}",
        conflicts_of(&w, "c")
    );
    assert_eq!(w.eni("eni-ms").spec.enable_dpdk, Some(true));
    assert_eq!(w.state("n1").map(|s| s.spec.devices.len()), Some(2));
}

#[test]
fn partly_mapped_multi_subnet_nodeeni_is_not_updated() {
    let mut w = World::new();
    w.nodes.push(node("n1", &[("g", "a")]));
    w.enis.push(eni("eni-ms", &[("g", "a")], 2, 2));
    w.configs.push(config("c", 0, &[("g", "a")], &[(2, RES2)]));
    let p = w.plan();
    assert!(
        !p.writes
            .iter()
            .any(|x| matches!(x, Write::ApplyNodeEni { .. })),
        "{:?}",
        p.writes
    );
    assert!(
        p.events
            .iter()
            .any(|e| e.reason == reason::PARTIAL_MULTI_SUBNET)
    );
    w.converge();
    let k = conflicts_of(&w, "c");
    assert_eq!(k.len(), 1);
    assert_eq!(k[0].reason, reason::PARTIAL_MULTI_SUBNET);
    assert_eq!(k[0].node_eni.as_deref(), Some("eni-ms"));
    assert!(k[0].message.contains("deviceIndex 3"), "{}", k[0].message);
    assert_eq!(w.eni("eni-ms").spec.enable_dpdk, None);
    assert_eq!(
        w.state("n1").map(|s| s.spec.devices.len()),
        Some(0),
        "no device behind a blocked NodeENI"
    );
    assert_eq!(
        ready_condition(&w, "c"),
        ("False".into(), reason::PARTIAL_MULTI_SUBNET.into())
    );
}

#[test]
fn older_config_wins_an_overlap_by_creation_time() {
    let mut w = World::new();
    w.nodes.push(node("n1", &[("g", "a"), ("h", "b")]));
    let mut e = eni("eni-2", &[("g", "a")], 2, 1);
    attach(&mut e, "n1", 2);
    w.enis.push(e);
    // "z-old" is older even though its name sorts last.
    w.configs
        .push(config("a-young", 10, &[("h", "b")], &[(2, "young.com/x")]));
    w.configs
        .push(config("z-old", 5, &[("g", "a")], &[(2, "old.com/x")]));
    w.converge();
    assert_eq!(
        w.eni("eni-2").spec.dpdk_resource_name.as_deref(),
        Some("old.com/x")
    );
    assert!(conflicts_of(&w, "z-old").is_empty());
    let k = conflicts_of(&w, "a-young");
    assert_eq!(k.len(), 1, "{k:?}");
    assert_eq!(k[0].reason, reason::OVERLAPPING_CONFIG);
    assert_eq!(k[0].other_config.as_deref(), Some("z-old"));
    assert_eq!(k[0].node.as_deref(), Some("n1"));
    assert_eq!(k[0].device_index, Some(2));
    assert_eq!(
        ready_condition(&w, "a-young"),
        ("False".into(), reason::OVERLAPPING_CONFIG.into())
    );
    let s = w.state("n1").expect("state");
    assert_eq!(
        s.spec.configs,
        vec!["z-old".to_string(), "a-young".to_string()],
        "oldest first"
    );
}

#[test]
fn equal_creation_times_are_ordered_by_name() {
    for order in [["b-cfg", "a-cfg"], ["a-cfg", "b-cfg"]] {
        let mut w = World::new();
        w.nodes.push(node("n1", &[("g", "a")]));
        w.enis.push(eni("eni-2", &[("g", "a")], 2, 1));
        for name in order {
            w.configs.push(config(
                name,
                7,
                &[("g", "a")],
                &[(2, &format!("{name}.com/x"))],
            ));
        }
        w.converge();
        assert_eq!(
            w.eni("eni-2").spec.dpdk_resource_name.as_deref(),
            Some("a-cfg.com/x"),
            "input order {order:?}"
        );
        assert_eq!(
            conflicts_of(&w, "b-cfg")[0].other_config.as_deref(),
            Some("a-cfg")
        );
    }
}

#[test]
fn configs_that_agree_do_not_conflict() {
    let mut w = World::new();
    w.nodes.push(node("n1", &[("g", "a")]));
    w.enis.push(eni("eni-2", &[("g", "a")], 2, 1));
    w.configs
        .push(config("one", 1, &[("g", "a")], &[(2, RES2)]));
    w.configs
        .push(config("two", 2, &[("g", "a")], &[(2, RES2)]));
    w.converge();
    assert!(conflicts_of(&w, "one").is_empty() && conflicts_of(&w, "two").is_empty());
    let st = w.cfg("two").and_then(|c| c.status.clone()).expect("status");
    assert_eq!(st.updated_node_enis, vec!["eni-2".to_string()]);
}

#[test]
fn nodeeni_reaching_nodes_outside_the_selector_is_not_updated() {
    let mut w = World::new();
    w.nodes
        .push(node("inside", &[("role", "dpdk"), ("ng", "t1")]));
    w.nodes.push(node("outside", &[("role", "dpdk")]));
    w.enis.push(eni("eni-wide", &[("role", "dpdk")], 2, 1));
    w.configs
        .push(config("c", 0, &[("ng", "t1")], &[(2, RES2)]));
    let p = w.plan();
    assert!(
        !p.writes
            .iter()
            .any(|x| matches!(x, Write::ApplyNodeEni { .. }))
    );
    let ev = p
        .events
        .iter()
        .find(|e| e.reason == reason::SELECTOR_REACHES_UNMATCHED_NODES)
        .expect("warning event");
    assert!(ev.note.contains("outside"), "{}", ev.note);
    w.converge();
    let k = conflicts_of(&w, "c");
    assert_eq!(k[0].reason, reason::SELECTOR_REACHES_UNMATCHED_NODES);
    assert_eq!(k[0].node.as_deref(), Some("outside"));
    assert_eq!(
        w.eni("eni-wide").spec,
        eni("eni-wide", &[("role", "dpdk")], 2, 1).spec,
        "left untouched"
    );
    assert_eq!(
        w.node_label("inside"),
        Some("true"),
        "the matched node is still labelled"
    );
    assert_eq!(w.node_label("outside"), None);
}

#[test]
fn held_nodeeni_keeps_its_devices_when_a_conflict_appears_later() {
    let mut w = World::new();
    w.nodes
        .push(node("inside", &[("role", "dpdk"), ("ng", "t1")]));
    w.enis.push(eni("eni-wide", &[("role", "dpdk")], 2, 1));
    w.configs
        .push(config("c", 0, &[("ng", "t1")], &[(2, RES2)]));
    w.converge();
    assert_eq!(w.eni("eni-wide").spec.enable_dpdk, Some(true));
    // A node outside the config's selector joins the NodeENI's selector.
    w.nodes.push(node("outside", &[("role", "dpdk")]));
    let writes = w.converge();
    assert!(
        writes
            .iter()
            .all(|x| matches!(x, Write::ConfigStatus { .. })),
        "neither the NodeENI nor the running node is touched: {writes:?}"
    );
    assert_eq!(w.state("inside").map(|s| s.spec.devices.len()), Some(1));
    assert_eq!(
        conflicts_of(&w, "c")[0].reason,
        reason::SELECTOR_REACHES_UNMATCHED_NODES
    );
}

#[test]
fn another_managers_value_is_reported_not_overwritten() {
    let mut w = World::new();
    w.nodes.push(node("n1", &[("g", "a")]));
    let mut e = eni("eni-2", &[("g", "a")], 2, 1);
    e.spec.dpdk_resource_name = Some("other.com/theirs".into());
    set_owner(
        &mut e.metadata,
        "platform-team",
        json!({"f:spec": {"f:dpdkResourceName": {}}}),
    );
    w.enis.push(e);
    w.configs.push(config("c", 0, &[("g", "a")], &[(2, RES2)]));
    let p = w.plan();
    assert!(
        !p.writes
            .iter()
            .any(|x| matches!(x, Write::ApplyNodeEni { .. }))
    );
    let ev = p
        .events
        .iter()
        .find(|e| e.reason == reason::FIELD_MANAGER_CONFLICT)
        .expect("event");
    assert!(ev.note.contains("platform-team"), "{}", ev.note);
    w.converge();
    let k = conflicts_of(&w, "c");
    assert_eq!(k[0].manager.as_deref(), Some("platform-team"));
    assert_eq!(k[0].node_eni.as_deref(), Some("eni-2"));
    assert_eq!(
        w.eni("eni-2").spec.dpdk_resource_name.as_deref(),
        Some("other.com/theirs")
    );

    // --force-conflicts takes it over.
    w.settings.force_conflicts = true;
    let p = w.plan();
    assert!(
        p.writes
            .iter()
            .any(|x| matches!(x, Write::ApplyNodeEni { force: true, .. })),
        "{:?}",
        p.writes
    );
    w.converge();
    assert_eq!(
        w.eni("eni-2").spec.dpdk_resource_name.as_deref(),
        Some(RES2)
    );
    assert!(conflicts_of(&w, "c").is_empty());
}

#[test]
fn another_manager_with_the_same_value_shares_ownership() {
    let mut w = World::new();
    w.nodes.push(node("n1", &[("g", "a")]));
    let mut e = eni("eni-2", &[("g", "a")], 2, 1);
    e.spec.enable_dpdk = Some(true);
    set_owner(
        &mut e.metadata,
        "platform-team",
        json!({"f:spec": {"f:enableDPDK": {}}}),
    );
    w.enis.push(e);
    w.configs.push(config("c", 0, &[("g", "a")], &[(2, RES2)]));
    w.converge();
    assert!(conflicts_of(&w, "c").is_empty());
    // Teardown releases only our ownership: enableDPDK stays true, it is theirs too.
    w.delete_config("c");
    w.agent_reports("n1");
    w.converge();
    w.agent_reports("n1");
    w.converge();
    let e = w.eni("eni-2");
    assert_eq!(
        e.spec.enable_dpdk,
        Some(true),
        "never write false over someone else's value"
    );
    assert_eq!(e.spec.dpdk_resource_name, None);
}

#[test]
fn server_side_conflict_blocks_until_the_object_changes() {
    let mut w = World::new();
    w.nodes.push(node("n1", &[("g", "a")]));
    w.enis.push(eni("eni-2", &[("g", "a")], 2, 1));
    w.configs.push(config("c", 0, &[("g", "a")], &[(2, RES2)]));
    w.server_conflicts.push(ServerConflict {
        kind: Kind::NodeEni,
        name: "eni-2".into(),
        resource_version: "1".into(),
        conflicts: vec![ssa::FieldConflict {
            manager: "kubectl-edit".into(),
            field: ".spec.dpdkDriver".into(),
        }],
    });
    let p = w.plan();
    assert!(
        !p.writes
            .iter()
            .any(|x| matches!(x, Write::ApplyNodeEni { .. }))
    );
    w.apply(&p);
    assert_eq!(
        conflicts_of(&w, "c")[0].manager.as_deref(),
        Some("kubectl-edit")
    );
    bump(&mut w.enis[0].metadata);
    assert!(
        w.plan()
            .writes
            .iter()
            .any(|x| matches!(x, Write::ApplyNodeEni { .. })),
        "retried once the NodeENI changed"
    );
}

#[test]
fn label_owned_by_someone_else_with_another_value_is_a_conflict() {
    let mut w = World::new();
    let mut n = node("n1", &[("g", "a"), (NODE_ENABLED_LABEL, "false")]);
    set_owner(
        &mut n,
        "kubectl-label",
        json!({"f:metadata": {"f:labels": {format!("f:{NODE_ENABLED_LABEL}"): {}}}}),
    );
    w.nodes.push(n);
    w.configs.push(config("c", 0, &[("g", "a")], &[(2, RES2)]));
    w.converge();
    assert_eq!(w.node_label("n1"), Some("false"));
    let k = conflicts_of(&w, "c");
    assert_eq!(
        (k[0].reason.as_str(), k[0].manager.as_deref()),
        (reason::FIELD_MANAGER_CONFLICT, Some("kubectl-label"))
    );
}

#[test]
fn teardown_runs_in_two_phases_and_in_order() {
    let mut w = seed_world(1);
    w.converge();
    w.agent_reports("node-0");
    w.label_node("node-0", NODE_READY_LABEL, "true", AGENT_MANAGER);
    w.converge();
    assert_eq!(ready_condition(&w, "default-dpdk-config").0, "True");

    w.delete_config("default-dpdk-config");
    // Phase 1: only the devices go.
    let p = w.plan();
    let kinds: Vec<&Write> = p
        .writes
        .iter()
        .filter(|x| !matches!(x, Write::ConfigStatus { .. }))
        .collect();
    assert_eq!(kinds.len(), 1, "{kinds:?}");
    match kinds[0] {
        Write::ApplyNodeState {
            spec,
            teardown_since,
            ..
        } => {
            assert!(spec.devices.is_empty());
            assert!(teardown_since.is_some());
        }
        other => panic!("phase 1 must empty the devices first, got {other:?}"),
    }
    w.apply(&p);
    // The agent has not confirmed yet: nothing else moves, however long it takes.
    w.now = t(100_000);
    let p = w.plan();
    assert!(
        p.writes
            .iter()
            .all(|x| matches!(x, Write::ConfigStatus { .. })),
        "{:?}",
        p.writes
    );
    assert_eq!(
        p.requeue_after, None,
        "an agent that reported once is waited for"
    );
    w.apply(&p);
    assert_eq!(w.eni("multi-eni-dpdk").spec.enable_dpdk, Some(true));
    assert_eq!(w.node_label("node-0"), Some("true"));

    assert_eq!(w.label("node-0", NODE_READY_LABEL), Some("true"));

    // Phase 2: the agent restored the devices; then NodeENI, label, the agent's ready
    // label, state, finalizer, in order.
    w.agent_reports("node-0");
    let mut order = Vec::new();
    for _ in 0..10 {
        let p = w.plan();
        if p.writes.is_empty() {
            break;
        }
        order.extend(
            p.writes
                .iter()
                .filter(|x| !matches!(x, Write::ConfigStatus { .. }))
                .map(|x| x.op()),
        );
        w.apply(&p);
    }
    assert_eq!(
        order,
        vec![
            "release",
            "unlabel",
            "unready",
            "delete",
            "remove_finalizer"
        ]
    );
    assert!(w.cfg("default-dpdk-config").is_none());
    assert!(w.state("node-0").is_none());
    assert_eq!(w.node_label("node-0"), None);
    assert_eq!(w.label("node-0", NODE_READY_LABEL), None);
    let e = w.eni("multi-eni-dpdk");
    assert_eq!(
        (
            e.spec.enable_dpdk.as_ref(),
            e.spec.dpdk_resource_name.as_ref()
        ),
        (None, None)
    );
}

#[test]
fn teardown_keeps_a_ready_label_the_agent_does_not_own_or_another_party_still_enables() {
    let mut w = seed_world(2);
    w.converge();
    w.agent_reports("node-0");
    w.agent_reports("node-1");
    // node-0: labelled ready by hand. node-1: the agent's label, but someone else
    // enables the node too, so the agent stays scheduled there.
    w.label_node("node-0", NODE_READY_LABEL, "true", "kubectl-label");
    w.label_node("node-1", NODE_READY_LABEL, "true", AGENT_MANAGER);
    w.label_node("node-1", NODE_ENABLED_LABEL, "true", "platform-team");
    w.converge();

    w.delete_config("default-dpdk-config");
    w.apply(&w.plan());
    w.agent_reports("node-0");
    w.agent_reports("node-1");
    let writes = w.converge();
    assert!(
        !writes
            .iter()
            .any(|x| matches!(x, Write::RemoveReadyLabel { .. })),
        "{writes:?}"
    );
    assert!(w.cfg("default-dpdk-config").is_none(), "teardown finished");
    assert!(w.state("node-0").is_none() && w.state("node-1").is_none());
    assert_eq!(w.label("node-0", NODE_READY_LABEL), Some("true"));
    assert_eq!(w.label("node-1", NODE_READY_LABEL), Some("true"));
    assert_eq!(
        w.node_label("node-1"),
        Some("true"),
        "the other party's label"
    );
}

#[test]
fn teardown_without_an_agent_finishes_after_the_timeout_with_an_event() {
    let mut w = seed_world(1);
    w.settings.teardown_timeout = Duration::from_secs(60);
    w.converge();
    w.delete_config("default-dpdk-config");
    w.apply(&w.plan());
    w.now = t(100 + 59);
    let p = w.plan();
    assert!(
        p.writes
            .iter()
            .all(|x| matches!(x, Write::ConfigStatus { .. })),
        "{:?}",
        p.writes
    );
    let wake = p.requeue_after.expect("a wake-up at the deadline");
    assert!(wake <= Duration::from_secs(1), "{wake:?}");
    w.apply(&p);
    w.now = t(100 + 60);
    let mut events = Vec::new();
    let mut order = Vec::new();
    for _ in 0..10 {
        let p = w.plan();
        if p.writes.is_empty() {
            break;
        }
        events.extend(p.events.clone());
        order.extend(
            p.writes
                .iter()
                .filter(|x| !matches!(x, Write::ConfigStatus { .. }))
                .map(|x| x.op()),
        );
        w.apply(&p);
    }
    assert_eq!(
        order,
        vec!["release", "unlabel", "delete", "remove_finalizer"]
    );
    let ev = events
        .iter()
        .find(|e| e.reason == reason::TEARDOWN_WITHOUT_AGENT)
        .expect("event saying so");
    assert_eq!(ev.config, "default-dpdk-config");
    assert!(
        ev.note.contains("node-0") && ev.note.contains("60s"),
        "{}",
        ev.note
    );
    assert_eq!(ev.after, Some((Kind::NodeState, "node-0".to_string())));
}

#[test]
fn the_teardown_clock_keeps_sub_second_precision() {
    let mut w = seed_world(1);
    w.settings.teardown_timeout = Duration::from_secs(60);
    w.converge();
    w.delete_config("default-dpdk-config");
    w.now = t(100) + Duration::from_millis(900);
    w.apply(&w.plan());
    // 59.95 s later: a start truncated to whole seconds would already have expired.
    w.now = t(100) + Duration::from_millis(900 + 59_950);
    let p = w.plan();
    assert!(
        p.writes
            .iter()
            .all(|x| matches!(x, Write::ConfigStatus { .. })),
        "{:?}",
        p.writes
    );
    w.now = t(100) + Duration::from_millis(900 + 60_000);
    assert!(
        w.plan()
            .writes
            .iter()
            .any(|x| matches!(x, Write::ReleaseNodeEni { .. }))
    );
}

#[test]
fn a_node_leaving_the_selector_is_torn_down_alone() {
    let mut w = seed_world(2);
    w.converge();
    w.agent_reports("node-0");
    w.agent_reports("node-1");
    w.converge();
    w.nodes[1].labels.as_mut().expect("labels").remove("ng");
    // The NodeENI's selector no longer reaches node-1 and the ENI controller detaches.
    w.enis[0]
        .status
        .as_mut()
        .expect("status")
        .attachments
        .retain(|a| a.node_id.as_deref() != Some("node-1"));
    w.apply(&w.plan());
    assert_eq!(w.state("node-1").map(|s| s.spec.devices.len()), Some(0));
    w.agent_reports("node-1");
    w.converge();
    assert!(w.state("node-1").is_none());
    assert_eq!(w.node_label("node-1"), None);
    assert_eq!(w.node_label("node-0"), Some("true"));
    assert_eq!(
        w.eni("multi-eni-dpdk").spec.enable_dpdk,
        Some(true),
        "still used by node-0"
    );
    let st = w
        .cfg("default-dpdk-config")
        .and_then(|c| c.status.clone())
        .expect("status");
    assert_eq!((st.matched_nodes, st.ready_nodes), (1, 1));
}

#[test]
fn late_changes_converge() {
    let mut w = World::new();
    w.configs
        .push(config("c", 0, &[("g", "late")], &[(2, RES2)]));
    w.converge();
    // A node labelled later.
    w.nodes.push(node("n1", &[("g", "late")]));
    w.converge();
    assert_eq!(w.node_label("n1"), Some("true"));
    assert_eq!(w.state("n1").map(|s| s.spec.devices.len()), Some(0));
    // A NodeENI created later.
    w.enis.push(eni("eni-late", &[("g", "late")], 2, 1));
    w.converge();
    assert_eq!(w.eni("eni-late").spec.enable_dpdk, Some(true));
    assert_eq!(
        w.state("n1").map(|s| s.spec.devices[0].eni_id.clone()),
        Some(None)
    );
    // An attachment appearing later fills in the ENI ID.
    attach(&mut w.enis[0], "n1", 2);
    w.converge();
    assert_eq!(
        w.state("n1").map(|s| s.spec.devices[0].eni_id.clone()),
        Some(Some("eni-n1-2".into()))
    );
}

#[test]
fn sharded_controller_leaves_other_objects_alone() {
    let mut w = World::new();
    w.settings.cluster_scope = false;
    // Another shard's converged node, state and NodeENI.
    let mut other_node = node("other", &[("g", "other")]);
    set_owner(
        &mut other_node,
        CONTROLLER_MANAGER,
        json!({"f:metadata": {"f:labels": {format!("f:{NODE_ENABLED_LABEL}"): {}}}}),
    );
    other_node
        .labels
        .as_mut()
        .expect("labels")
        .insert(NODE_ENABLED_LABEL.into(), "true".into());
    w.nodes.push(other_node);
    let mut other_eni = eni("eni-other", &[("g", "other")], 2, 1);
    other_eni.spec.enable_dpdk = Some(true);
    set_owner(
        &mut other_eni.metadata,
        CONTROLLER_MANAGER,
        json!({"f:spec": {"f:enableDPDK": {}}}),
    );
    w.enis.push(other_eni);
    let mut st = DPDKNodeState::new(
        "other",
        DPDKNodeStateSpec {
            configs: vec!["other-config".into()],
            ..Default::default()
        },
    );
    set_owner(&mut st.metadata, CONTROLLER_MANAGER, json!({"f:spec": {}}));
    w.states.push(st);
    // Our config.
    w.nodes.push(node("mine", &[("g", "mine")]));
    w.configs.push(config("c", 0, &[("g", "mine")], &[]));
    let writes = w.converge();
    assert!(
        writes
            .iter()
            .all(|x| x.target().1 == "c" || x.target().1 == "mine"),
        "{writes:?}"
    );
    // In cluster scope the same leftovers are ours to tear down.
    w.settings.cluster_scope = true;
    let p = w.plan();
    assert!(
        p.writes
            .iter()
            .any(|x| matches!(x, Write::ReleaseNodeEni { name, .. } if name == "eni-other")),
        "{:?}",
        p.writes
    );
}

#[test]
fn deleted_node_state_is_deleted_directly() {
    let mut w = seed_world(1);
    w.converge();
    w.nodes.clear();
    w.enis[0].status = None;
    let p = w.plan();
    assert!(
        p.writes
            .iter()
            .any(|x| matches!(x, Write::DeleteNodeState { node, .. } if node == "node-0")),
        "{:?}",
        p.writes
    );
}

#[test]
fn empty_selector_matches_no_node() {
    let mut w = World::new();
    w.nodes.push(node("n1", &[("g", "a")]));
    w.configs.push(config("c", 0, &[], &[(2, RES2)]));
    w.converge();
    assert_eq!(w.node_label("n1"), None);
    assert_eq!(
        ready_condition(&w, "c"),
        ("True".into(), "NoMatchingNodes".into())
    );
}

#[test]
fn conflict_events_are_published_once() {
    let mut w = World::new();
    w.nodes.push(node("n1", &[("g", "a")]));
    w.enis.push(eni("eni-ms", &[("g", "a")], 2, 2));
    w.configs.push(config("c", 0, &[("g", "a")], &[(2, RES2)]));
    let p = w.plan();
    assert_eq!(
        p.events
            .iter()
            .filter(|e| e.reason == reason::PARTIAL_MULTI_SUBNET)
            .count(),
        1
    );
    assert_eq!(
        p.events[0].after,
        Some((Kind::Config, "c".to_string())),
        "tied to the status write"
    );
    w.apply(&p);
    assert!(w.plan().events.is_empty());
}

#[test]
fn write_combing_is_warned_again_for_a_new_generation_only() {
    let mut w = seed_world(1);
    w.converge();
    w.configs[0].metadata.generation = Some(2);
    let p = w.plan();
    assert_eq!(
        p.events
            .iter()
            .filter(|e| e.reason == reason::DEPRECATED_WRITE_COMBING)
            .count(),
        1
    );
    w.apply(&p);
    assert!(w.plan().events.is_empty());
    w.configs[0].spec.driver_options.write_combing = None;
    w.configs[0].spec.driver_options.write_combining = Some(true);
    w.configs[0].metadata.generation = Some(3);
    assert!(
        w.plan().events.is_empty(),
        "the correct spelling is not warned about"
    );
}

#[test]
fn a_large_cluster_plans_in_one_pass_and_rests() {
    let mut w = World::new();
    for i in 0..300 {
        let name = format!("n{i}");
        w.nodes.push(node(&name, &[("g", "big"), ("host", &name)]));
        for d in 1..=4 {
            let mut e = eni(&format!("eni-{i}-{d}"), &[("host", &name)], d, 1);
            attach(&mut e, &name, d);
            w.enis.push(e);
        }
    }
    w.configs.push(config(
        "big",
        0,
        &[("g", "big")],
        &[
            (1, "a.com/1"),
            (2, "a.com/2"),
            (3, "a.com/3"),
            (4, "a.com/4"),
        ],
    ));
    let p = w.plan();
    assert_eq!(p.writes.len(), 1 + 300 + 300 + 1200 + 1);
    w.apply(&p);
    let rest = w.converge();
    assert_eq!(rest.len(), 1, "only the status catches up: {rest:?}");
    assert!(w.plan().writes.is_empty());
    let st = w.cfg("big").and_then(|c| c.status.clone()).expect("status");
    assert_eq!((st.matched_nodes, st.updated_node_enis.len()), (300, 1200));
}
