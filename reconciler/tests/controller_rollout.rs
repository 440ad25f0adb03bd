//! Staged rollouts on a real API server: the controller (sharded to each test's configs)
//! against simulated node agents that report, fail or stay silent, observed from a watch
//! of the DPDKNodeStates (not from the controller's own view).

mod controller_common;
mod source_support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use controller_common::*;
use dpdk_bridge::api::{DPDKConfig, DPDKNodeState, DpdkDriver, RolloutPhase, SyncStatus};
use dpdk_bridge::plan::reason;
use dpdk_testenv::git_server::WorkRepo;
use dpdk_testenv::{fixtures, unique_name};
use futures::StreamExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde_json::json;
use source_support::{Harness, HarnessOptions};
use tokio_util::sync::CancellationToken;

const GROUP: &str = "dpdk-test/group";
const CANARY: &str = "dpdk-test/canary";
const RES: &str = "intel.com/intel_sriov_netdevice_2";

/// What a simulated agent does with a spec.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Verdict {
    Succeed,
    Fail,
    Silent,
}

type Behaviour = Arc<dyn Fn(&DPDKNodeState) -> Verdict + Send + Sync>;

fn always(v: Verdict) -> Behaviour {
    Arc::new(move |_| v)
}

/// Nodes `<base>-00..` in a group, each with an ENI at index 2 through one NodeENI.
struct Fleet {
    shard: String,
    group: String,
    nodes: Vec<String>,
}

async fn fleet(admin: &Client, n: usize) -> Fleet {
    let (shard, group) = (unique_name("shard"), unique_name("g"));
    let (base, eni) = (unique_name("rn"), unique_name("eni"));
    fixtures::create_nodeeni(admin, &eni, &[(GROUP, &group)], 2, &["subnet-a"])
        .await
        .expect("nodeeni");
    let mut nodes = Vec::new();
    for i in 0..n {
        let node = format!("{base}-{i:02}");
        fixtures::create_node(admin, &node, &[(GROUP, &group)], "10.0.1.10")
            .await
            .expect("node");
        fixtures::upsert_attachment(
            admin,
            &eni,
            fixtures::attachment(&node, 2, &format!("eni-{node}")),
        )
        .await
        .expect("attachment");
        nodes.push(node);
    }
    Fleet {
        shard,
        group,
        nodes,
    }
}

/// The agents of `nodes`: every 300ms, each DPDKNodeState whose spec is ahead of its
/// status gets what `behaviour` says (so a written spec stays ahead for a while).
fn agents(client: Client, nodes: Vec<String>, behaviour: Behaviour) -> CancellationToken {
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move {
        let api: Api<DPDKNodeState> = Api::all(client.clone());
        while !token.is_cancelled() {
            tokio::time::sleep(Duration::from_millis(300)).await;
            for n in &nodes {
                let Ok(Some(s)) = api.get_opt(n).await else {
                    continue;
                };
                let observed = s.status.as_ref().and_then(|st| st.observed_generation);
                if observed >= s.metadata.generation {
                    continue;
                }
                match behaviour(&s) {
                    Verdict::Succeed => agent_reports(&client, n).await,
                    Verdict::Fail => agent_fails(&client, &s).await,
                    Verdict::Silent => {}
                }
            }
        }
    });
    stop
}

async fn agent_fails(client: &Client, s: &DPDKNodeState) {
    let api: Api<DPDKNodeState> = Api::all(client.clone());
    let status = json!({"status": {
        "observedGeneration": s.metadata.generation,
        "syncStatus": "Failed",
        "lastSyncError": "modprobe igb_uio: module not found",
    }});
    let pp = PatchParams {
        field_manager: Some("dpdk-node-agent-sim".into()),
        ..Default::default()
    };
    api.patch_status(
        s.metadata.name.as_deref().expect("name"),
        &pp,
        &Patch::Merge(&status),
    )
    .await
    .expect("agent status");
}

/// One observation from the watch: a node's spec generation, what its agent reported,
/// and the driver its spec asks for.
#[derive(Clone, Debug)]
struct Seen {
    node: String,
    generation: i64,
    observed: i64,
    sync: Option<SyncStatus>,
    driver: Option<DpdkDriver>,
}

/// Records every DPDKNodeState change of `nodes`, in order, from a watch.
fn watch_states(client: Client, nodes: &[String]) -> (Arc<Mutex<Vec<Seen>>>, CancellationToken) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stop = CancellationToken::new();
    let (out, token) = (seen.clone(), stop.clone());
    let ours: BTreeSet<String> = nodes.iter().cloned().collect();
    tokio::spawn(async move {
        let api: Api<DPDKNodeState> = Api::all(client);
        let mut stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        loop {
            let ev = tokio::select! {
                _ = token.cancelled() => return,
                ev = stream.next() => ev,
            };
            let Some(Ok(ev)) = ev else { continue };
            let objs: Vec<DPDKNodeState> = match ev {
                watcher::Event::Apply(s) | watcher::Event::InitApply(s) => vec![s],
                _ => continue,
            };
            for s in objs {
                let node = s.metadata.name.clone().unwrap_or_default();
                if !ours.contains(&node) {
                    continue;
                }
                let st = s.status.as_ref();
                out.lock().expect("lock").push(Seen {
                    node,
                    generation: s.metadata.generation.unwrap_or(0),
                    observed: st.and_then(|st| st.observed_generation).unwrap_or(0),
                    sync: st.and_then(|st| st.sync_status),
                    driver: s.spec.devices.first().map(|d| d.driver),
                });
            }
        }
    });
    (seen, stop)
}

/// The most DPDKNodeStates whose spec was ahead of their status at once, replaying the
/// watch.
fn max_ahead(seen: &[Seen]) -> usize {
    let mut now: BTreeMap<&str, bool> = BTreeMap::new();
    let mut max = 0;
    for s in seen {
        now.insert(&s.node, s.generation > s.observed);
        max = max.max(now.values().filter(|a| **a).count());
    }
    max
}

/// The order in which nodes first got a spec asking for `driver`, from the watch.
fn first_writes(seen: &[Seen], driver: DpdkDriver) -> Vec<String> {
    let mut order = Vec::new();
    for s in seen {
        if s.driver == Some(driver) && !order.contains(&s.node) {
            order.push(s.node.clone());
        }
    }
    order
}

fn rollout_config(f: &Fleet, name: &str, rollout: serde_json::Value) -> DPDKConfig {
    let mut c = config(name, &f.shard, &[(GROUP, &f.group)], &[(2, RES)]);
    c.spec.rollout = Some(serde_json::from_value(rollout).expect("rollout"));
    c
}

async fn set_driver(client: &Client, name: &str, driver: &str) {
    Api::<DPDKConfig>::all(client.clone())
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"resourceMapping": [
                {"deviceIndex": 2, "resourceName": RES, "driver": driver}
            ]}})),
        )
        .await
        .expect("patch driver");
}

/// Waits for `status.rollout` of the config's current generation to satisfy `f`.
async fn wait_rollout(
    client: &Client,
    name: &str,
    secs: u64,
    f: impl Fn(&dpdk_bridge::api::RolloutStatus) -> bool,
) -> DPDKConfig {
    eventually(
        &format!("status.rollout of {name}"),
        Duration::from_secs(secs),
        || async {
            let c = get_config(client, name).await?;
            let r = c.status.as_ref()?.rollout.as_ref()?;
            (r.observed_generation == c.metadata.generation && f(r)).then_some(c)
        },
    )
    .await
}

fn complete(n: i32) -> impl Fn(&dpdk_bridge::api::RolloutStatus) -> bool {
    move |r| r.phase == RolloutPhase::Complete && r.updated_nodes == n
}

fn stalled_condition(c: &DPDKConfig) -> (String, String) {
    c.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|k| k.type_ == "Stalled"))
        .map(|k| (k.reason.clone(), k.message.clone()))
        .unwrap_or_default()
}

async fn drivers(client: &Client, nodes: &[String]) -> Vec<Option<DpdkDriver>> {
    let mut out = Vec::new();
    for n in nodes {
        out.push(
            get_state(client, n)
                .await
                .and_then(|s| s.spec.devices.first().map(|d| d.driver)),
        );
    }
    out
}

#[tokio::test]
async fn the_budget_holds_from_a_watch_and_every_node_ends_updated_then_rests() {
    let cp = audited();
    let admin = cp.client().await.expect("client");
    let f = fleet(&admin, 10).await;
    let user = unique_name("ctrl");
    // A forced full resync twice a second: at rest, those passes must not write.
    let opts = dpdk_reconciler::controller::Options {
        resync_interval: Duration::from_millis(500),
        ..test_options(&f.shard)
    };
    let ctrl = start(client_as(cp, &user).await, opts);
    let stop_agents = agents(admin.clone(), f.nodes.clone(), always(Verdict::Succeed));
    let name = unique_name("budget");
    create_config(
        &admin,
        &rollout_config(&f, &name, json!({"maxUnavailable": 2})),
    )
    .await;
    wait_rollout(&admin, &name, 60, complete(10)).await;

    let (seen, stop_watch) = watch_states(admin.clone(), &f.nodes);
    tokio::time::sleep(Duration::from_millis(500)).await;
    set_driver(&admin, &name, "igb_uio").await;
    let c = wait_rollout(&admin, &name, 120, complete(10)).await;
    assert_eq!(
        c.status
            .as_ref()
            .and_then(|s| s.rollout.as_ref())
            .map(|r| r.up_to_date.clone()),
        Some("10/10".to_string())
    );
    stop_watch.cancel();
    let seen = seen.lock().expect("lock").clone();
    let ahead = max_ahead(&seen);
    assert!(
        ahead <= 2,
        "{ahead} DPDKNodeStates ahead of their status at once"
    );
    assert!(ahead >= 1, "the watch saw the rollout");
    // In waves of 2 by node name (the two of a wave are written in one pass, in any order).
    let waves = |names: &[String]| -> Vec<BTreeSet<String>> {
        names
            .chunks(2)
            .map(|c| c.iter().cloned().collect())
            .collect()
    };
    assert_eq!(
        waves(&first_writes(&seen, DpdkDriver::IgbUio)),
        waves(&f.nodes),
        "by node name"
    );
    assert!(
        drivers(&admin, &f.nodes)
            .await
            .iter()
            .all(|d| *d == Some(DpdkDriver::IgbUio))
    );
    let gauge = |state: &str| {
        ctrl.telemetry
            .metrics
            .rollout_nodes
            .get_or_create(&dpdk_reconciler::metrics::RolloutLabels {
                config: name.clone(),
                state: state.into(),
            })
            .get()
    };
    assert_eq!((gauge("updated"), gauge("pending")), (10, 0));

    // At rest after the rollout: forced passes write nothing.
    ctrl.wait_passes(2, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = object_writes(&cp.audit_log_path(), &user).len();
    ctrl.wait_passes(5, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = object_writes(&cp.audit_log_path(), &user);
    assert_eq!(
        after.len(),
        before,
        "writes at rest after a rollout: {:?}",
        &after[before..]
    );
    stop_agents.cancel();
    ctrl.stop().await;
}

#[tokio::test]
async fn canaries_go_first_and_the_rest_start_after_every_canary_succeeded() {
    let cp = audited();
    let admin = cp.client().await.expect("client");
    let f = fleet(&admin, 5).await;
    // The canaries sort last by name: the order is the selector's, not the name's.
    let canaries = [f.nodes[3].clone(), f.nodes[4].clone()];
    for n in &canaries {
        set_node_labels(&admin, n, json!({CANARY: "true"})).await;
    }
    let ctrl = start(
        client_as(cp, &unique_name("ctrl")).await,
        test_options(&f.shard),
    );
    let stop_agents = agents(admin.clone(), f.nodes.clone(), always(Verdict::Succeed));
    let name = unique_name("canary");
    let rollout = json!({"maxUnavailable": 3, "canarySelector": {"matchLabels": {CANARY: "true"}}});
    create_config(&admin, &rollout_config(&f, &name, rollout)).await;
    wait_rollout(&admin, &name, 60, complete(5)).await;

    let (seen, stop_watch) = watch_states(admin.clone(), &f.nodes);
    tokio::time::sleep(Duration::from_millis(500)).await;
    set_driver(&admin, &name, "igb_uio").await;
    wait_rollout(&admin, &name, 120, complete(5)).await;
    stop_watch.cancel();
    let seen = seen.lock().expect("lock").clone();
    let order = first_writes(&seen, DpdkDriver::IgbUio);
    assert_eq!(
        order[..2].iter().collect::<BTreeSet<_>>(),
        canaries.iter().collect::<BTreeSet<_>>(),
        "canaries first: {order:?}"
    );
    // The index in the watch of the first non-canary write, and of each canary's success.
    let first_other = seen
        .iter()
        .position(|s| s.driver == Some(DpdkDriver::IgbUio) && !canaries.contains(&s.node))
        .expect("a non-canary write");
    for c in &canaries {
        let ok = seen.iter().position(|s| {
            &s.node == c
                && s.driver == Some(DpdkDriver::IgbUio)
                && s.observed == s.generation
                && s.sync == Some(SyncStatus::Succeeded)
        });
        assert!(
            ok.is_some_and(|i| i < first_other),
            "canary {c} succeeded (at {ok:?}) before any other node changed (at {first_other})"
        );
    }
    stop_agents.cancel();
    ctrl.stop().await;
}

fn git_config(name: &str, f: &Fleet, driver: &str) -> String {
    format!(
        "apiVersion: networking.k8s.aws/v1alpha1\nkind: DPDKConfig\nmetadata:\n  name: {name}\n  labels:\n    {SHARD_LABEL}: {shard}\nspec:\n  nodeSelector:\n    {GROUP}: {group}\n  rollout:\n    maxUnavailable: 1\n  resourceMapping:\n  - deviceIndex: 2\n    resourceName: {RES}\n    driver: {driver}\n",
        shard = f.shard,
        group = f.group,
    )
}

#[tokio::test]
async fn a_failed_node_halts_the_rollout_and_a_fixing_commit_resumes_it() {
    let cp = audited();
    let admin = cp.client().await.expect("client");
    let f = fleet(&admin, 5).await;
    let h = Harness::start_on(cp, "rollout", HarnessOptions::default()).await;
    let repo = WorkRepo::new().expect("repo");
    let name = unique_name("halt");
    repo.write("dpdk.yaml", &git_config(&name, &f, "vfio-pci"))
        .expect("write");
    let first = repo.commit("vfio-pci").expect("commit");
    let src = unique_name("src");
    h.source(
        &src,
        json!({"url": repo.file_url(), "ref": {"branch": "main"}, "interval": "10s"}),
    )
    .await;
    h.wait_applied(&src, &first).await;
    let node3 = f.nodes[2].clone();
    // The third node's agent cannot load igb_uio; every other spec succeeds.
    let n3 = node3.clone();
    let behaviour: Behaviour = Arc::new(move |s| {
        let igb = s
            .spec
            .devices
            .iter()
            .any(|d| d.driver == DpdkDriver::IgbUio);
        if igb && s.metadata.name.as_deref() == Some(n3.as_str()) {
            Verdict::Fail
        } else {
            Verdict::Succeed
        }
    });
    let ctrl = start(
        client_as(cp, &unique_name("ctrl")).await,
        test_options(&f.shard),
    );
    let stop_agents = agents(admin.clone(), f.nodes.clone(), behaviour);
    wait_rollout(&admin, &name, 60, complete(5)).await;

    repo.write("dpdk.yaml", &git_config(&name, &f, "igb_uio"))
        .expect("write");
    let bad = repo.commit("igb_uio").expect("commit");
    h.wait_applied(&src, &bad).await;
    let c = wait_rollout(&admin, &name, 90, |r| r.phase == RolloutPhase::Stalled).await;
    let st = c
        .status
        .as_ref()
        .and_then(|s| s.rollout.clone())
        .expect("rollout");
    assert_eq!(st.failed_nodes, vec![node3.clone()]);
    let (why, message) = stalled_condition(&c);
    assert_eq!(why, reason::ROLLOUT_FAILED);
    assert!(message.contains(&node3), "{message}");
    let ev = wait_event(&admin, &name, reason::ROLLOUT_FAILED).await;
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    assert!(ev.note.as_deref().unwrap_or("").contains(&node3), "{ev:?}");
    // Halted: more passes change no further node.
    ctrl.wait_passes(5, Duration::from_secs(60)).await;
    let now = drivers(&admin, &f.nodes).await;
    let igb = Some(DpdkDriver::IgbUio);
    let vfio = Some(DpdkDriver::VfioPci);
    assert_eq!(
        now,
        vec![igb, igb, igb, vfio, vfio],
        "no node after {node3}"
    );

    // The fix, through Git: a driver the node can load. The rollout resumes to the end.
    repo.write("dpdk.yaml", &git_config(&name, &f, "uio_pci_generic"))
        .expect("write");
    let fix = repo.commit("uio_pci_generic").expect("commit");
    h.wait_applied(&src, &fix).await;
    wait_rollout(&admin, &name, 120, complete(5)).await;
    assert!(
        drivers(&admin, &f.nodes)
            .await
            .iter()
            .all(|d| *d == Some(DpdkDriver::UioPciGeneric))
    );
    let c = get_config(&admin, &name).await.expect("config");
    assert_eq!(stalled_condition(&c), (String::new(), String::new()));
    assert_eq!(ready(&c).0, "True");
    stop_agents.cancel();
    ctrl.stop().await;
}

#[tokio::test]
async fn a_node_that_never_reports_halts_after_the_progress_deadline() {
    let cp = audited();
    let admin = cp.client().await.expect("client");
    let f = fleet(&admin, 3).await;
    let silent = f.nodes[0].clone();
    let s0 = silent.clone();
    let behaviour: Behaviour = Arc::new(move |s| {
        let igb = s
            .spec
            .devices
            .iter()
            .any(|d| d.driver == DpdkDriver::IgbUio);
        if igb && s.metadata.name.as_deref() == Some(s0.as_str()) {
            Verdict::Silent
        } else {
            Verdict::Succeed
        }
    });
    let ctrl = start(
        client_as(cp, &unique_name("ctrl")).await,
        test_options(&f.shard),
    );
    let stop_agents = agents(admin.clone(), f.nodes.clone(), behaviour);
    let name = unique_name("deadline");
    let rollout = json!({"maxUnavailable": 1, "progressDeadlineSeconds": 3});
    create_config(&admin, &rollout_config(&f, &name, rollout)).await;
    wait_rollout(&admin, &name, 60, complete(3)).await;
    set_driver(&admin, &name, "igb_uio").await;
    let c = wait_rollout(&admin, &name, 60, |r| r.phase == RolloutPhase::Stalled).await;
    let st = c
        .status
        .as_ref()
        .and_then(|s| s.rollout.clone())
        .expect("rollout");
    assert_eq!(st.failed_nodes, vec![silent.clone()]);
    let (why, message) = stalled_condition(&c);
    assert_eq!(why, reason::ROLLOUT_FAILED);
    assert!(message.contains("progressDeadlineSeconds"), "{message}");
    let vfio = Some(DpdkDriver::VfioPci);
    assert_eq!(
        drivers(&admin, &f.nodes).await[1..],
        [vfio, vfio],
        "no other node changed"
    );
    stop_agents.cancel();
    ctrl.stop().await;
}

#[tokio::test]
async fn the_seeds_config_without_rollout_completes_with_the_default_budget() {
    let cp = audited();
    let admin = cp.client().await.expect("client");
    let f = fleet(&admin, 3).await;
    let ctrl = start(
        client_as(cp, &unique_name("ctrl")).await,
        test_options(&f.shard),
    );
    let stop_agents = agents(admin.clone(), f.nodes.clone(), always(Verdict::Succeed));
    // The seed's YAML, verbatim but for the name, its selector and the test's shard label.
    let mut c: DPDKConfig = serde_yaml::from_str(fixtures::SEED_DPDKCONFIG).expect("seed yaml");
    assert!(c.spec.rollout.is_none(), "the seed has no rollout");
    let name = unique_name("seed");
    c.metadata.name = Some(name.clone());
    c.metadata.labels = Some([(SHARD_LABEL.to_string(), f.shard.clone())].into());
    c.spec.node_selector = [(GROUP.to_string(), f.group.clone())].into();
    create_config(&admin, &c).await;
    wait_rollout(&admin, &name, 60, complete(3)).await;
    // A change: 25% of 3 nodes rounds down to 0, so one node at a time.
    let (seen, stop_watch) = watch_states(admin.clone(), &f.nodes);
    tokio::time::sleep(Duration::from_millis(500)).await;
    set_driver(&admin, &name, "igb_uio").await;
    let c = wait_rollout(&admin, &name, 90, complete(3)).await;
    stop_watch.cancel();
    assert_eq!(max_ahead(&seen.lock().expect("lock")), 1);
    assert_eq!(ready(&c).0, "True");
    assert!(
        c.spec.rollout.is_none(),
        "the defaults are not written into the object"
    );
    stop_agents.cancel();
    ctrl.stop().await;
}
