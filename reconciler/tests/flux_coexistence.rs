//! Flux's own source-controller and kustomize-controller (built from Go modules by testenv)
//! apply `examples-repo/clusters/production` from a real https Git server (private CA,
//! basic auth) while our DPDK controller, our drift runtime and a `ReportOnly`
//! DPDKConfigSource on the same repository and path run beside them, all on one real API
//! server with its audit log on. The node agents are simulated (they write DPDKNodeState
//! status). `examples-repo/flux/` is applied as shipped; the test changes only the URL
//! and the intervals (see `flux_object`). Findings: docs/coexistence.md.

mod controller_common;
mod source_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use controller_common::*;
use dpdk_bridge::api::{DPDKNodeState, NodeENI};
use dpdk_bridge::labels::{self, CONTROLLER_MANAGER};
use dpdk_reconciler::drift::SourceKey;
use dpdk_reconciler::drift::runtime::{DriftOptions, DriftState};
use dpdk_reconciler::server::{AppState, Probes};
use dpdk_testenv::control_plane::workspace_root;
use dpdk_testenv::flux::{FLUX_NAMESPACE, KUSTOMIZE_MANAGER, flux_user};
use dpdk_testenv::git_server::{HttpAuth, HttpsGitServer, WorkRepo};
use dpdk_testenv::{ControlPlane, fixtures};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use source_support::{Harness, HarnessOptions};
use tokio_util::sync::CancellationToken;

/// The seed's DPDKConfig, as `examples-repo/clusters/production` names it.
const CONFIG: &str = "default-dpdk-config";
/// Its file in the repository.
const CONFIG_FILE: &str = "clusters/production/default-dpdk-config.yaml";
/// The Secret `examples-repo/flux/gitrepository.yaml` names.
const SECRET: &str = "dpdk-config-auth";
const NODES: [&str; 2] = ["flux-node-a", "flux-node-b"];
const CONTROLLER_USER: &str = "dpdk-controller-beside-flux";
const SOURCE_USER: &str = "dpdk-source-report-only";
/// The write-fight window (the issue suggests 2 minutes; 60 s is 12 Kustomization
/// intervals of 5 s, see docs/coexistence.md).
const WINDOW: Duration = Duration::from_secs(60);

fn kustomization_ar() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "kustomize.toolkit.fluxcd.io",
        "v1",
        "Kustomization",
    ))
}

fn gitrepository_ar() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "source.toolkit.fluxcd.io",
        "v1",
        "GitRepository",
    ))
}

/// A shipped `examples-repo/flux/` object, changed only where a test must: the URL of the
/// local Git server and short intervals.
fn flux_object(file: &str, url: &str) -> Value {
    let path = workspace_root().join("examples-repo/flux").join(file);
    let text = std::fs::read_to_string(&path).expect("examples-repo/flux file");
    let mut obj: Value = serde_yaml::from_str(&text).expect("yaml");
    match obj["kind"].as_str() {
        Some("GitRepository") => {
            obj["spec"]["url"] = json!(url);
            obj["spec"]["interval"] = json!("2s");
        }
        Some("Kustomization") => {
            obj["spec"]["interval"] = json!("5s");
        }
        other => panic!("unexpected kind {other:?} in {}", path.display()),
    }
    obj
}

async fn apply_dynamic(client: &Client, ar: &ApiResource, obj: &Value) {
    let ns = obj["metadata"]["namespace"].as_str().expect("namespace");
    let name = obj["metadata"]["name"].as_str().expect("name");
    let dynobj: DynamicObject = serde_json::from_value(obj.clone()).expect("object");
    Api::<DynamicObject>::namespaced_with(client.clone(), ns, ar)
        .patch(
            name,
            &PatchParams::apply("flux-test").force(),
            &Patch::Apply(&dynobj),
        )
        .await
        .unwrap_or_else(|e| panic!("apply {name}: {e}"));
}

/// The Kustomization's Ready condition: (status, reason, message, lastTransitionTime).
async fn kustomization_ready(client: &Client) -> Option<(String, String, String, String)> {
    let api =
        Api::<DynamicObject>::namespaced_with(client.clone(), FLUX_NAMESPACE, &kustomization_ar());
    let k = api
        .get_opt("dpdk-config")
        .await
        .expect("get Kustomization")?;
    ready_condition(&k.data["status"])
}

fn ready_condition(status: &Value) -> Option<(String, String, String, String)> {
    let c = status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")?;
    let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
    Some((
        s("status"),
        s("reason"),
        s("message"),
        s("lastTransitionTime"),
    ))
}

/// The Kustomization's last applied revision.
async fn kustomization_applied(client: &Client) -> String {
    let api =
        Api::<DynamicObject>::namespaced_with(client.clone(), FLUX_NAMESPACE, &kustomization_ar());
    let k = api.get("dpdk-config").await.expect("get Kustomization");
    k.data["status"]["lastAppliedRevision"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Simulated node agents: while `on`, each reports the current spec of its DPDKNodeState.
fn spawn_agents(client: Client, on: Arc<AtomicBool>, stop: CancellationToken) {
    tokio::spawn(async move {
        let api: Api<DPDKNodeState> = Api::all(client.clone());
        while !stop.is_cancelled() {
            for node in NODES {
                if !on.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(Some(s)) = api.get_opt(node).await else {
                    continue;
                };
                let observed = s.status.as_ref().and_then(|st| st.observed_generation);
                if observed != s.metadata.generation {
                    agent_reports(&client, node).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

/// Our drift runtime over the ReportOnly source, and its `/drift` endpoint.
async fn start_drift(
    client: Client,
    h: &Harness,
    source: &str,
    stop: CancellationToken,
) -> std::net::SocketAddr {
    let drift = DriftState::new();
    let mut registry = prometheus_client::registry::Registry::default();
    drift.metrics.register(&mut registry);
    let opts = DriftOptions {
        name_prefix: None,
        sources: Some(vec![SourceKey::new(&h.ns, source)]),
        debounce: Duration::from_millis(50),
    };
    tokio::spawn(dpdk_reconciler::drift::runtime::run(
        client,
        Arc::new(h.store.clone()),
        opts,
        drift.clone(),
        stop.clone(),
    ));
    let app = dpdk_reconciler::server::router(
        AppState {
            registry: Arc::new(registry),
            health: Probes::new(),
        },
        vec![dpdk_reconciler::drift::http::routes(drift)],
    );
    let listener = dpdk_reconciler::server::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(dpdk_reconciler::server::serve(listener, app, stop));
    addr
}

/// The `/drift` report's findings on the DPDKConfig itself (Git ↔ cluster).
async fn config_findings(addr: std::net::SocketAddr) -> Option<Vec<Value>> {
    let (code, body) = source_support::request(addr, "GET", "/drift", &[], b"").await;
    if code != 200 {
        return None;
    }
    let r: Value = serde_json::from_str(&body).expect("/drift is JSON");
    Some(
        r["findings"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|f| f["object"]["kind"] == "DPDKConfig" && f["object"]["name"] == CONFIG)
            .collect(),
    )
}

/// Writes to `resource` by `user` from the audit log, from index `from` of that list on.
fn writes(cp: &ControlPlane, user: &str, resource: &str) -> Vec<AuditWrite> {
    audit_writes(&cp.audit_log_path(), user)
        .into_iter()
        .filter(|w| w.resource == resource)
        .collect()
}

/// Writes that changed something (not server-side dry runs).
fn real(w: &[AuditWrite]) -> Vec<&AuditWrite> {
    w.iter().filter(|w| !w.uri.contains("dryRun")).collect()
}

/// `kubectl edit` of the DPDKConfig with `sed` as the editor (kubectl's own update path
/// and field manager, `kubectl-edit`).
fn kubectl_edit(cp: &ControlPlane, sed: &str) {
    let out = cp
        .kubectl()
        .args(["edit", &format!("dpdkconfig/{CONFIG}")])
        .env("KUBE_EDITOR", format!("sed -i -e '{sed}'"))
        .output()
        .expect("kubectl runs");
    eprintln!(
        "[flux] kubectl edit: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "kubectl edit: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Fields of `obj` owned by `manager` (`f:spec.f:x` paths, leaves only).
fn owned_fields(obj: &kube::api::ObjectMeta, manager: &str) -> Vec<String> {
    fn leaves(prefix: &str, v: &Value, out: &mut Vec<String>) {
        match v.as_object() {
            Some(m) if !m.is_empty() => {
                for (k, v) in m {
                    if k == "." {
                        continue;
                    }
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    leaves(&p, v, out);
                }
            }
            _ => out.push(prefix.to_string()),
        }
    }
    let mut out = Vec::new();
    for mf in obj.managed_fields.iter().flatten() {
        if mf.manager.as_deref() == Some(manager)
            && let Some(f) = &mf.fields_v1
        {
            leaves("", &f.0, &mut out);
        }
    }
    out.sort();
    out
}

/// The `ignoreDifferences` snippet for NodeENI in docs/coexistence.md.
fn documented_ignore_differences() -> Value {
    let text = std::fs::read_to_string(workspace_root().join("docs/coexistence.md"))
        .expect("docs/coexistence.md");
    let block = text
        .split("```yaml")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .find(|b| b.contains("ignoreDifferences") && b.contains("NodeENI"))
        .expect("an ignoreDifferences snippet for NodeENI");
    serde_yaml::from_str(block).expect("the snippet is YAML")
}

async fn create_nodes(admin: &Client) {
    fixtures::create_nodeeni(admin, "flux-eni", &[("ng", "multi-eni")], 2, &["subnet-a"])
        .await
        .expect("nodeeni");
    for (i, node) in NODES.iter().enumerate() {
        fixtures::create_node(
            admin,
            node,
            &[("ng", "multi-eni")],
            &format!("10.0.1.{}", i + 10),
        )
        .await
        .expect("node");
        fixtures::upsert_attachment(
            admin,
            "flux-eni",
            fixtures::attachment(node, 2, &format!("eni-{node}")),
        )
        .await
        .expect("attachment");
    }
}

async fn create_secret(admin: &Client, ns: &str, ca: &str) {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": SECRET, "namespace": ns},
        "stringData": {"username": "flux", "password": "s3cret", "ca.crt": ca},
    }))
    .expect("secret");
    Api::<Secret>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create secret");
}

/// Polls until `f` holds, returning how long it took; panics naming `what` after `secs`.
async fn within<F, Fut>(what: &str, secs: u64, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t = Instant::now();
    eventually(what, Duration::from_secs(secs), || {
        let fut = f();
        async move { fut.await.then_some(()) }
    })
    .await;
    t.elapsed()
}

/// Asserts that `f` stays false for `secs`, polling.
async fn stays_false<F, Fut>(what: &str, secs: u64, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<String>>,
{
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(secs) {
        if let Some(why) = f().await {
            panic!("{what} after {:?}: {why}", t.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flux_applies_the_seed_and_we_configure_the_nodes_beside_it() {
    let cp = audited();
    let admin = cp.client().await.expect("client");
    let flux = cp.start_flux().await.expect("Flux starts");
    let stop = CancellationToken::new();

    // The repository, served over https with a private CA and basic auth.
    let root = tempfile::tempdir().expect("root");
    let repo = WorkRepo::init(&root.path().join("dpdk-config")).expect("repo");
    repo.write(CONFIG_FILE, fixtures::SEED_DPDKCONFIG)
        .expect("seed");
    repo.commit("the seed's DPDKConfig").expect("commit");
    let server = HttpsGitServer::start(
        root.path(),
        HttpAuth::Basic {
            username: "flux".into(),
            password: "s3cret".into(),
        },
    )
    .await
    .expect("https git server");
    let url = server.url("dpdk-config");
    create_nodes(&admin).await;

    // Our side: the ReportOnly source on the same repository and path, and drift.
    let h = Harness::start_on(
        cp,
        "flux-ro",
        HarnessOptions {
            user: Some(SOURCE_USER.into()),
            ..Default::default()
        },
    )
    .await;
    create_secret(&admin, &h.ns, &server.ca_pem).await;
    h.source("platform-dpdk", json!({"url": url, "ref": {"branch": "main"}, "path": "clusters/production", "mode": "ReportOnly", "interval": "10s", "secretRef": {"name": SECRET}})).await;
    let drift = start_drift(admin.clone(), &h, "platform-dpdk", stop.clone()).await;
    h.wait_status("platform-dpdk", 60, |s| s.last_fetched_revision.is_some())
        .await;

    // Flux: the shipped GitRepository and Kustomization. Our controller is not running yet.
    create_secret(&admin, FLUX_NAMESPACE, &server.ca_pem).await;
    apply_dynamic(
        &admin,
        &gitrepository_ar(),
        &flux_object("gitrepository.yaml", &url),
    )
    .await;
    apply_dynamic(
        &admin,
        &kustomization_ar(),
        &flux_object("kustomization.yaml", &url),
    )
    .await;
    let applied = within("Flux applies the seed's DPDKConfig", 90, || async {
        get_config(&admin, CONFIG).await.is_some()
    })
    .await;
    eprintln!("[flux] Flux applied the DPDKConfig {applied:?} after the Kustomization was created");
    let cfg = get_config(&admin, CONFIG).await.expect("config");
    assert_eq!(
        cfg.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(labels::FLUX_KUSTOMIZE_NAME_LABEL))
            .map(String::as_str),
        Some("dpdk-config")
    );
    assert!(
        !owned_fields(&cfg.metadata, KUSTOMIZE_MANAGER).is_empty(),
        "kustomize-controller owns the spec by server-side apply"
    );

    // Order 1: Flux applied and our controller has not written a status. kstatus alone
    // calls such an object Current; the shipped Kustomization must not go Ready.
    stays_false(
        "the Kustomization went Ready while the DPDKConfig had no status",
        15,
        || async {
            kustomization_ready(&admin)
                .await
                .filter(|r| r.0 == "True")
                .map(|r| format!("{r:?}"))
        },
    )
    .await;

    // Our controller drives labels, NodeENIs and DPDKNodeStates; the agents hold back.
    let agents_on = Arc::new(AtomicBool::new(false));
    spawn_agents(admin.clone(), agents_on.clone(), stop.clone());
    let mut opts = test_options("flux");
    opts.config_selector = Some(format!("{}=dpdk-config", labels::FLUX_KUSTOMIZE_NAME_LABEL));
    let ctrl = start(client_as(cp, CONTROLLER_USER).await, opts);
    for node in NODES {
        within(
            &format!("{node} labelled and its DPDKNodeState written"),
            60,
            || async {
                node_label(&admin, node).await.as_deref() == Some("true")
                    && get_state(&admin, node)
                        .await
                        .is_some_and(|s| s.spec.devices.len() == 1)
            },
        )
        .await;
    }
    let eni = get_eni(&admin, "flux-eni").await;
    assert_eq!(
        eni.spec.dpdk_resource_name.as_deref(),
        Some("intel.com/intel_sriov_netdevice_2")
    );
    // Order 2: the DPDKConfig is Progressing (agents not reported): still not Ready.
    stays_false(
        "the Kustomization went Ready while the DPDKConfig was Progressing",
        10,
        || async {
            let c = get_config(&admin, CONFIG).await?;
            let k = kustomization_ready(&admin).await?;
            (k.0 == "True").then(|| format!("{k:?} / config {:?}", ready(&c)))
        },
    )
    .await;
    agents_on.store(true, Ordering::SeqCst);
    let c = wait_status(&admin, CONFIG, "DPDKConfig Ready", |s| s.ready_nodes == 2).await;
    let config_ready_at = dpdk_bridge::conditions::find(
        &c.status.as_ref().expect("status").conditions,
        dpdk_bridge::conditions::READY,
    )
    .map(|r| r.last_transition_time.0.to_string())
    .expect("Ready condition");
    let took = within("the Kustomization goes Ready", 60, || async {
        kustomization_ready(&admin)
            .await
            .is_some_and(|k| k.0 == "True")
    })
    .await;
    let k = kustomization_ready(&admin).await.expect("ready");
    eprintln!(
        "[flux] Kustomization Ready {took:?} after the DPDKConfig ({config_ready_at} / {})",
        k.3
    );
    assert!(
        k.3 >= config_ready_at,
        "the Kustomization turned Ready ({}) before the DPDKConfig ({config_ready_at})",
        k.3
    );

    // The documented ignoreDifferences names exactly the manager of our NodeENI fields.
    let snippet = documented_ignore_differences();
    let rule = &snippet["spec"]["ignoreDifferences"][0];
    assert_eq!(
        (rule["group"].as_str(), rule["kind"].as_str()),
        (Some("networking.k8s.aws"), Some("NodeENI"))
    );
    assert_eq!(rule["managedFieldsManagers"], json!([CONTROLLER_MANAGER]));
    let eni: NodeENI = get_eni(&admin, "flux-eni").await;
    let ours = owned_fields(&eni.metadata, CONTROLLER_MANAGER);
    assert_eq!(
        ours,
        vec![
            "f:spec.f:dpdkDriver",
            "f:spec.f:dpdkResourceName",
            "f:spec.f:enableDPDK"
        ],
        "the fields ignoring {CONTROLLER_MANAGER} leaves out of the diff"
    );

    // No write fight: a window after convergence, Flux at a 5 s interval.
    let flux_kustomize = flux_user(KUSTOMIZE_MANAGER);
    let count = |user: &str, resource: &str| writes(cp, user, resource).len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = (
        count(&flux_kustomize, "dpdkconfigs"),
        count(CONTROLLER_USER, "dpdkconfigs"),
        count(CONTROLLER_USER, "dpdknodestates"),
        count(CONTROLLER_USER, "nodeenis"),
        count(CONTROLLER_USER, "nodes"),
    );
    tokio::time::sleep(WINDOW).await;
    let flux_w: Vec<AuditWrite> = writes(cp, &flux_kustomize, "dpdkconfigs")[before.0..].to_vec();
    let ours_w: Vec<AuditWrite> = writes(cp, CONTROLLER_USER, "dpdkconfigs")[before.1..].to_vec();
    let states_w = count(CONTROLLER_USER, "dpdknodestates") - before.2;
    let enis_w = count(CONTROLLER_USER, "nodeenis") - before.3;
    let nodes_w = count(CONTROLLER_USER, "nodes") - before.4;
    eprintln!(
        "[flux] window {WINDOW:?}: kustomize-controller {} DPDKConfig writes ({} dry runs, {} real); ours: {} DPDKConfig ({} status), {states_w} DPDKNodeState, {enis_w} NodeENI, {nodes_w} Node",
        flux_w.len(),
        flux_w.len() - real(&flux_w).len(),
        real(&flux_w).len(),
        ours_w.len(),
        ours_w.iter().filter(|w| w.subresource == "status").count(),
    );
    assert!(
        real(&flux_w).is_empty(),
        "Flux wrote the DPDKConfig: {:#?}",
        real(&flux_w)
    );
    assert!(ours_w.is_empty(), "we wrote the DPDKConfig: {ours_w:#?}");
    assert_eq!((states_w, enis_w, nodes_w), (0, 0, 0));

    // Drift: a kubectl edit of a declared field is reported with its Git file and line…
    let line = fixtures::SEED_DPDKCONFIG
        .lines()
        .position(|l| l.trim_start().starts_with("enableUnsafeNoIOMMU:"))
        .expect("the seed declares enableUnsafeNoIOMMU")
        + 1;
    within("an empty drift report before the edit", 60, || async {
        config_findings(drift).await.is_some_and(|f| f.is_empty())
    })
    .await;
    let states_before = writes(cp, CONTROLLER_USER, "dpdknodestates");
    kubectl_edit(
        cp,
        "s/enableUnsafeNoIOMMU: true/enableUnsafeNoIOMMU: false/",
    );
    let edited = Instant::now();
    let reported = within("the edit in /drift with file and line", 30, || async {
        config_findings(drift).await.is_some_and(|f| {
            f.iter().any(|f| {
                f["file"] == CONFIG_FILE
                    && f["line"] == line
                    && f["fieldPath"]
                        .as_str()
                        .is_some_and(|p| p.ends_with("enableUnsafeNoIOMMU"))
                    && f["live"] == false
                    && f["ownedBy"] == "flux"
            })
        })
    })
    .await;
    // …reverted by Flux at its next interval, after which the report empties.
    within("Flux reverts the edit", 30, || async {
        get_config(&admin, CONFIG)
            .await
            .is_some_and(|c| c.spec.driver_options.enable_unsafe_no_iommu)
    })
    .await;
    let reverted = edited.elapsed();
    within("an empty drift report after the revert", 30, || async {
        config_findings(drift).await.is_some_and(|f| f.is_empty())
    })
    .await;
    let emptied = edited.elapsed();
    let flux_after = writes(cp, &flux_kustomize, "dpdkconfigs")[before.0 + flux_w.len()..].to_vec();
    let flux_reverts = real(&flux_after).len();
    eprintln!(
        "[flux] Flux writes after the edit: {:#?}",
        real(&flux_after)
    );
    let state_writes: Vec<AuditWrite> = writes(cp, CONTROLLER_USER, "dpdknodestates")
        [states_before.len()..]
        .iter()
        .filter(|w| w.subresource.is_empty())
        .cloned()
        .collect();
    eprintln!(
        "[flux] drift: reported {reported:?}, reverted {reverted:?}, report empty {emptied:?} after the edit; {flux_reverts} Flux write(s); {} DPDKNodeState spec write(s) by us",
        state_writes.len()
    );
    assert!(flux_reverts >= 1, "Flux reverted by an apply");
    for node in NODES {
        let s = get_state(&admin, node).await.expect("state");
        assert_eq!(s.spec.devices.len(), 1, "no teardown of {node}");
    }
    // Open finding (docs/coexistence.md): our controller follows the live object, so the
    // edit and Flux's revert each rewrite a node's driverOptions (staged: the rollout's
    // marks cost one more apply per node when it finishes); no device changes.
    assert!(
        state_writes.len() <= 3 * NODES.len(),
        "DPDKNodeState spec writes between the edit and Flux's revert: {state_writes:#?}"
    );

    // Flux prunes the DPDKConfig: our finalizer's two-phase teardown runs, it goes away.
    repo.remove(CONFIG_FILE).expect("remove");
    repo.write("clusters/production/README.md", "no DPDK here any more\n")
        .expect("placeholder");
    let sha = repo.commit("remove the DPDKConfig").expect("commit");
    let removed = Instant::now();
    within("Flux deletes the DPDKConfig", 60, || async {
        get_config(&admin, CONFIG)
            .await
            .is_none_or(|c| c.metadata.deletion_timestamp.is_some())
    })
    .await;
    let deleting = removed.elapsed();
    within(
        "teardown finishes and the DPDKConfig goes away",
        90,
        || async { get_config(&admin, CONFIG).await.is_none() },
    )
    .await;
    let gone = removed.elapsed();
    for node in NODES {
        assert_eq!(node_label(&admin, node).await, None, "{node} unlabelled");
        assert!(
            get_state(&admin, node)
                .await
                .is_none_or(|s| s.spec.devices.is_empty())
        );
    }
    let eni = get_eni(&admin, "flux-eni").await;
    assert_ne!(eni.spec.enable_dpdk, Some(true), "NodeENI released");
    within(
        "the Kustomization ends Ready at the new revision",
        90,
        || async {
            kustomization_ready(&admin)
                .await
                .is_some_and(|k| k.0 == "True")
                && kustomization_applied(&admin).await.ends_with(&sha)
        },
    )
    .await;
    let ks_ready = removed.elapsed();
    eprintln!(
        "[flux] prune: deletion {deleting:?}, object gone {gone:?}, Kustomization Ready {ks_ready:?} after the commit"
    );

    // Our ReportOnly source never wrote a DPDKConfig.
    assert!(writes(cp, SOURCE_USER, "dpdkconfigs").is_empty());

    stop.cancel();
    ctrl.stop().await;
    flux.stop();
}
