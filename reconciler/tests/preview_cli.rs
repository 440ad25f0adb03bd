//! `dpdk-reconciler plan --checkout DIR`, run as the real binary against a real API server:
//! what it lists is what the DPDK controller then writes (checked from the audit log and
//! the objects), an unchanged checkout exits 0, an invalid one exits 2 naming the file.
//! Tests share the control plane; every name and label value is unique to its test, and
//! a plan lists only what the checkout changes, so other tests' objects never show.

mod controller_common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use controller_common::*;
use dpdk_bridge::api::{DPDKNodeState, NodeENI};
use dpdk_testenv::{ControlPlane, fixtures, unique_name};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_dpdk-reconciler");
const GROUP: &str = "dpdk-test/group";
const RES: &str = "intel.com/intel_sriov_netdevice_2";

/// The YAML a config repository holds for a config on `group`, device index 2.
fn config_yaml(name: &str, group: &str, driver: &str) -> String {
    format!(
        "apiVersion: networking.k8s.aws/v1alpha1\nkind: DPDKConfig\nmetadata:\n  name: {name}\nspec:\n  nodeSelector:\n    {GROUP}: {group}\n  resourceMapping:\n  - deviceIndex: 2\n    resourceName: {RES}\n    driver: {driver}\n"
    )
}

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, text).expect("write");
}

/// Runs the binary with $KUBECONFIG pointing at the test's API server.
fn plan(cp: &ControlPlane, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("plan")
        .args(args)
        .env("KUBECONFIG", cp.kubeconfig_path())
        .output()
        .expect("binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn plan_json(cp: &ControlPlane, checkout: &Path) -> (i32, Value) {
    let dir = checkout.to_str().expect("utf-8 path");
    let (code, out, err) = plan(cp, &["--checkout", dir, "--format", "json"]);
    let v = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    (code, v)
}

/// Commits the whole tree on branch `branch` of a new repository; the commit's sha.
fn commit_all(dir: &Path, branch: &str) -> String {
    let repo = git2::Repository::init(dir).expect("git init");
    let mut index = repo.index().expect("index");
    index
        .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
        .expect("add");
    let tree = repo
        .find_tree(index.write_tree().expect("tree"))
        .expect("tree");
    let who = git2::Signature::now("ci", "ci@example.com").expect("signature");
    let oid = repo
        .commit(None, &who, &who, "pull request", &tree, &[])
        .expect("commit");
    let commit = repo.find_commit(oid).expect("commit");
    repo.branch(branch, &commit, true).expect("branch");
    repo.set_head(&format!("refs/heads/{branch}"))
        .expect("head");
    oid.to_string()
}

/// Nodes in `group`, each with an ENI at device index 2 of NodeENI `eni`.
async fn group_of_nodes(admin: &Client, group: &str, eni: &str, n: usize) -> Vec<String> {
    fixtures::create_nodeeni(admin, eni, &[(GROUP, group)], 2, &["subnet-a"])
        .await
        .expect("nodeeni");
    let mut nodes = Vec::new();
    for i in 0..n {
        let node = unique_name(&format!("node{i}"));
        fixtures::create_node(admin, &node, &[(GROUP, group)], "10.0.1.10")
            .await
            .expect("node");
        fixtures::upsert_attachment(
            admin,
            eni,
            fixtures::attachment(&node, 2, &format!("eni-{node}")),
        )
        .await
        .expect("attachment");
        nodes.push(node);
    }
    nodes
}

/// The config as the checkout declares it, created in the test's shard.
async fn create_from_yaml(admin: &Client, yaml: &str, shard: &str) {
    let mut c: dpdk_bridge::api::DPDKConfig = serde_yaml::from_str(yaml).expect("yaml");
    c.metadata.labels = Some([(SHARD_LABEL.to_string(), shard.to_string())].into());
    create_config(admin, &c).await;
}

/// Waits until every node's DPDKNodeState lists a device with `driver` and its agent
/// reported it, and the config is Ready at its generation.
async fn converge(admin: &Client, config: &str, nodes: &[String], driver: &str) {
    for node in nodes {
        eventually(
            &format!("{node}'s DPDKNodeState asks for {driver}"),
            Duration::from_secs(60),
            || async {
                let s = get_state(admin, node).await?;
                (s.spec.devices.len() == 1 && s.spec.devices[0].driver.as_str() == driver)
                    .then_some(())
            },
        )
        .await;
        agent_reports(admin, node).await;
    }
    let gen_ = get_config(admin, config)
        .await
        .and_then(|c| c.metadata.generation);
    wait_status(
        admin,
        config,
        "the config is Ready at its generation",
        |s| {
            s.observed_generation == gen_
                && s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
        },
    )
    .await;
}

/// The specs of these DPDKNodeStates and NodeENIs, as JSON, by name.
async fn specs(admin: &Client, nodes: &[String], enis: &[&str]) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let states: Api<DPDKNodeState> = Api::all(admin.clone());
    for n in nodes {
        let s = states.get(n).await.expect("state");
        out.insert(
            format!("state/{n}"),
            serde_json::to_value(&s.spec).expect("json"),
        );
    }
    let api: Api<NodeENI> = Api::all(admin.clone());
    for e in enis {
        let x = api.get(e).await.expect("nodeeni");
        out.insert(
            format!("nodeeni/{e}"),
            serde_json::to_value(&x.spec).expect("json"),
        );
    }
    out
}

/// The objects the plan lists: `state/<node>` and `nodeeni/<name>`.
fn planned_objects(v: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for c in v["configs"].as_array().expect("configs") {
        for n in c["nodes"].as_array().expect("nodes") {
            out.insert(format!("state/{}", n["node"].as_str().expect("node")));
        }
        for e in c["nodeEnis"].as_array().expect("nodeEnis") {
            out.insert(format!("nodeeni/{}", e["nodeEni"].as_str().expect("name")));
        }
    }
    out
}

/// Every field change the plan lists: (object, field) -> (old, new).
fn planned_fields(v: &Value) -> BTreeMap<(String, String), (Value, Value)> {
    let mut out = BTreeMap::new();
    for c in v["configs"].as_array().expect("configs") {
        let objects = c["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .map(|n| (format!("state/{}", n["node"].as_str().unwrap_or("")), n))
            .chain(c["nodeEnis"].as_array().expect("nodeEnis").iter().map(|e| {
                (
                    format!("nodeeni/{}", e["nodeEni"].as_str().unwrap_or("")),
                    e,
                )
            }));
        for (object, o) in objects {
            for f in o["fields"].as_array().expect("fields") {
                let field = f["field"].as_str().expect("field").to_string();
                out.insert(
                    (object.clone(), field),
                    (f["old"].clone(), f["new"].clone()),
                );
            }
        }
    }
    out
}

/// The spec field a plan field names, read from a spec (JSON): `devices[deviceIndex=2].driver`
/// on a DPDKNodeState, `dpdkDriver` on a NodeENI.
fn spec_field(spec: &Value, field: &str) -> Value {
    if let Some(rest) = field.strip_prefix("devices[deviceIndex=") {
        let (index, key) = rest.split_once("].").expect("device field");
        let index: i64 = index.parse().expect("index");
        return spec["devices"]
            .as_array()
            .and_then(|ds| ds.iter().find(|d| d["deviceIndex"] == index))
            .map(|d| d[key].clone())
            .unwrap_or(Value::Null);
    }
    let v = &spec[field];
    match v {
        Value::Bool(b) => Value::String(b.to_string()),
        other => other.clone(),
    }
}

#[tokio::test]
async fn a_changed_driver_plans_exactly_what_the_controller_then_writes() {
    let cp = audited();
    let admin = cp.client().await.expect("client");
    let (shard, group, other_group) = (unique_name("shard"), unique_name("g"), unique_name("g"));
    let (eni, other_eni) = (unique_name("eni"), unique_name("eni"));
    let nodes = group_of_nodes(&admin, &group, &eni, 3).await;
    let bystanders = group_of_nodes(&admin, &other_group, &other_eni, 1).await;
    let (name, bystander) = (unique_name("changed"), unique_name("same"));
    let checkout = tempfile::tempdir().expect("tempdir");
    let (ours, theirs) = (
        config_yaml(&name, &group, "vfio-pci"),
        config_yaml(&bystander, &other_group, "vfio-pci"),
    );
    write(checkout.path(), "clusters/prod/changed.yaml", &ours);
    write(checkout.path(), "clusters/prod/same.yaml", &theirs);
    create_from_yaml(&admin, &ours, &shard).await;
    create_from_yaml(&admin, &theirs, &shard).await;
    let user = unique_name("ctrl");
    let ctrl = start(client_as(cp, &user).await, test_options(&shard));
    converge(&admin, &name, &nodes, "vfio-pci").await;
    converge(&admin, &bystander, &bystanders, "vfio-pci").await;

    let (code, v) = plan_json(cp, checkout.path());
    assert_eq!(code, 0, "the checkout is what the cluster runs: {v:#}");
    assert_eq!(v["changed"], false);

    // The pull request: the driver of one config changes.
    write(
        checkout.path(),
        "clusters/prod/changed.yaml",
        &config_yaml(&name, &group, "igb_uio"),
    );
    let (code, v) = plan_json(cp, checkout.path());
    assert_eq!(code, 1, "{v:#}");
    let configs = v["configs"].as_array().expect("configs");
    assert_eq!(configs.len(), 1, "only the changed config: {v:#}");
    assert_eq!(configs[0]["name"], name.as_str());
    assert_eq!(configs[0]["change"], "modified");
    assert_eq!(configs[0]["file"], "clusters/prod/changed.yaml");
    let actions: BTreeSet<&str> = configs[0]["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["action"].as_str().expect("action"))
        .collect();
    assert_eq!(actions, BTreeSet::from(["reconfigure"]));
    let mut expected: BTreeSet<String> = nodes.iter().map(|n| format!("state/{n}")).collect();
    expected.insert(format!("nodeeni/{eni}"));
    assert_eq!(planned_objects(&v), expected);
    let fields = planned_fields(&v);
    assert_eq!(
        fields.get(&(format!("nodeeni/{eni}"), "dpdkDriver".into())),
        Some(&(json!("vfio-pci"), json!("igb_uio")))
    );
    assert!(
        configs[0]["newConflicts"]
            .as_array()
            .expect("list")
            .is_empty()
    );

    let dir = checkout.path().to_str().expect("utf-8");
    let (code, text, err) = plan(cp, &["--checkout", dir]);
    assert_eq!(code, 1, "{err}");
    assert!(
        text.contains(&format!(
            "DPDKConfig {name}: modified (clusters/prod/changed.yaml)\n"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "  ~ NodeENI {eni} (update)\n      dpdkDriver: vfio-pci → igb_uio\n"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "  ~ node {} (reconfigure)\n      devices[deviceIndex=2].driver: vfio-pci → igb_uio\n",
            nodes[0]
        )),
        "{text}"
    );
    assert!(
        text.contains(
            "nodes: 0 to enable, 3 to reconfigure, 0 to tear down; 1 NodeENI(s) to change"
        ),
        "{text}"
    );
    assert!(!text.contains(&bystander), "{text}");

    // Merge it: the controller then writes exactly the planned objects, with the planned values.
    let mut all_nodes = nodes.clone();
    all_nodes.extend(bystanders.iter().cloned());
    let enis = [eni.as_str(), other_eni.as_str()];
    let before = specs(&admin, &all_nodes, &enis).await;
    let writes_before = object_writes(&cp.audit_log_path(), &user).len();
    Api::<dpdk_bridge::api::DPDKConfig>::all(admin.clone())
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"resourceMapping": [
                {"deviceIndex": 2, "resourceName": RES, "driver": "igb_uio"}
            ]}})),
        )
        .await
        .expect("merge the change");
    converge(&admin, &name, &nodes, "igb_uio").await;
    let after = specs(&admin, &all_nodes, &enis).await;
    let changed: BTreeSet<String> = before
        .keys()
        .filter(|k| before[*k] != after[*k])
        .cloned()
        .collect();
    assert_eq!(
        changed, expected,
        "the objects that changed are the planned ones"
    );
    let written: BTreeSet<String> = object_writes(&cp.audit_log_path(), &user)[writes_before..]
        .iter()
        .filter(|w| w.resource != "dpdkconfigs")
        .map(|w| {
            let kind = if w.resource == "dpdknodestates" {
                "state"
            } else {
                "nodeeni"
            };
            format!("{kind}/{}", w.name)
        })
        .collect();
    assert_eq!(
        written, expected,
        "the controller wrote the planned objects only"
    );
    for ((object, field), (old, new)) in &fields {
        assert_eq!(
            &spec_field(&before[object], field),
            old,
            "{object} {field} before"
        );
        assert_eq!(
            &spec_field(&after[object], field),
            new,
            "{object} {field} after"
        );
    }

    let (code, v) = plan_json(cp, checkout.path());
    assert_eq!(code, 0, "merged and converged: nothing left to plan: {v:#}");
    let (code, text, _) = plan(cp, &["--checkout", dir]);
    assert_eq!((code, text.starts_with("No changes.")), (0, true), "{text}");
    ctrl.stop().await;
}

#[tokio::test]
async fn an_invalid_checkout_exits_two_naming_the_file() {
    let cp = audited();
    let checkout = tempfile::tempdir().expect("tempdir");
    let group = unique_name("g");
    write(
        checkout.path(),
        "good.yaml",
        &config_yaml(&unique_name("good"), &group, "vfio-pci"),
    );
    write(
        checkout.path(),
        "prod/bad.yaml",
        &config_yaml(&unique_name("bad"), &group, "vfio-pci")
            .replace("deviceIndex: 2", "deviceIndex: 0"),
    );
    let dir = checkout.path().to_str().expect("utf-8");
    let (code, out, err) = plan(cp, &["--checkout", dir]);
    assert_eq!(code, 2, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.is_empty(), "no plan is printed: {out}");
    assert!(err.contains("does not validate"), "{err}");
    assert!(
        err.lines()
            .any(|l| l.starts_with("prod/bad.yaml:9:") && l.contains("deviceIndex")),
        "{err}"
    );
    assert!(!err.contains("good.yaml"), "{err}");
}

#[tokio::test]
async fn with_a_source_its_path_and_inventory_decide_and_a_pruned_config_tears_down() {
    let cp = audited();
    let admin = cp.client().await.expect("client");
    let (kept_group, pruned_group) = (unique_name("g"), unique_name("g"));
    let (kept_eni, pruned_eni) = (unique_name("eni"), unique_name("eni"));
    let kept_nodes = group_of_nodes(&admin, &kept_group, &kept_eni, 1).await;
    let pruned_nodes = group_of_nodes(&admin, &pruned_group, &pruned_eni, 2).await;
    let (kept, pruned, outside) = (
        unique_name("kept"),
        unique_name("pruned"),
        unique_name("out"),
    );
    let source = unique_name("src");
    let label = format!("default.{source}");
    for (name, group) in [(&kept, &kept_group), (&pruned, &pruned_group)] {
        let mut c: dpdk_bridge::api::DPDKConfig =
            serde_yaml::from_str(&config_yaml(name, group, "vfio-pci")).expect("yaml");
        c.metadata.labels = Some(
            [
                (
                    dpdk_bridge::labels::MANAGED_BY_LABEL.to_string(),
                    dpdk_bridge::labels::MANAGED_BY_VALUE.to_string(),
                ),
                (dpdk_bridge::labels::SOURCE_LABEL.to_string(), label.clone()),
            ]
            .into(),
        );
        create_config(&admin, &c).await;
    }
    let sources: Api<dpdk_bridge::api::DPDKConfigSource> =
        Api::namespaced(admin.clone(), "default");
    let src: dpdk_bridge::api::DPDKConfigSource = serde_json::from_value(json!({
        "apiVersion": "networking.k8s.aws/v1alpha1", "kind": "DPDKConfigSource",
        "metadata": {"name": source, "namespace": "default"},
        "spec": {"url": "https://git.example.com/platform/dpdk.git", "ref": {"branch": "main"},
                 "path": "clusters/prod", "prune": true}
    }))
    .expect("source");
    sources
        .create(&Default::default(), &src)
        .await
        .expect("create source");
    let inventory: Vec<Value> = [&kept, &pruned]
        .iter()
        .map(|n| json!({"apiVersion": "networking.k8s.aws/v1alpha1", "kind": "DPDKConfig", "name": n}))
        .collect();
    sources
        .patch_status(
            &source,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"inventory": inventory}})),
        )
        .await
        .expect("inventory");

    // The pull request keeps one config (new driver), drops the other; a file outside
    // spec.path is not the source's.
    let checkout = tempfile::tempdir().expect("tempdir");
    write(
        checkout.path(),
        "clusters/prod/kept.yaml",
        &config_yaml(&kept, &kept_group, "igb_uio"),
    );
    write(
        checkout.path(),
        "elsewhere/out.yaml",
        &config_yaml(&outside, &kept_group, "vfio-pci"),
    );
    let sha = commit_all(checkout.path(), "pr");
    let dir = checkout.path().to_str().expect("utf-8");
    let (code, out, err) = plan(
        cp,
        &[
            "--checkout",
            dir,
            "--source",
            &format!("default/{source}"),
            "--format",
            "json",
        ],
    );
    assert_eq!(code, 1, "{out}\n{err}");
    let v: Value = serde_json::from_str(&out).expect("json");
    let changes: Vec<(String, String)> = v["configs"]
        .as_array()
        .expect("configs")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or("").to_string(),
                c["change"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let mut want = vec![
        (kept.clone(), "modified".to_string()),
        (pruned.clone(), "removed".to_string()),
    ];
    want.sort();
    assert_eq!(changes, want, "{v:#}");
    let removed = v["configs"]
        .as_array()
        .expect("configs")
        .iter()
        .find(|c| c["name"] == pruned.as_str())
        .expect("the pruned config");
    let torn: BTreeSet<&str> = removed["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter(|n| n["action"] == "tearDown")
        .map(|n| n["node"].as_str().expect("node"))
        .collect();
    assert_eq!(torn, pruned_nodes.iter().map(String::as_str).collect());
    assert_eq!(removed["nodeEnis"][0]["nodeEni"], pruned_eni.as_str());
    for f in removed["nodeEnis"][0]["fields"].as_array().expect("fields") {
        assert!(f["new"].is_null(), "released: {f}");
    }
    let kept_impact = v["configs"]
        .as_array()
        .expect("configs")
        .iter()
        .find(|c| c["name"] == kept.as_str())
        .expect("the kept config");
    let revision = kept_impact["nodes"][0]["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .find(|f| f["field"] == "revision")
        .map(|f| f["new"].clone());
    assert_eq!(
        revision,
        Some(json!(format!("pr@sha1:{sha}"))),
        "the source applies it at the checkout's revision, which the nodes get: {kept_impact:#}"
    );
    assert_eq!(kept_impact["nodes"][0]["node"], kept_nodes[0].as_str());
    assert!(!out.contains(&outside), "outside spec.path: {out}");
}

/// The nodes whose DPDKNodeState asks for `driver`.
async fn nodes_with_driver(admin: &Client, nodes: &[String], driver: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for n in nodes {
        if get_state(admin, n)
            .await
            .is_some_and(|s| s.spec.devices.iter().any(|d| d.driver.as_str() == driver))
        {
            out.insert(n.clone());
        }
    }
    out
}

#[tokio::test]
async fn the_planned_waves_are_the_order_the_controller_then_takes() {
    let cp = audited();
    let admin = cp.client().await.expect("client");
    let (shard, group, eni) = (unique_name("shard"), unique_name("g"), unique_name("eni"));
    let nodes = group_of_nodes(&admin, &group, &eni, 3).await;
    // The last node by name is the canary: it goes first, alone.
    let canary = unique_name("canary");
    set_node_labels(&admin, &nodes[2], json!({ "dpdk-test/canary": canary })).await;
    let name = unique_name("rolled");
    let rollout = format!(
        "  rollout:\n    maxUnavailable: 1\n    canarySelector:\n      matchLabels:\n        dpdk-test/canary: {canary}\n"
    );
    let yaml = |driver: &str| format!("{}{rollout}", config_yaml(&name, &group, driver));
    let checkout = tempfile::tempdir().expect("tempdir");
    create_from_yaml(&admin, &yaml("vfio-pci"), &shard).await;
    let ctrl = start(
        client_as(cp, &unique_name("ctrl")).await,
        test_options(&shard),
    );
    converge(&admin, &name, &nodes, "vfio-pci").await;

    write(checkout.path(), "c.yaml", &yaml("igb_uio"));
    let (code, v) = plan_json(cp, checkout.path());
    assert_eq!(code, 1, "{v:#}");
    let planned: Vec<BTreeSet<String>> = v["configs"][0]["waves"]
        .as_array()
        .expect("waves")
        .iter()
        .map(|w| {
            w["nodes"]
                .as_array()
                .expect("nodes")
                .iter()
                .map(|n| n.as_str().expect("name").to_string())
                .collect()
        })
        .collect();
    let one = |i: usize| BTreeSet::from([nodes[i].clone()]);
    assert_eq!(planned, vec![one(2), one(0), one(1)], "{v:#}");
    assert_eq!(v["configs"][0]["waves"][0]["canary"], true);
    let dir = checkout.path().to_str().expect("utf-8");
    let (_, text, _) = plan(cp, &["--checkout", dir]);
    assert!(
        text.contains(&format!(
            "  wave 1 (canary): {}\n  wave 2: {}\n  wave 3: {}\n",
            nodes[2], nodes[0], nodes[1]
        )),
        "{text}"
    );

    // Merge it, and watch which nodes the controller moves, wave by wave: the agents
    // report success only for what they saw, so the next wave waits for them.
    Api::<dpdk_bridge::api::DPDKConfig>::all(admin.clone())
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"resourceMapping": [
                {"deviceIndex": 2, "resourceName": RES, "driver": "igb_uio"}
            ]}})),
        )
        .await
        .expect("merge the change");
    let mut taken: Vec<BTreeSet<String>> = Vec::new();
    let mut done: BTreeSet<String> = BTreeSet::new();
    while done.len() < nodes.len() {
        let wave = eventually("the next wave", Duration::from_secs(60), || async {
            let now = nodes_with_driver(&admin, &nodes, "igb_uio").await;
            let new: BTreeSet<String> = now.difference(&done).cloned().collect();
            (!new.is_empty()).then_some(new)
        })
        .await;
        // Give a wave that is written in several requests time to land whole.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = nodes_with_driver(&admin, &nodes, "igb_uio").await;
        let wave: BTreeSet<String> = wave
            .union(&now.difference(&done).cloned().collect())
            .cloned()
            .collect();
        for n in &wave {
            agent_reports(&admin, n).await;
        }
        done.extend(wave.iter().cloned());
        taken.push(wave);
    }
    assert_eq!(
        taken, planned,
        "the controller took the planned waves, in order"
    );
    ctrl.stop().await;
}
