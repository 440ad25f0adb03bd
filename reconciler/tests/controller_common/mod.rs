//! Shared helpers of the DPDK controller's integration tests: an audited control plane,
//! running controllers in-process, a simulated node agent, and audit-log reading.
#![allow(dead_code)]

use std::future::Future;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use dpdk_bridge::api::{
    DPDKConfig, DPDKConfigSpec, DPDKNodeState, DpdkDriver, DriverOptions, NodeENI, ResourceMapping,
};
use dpdk_reconciler::controller::{self, Options, Telemetry};
use dpdk_testenv::{ControlPlane, StartOptions};
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Label on test DPDKConfigs; each test's controller only handles its own value, so
/// tests share one API server without touching each other's objects.
pub const SHARD_LABEL: &str = "dpdk-test/shard";

/// One control plane per test binary with the audit log on (every write is recorded).
pub fn audited() -> &'static ControlPlane {
    static CP: OnceLock<ControlPlane> = OnceLock::new();
    CP.get_or_init(|| {
        ControlPlane::start_blocking(StartOptions {
            install_crds: true,
            audit_log: true,
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("the local control plane could not start: {e}"))
    })
}

/// A client acting as a distinct (impersonated) admin user, so the audit log tells its
/// writes apart from the test's own.
pub async fn client_as(cp: &ControlPlane, user: &str) -> Client {
    cp.client_as(user, &["system:masters", "system:authenticated"])
        .await
        .expect("impersonating client")
}

/// Controller options for a test: sharded on `shard`, fast debounce, no leader election.
pub fn test_options(shard: &str) -> Options {
    Options {
        config_selector: Some(format!("{SHARD_LABEL}={shard}")),
        debounce: Duration::from_millis(50),
        max_backoff: Duration::from_secs(2),
        identity: format!("test-{shard}"),
        ..Options::default()
    }
}

/// A controller running in this test's runtime.
pub struct Running {
    pub stop: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), dpdk_reconciler::Error>>,
    pub telemetry: Telemetry,
}

pub fn start(client: Client, opts: Options) -> Running {
    let stop = CancellationToken::new();
    let telemetry = Telemetry::standalone();
    let task = tokio::spawn(controller::run_with(
        client,
        opts,
        telemetry.clone(),
        stop.clone(),
    ));
    Running {
        stop,
        task,
        telemetry,
    }
}

impl Running {
    /// Graceful stop (releases the Lease when leader election is on).
    pub async fn stop(self) {
        self.stop.cancel();
        let r = tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("controller stops");
        r.expect("controller task")
            .expect("controller ran without error");
    }

    /// Passes run so far (successful or not).
    pub fn passes(&self) -> u64 {
        self.telemetry.metrics.reconcile_count("success")
            + self.telemetry.metrics.reconcile_count("error")
    }

    pub fn is_leader(&self) -> bool {
        self.telemetry.metrics.leader.get() == 1
    }

    pub async fn wait_passes(&self, more: u64, timeout: Duration) {
        let target = self.passes() + more;
        eventually(
            &format!("{more} more reconcile passes"),
            timeout,
            || async { (self.passes() >= target).then_some(()) },
        )
        .await
    }
}

/// Polls `f` until it returns Some, or panics naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A DPDKConfig in `shard`.
pub fn config(
    name: &str,
    shard: &str,
    selector: &[(&str, &str)],
    mappings: &[(i32, &str)],
) -> DPDKConfig {
    let mut c = DPDKConfig::new(
        name,
        DPDKConfigSpec {
            node_selector: selector
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
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
    c.metadata.labels = Some([(SHARD_LABEL.to_string(), shard.to_string())].into());
    c
}

pub async fn create_config(client: &Client, c: &DPDKConfig) -> DPDKConfig {
    Api::<DPDKConfig>::all(client.clone())
        .create(&PostParams::default(), c)
        .await
        .expect("create DPDKConfig")
}

pub async fn get_config(client: &Client, name: &str) -> Option<DPDKConfig> {
    Api::<DPDKConfig>::all(client.clone())
        .get_opt(name)
        .await
        .expect("get DPDKConfig")
}

pub async fn get_eni(client: &Client, name: &str) -> NodeENI {
    Api::<NodeENI>::all(client.clone())
        .get(name)
        .await
        .expect("get NodeENI")
}

pub async fn get_state(client: &Client, node: &str) -> Option<DPDKNodeState> {
    Api::<DPDKNodeState>::all(client.clone())
        .get_opt(node)
        .await
        .expect("get DPDKNodeState")
}

pub async fn node_label(client: &Client, node: &str) -> Option<String> {
    label_of(client, node, dpdk_bridge::labels::NODE_ENABLED_LABEL).await
}

/// The node's `dpdk.aws.k8s/ready` label.
pub async fn ready_label(client: &Client, node: &str) -> Option<String> {
    label_of(client, node, dpdk_bridge::labels::NODE_READY_LABEL).await
}

async fn label_of(client: &Client, node: &str, key: &str) -> Option<String> {
    let n = Api::<k8s_openapi::api::core::v1::Node>::all(client.clone())
        .get(node)
        .await
        .expect("get node");
    n.metadata.labels.and_then(|l| l.get(key).cloned())
}

pub async fn set_node_labels(client: &Client, node: &str, labels: Value) {
    Api::<k8s_openapi::api::core::v1::Node>::all(client.clone())
        .patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": labels}})),
        )
        .await
        .expect("label node");
}

/// Waits for the config's status to satisfy `pred`.
pub async fn wait_status(
    client: &Client,
    name: &str,
    what: &str,
    pred: impl Fn(&dpdk_bridge::api::DPDKConfigStatus) -> bool,
) -> DPDKConfig {
    eventually(what, Duration::from_secs(60), || async {
        let c = get_config(client, name).await?;
        c.status.as_ref().filter(|s| pred(s)).map(|_| c.clone())
    })
    .await
}

/// The Ready condition's (status, reason).
pub fn ready(c: &DPDKConfig) -> (String, String) {
    c.status
        .as_ref()
        .and_then(|s| dpdk_bridge::conditions::find(&s.conditions, dpdk_bridge::conditions::READY))
        .map(|r| (r.status.clone(), r.reason.clone()))
        .unwrap_or_default()
}

/// The node agent, simulated: reports the current spec done (devices bound) or, with an
/// empty spec, everything restored.
pub async fn agent_reports(client: &Client, node: &str) {
    let api: Api<DPDKNodeState> = Api::all(client.clone());
    let s = api.get(node).await.expect("DPDKNodeState exists");
    let devices: Vec<Value> = s
        .spec
        .devices
        .iter()
        .map(|d| json!({"deviceIndex": d.device_index, "bound": true, "resourceName": d.resource_name, "driver": d.driver.as_str(), "originalDriver": "ena", "health": "Healthy"}))
        .collect();
    let status = json!({"status": {
        "observedGeneration": s.metadata.generation,
        "syncStatus": "Succeeded",
        "devices": devices,
        "boundDevices": devices.len(),
    }});
    let pp = PatchParams {
        field_manager: Some("dpdk-node-agent-sim".into()),
        ..Default::default()
    };
    api.patch_status(node, &pp, &Patch::Merge(&status))
        .await
        .expect("agent status");
    plugin_reports(client, &s).await;
}

/// The device plugin, simulated as node-agent/src/device_plugin/report.rs writes it: SSA
/// of `status.devicePlugin` alone, under its own field manager, one resource per
/// resourceName in the spec with every device healthy.
pub async fn plugin_reports(client: &Client, s: &DPDKNodeState) {
    let api: Api<DPDKNodeState> = Api::all(client.clone());
    let node = s.metadata.name.as_deref().expect("name");
    let mut by_name: std::collections::BTreeMap<&str, i32> = Default::default();
    for d in &s.spec.devices {
        *by_name.entry(d.resource_name.as_str()).or_default() += 1;
    }
    let resources: Vec<Value> = by_name
        .iter()
        .map(|(name, n)| json!({"resourceName": name, "advertised": n, "healthy": n}))
        .collect();
    let patch = json!({
        "apiVersion": "networking.k8s.aws/v1alpha1",
        "kind": "DPDKNodeState",
        "metadata": {"name": node},
        "status": {"devicePlugin": {"resources": resources}},
    });
    api.patch_status(
        node,
        &PatchParams::apply("dpdk-device-plugin").force(),
        &Patch::Apply(&patch),
    )
    .await
    .expect("device plugin status");
}

/// Warning events about a DPDKConfig (cluster-scoped objects' events live in `default`).
pub async fn events_for(client: &Client, config: &str) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(client.clone(), "default");
    api.list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(config))
        .collect()
}

pub async fn wait_event(client: &Client, config: &str, reason: &str) -> Event {
    eventually(
        &format!("a {reason} event on {config}"),
        Duration::from_secs(60),
        || async {
            events_for(client, config)
                .await
                .into_iter()
                .find(|e| e.reason.as_deref() == Some(reason))
        },
    )
    .await
}

/// One write from the audit log.
#[derive(Clone, Debug)]
pub struct AuditWrite {
    pub user: String,
    pub verb: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
    pub namespace: String,
    pub code: u16,
    pub uri: String,
    pub at: String,
}

/// Every write the audit log holds, in order, made by `user` (impersonated).
pub fn audit_writes(path: &Path, user: &str) -> Vec<AuditWrite> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if v["stage"] != "ResponseComplete" {
            continue;
        }
        let who = v["impersonatedUser"]["username"].as_str().unwrap_or("");
        if who != user {
            continue;
        }
        let s = |p: &str| {
            v.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        out.push(AuditWrite {
            user: who.to_string(),
            verb: s("/verb"),
            resource: s("/objectRef/resource"),
            subresource: s("/objectRef/subresource"),
            name: s("/objectRef/name"),
            namespace: s("/objectRef/namespace"),
            code: v["responseStatus"]["code"].as_u64().unwrap_or(0) as u16,
            uri: s("/requestURI"),
            at: s("/stageTimestamp"),
        });
    }
    out
}

/// Writes to the controller's objects (everything but Leases and Events).
pub fn object_writes(path: &Path, user: &str) -> Vec<AuditWrite> {
    audit_writes(path, user)
        .into_iter()
        .filter(|w| w.resource != "leases" && w.resource != "events")
        .collect()
}

/// A kubeconfig for `cp` that impersonates `user` (in system:masters), for running the
/// real binary while the audit log still tells its writes apart.
pub fn impersonating_kubeconfig(cp: &ControlPlane, user: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(cp.kubeconfig_path()).expect("kubeconfig");
    let patched = text.replacen(
        "    client-key:",
        &format!("    as: {user}\n    as-groups: [\"system:masters\", \"system:authenticated\"]\n    client-key:"),
        1,
    );
    assert_ne!(patched, text, "kubeconfig layout changed");
    let path = cp.data_dir().join(format!("kubeconfig-{user}"));
    std::fs::write(&path, patched).expect("write kubeconfig");
    path
}

/// A plain HTTP/1.1 GET on loopback: (status, whole response).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    Some((buf.split_whitespace().nth(1)?.parse().ok()?, buf))
}
