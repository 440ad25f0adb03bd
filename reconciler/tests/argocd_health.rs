//! Argo CD's health checks (`examples-repo/argocd/argocd-cm-health.yaml`) run by Argo's own
//! Lua engine (gopher-lua, through testenv's `argo-lua` helper) on real DPDKConfig and
//! DPDKNodeState objects read from a real API server, in each state the controller (run
//! in-process, with a simulated node agent writing DPDKNodeState status) produces.

mod controller_common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use controller_common::*;
use dpdk_bridge::api::{DPDKConfig, DPDKNodeState};
use dpdk_bridge::plan::reason;
use dpdk_testenv::control_plane::workspace_root;
use dpdk_testenv::{fixtures, unique_name};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};

const GROUP: &str = "dpdk-test/group";
const RES: &str = "intel.com/intel_sriov_netdevice_2";
const CONFIG_KEY: &str = "resource.customizations.health.networking.k8s.aws_DPDKConfig";
const STATE_KEY: &str = "resource.customizations.health.networking.k8s.aws_DPDKNodeState";

/// The two health scripts, as shipped in the example argocd-cm.
struct Scripts {
    config: String,
    state: String,
}

fn scripts() -> Scripts {
    let path = workspace_root().join("examples-repo/argocd/argocd-cm-health.yaml");
    let text = std::fs::read_to_string(&path).expect("argocd-cm-health.yaml");
    let cm: Value = serde_yaml::from_str(&text).expect("argocd-cm parses");
    let script = |key: &str| {
        cm["data"][key]
            .as_str()
            .unwrap_or_else(|| panic!("{key} missing from {}", path.display()))
            .to_string()
    };
    Scripts {
        config: script(CONFIG_KEY),
        state: script(STATE_KEY),
    }
}

/// Argo CD's verdict on `obj`: Ok((status, message)), or Err(the Lua error) when the
/// script raises (Argo shows a health error then).
fn argo_health(script: &str, obj: &Value) -> Result<(String, String), String> {
    let exe = dpdk_testenv::binaries::ensure_argo_lua().expect("argo-lua helper builds");
    let mut child = Command::new(exe)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("argo-lua runs");
    let req = json!({"script": script, "obj": obj}).to_string();
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(req.as_bytes())
        .expect("request written");
    let out = child.wait_with_output().expect("argo-lua finishes");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "argo-lua output {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    match v["error"].as_str() {
        Some(err) => {
            assert!(!out.status.success(), "an error exits non-zero");
            Err(err.to_string())
        }
        None => Ok((
            v["status"].as_str().unwrap_or_default().to_string(),
            v["message"].as_str().unwrap_or_default().to_string(),
        )),
    }
}

/// One row of the table: what Argo says of `obj` must be `status`, its message naming `why`.
fn expect(what: &str, script: &str, obj: &Value, status: &str, why: &str) {
    let got = argo_health(script, obj).unwrap_or_else(|e| panic!("{what}: the script raised: {e}"));
    assert_eq!(got.0, status, "{what}: {got:?}\n{obj:#}");
    assert!(
        got.1.contains(why),
        "{what}: message {:?} does not name {why:?}",
        got.1
    );
}

async fn config_json(client: &Client, name: &str) -> Value {
    serde_json::to_value(get_config(client, name).await.expect("config")).expect("json")
}

async fn state_json(client: &Client, node: &str) -> Value {
    let s = Api::<DPDKNodeState>::all(client.clone())
        .get(node)
        .await
        .expect("state");
    serde_json::to_value(s).expect("json")
}

fn generations(s: &Value) -> (i64, i64) {
    (
        s["metadata"]["generation"].as_i64().unwrap_or(0),
        s["status"]["observedGeneration"].as_i64().unwrap_or(0),
    )
}

async fn agent_fails(client: &Client, node: &str, error: &str) {
    let api: Api<DPDKNodeState> = Api::all(client.clone());
    let s = api.get(node).await.expect("state");
    let status = json!({"status": {
        "observedGeneration": s.metadata.generation,
        "syncStatus": "Failed",
        "lastSyncError": error,
        "boundDevices": 0,
    }});
    let pp = PatchParams {
        field_manager: Some("dpdk-node-agent-sim".into()),
        ..Default::default()
    };
    api.patch_status(node, &pp, &Patch::Merge(&status))
        .await
        .expect("agent status");
}

#[tokio::test]
async fn argo_health_scripts_on_real_objects_in_each_controller_state() {
    let sc = scripts();
    let cp = audited();
    let admin = cp.client().await.expect("client");
    let (shard, group) = (unique_name("shard"), unique_name("g"));
    let (node, eni) = (unique_name("node"), unique_name("eni"));
    fixtures::create_nodeeni(&admin, &eni, &[(GROUP, &group)], 2, &["subnet-a"])
        .await
        .expect("nodeeni");
    fixtures::create_node(&admin, &node, &[(GROUP, &group)], "10.0.1.10")
        .await
        .expect("node");
    fixtures::upsert_attachment(
        &admin,
        &eni,
        fixtures::attachment(&node, 2, &format!("eni-{node}")),
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

    // Progressing: the node has its DPDKNodeState, the agent has not reported.
    eventually("state written", Duration::from_secs(60), || async {
        get_state(&admin, &node)
            .await
            .filter(|s| !s.spec.devices.is_empty())
    })
    .await;
    wait_status(&admin, &name, "Progressing", |s| s.matched_nodes == 1).await;
    let c = config_json(&admin, &name).await;
    expect("config, node waiting", &sc.config, &c, "Progressing", &node);
    let s = state_json(&admin, &node).await;
    expect(
        "state, no report",
        &sc.state,
        &s,
        "Progressing",
        "node agent",
    );

    // Healthy: the agent reports the devices bound.
    agent_reports(&admin, &node).await;
    wait_status(&admin, &name, "Ready", |s| s.ready_nodes == 1).await;
    let c = config_json(&admin, &name).await;
    expect(
        "config, all ready",
        &sc.config,
        &c,
        "Healthy",
        "1/1 nodes ready",
    );
    let s = state_json(&admin, &node).await;
    expect("state, bound", &sc.state, &s, "Healthy", "Devices bound: 1");

    // A new spec generation over the old Succeeded status: the mapping changes its resource.
    Api::<DPDKConfig>::all(admin.clone())
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"resourceMapping": [
                {"deviceIndex": 2, "resourceName": "intel.com/dpdk_b", "driver": "vfio-pci"}
            ]}})),
        )
        .await
        .expect("new mapping");
    let s = eventually("new state generation", Duration::from_secs(60), || async {
        let s = state_json(&admin, &node).await;
        let (generation, observed) = generations(&s);
        (generation > observed).then_some(s)
    })
    .await;
    assert_eq!(s["status"]["syncStatus"], "Succeeded", "{s:#}");
    expect(
        "state, new generation over old Succeeded",
        &sc.state,
        &s,
        "Progressing",
        "generation",
    );
    let c = eventually("node on the old spec", Duration::from_secs(60), || async {
        let c = config_json(&admin, &name).await;
        c.to_string().contains("latest spec").then_some(c)
    })
    .await;
    expect(
        "config, node on the old spec",
        &sc.config,
        &c,
        "Progressing",
        "latest spec",
    );
    let on_old_spec = c.clone();

    // Degraded node: the agent fails on the new spec.
    agent_fails(&admin, &node, "vfio-pci bind of 0000:00:06.0 refused").await;
    let s = state_json(&admin, &node).await;
    expect(
        "state, agent failed",
        &sc.state,
        &s,
        "Degraded",
        "vfio-pci bind",
    );
    // The node had devices: the change was a counted rollout, and its failure halts it.
    let c = eventually(
        "rollout failure in status",
        Duration::from_secs(60),
        || async {
            let c = config_json(&admin, &name).await;
            (c["status"]["rollout"]["phase"] == "Stalled").then_some(c)
        },
    )
    .await;
    expect(
        "config, a failed rollout",
        &sc.config,
        &c,
        "Degraded",
        &format!("{}: rollout halted", reason::ROLLOUT_FAILED),
    );
    expect(
        "config, a failed rollout names the node and why",
        &sc.config,
        &c,
        "Degraded",
        &format!("{node} (node agent failed: vfio-pci bind"),
    );

    // Ready=False without a message (the CRD requires one, so it is removed from the real
    // object here): Argo must get a health, not a Lua error.
    let mut bare = on_old_spec.clone();
    for cond in bare["status"]["conditions"]
        .as_array_mut()
        .expect("conditions")
    {
        cond.as_object_mut().expect("condition").remove("message");
    }
    expect(
        "config, Ready=False without message",
        &sc.config,
        &bare,
        "Progressing",
        "Progressing",
    );

    // Degraded config: a conflict (the NodeENI reaches a node outside the selector) is Stalled.
    let (group2, eni2, inside, outside) = (
        unique_name("g"),
        unique_name("eni"),
        unique_name("inside"),
        unique_name("outside"),
    );
    let dpdk = unique_name("dpdk");
    fixtures::create_nodeeni(&admin, &eni2, &[(GROUP, &group2)], 2, &["subnet-a"])
        .await
        .expect("nodeeni");
    fixtures::create_node(
        &admin,
        &inside,
        &[(GROUP, &group2), ("dpdk-test/dpdk", &dpdk)],
        "10.0.1.1",
    )
    .await
    .expect("node");
    fixtures::create_node(&admin, &outside, &[(GROUP, &group2)], "10.0.1.2")
        .await
        .expect("node");
    let stalled = unique_name("cfg");
    create_config(
        &admin,
        &config(&stalled, &shard, &[("dpdk-test/dpdk", &dpdk)], &[(2, RES)]),
    )
    .await;
    wait_status(&admin, &stalled, "Stalled", |s| !s.conflicts.is_empty()).await;
    let k = config_json(&admin, &stalled).await;
    expect(
        "config, conflict",
        &sc.config,
        &k,
        "Degraded",
        reason::SELECTOR_REACHES_UNMATCHED_NODES,
    );

    // Deleting, before the controller has seen it: the status still says Ready.
    agent_reports(&admin, &node).await;
    wait_status(&admin, &name, "Ready again", |s| s.ready_nodes == 1).await;
    ctrl.stop().await;
    Api::<DPDKConfig>::all(admin.clone())
        .delete(&name, &DeleteParams::default())
        .await
        .expect("delete config");
    let c = config_json(&admin, &name).await;
    assert!(
        c["metadata"]["deletionTimestamp"].is_string(),
        "the finalizer holds it: {c:#}"
    );
    expect(
        "config, deleted, old Ready status",
        &sc.config,
        &c,
        "Progressing",
        "teardown",
    );
    // The same object with its status claiming the deletion's generation (the API server
    // bumps `generation` when it sets `deletionTimestamp`): still not Healthy.
    let mut observed = c.clone();
    observed["status"]["observedGeneration"] = c["metadata"]["generation"].clone();
    expect(
        "config, deleted, Ready status of the current generation",
        &sc.config,
        &observed,
        "Progressing",
        "teardown",
    );

    // Deleting, teardown in progress: phase 1 emptied the node's devices.
    let ctrl = start(client_as(cp, &user).await, test_options(&shard));
    eventually("devices emptied", Duration::from_secs(60), || async {
        get_state(&admin, &node)
            .await
            .filter(|s| s.spec.devices.is_empty())
    })
    .await;
    let c = wait_status(&admin, &name, "TearingDown", |s| {
        s.conditions.iter().any(|c| c.reason == "TearingDown")
    })
    .await;
    let c = serde_json::to_value(c).expect("json");
    expect(
        "config, teardown in progress",
        &sc.config,
        &c,
        "Progressing",
        "teardown",
    );
    let s = state_json(&admin, &node).await;
    expect(
        "state, teardown spec not yet applied",
        &sc.state,
        &s,
        "Progressing",
        "generation",
    );
    ctrl.stop().await;
}

/// The helper answers as Argo CD does: a raise is a health error, an invalid status is
/// Unknown, and the string library is not open to an argocd-cm script.
#[test]
fn the_helper_answers_as_argo_does() {
    let obj = json!({"metadata": {"name": "x", "labels": {"a": "b"}}, "spec": {"list": ["one", "two"], "gone": null}});
    assert_eq!(
        argo_health(
            r#"return { status = "Healthy", message = obj.spec.list[2] .. tostring(obj.spec.gone) }"#,
            &obj
        ),
        Ok(("Healthy".into(), "twonil".into())),
        "arrays are 1-based, null is nil"
    );
    let raised = argo_health(
        r#"return { status = "Healthy", message = "x" .. obj.metadata.missing }"#,
        &obj,
    );
    assert!(
        raised.as_ref().is_err_and(|e| e.contains("concat")),
        "{raised:?}"
    );
    assert_eq!(
        argo_health(r#"return { status = "Fine", message = "x" }"#, &obj),
        Ok((
            "Unknown".into(),
            "Lua returned an invalid health status".into()
        ))
    );
    assert!(
        argo_health(
            r#"return { status = "Healthy", message = string.upper("x") }"#,
            &obj
        )
        .is_err(),
        "string is not opened without useOpenLibs"
    );
}
