//! The DPDK controller on a real API server shared by the tests of this binary (audit log
//! on). Each test's controller is sharded to its own DPDKConfigs (`--config-selector`),
//! and every node, NodeENI and label value is unique, so tests run in parallel without
//! seeing each other's objects.

mod controller_common;

use std::time::{Duration, Instant};

use controller_common::*;
use dpdk_bridge::api::{DPDKConfig, NodeENI};
use dpdk_bridge::labels::{
    AGENT_MANAGER, CONTROLLER_MANAGER, NODE_ENABLED_LABEL, NODE_READY_LABEL,
};
use dpdk_bridge::plan::reason;
use dpdk_bridge::ssa;
use dpdk_reconciler::controller::{self, LeaderElectionConfig, Options, Telemetry};
use dpdk_testenv::{Reaper, fixtures, unique_name};
use k8s_openapi::api::core::v1::Node;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const GROUP: &str = "dpdk-test/group";
const RES: &str = "intel.com/intel_sriov_netdevice_2";

/// A node in `group` with an ENI attached at `device_index` through NodeENI `eni`.
async fn node_with_eni(admin: &Client, node: &str, group: &str, eni: &str, device_index: i32) {
    fixtures::create_node(admin, node, &[(GROUP, group)], "10.0.1.10")
        .await
        .expect("node");
    fixtures::upsert_attachment(
        admin,
        eni,
        fixtures::attachment(node, device_index, &format!("eni-{node}")),
    )
    .await
    .expect("attachment");
}

/// User + system CPU time of a process, from /proc (USER_HZ is 100 on Linux).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/<pid>/stat");
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    ticks as f64 / 100.0
}

fn conflicts(c: &DPDKConfig) -> Vec<dpdk_bridge::api::ConfigConflict> {
    c.status
        .as_ref()
        .map(|s| s.conflicts.clone())
        .unwrap_or_default()
}

fn owners(e: &NodeENI, path: &[&str]) -> Vec<String> {
    ssa::other_owners(&e.metadata, path, "\u{0}")
}

#[tokio::test]
async fn overlapping_configs_the_older_one_wins() {
    let cp = audited();
    let admin = cp.client().await.expect("client");
    let (shard, group) = (unique_name("shard"), unique_name("g"));
    let (node, eni) = (unique_name("node"), unique_name("eni"));
    fixtures::create_nodeeni(&admin, &eni, &[(GROUP, &group)], 2, &["subnet-a"])
        .await
        .expect("nodeeni");
    node_with_eni(&admin, &node, &group, &eni, 2).await;
    // "z-..." sorts last by name but is created first: age decides, not the name.
    let (old, young) = (unique_name("z-old"), unique_name("a-young"));
    create_config(
        &admin,
        &config(
            &old,
            &shard,
            &[(GROUP, &group)],
            &[(2, "old.example.com/dpdk")],
        ),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    create_config(
        &admin,
        &config(
            &young,
            &shard,
            &[(GROUP, &group)],
            &[(2, "young.example.com/dpdk")],
        ),
    )
    .await;

    let ctrl = start(
        client_as(cp, &unique_name("ctrl")).await,
        test_options(&shard),
    );
    let c = wait_status(
        &admin,
        &young,
        "the younger config reports the overlap",
        |s| !s.conflicts.is_empty(),
    )
    .await;
    let k = conflicts(&c);
    assert_eq!(k.len(), 1, "{k:?}");
    assert_eq!(k[0].reason, reason::OVERLAPPING_CONFIG);
    assert_eq!(k[0].other_config.as_deref(), Some(old.as_str()));
    assert_eq!(k[0].node.as_deref(), Some(node.as_str()));
    assert_eq!(k[0].device_index, Some(2));
    assert_eq!(
        ready(&c),
        ("False".into(), reason::OVERLAPPING_CONFIG.into())
    );
    let ev = wait_event(&admin, &young, reason::OVERLAPPING_CONFIG).await;
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    assert!(ev.note.as_deref().unwrap_or("").contains(&old), "{ev:?}");

    let e = eventually(
        "the older config's values on the NodeENI",
        Duration::from_secs(60),
        || async {
            let e = get_eni(&admin, &eni).await;
            (e.spec.enable_dpdk == Some(true)).then_some(e)
        },
    )
    .await;
    assert_eq!(
        e.spec.dpdk_resource_name.as_deref(),
        Some("old.example.com/dpdk")
    );
    let o = wait_status(&admin, &old, "the older config's status", |s| {
        s.matched_nodes == 1
    })
    .await;
    assert!(conflicts(&o).is_empty());
    assert_eq!(
        o.status.as_ref().map(|s| s.updated_node_enis.clone()),
        Some(vec![eni.clone()])
    );
    let s = get_state(&admin, &node).await.expect("state");
    assert_eq!(
        s.spec
            .devices
            .iter()
            .map(|d| d.resource_name.as_str())
            .collect::<Vec<_>>(),
        vec!["old.example.com/dpdk"]
    );
    assert_eq!(
        s.spec.configs,
        vec![old.clone(), young.clone()],
        "oldest first"
    );
    ctrl.stop().await;
}

#[tokio::test]
async fn nodeeni_reaching_nodes_outside_the_selector_is_left_alone() {
    let cp = audited();
    let admin = cp.client().await.expect("client");
    let (shard, group, dpdk) = (unique_name("shard"), unique_name("g"), unique_name("dpdk"));
    let (inside, outside, eni) = (
        unique_name("inside"),
        unique_name("outside"),
        unique_name("eni"),
    );
    // The NodeENI selects the whole group; the config only the nodes labelled dpdk=<x>.
    fixtures::create_nodeeni(&admin, &eni, &[(GROUP, &group)], 2, &["subnet-a"])
        .await
        .expect("nodeeni");
    fixtures::create_node(
        &admin,
        &inside,
        &[(GROUP, &group), ("dpdk-test/dpdk", &dpdk)],
        "10.0.1.1",
    )
    .await
    .expect("node");
    fixtures::create_node(&admin, &outside, &[(GROUP, &group)], "10.0.1.2")
        .await
        .expect("node");
    let name = unique_name("cfg");
    create_config(
        &admin,
        &config(&name, &shard, &[("dpdk-test/dpdk", &dpdk)], &[(2, RES)]),
    )
    .await;
    let user = unique_name("ctrl");
    let ctrl = start(client_as(cp, &user).await, test_options(&shard));

    let c = wait_status(&admin, &name, "the conflict in status", |s| {
        !s.conflicts.is_empty()
    })
    .await;
    let k = conflicts(&c);
    assert_eq!(k[0].reason, reason::SELECTOR_REACHES_UNMATCHED_NODES);
    assert_eq!(k[0].node_eni.as_deref(), Some(eni.as_str()));
    assert_eq!(k[0].node.as_deref(), Some(outside.as_str()));
    assert_eq!(ready(&c).1, reason::SELECTOR_REACHES_UNMATCHED_NODES);
    let ev = wait_event(&admin, &name, reason::SELECTOR_REACHES_UNMATCHED_NODES).await;
    assert!(
        ev.note.as_deref().unwrap_or("").contains(&outside),
        "{ev:?}"
    );
    // The matched node is handled; the NodeENI is not touched at all.
    eventually("inside labelled", Duration::from_secs(60), || async {
        node_label(&admin, &inside).await.map(|_| ())
    })
    .await;
    ctrl.wait_passes(2, Duration::from_secs(30)).await;
    let e = get_eni(&admin, &eni).await;
    assert_eq!(
        (e.spec.enable_dpdk, e.spec.dpdk_resource_name.clone()),
        (None, None)
    );
    assert!(!ssa::has_apply_entry(&e.metadata, CONTROLLER_MANAGER));
    assert!(
        object_writes(&cp.audit_log_path(), &user)
            .iter()
            .all(|w| w.resource != "nodeenis"),
        "no NodeENI write at all"
    );
    assert_eq!(node_label(&admin, &outside).await, None);
    ctrl.stop().await;
}

#[tokio::test]
async fn partly_mapped_multi_subnet_nodeeni_is_reported() {
    let cp = audited();
    let admin = cp.client().await.expect("client");
    let (shard, group) = (unique_name("shard"), unique_name("g"));
    let (node, eni) = (unique_name("node"), unique_name("eni"));
    // Two subnets: ENIs at deviceIndex 2 and 3 on each node.
    fixtures::create_nodeeni(
        &admin,
        &eni,
        &[(GROUP, &group)],
        2,
        &["subnet-a", "subnet-b"],
    )
    .await
    .expect("nodeeni");
    node_with_eni(&admin, &node, &group, &eni, 2).await;
    fixtures::upsert_attachment(
        &admin,
        &eni,
        fixtures::attachment(&node, 3, &format!("eni-{node}-3")),
    )
    .await
    .expect("attachment");
    let name = unique_name("cfg");
    create_config(
        &admin,
        &config(&name, &shard, &[(GROUP, &group)], &[(2, RES)]),
    )
    .await;
    let user = unique_name("ctrl");
    let ctrl = start(client_as(cp, &user).await, test_options(&shard));

    let c = wait_status(&admin, &name, "the conflict in status", |s| {
        !s.conflicts.is_empty()
    })
    .await;
    let k = conflicts(&c);
    assert_eq!(k[0].reason, reason::PARTIAL_MULTI_SUBNET);
    assert_eq!(k[0].node_eni.as_deref(), Some(eni.as_str()));
    assert!(k[0].message.contains("deviceIndex 3"), "{}", k[0].message);
    let ev = wait_event(&admin, &name, reason::PARTIAL_MULTI_SUBNET).await;
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    ctrl.wait_passes(2, Duration::from_secs(30)).await;
    assert_eq!(get_eni(&admin, &eni).await.spec.enable_dpdk, None);
    assert!(
        object_writes(&cp.audit_log_path(), &user)
            .iter()
            .all(|w| w.resource != "nodeenis")
    );
    let s = get_state(&admin, &node).await.expect("state");
    assert!(
        s.spec.devices.is_empty(),
        "nothing to bind behind a blocked NodeENI"
    );
    ctrl.stop().await;
}

#[tokio::test]
async fn another_field_manager_is_named_and_force_conflicts_overrides() {
    let cp = audited();
    let admin = cp.client().await.expect("client");
    let (shard, group) = (unique_name("shard"), unique_name("g"));
    let (node, eni) = (unique_name("node"), unique_name("eni"));
    fixtures::create_nodeeni(&admin, &eni, &[(GROUP, &group)], 2, &["subnet-a"])
        .await
        .expect("nodeeni");
    node_with_eni(&admin, &node, &group, &eni, 2).await;
    // A platform team already set a resource name on this NodeENI, by server-side apply.
    let theirs = json!({"apiVersion": "networking.k8s.aws/v1alpha1", "kind": "NodeENI", "metadata": {"name": eni},
        "spec": {"dpdkResourceName": "platform.example.com/theirs"}});
    Api::<NodeENI>::all(admin.clone())
        .patch(
            &eni,
            &PatchParams::apply("platform-team"),
            &Patch::Apply(&theirs),
        )
        .await
        .expect("platform team applies");

    // The API server's own answer to an unforced apply names that manager.
    let ours = ssa::nodeeni_apply(
        &eni,
        None,
        Some(&ssa::DpdkFields {
            driver: Default::default(),
            resource_name: RES.into(),
            enable: true,
            pci_address: None,
        }),
    );
    match Api::<NodeENI>::all(admin.clone())
        .patch(
            &eni,
            &PatchParams::apply(CONTROLLER_MANAGER).dry_run(),
            &Patch::Apply(&ours),
        )
        .await
    {
        Err(kube::Error::Api(s)) => {
            let parsed = ssa::parse_apply_conflicts(&s);
            assert_eq!(
                parsed,
                vec![ssa::FieldConflict {
                    manager: "platform-team".into(),
                    field: ".spec.dpdkResourceName".into()
                }]
            );
        }
        other => panic!("expected an apply conflict, got {other:?}"),
    }

    let name = unique_name("cfg");
    create_config(
        &admin,
        &config(&name, &shard, &[(GROUP, &group)], &[(2, RES)]),
    )
    .await;
    let ctrl = start(
        client_as(cp, &unique_name("ctrl")).await,
        test_options(&shard),
    );
    let c = wait_status(&admin, &name, "the conflict in status", |s| {
        !s.conflicts.is_empty()
    })
    .await;
    let k = conflicts(&c);
    assert_eq!(k[0].reason, reason::FIELD_MANAGER_CONFLICT);
    assert_eq!(k[0].manager.as_deref(), Some("platform-team"));
    assert_eq!(k[0].node_eni.as_deref(), Some(eni.as_str()));
    let ev = wait_event(&admin, &name, reason::FIELD_MANAGER_CONFLICT).await;
    assert!(
        ev.note.as_deref().unwrap_or("").contains("platform-team"),
        "{ev:?}"
    );
    ctrl.wait_passes(2, Duration::from_secs(30)).await;
    let e = get_eni(&admin, &eni).await;
    assert_eq!(
        e.spec.dpdk_resource_name.as_deref(),
        Some("platform.example.com/theirs"),
        "not overwritten"
    );
    ctrl.stop().await;

    // --force-conflicts takes the field over.
    let mut opts = test_options(&shard);
    opts.force_conflicts = true;
    let ctrl = start(client_as(cp, &unique_name("ctrl")).await, opts);
    let e = eventually(
        "the NodeENI taken over",
        Duration::from_secs(60),
        || async {
            let e = get_eni(&admin, &eni).await;
            (e.spec.dpdk_resource_name.as_deref() == Some(RES)).then_some(e)
        },
    )
    .await;
    assert_eq!(
        owners(&e, &ssa::NODEENI_RESOURCE_PATH),
        vec![CONTROLLER_MANAGER.to_string()]
    );
    assert_eq!(e.spec.enable_dpdk, Some(true));
    wait_status(&admin, &name, "the conflict cleared", |s| {
        s.conflicts.is_empty()
    })
    .await;
    ctrl.stop().await;
}

#[tokio::test]
async fn teardown_waits_for_the_agent_then_goes_in_order() {
    let cp = audited();
    let admin = cp.client().await.expect("client");
    let (shard, group) = (unique_name("shard"), unique_name("g"));
    let (node, eni) = (unique_name("node"), unique_name("eni"));
    fixtures::create_nodeeni(&admin, &eni, &[(GROUP, &group)], 2, &["subnet-a"])
        .await
        .expect("nodeeni");
    node_with_eni(&admin, &node, &group, &eni, 2).await;
    let name = unique_name("cfg");
    create_config(
        &admin,
        &config(&name, &shard, &[(GROUP, &group)], &[(2, RES)]),
    )
    .await;
    let user = unique_name("ctrl");
    let mut opts = test_options(&shard);
    // Short, to show that a node whose agent reported is waited for regardless.
    opts.teardown_timeout = Duration::from_secs(2);
    let ctrl = start(client_as(cp, &user).await, opts);
    eventually("state written", Duration::from_secs(60), || async {
        get_state(&admin, &node)
            .await
            .filter(|s| !s.spec.devices.is_empty())
    })
    .await;
    agent_reports(&admin, &node).await;
    // The agent's `load` labels the node ready, by SSA as dpdk-node-agent.
    Api::<Node>::all(admin.clone())
        .patch_metadata(
            &node,
            &PatchParams::apply(AGENT_MANAGER),
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": { "name": node, "labels": { NODE_READY_LABEL: "true" } }
            })),
        )
        .await
        .expect("ready label");
    wait_status(&admin, &name, "Ready", |s| s.ready_nodes == 1).await;

    Api::<DPDKConfig>::all(admin.clone())
        .delete(&name, &DeleteParams::default())
        .await
        .expect("delete config");
    // Phase 1: the devices leave the DPDKNodeState; nothing else moves.
    eventually("devices emptied", Duration::from_secs(60), || async {
        get_state(&admin, &node)
            .await
            .filter(|s| s.spec.devices.is_empty())
    })
    .await;
    let mark = audit_writes(&cp.audit_log_path(), &user).len();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let e = get_eni(&admin, &eni).await;
    assert_eq!(
        e.spec.enable_dpdk,
        Some(true),
        "NodeENI kept until the agent confirms"
    );
    assert_eq!(node_label(&admin, &node).await.as_deref(), Some("true"));
    assert_eq!(ready_label(&admin, &node).await.as_deref(), Some("true"));
    assert!(
        get_config(&admin, &name).await.is_some(),
        "the finalizer holds the config"
    );
    let c = get_config(&admin, &name).await.expect("config");
    assert_eq!(
        ready(&c),
        ("False".into(), "TearingDown".into()),
        "{:#?}",
        c.status
    );

    // Phase 2: the agent restored the devices.
    agent_reports(&admin, &node).await;
    eventually("config gone", Duration::from_secs(60), || async {
        get_config(&admin, &name).await.is_none().then_some(())
    })
    .await;
    let e = get_eni(&admin, &eni).await;
    assert_eq!(
        (
            e.spec.enable_dpdk,
            e.spec.dpdk_driver.clone(),
            e.spec.dpdk_resource_name.clone()
        ),
        (None, None, None)
    );
    assert!(
        !ssa::has_apply_entry(&e.metadata, CONTROLLER_MANAGER),
        "ownership released"
    );
    assert_eq!(
        e.status.as_ref().map(|s| s.attachments.len()),
        Some(1),
        "attachments untouched"
    );
    assert_eq!(node_label(&admin, &node).await, None);
    assert_eq!(
        ready_label(&admin, &node).await,
        None,
        "the agent's label goes too"
    );
    assert!(get_state(&admin, &node).await.is_none());

    // The order, from the API server's audit log.
    let after: Vec<AuditWrite> = audit_writes(&cp.audit_log_path(), &user)[mark..]
        .iter()
        .filter(|w| w.resource != "events")
        .cloned()
        .collect();
    let pos = |what: &str, f: &dyn Fn(&AuditWrite) -> bool| {
        after
            .iter()
            .position(f)
            .unwrap_or_else(|| panic!("no {what} in {after:#?}"))
    };
    let release = pos("NodeENI release", &|w| {
        w.resource == "nodeenis" && w.name == eni && w.verb == "patch"
    });
    // Two node patches: the enabled label released (SSA), then the ready label removed.
    let node_patches: Vec<usize> = after
        .iter()
        .enumerate()
        .filter(|(_, w)| w.resource == "nodes" && w.name == node && w.verb == "patch")
        .map(|(i, _)| i)
        .collect();
    let [unlabel, unready] = node_patches[..] else {
        panic!("two node patches expected: {after:#?}")
    };
    let delete = pos("state delete", &|w| {
        w.resource == "dpdknodestates" && w.name == node && w.verb == "delete"
    });
    let finalizer = pos("finalizer removal", &|w| {
        w.resource == "dpdkconfigs" && w.name == name && w.subresource.is_empty()
    });
    assert!(
        release < unlabel && unlabel < unready && unready < delete && delete < finalizer,
        "order: {after:#?}"
    );
    ctrl.stop().await;
}

#[tokio::test]
async fn teardown_without_an_agent_finishes_after_the_timeout() {
    let cp = audited();
    let admin = cp.client().await.expect("client");
    let (shard, group) = (unique_name("shard"), unique_name("g"));
    let (node, eni) = (unique_name("node"), unique_name("eni"));
    fixtures::create_nodeeni(&admin, &eni, &[(GROUP, &group)], 2, &["subnet-a"])
        .await
        .expect("nodeeni");
    node_with_eni(&admin, &node, &group, &eni, 2).await;
    let name = unique_name("cfg");
    create_config(
        &admin,
        &config(&name, &shard, &[(GROUP, &group)], &[(2, RES)]),
    )
    .await;
    let mut opts = test_options(&shard);
    opts.teardown_timeout = Duration::from_secs(5);
    let ctrl = start(client_as(cp, &unique_name("ctrl")).await, opts);
    eventually("NodeENI enabled", Duration::from_secs(60), || async {
        (get_eni(&admin, &eni).await.spec.enable_dpdk == Some(true)).then_some(())
    })
    .await;
    eventually("state written", Duration::from_secs(60), || async {
        get_state(&admin, &node)
            .await
            .filter(|s| !s.spec.devices.is_empty())
    })
    .await;

    Api::<DPDKConfig>::all(admin.clone())
        .delete(&name, &DeleteParams::default())
        .await
        .expect("delete config");
    let deleted = Instant::now();
    eventually("devices emptied", Duration::from_secs(60), || async {
        get_state(&admin, &node)
            .await
            .filter(|s| s.spec.devices.is_empty())
    })
    .await;
    if deleted.elapsed() < Duration::from_secs(4) {
        assert_eq!(
            get_eni(&admin, &eni).await.spec.enable_dpdk,
            Some(true),
            "not released before the timeout"
        );
    }
    eventually("config gone", Duration::from_secs(60), || async {
        get_config(&admin, &name).await.is_none().then_some(())
    })
    .await;
    assert!(
        deleted.elapsed() >= Duration::from_secs(5),
        "finished only after the timeout ({:?})",
        deleted.elapsed()
    );
    assert_eq!(get_eni(&admin, &eni).await.spec.enable_dpdk, None);
    assert_eq!(node_label(&admin, &node).await, None);
    assert!(get_state(&admin, &node).await.is_none());
    let ev = wait_event(&admin, &name, reason::TEARDOWN_WITHOUT_AGENT).await;
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    assert!(ev.note.as_deref().unwrap_or("").contains(&node), "{ev:?}");
    ctrl.stop().await;
}

#[tokio::test]
async fn late_changes_converge_without_a_restart() {
    let cp = audited();
    let admin = cp.client().await.expect("client");
    let (shard, group) = (unique_name("shard"), unique_name("g"));
    let (node, eni) = (unique_name("node"), unique_name("eni"));
    let name = unique_name("cfg");
    create_config(
        &admin,
        &config(&name, &shard, &[(GROUP, &group)], &[(2, RES)]),
    )
    .await;
    let ctrl = start(
        client_as(cp, &unique_name("ctrl")).await,
        test_options(&shard),
    );
    wait_status(&admin, &name, "NoMatchingNodes", |s| {
        s.matched_nodes == 0 && !s.conditions.is_empty()
    })
    .await;

    // A node that is labelled later.
    fixtures::create_node(&admin, &node, &[("dpdk-test/other", "x")], "10.0.1.20")
        .await
        .expect("node");
    ctrl.wait_passes(1, Duration::from_secs(30)).await;
    assert_eq!(node_label(&admin, &node).await, None);
    set_node_labels(&admin, &node, json!({ GROUP: group })).await;
    eventually("node labelled", Duration::from_secs(60), || async {
        (node_label(&admin, &node).await.as_deref() == Some("true")).then_some(())
    })
    .await;
    let s = eventually("state for the node", Duration::from_secs(60), || async {
        get_state(&admin, &node).await
    })
    .await;
    assert!(s.spec.devices.is_empty(), "no NodeENI yet");

    // A NodeENI created later: enabled, and the device appears (no ENI ID yet).
    fixtures::create_nodeeni(&admin, &eni, &[(GROUP, &group)], 2, &["subnet-a"])
        .await
        .expect("nodeeni");
    eventually("NodeENI enabled", Duration::from_secs(60), || async {
        (get_eni(&admin, &eni).await.spec.enable_dpdk == Some(true)).then_some(())
    })
    .await;
    let s = eventually("device in state", Duration::from_secs(60), || async {
        get_state(&admin, &node)
            .await
            .filter(|s| s.spec.devices.len() == 1)
    })
    .await;
    assert_eq!(s.spec.devices[0].eni_id, None);

    // The attachment appears later: its ENI ID reaches the node's state.
    fixtures::upsert_attachment(
        &admin,
        &eni,
        fixtures::attachment(&node, 2, "eni-0late000000000001"),
    )
    .await
    .expect("attachment");
    eventually("ENI ID in state", Duration::from_secs(60), || async {
        get_state(&admin, &node).await.filter(|s| {
            s.spec.devices.first().and_then(|d| d.eni_id.as_deref())
                == Some("eni-0late000000000001")
        })
    })
    .await;
    agent_reports(&admin, &node).await;
    let c = wait_status(&admin, &name, "Ready", |s| s.ready_nodes == 1).await;
    assert_eq!(ready(&c).0, "True");
    ctrl.stop().await;
}

/// A replica on its own runtime, so killing it stops every task it has (watches,
/// election) without a graceful Lease release, like a crashed pod.
struct Replica {
    rt: Option<tokio::runtime::Runtime>,
    stop: CancellationToken,
    telemetry: Telemetry,
}

impl Replica {
    fn start(user: String, opts: Options) -> Replica {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let stop = CancellationToken::new();
        let telemetry = Telemetry::standalone();
        let (s, t) = (stop.clone(), telemetry.clone());
        rt.spawn(async move {
            let client = client_as(audited(), &user).await;
            controller::run_with(client, opts, t, s).await
        });
        Replica {
            rt: Some(rt),
            stop,
            telemetry,
        }
    }

    fn is_leader(&self) -> bool {
        self.telemetry.metrics.leader.get() == 1
    }

    /// Gone at once, Lease still held.
    fn kill(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }

    async fn stop(mut self) {
        self.stop.cancel();
        if let Some(rt) = self.rt.take() {
            tokio::task::spawn_blocking(move || rt.shutdown_timeout(Duration::from_secs(10)))
                .await
                .expect("runtime stops");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_one_leader_failover_and_no_duplicate_writes() {
    let cp = audited();
    let admin = cp.client().await.expect("client");
    let (shard, group) = (unique_name("shard"), unique_name("g"));
    let (n1, n2, eni) = (unique_name("node"), unique_name("node"), unique_name("eni"));
    fixtures::create_nodeeni(&admin, &eni, &[(GROUP, &group)], 2, &["subnet-a"])
        .await
        .expect("nodeeni");
    node_with_eni(&admin, &n1, &group, &eni, 2).await;
    let name = unique_name("cfg");
    create_config(
        &admin,
        &config(&name, &shard, &[(GROUP, &group)], &[(2, RES)]),
    )
    .await;

    let lease = unique_name("lease");
    let (ua, ub) = (unique_name("replica-a"), unique_name("replica-b"));
    let opts = |identity: &str| {
        let mut le = LeaderElectionConfig::new("default", &lease, identity);
        le.lease_duration = Duration::from_secs(3);
        le.renew_deadline = Duration::from_secs(2);
        le.retry_period = Duration::from_millis(300);
        Options {
            leader_election: Some(le),
            identity: identity.into(),
            ..test_options(&shard)
        }
    };
    let mut a = Replica::start(ua.clone(), opts(&ua));
    let mut b = Replica::start(ub.clone(), opts(&ub));
    eventually("converged", Duration::from_secs(60), || async {
        let c = get_config(&admin, &name).await?;
        (c.status?.matched_nodes == 1 && node_label(&admin, &n1).await.is_some()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        a.is_leader() ^ b.is_leader(),
        "exactly one leader (a: {}, b: {})",
        a.is_leader(),
        b.is_leader()
    );
    let (leader, follower) = if a.is_leader() {
        (&mut a, &ub)
    } else {
        (&mut b, &ua)
    };
    let leader_user = if follower == &ub {
        ua.clone()
    } else {
        ub.clone()
    };
    let log = cp.audit_log_path();
    assert!(!object_writes(&log, &leader_user).is_empty());
    assert!(
        object_writes(&log, follower).is_empty(),
        "the follower wrote: {:?}",
        object_writes(&log, follower)
    );

    // The leader dies without releasing the Lease; the follower takes over after it expires.
    leader.kill();
    let killed = Instant::now();
    let survivor = if a.rt.is_some() { &a } else { &b };
    eventually(
        "the follower takes over",
        Duration::from_secs(30),
        || async { survivor.is_leader().then_some(()) },
    )
    .await;
    assert!(
        killed.elapsed() >= Duration::from_secs(2),
        "took over before the Lease could expire"
    );
    let before_change = object_writes(&log, follower).len();
    assert_eq!(
        before_change,
        0,
        "a new leader of a converged cluster writes nothing: {:?}",
        object_writes(&log, follower)
    );

    // A change after the failover is made once, by the new leader only. (The attachment
    // comes first so that the node's arrival is one change, not two.)
    fixtures::upsert_attachment(
        &admin,
        &eni,
        fixtures::attachment(&n2, 2, &format!("eni-{n2}")),
    )
    .await
    .expect("attachment");
    fixtures::create_node(&admin, &n2, &[(GROUP, &group)], "10.0.1.10")
        .await
        .expect("node");
    eventually("the new node labelled", Duration::from_secs(60), || async {
        node_label(&admin, &n2).await.map(|_| ())
    })
    .await;
    eventually("the new node's state", Duration::from_secs(60), || async {
        get_state(&admin, &n2).await
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let new_writes = object_writes(&log, follower);
    let label_writes: Vec<_> = new_writes
        .iter()
        .filter(|w| w.resource == "nodes" && w.name == n2)
        .collect();
    assert_eq!(label_writes.len(), 1, "{new_writes:#?}");
    for w in &new_writes {
        assert!(
            ((w.resource == "nodes" || w.resource == "dpdknodestates") && w.name == n2)
                || (w.resource == "dpdkconfigs" && w.name == name),
            "unexpected write by the new leader: {w:?}"
        );
    }
    let state_writes = new_writes
        .iter()
        .filter(|w| w.resource == "dpdknodestates")
        .count();
    assert_eq!(state_writes, 1, "{new_writes:#?}");
    assert!(
        object_writes(&log, &leader_user)
            .iter()
            .all(|w| w.name != n2),
        "the dead leader wrote nothing after its death"
    );

    a.stop().await;
    b.stop().await;
    // Sanity: the label really is ours.
    let n = Api::<k8s_openapi::api::core::v1::Node>::all(admin.clone())
        .get(&n2)
        .await
        .expect("node");
    assert!(ssa::owned_by(
        &n.metadata,
        CONTROLLER_MANAGER,
        &ssa::enabled_label_path()
    ));
    assert_eq!(
        n.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(NODE_ENABLED_LABEL))
            .map(String::as_str),
        Some("true")
    );
}

#[tokio::test]
async fn the_run_subcommand_serves_health_and_metrics_and_reconciles() {
    let cp = audited();
    let admin = cp.client().await.expect("client");
    let (shard, group) = (unique_name("shard"), unique_name("g"));
    let (node, eni) = (unique_name("node"), unique_name("eni"));
    let user = unique_name("bin");
    let kubeconfig = impersonating_kubeconfig(cp, &user);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let log = cp.data_dir().join(format!("{user}.log"));
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_dpdk-reconciler"));
    cmd.args(["run", "--no-leader-election", "--log-format", "json"])
        .arg(format!("--config-selector={SHARD_LABEL}={shard}"))
        .arg(format!("--http-addr=127.0.0.1:{port}"))
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"));
    // Killed when the test ends, even by a failed assertion.
    let mut child = Reaper::spawn(cmd, Duration::ZERO).expect("dpdk-reconciler runs");
    eventually("/readyz 200", Duration::from_secs(60), || async {
        matches!(http_get(port, "/readyz"), Some((200, _))).then_some(())
    })
    .await;
    assert_eq!(http_get(port, "/healthz").map(|r| r.0), Some(200));

    fixtures::create_nodeeni(&admin, &eni, &[(GROUP, &group)], 2, &["subnet-a"])
        .await
        .expect("nodeeni");
    node_with_eni(&admin, &node, &group, &eni, 2).await;
    create_config(
        &admin,
        &config(&unique_name("cfg"), &shard, &[(GROUP, &group)], &[(2, RES)]),
    )
    .await;
    eventually(
        "node labelled by the binary",
        Duration::from_secs(60),
        || async { node_label(&admin, &node).await.map(|_| ()) },
    )
    .await;
    let metrics = eventually("label write counted", Duration::from_secs(30), || async {
        let (_, body) = http_get(port, "/metrics")?;
        body.contains(
            "dpdk_controller_writes_total{kind=\"node\",op=\"label\",result=\"success\"} 1",
        )
        .then_some(body)
    })
    .await;
    assert!(metrics.contains("dpdk_controller_leader 1"), "{metrics}");
    assert!(
        metrics.contains("dpdk_controller_reconcile_duration_seconds_count"),
        "{metrics}"
    );
    assert!(
        object_writes(&cp.audit_log_path(), &user)
            .iter()
            .any(|w| w.resource == "nodes" && w.name == node)
    );

    // At rest (converged, nothing changing, next resync minutes away) the process sleeps.
    // A loop that kept waking itself — as it once did without leader election, on a
    // watch channel whose sender was gone — would burn a core here.
    let before = cpu_seconds(child.id());
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_cpu = cpu_seconds(child.id()) - before;
    assert!(
        idle_cpu < 0.5,
        "the idle controller used {idle_cpu:.2} s of CPU in 5 s"
    );

    // SIGTERM: a clean exit.
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(code.success(), "exit status {code:?}");
    let text = std::fs::read_to_string(&log).expect("log");
    let first = text.lines().next().expect("log lines");
    assert!(
        serde_json::from_str::<serde_json::Value>(first).is_ok(),
        "--log-format json: {first}"
    );
}

/// `dpdk-reconciler run` gives the controller and the drift runtime one set of watches:
/// every task waiting for the shared caches wakes (the stores' own readiness future wakes
/// only the last task that polled it; `run` hung on it), and drift follows the changes the
/// controller's watches see.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_and_drift_share_one_set_of_watches() {
    use dpdk_reconciler::drift::runtime::{self, DriftOptions, DriftState, StaticGit};
    use dpdk_reconciler::drift::{FindingKind, Layer};
    use std::sync::Arc;

    let cp = audited();
    let admin = cp.client().await.expect("client");
    let p = unique_name("shared");
    let group = format!("{p}-g");
    let (node, eni, cfg) = (format!("{p}-node"), format!("{p}-eni"), format!("{p}-cfg"));
    let client = client_as(cp, &unique_name("ctl")).await;
    let opts = test_options(&p);
    let telemetry = Telemetry::standalone();
    let stop = CancellationToken::new();
    let drift_changed = Arc::new(tokio::sync::Notify::new());
    let watches = controller::start_watches(
        &client,
        &opts,
        &telemetry,
        vec![drift_changed.clone()],
        stop.clone(),
    );
    let caches = watches.caches.clone();
    // Two waiters besides the controller and the drift runtime themselves.
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let c = caches.clone();
            tokio::spawn(async move { c.wait_until_ready().await })
        })
        .collect();
    let drift = DriftState::new();
    let drift_task = tokio::spawn(runtime::run_on(
        caches,
        drift_changed,
        Arc::new(StaticGit::new(Vec::new())),
        DriftOptions {
            name_prefix: Some(p.clone()),
            ..Default::default()
        },
        drift.clone(),
        stop.clone(),
    ));
    let ctl = tokio::spawn(controller::run_on(
        client,
        opts,
        telemetry.clone(),
        watches,
        stop.clone(),
    ));
    for w in waiters {
        let ready = tokio::time::timeout(Duration::from_secs(30), w)
            .await
            .expect("every waiter wakes")
            .expect("waiter task");
        assert!(ready, "caches synced");
    }
    eventually(
        "the first drift snapshot",
        Duration::from_secs(30),
        || async { drift.latest().map(|_| ()) },
    )
    .await;

    fixtures::create_nodeeni(&admin, &eni, &[(GROUP, &group)], 2, &["subnet-a"])
        .await
        .expect("nodeeni");
    node_with_eni(&admin, &node, &group, &eni, 2).await;
    create_config(&admin, &config(&cfg, &p, &[(GROUP, &group)], &[(2, RES)])).await;
    eventually(
        "node labelled by the controller",
        Duration::from_secs(60),
        || async { node_label(&admin, &node).await.map(|_| ()) },
    )
    .await;
    // The DPDKNodeState the controller wrote has no agent behind it: drift, recomputed
    // on the shared watches' events, says so for this node.
    eventually(
        "drift reports the node's missing agent",
        Duration::from_secs(60),
        || async {
            let snap = drift.latest()?;
            snap.report
                .findings
                .iter()
                .any(|f| {
                    f.layer == Layer::DesiredNode
                        && f.kind == FindingKind::NotReported
                        && f.node.as_deref() == Some(node.as_str())
                })
                .then_some(())
        },
    )
    .await;

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), ctl)
        .await
        .expect("controller stops")
        .expect("controller task")
        .expect("controller ran without error");
    tokio::time::timeout(Duration::from_secs(30), drift_task)
        .await
        .expect("drift stops")
        .expect("drift task");
}
