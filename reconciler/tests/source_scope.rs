//! How far a source reaches: the shipped Deployment watches DPDKConfigSources in
//! `dpdk-operator` only; `file://` URLs are refused unless `--allow-file-urls`; only the
//! leader of the Lease fetches, applies, prunes and writes status; `spec.interval` has a
//! minimum. On the real API server, with the real `dpdk-reconciler run` binary where the
//! flags matter.

mod source_support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use dpdk_bridge::api::{DPDKConfig, DPDKConfigSource};
use dpdk_bridge::conditions;
use dpdk_testenv::git_server::{HttpAuth, HttpsGitServer, WorkRepo};
use dpdk_testenv::{Reaper, unique_name};
use k8s_openapi::ByteString;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use serde_json::json;
use source_support::{Harness, config_yaml};

const OPERATOR_NS: &str = "dpdk-operator";

/// The args of the `controller` container of `deploy/dpdk-controller.yaml`.
fn shipped_args() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/dpdk-controller.yaml");
    let text = std::fs::read_to_string(&path).expect("deploy/dpdk-controller.yaml");
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v: serde_json::Value = serde::Deserialize::deserialize(doc).expect("yaml");
        if v["kind"] == "Deployment" {
            let args = &v["spec"]["template"]["spec"]["containers"][0]["args"];
            return serde_json::from_value(args.clone()).expect("args");
        }
    }
    panic!("no Deployment in {}", path.display());
}

async fn ensure_namespace(client: &Client, ns: &str) {
    let r = Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(ns.into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await;
    match r {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("namespace {ns}: {e}"),
    }
}

async fn create_secret(client: &Client, ns: &str, name: &str, data: &[(&str, &[u8])]) {
    let data = data
        .iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
        .collect();
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    ..Default::default()
                },
                data: Some(data),
                ..Default::default()
            },
        )
        .await
        .expect("create secret");
}

async fn create_source(client: &Client, ns: &str, name: &str, spec: serde_json::Value) {
    let src: DPDKConfigSource = serde_json::from_value(json!({
        "apiVersion": "networking.k8s.aws/v1alpha1", "kind": "DPDKConfigSource",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }))
    .expect("source json");
    Api::<DPDKConfigSource>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &src)
        .await
        .expect("create source");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

/// `dpdk-reconciler run` with `args`, against the shared control plane.
fn run_reconciler(args: &[String], grace: Duration) -> Reaper {
    let cp = dpdk_testenv::shared();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dpdk-reconciler"));
    cmd.args(args)
        .env("KUBECONFIG", cp.kubeconfig_path())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    Reaper::spawn(cmd, grace).expect("dpdk-reconciler run starts")
}

async fn applied(client: &Client, ns: &str, name: &str, sha: &str) -> bool {
    Api::<DPDKConfigSource>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .expect("get source")
        .status
        .and_then(|s| s.last_applied_revision)
        .is_some_and(|r| r.ends_with(sha))
}

async fn wait_applied(client: &Client, ns: &str, name: &str, sha: &str, secs: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !applied(client, ns, name, sha).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "source {ns}/{name} did not apply {sha} within {secs}s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_source_outside_dpdk_operator_is_ignored_with_the_shipped_flags() {
    let cp = dpdk_testenv::shared();
    let client = cp.client().await.expect("client");
    ensure_namespace(&client, OPERATOR_NS).await;
    let other_ns = unique_name("scope-other");
    ensure_namespace(&client, &other_ns).await;

    // One https repository (the shipped flags do not allow file://) with one config per
    // source.
    let root = tempfile::tempdir().expect("root");
    let repo = WorkRepo::init(&root.path().join("configs")).expect("repo");
    let inside_cfg = unique_name("scope-in");
    let outside_cfg = unique_name("scope-out");
    repo.write(
        &format!("in/{inside_cfg}.yaml"),
        &config_yaml(&inside_cfg, 1),
    )
    .expect("write");
    repo.write(
        &format!("out/{outside_cfg}.yaml"),
        &config_yaml(&outside_cfg, 1),
    )
    .expect("write");
    let sha = repo.commit("two").expect("commit");
    let server = HttpsGitServer::start(
        root.path(),
        HttpAuth::Basic {
            username: "deploy".into(),
            password: "scope-pass".into(),
        },
    )
    .await
    .expect("https server");
    let secret = unique_name("scope-git");
    let data: &[(&str, &[u8])] = &[
        ("username", b"deploy"),
        ("password", b"scope-pass"),
        ("ca.crt", server.ca_pem.as_bytes()),
    ];
    create_secret(&client, OPERATOR_NS, &secret, data).await;
    create_secret(&client, &other_ns, &secret, data).await;

    // The Deployment's args, with only what a test must change: a loopback port, a
    // writable cache, its own Lease (other tests run reconcilers too).
    let port = free_port();
    let cache = tempfile::tempdir().expect("cache");
    let mut args: Vec<String> = shipped_args()
        .into_iter()
        .filter(|a| !a.starts_with("--http-addr"))
        .collect();
    assert!(
        args.iter()
            .any(|a| a == &format!("--source-namespace={OPERATOR_NS}")),
        "the shipped Deployment names its source namespace: {args:?}"
    );
    args.extend([
        format!("--http-addr=127.0.0.1:{port}"),
        format!("--source-cache-dir={}", cache.path().display()),
        format!("--lease-name={}", unique_name("scope-lease")),
    ]);
    let _run = run_reconciler(&args, Duration::ZERO);

    let inside = unique_name("scope-in");
    let outside = unique_name("scope-out");
    for (ns, name, path) in [
        (OPERATOR_NS, &inside, "in"),
        (other_ns.as_str(), &outside, "out"),
    ] {
        create_source(&client, ns, name, json!({"url": server.url("configs"), "ref": {"branch": "main"}, "path": path, "interval": "1h", "secretRef": {"name": secret}})).await;
    }
    // The one in dpdk-operator applies: the binary runs and fetches ...
    wait_applied(&client, OPERATOR_NS, &inside, &sha, 90).await;
    let configs: Api<DPDKConfig> = Api::all(client.clone());
    assert!(configs.get_opt(&inside_cfg).await.expect("get").is_some());
    // ... and a while later the other one is still untouched: no status, nothing applied,
    // nothing fetched.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let st = Api::<DPDKConfigSource>::namespaced(client.clone(), &other_ns)
        .get(&outside)
        .await
        .expect("get")
        .status;
    assert!(st.is_none(), "a source outside dpdk-operator: {st:#?}");
    assert!(configs.get_opt(&outside_cfg).await.expect("get").is_none());
    assert!(!cache.path().join(&other_ns).exists());
    assert!(cache.path().join(OPERATOR_NS).join(&inside).exists());
    let _ = Api::<DPDKConfigSource>::namespaced(client.clone(), OPERATOR_NS)
        .delete(&inside, &Default::default())
        .await;
}

#[tokio::test]
async fn file_urls_are_refused_without_the_flag() {
    let h = Harness::start_with("scope-file", |o| o.allow_file_urls = false).await;
    let repo = WorkRepo::new().expect("repo");
    let name = unique_name("scope-file");
    repo.write(&format!("{name}.yaml"), &config_yaml(&name, 1))
        .expect("write");
    repo.commit("one").expect("commit");
    let src = unique_name("scope-file");
    h.source(
        &src,
        json!({"url": repo.file_url(), "ref": {"branch": "main"}, "interval": "1h"}),
    )
    .await;
    let st = h
        .wait_status(&src, 60, |s| {
            conditions::find(&s.conditions, "Stalled").is_some()
        })
        .await;
    let c = conditions::find(&st.conditions, "Stalled").expect("stalled");
    assert_eq!(c.reason, "InvalidSpec", "{}", c.message);
    assert!(
        c.message.contains("spec.url") && c.message.contains("--allow-file-urls"),
        "the message names the field and the flag: {}",
        c.message
    );
    assert!(h.configs().get_opt(&name).await.expect("get").is_none());
    assert!(
        !h.cache_dir.join(&h.ns).join(&src).exists(),
        "nothing was fetched"
    );
}

#[tokio::test]
async fn an_interval_below_the_minimum_is_refused_with_the_minimum() {
    let h = Harness::start("scope-interval").await;
    let repo = WorkRepo::new().expect("repo");
    let name = unique_name("scope-interval");
    repo.write(&format!("{name}.yaml"), &config_yaml(&name, 1))
        .expect("write");
    repo.commit("one").expect("commit");
    let src = unique_name("scope-interval");
    h.source(
        &src,
        json!({"url": repo.file_url(), "ref": {"branch": "main"}, "interval": "500ms"}),
    )
    .await;
    let st = h
        .wait_status(&src, 60, |s| {
            conditions::find(&s.conditions, "Stalled").is_some()
        })
        .await;
    let c = conditions::find(&st.conditions, "Stalled").expect("stalled");
    assert_eq!(c.reason, "InvalidSpec", "{}", c.message);
    assert!(
        c.message.contains("spec.interval") && c.message.contains("10s"),
        "{}",
        c.message
    );
    assert!(h.configs().get_opt(&name).await.expect("get").is_none());
}

async fn lease_holder(client: &Client, ns: &str, lease: &str) -> Option<String> {
    Api::<Lease>::namespaced(client.clone(), ns)
        .get_opt(lease)
        .await
        .expect("get lease")
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
}

fn metrics(port: u16) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[tokio::test]
async fn with_two_replicas_only_the_leader_writes() {
    let cp = dpdk_testenv::shared();
    let client = cp.client().await.expect("client");
    let ns = unique_name("scope-ha");
    ensure_namespace(&client, &ns).await;
    let lease = unique_name("scope-ha-lease");
    let repo = WorkRepo::new().expect("repo");
    let name = unique_name("scope-ha");
    repo.write(&format!("{name}.yaml"), &config_yaml(&name, 1))
        .expect("write");
    let first = repo.commit("one").expect("commit");

    struct Replica {
        identity: String,
        port: u16,
        cache: tempfile::TempDir,
        run: Option<Reaper>,
    }
    let mut replicas: Vec<Replica> = ["replica-a", "replica-b"]
        .into_iter()
        .map(|identity| {
            let port = free_port();
            let cache = tempfile::tempdir().expect("cache");
            let args: Vec<String> = vec![
                "run".into(),
                "--no-drift".into(),
                format!("--http-addr=127.0.0.1:{port}"),
                format!("--identity={identity}"),
                format!("--leader-election-namespace={ns}"),
                format!("--lease-name={lease}"),
                "--lease-duration=4s".into(),
                "--renew-deadline=3s".into(),
                "--retry-period=500ms".into(),
                format!("--source-namespace={ns}"),
                "--allow-file-urls".into(),
                format!("--source-cache-dir={}", cache.path().display()),
            ];
            Replica {
                identity: identity.into(),
                port,
                cache,
                run: Some(run_reconciler(&args, Duration::from_secs(10))),
            }
        })
        .collect();

    let src = unique_name("scope-ha");
    create_source(
        &client,
        &ns,
        &src,
        json!({"url": repo.file_url(), "ref": {"branch": "main"}, "interval": "1h"}),
    )
    .await;
    wait_applied(&client, &ns, &src, &first, 90).await;
    let holder = lease_holder(&client, &ns, &lease).await.expect("a leader");
    let (leader, follower) = if holder == replicas[0].identity {
        (0, 1)
    } else {
        (1, 0)
    };
    assert_eq!(replicas[leader].identity, holder);
    let fetched_by = |r: &Replica| r.cache.path().join(&ns).join(&src).exists();

    // A second commit: the leader applies it (local commit, at once); the follower never
    // fetched, so it can neither apply nor prune nor write status.
    repo.write(&format!("{name}.yaml"), &config_yaml(&name, 2))
        .expect("write");
    let second = repo.commit("two").expect("commit");
    wait_applied(&client, &ns, &src, &second, 60).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(fetched_by(&replicas[leader]), "the leader fetched");
    assert!(
        !fetched_by(&replicas[follower]),
        "the follower fetched: it is not gated by the Lease"
    );
    let source_label = format!("source=\"{ns}/{src}\"");
    let follower_metrics = metrics(replicas[follower].port);
    assert!(
        follower_metrics.contains("dpdk_controller_leader 0"),
        "the follower serves its metrics and knows it follows: {follower_metrics}"
    );
    assert!(
        !follower_metrics
            .lines()
            .any(|l| l.contains(&source_label) && !l.starts_with('#')),
        "the follower recorded work on the source:\n{follower_metrics}"
    );
    assert!(
        metrics(replicas[leader].port)
            .lines()
            .any(|l| l.starts_with("dpdk_source_apply_results_total") && l.contains(&source_label)),
        "the leader counts its applies"
    );

    // The leader stops (SIGTERM releases the Lease): the follower takes over and applies
    // the next commit.
    drop(replicas[leader].run.take());
    repo.write(&format!("{name}.yaml"), &config_yaml(&name, 3))
        .expect("write");
    let third = repo.commit("three").expect("commit");
    wait_applied(&client, &ns, &src, &third, 60).await;
    assert_eq!(
        lease_holder(&client, &ns, &lease).await.as_deref(),
        Some(replicas[follower].identity.as_str())
    );
    assert!(fetched_by(&replicas[follower]), "the new leader fetched");
    let cfg = Api::<DPDKConfig>::all(client.clone())
        .get(&name)
        .await
        .expect("config");
    assert_eq!(cfg.spec.resource_mapping[0].device_index, 3);
}
