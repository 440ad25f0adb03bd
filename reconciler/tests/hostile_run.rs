//! `dpdk-reconciler run` (the real binary, its shipped limits, source controller and DPDK
//! controller in one process) against a DPDKConfigSource on the real API server, fetching
//! each hostile repository of issue 12 over HTTPS (`git http-backend` on loopback). For
//! each: a clear error in the source's status naming the limit's flag, nothing applied,
//! nothing pruned, the last good revision still applied, and the process's peak RSS
//! (VmHWM) at or under 64 MiB. A 2 GB blob outside spec.path is not read: that revision
//! applies. Figures are printed for BENCHMARKS.md (`-- --nocapture`).

mod hostile_support;
mod source_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dpdk_bridge::api::{DPDKConfigSource, DPDKConfigSourceStatus};
use dpdk_bridge::conditions;
use dpdk_testenv::git_server::{HttpAuth, HttpsGitServer, WorkRepo};
use dpdk_testenv::unique_name;
use hostile_support::Hostile;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use serde_json::json;
use source_support::config_yaml;

const RSS_TARGET_KIB: u64 = 64 * 1024;

/// What the source decides of each object: its spec (generation) and the revision that
/// applied it. (Not the resourceVersion: the DPDK controller in the same process writes
/// status.)
async fn applied_state(
    client: &Client,
    names: &[String],
) -> Vec<(
    String,
    Option<(Option<i64>, serde_json::Value, Option<String>)>,
)> {
    let api: Api<dpdk_bridge::api::DPDKConfig> = Api::all(client.clone());
    let mut out = Vec::new();
    for n in names {
        let o = api.get_opt(n).await.expect("get");
        out.push((
            n.clone(),
            o.map(|o| {
                let rev = o
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(dpdk_bridge::labels::REVISION_ANNOTATION).cloned());
                (
                    o.metadata.generation,
                    serde_json::to_value(o.spec).expect("spec"),
                    rev,
                )
            }),
        ));
    }
    out
}

fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

async fn wait(
    api: &Api<DPDKConfigSource>,
    name: &str,
    secs: u64,
    f: impl Fn(&DPDKConfigSourceStatus) -> bool,
) -> DPDKConfigSourceStatus {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let st = api
            .get(name)
            .await
            .expect("get source")
            .status
            .unwrap_or_default();
        if f(&st) {
            return st;
        }
        assert!(Instant::now() < deadline, "{name}: last status {st:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn namespace(client: &Client, prefix: &str) -> String {
    let ns = unique_name(prefix);
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(ns.clone()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .expect("namespace");
    ns
}

async fn run_case(case: Hostile) {
    let cp = dpdk_testenv::shared();
    let client = cp.client().await.expect("client");
    let ns = namespace(&client, &format!("hostile-{}", case.label())).await;

    // The repository: a good revision of two DPDKConfigs under prod/.
    let root = tempfile::tempdir().expect("root");
    let repo = WorkRepo::init(&root.path().join("configs")).expect("repo");
    let a = unique_name(&format!("{}-a", case.label()));
    let b = unique_name(&format!("{}-b", case.label()));
    repo.write(&format!("prod/{a}.yaml"), &config_yaml(&a, 1))
        .expect("write");
    repo.write(&format!("prod/{b}.yaml"), &config_yaml(&b, 2))
        .expect("write");
    let good = repo.commit("good").expect("commit");
    let server = HttpsGitServer::start(
        root.path(),
        HttpAuth::Basic {
            username: "deploy".into(),
            password: "s3cret".into(),
        },
    )
    .await
    .expect("https server");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    secrets
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    name: Some("creds".into()),
                    ..Default::default()
                },
                data: Some(
                    [
                        ("username", b"deploy".to_vec()),
                        ("password", b"s3cret".to_vec()),
                        ("ca.crt", server.ca_pem.clone().into_bytes()),
                    ]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v)))
                    .collect(),
                ),
                ..Default::default()
            },
        )
        .await
        .expect("secret");

    // The real binary with its shipped limits (no limit flag given).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let cache = tempfile::tempdir().expect("cache");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dpdk-reconciler"));
    cmd.args([
        "run",
        "--http-addr",
        &format!("127.0.0.1:{port}"),
        "--no-leader-election",
        "--log-format=json",
        "--source-namespace",
        &ns,
    ])
    .arg("--source-cache-dir")
    .arg(cache.path())
    .env("KUBECONFIG", cp.kubeconfig_path())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let run = dpdk_testenv::Reaper::spawn(cmd, Duration::ZERO).expect("run starts");
    let pid = run.id();

    let sources: Api<DPDKConfigSource> = Api::namespaced(client.clone(), &ns);
    let src = unique_name("hostile");
    sources
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "networking.k8s.aws/v1alpha1", "kind": "DPDKConfigSource",
                "metadata": {"name": src, "namespace": ns},
                "spec": {"url": server.url("configs"), "ref": {"branch": "main"}, "path": "prod",
                         "interval": "1h", "secretRef": {"name": "creds"}}
            }))
            .expect("json"),
        )
        .await
        .expect("create source");
    let applied = |sha: String| {
        move |s: &DPDKConfigSourceStatus| {
            s.last_applied_revision
                .as_deref()
                .is_some_and(|r| r.ends_with(&sha))
        }
    };
    wait(&sources, &src, 90, applied(good.clone())).await;
    let names = vec![a.clone(), b.clone()];
    let before = applied_state(&client, &names).await;

    // The hostile revision also changes a and removes b: neither may happen.
    let made = Instant::now();
    repo.write(&format!("prod/{a}.yaml"), &config_yaml(&a, 7))
        .expect("write");
    repo.remove(&format!("prod/{b}.yaml")).expect("rm");
    case.write(&repo.dir, "prod");
    let bad = repo.commit("hostile").expect("commit");
    let commit_secs = made.elapsed().as_secs_f64();
    // Fetch now (the interval is 1h): a spec change makes the source due.
    let started = Instant::now();
    sources
        .patch(
            &src,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"interval": "59m"}})),
        )
        .await
        .expect("patch");
    let want = case.expected("prod");
    let st = if want.is_empty() {
        wait(&sources, &src, 180, applied(bad.clone())).await
    } else {
        wait(&sources, &src, 180, |s| {
            s.last_attempted_revision
                .as_deref()
                .is_some_and(|r| r.ends_with(&bad))
        })
        .await
    };
    let secs = started.elapsed().as_secs_f64();
    let hwm = vm_hwm_kib(pid);
    println!(
        "hostile run {:<13} peak RSS {:.1} MiB, fetch+load+status {:.2} s (commit {:.1} s)",
        case.label(),
        hwm as f64 / 1024.0,
        secs,
        commit_secs
    );
    if want.is_empty() {
        assert!(conditions::is_ready(&st.conditions), "{st:#?}");
    } else {
        let c = conditions::find(&st.conditions, "Stalled")
            .unwrap_or_else(|| panic!("{}: not Stalled: {st:#?}", case.label()));
        assert_eq!(
            c.reason,
            "ValidationFailed",
            "{}: {}",
            case.label(),
            c.message
        );
        assert!(
            c.message.contains(&bad),
            "{}: names the revision: {}",
            case.label(),
            c.message
        );
        for w in &want {
            assert!(
                c.message.contains(w.as_str()),
                "{}: {:?} lacks {w:?}",
                case.label(),
                c.message
            );
        }
        assert_eq!(
            st.last_applied_revision,
            Some(format!("main@sha1:{good}")),
            "{}: the last good revision stays applied",
            case.label()
        );
        assert_eq!(st.inventory.len(), 2, "{}: nothing pruned", case.label());
        assert_eq!(
            applied_state(&client, &names).await,
            before,
            "{}: nothing applied, nothing pruned",
            case.label()
        );
    }
    assert!(
        hwm <= RSS_TARGET_KIB,
        "{}: peak RSS {hwm} KiB over 64 MiB",
        case.label()
    );
}

#[tokio::test]
async fn alias_bomb() {
    run_case(Hostile::AliasBomb).await;
}

#[tokio::test]
async fn a_2gb_blob_inside_the_path() {
    run_case(Hostile::BigBlobInside).await;
}

#[tokio::test]
async fn a_2gb_blob_outside_the_path_is_not_read() {
    run_case(Hostile::BigBlobOutside).await;
}

#[tokio::test]
async fn a_hundred_thousand_files() {
    run_case(Hostile::ManyFiles).await;
}

#[tokio::test]
async fn nesting_10000_deep() {
    run_case(Hostile::DeepNesting).await;
}

#[tokio::test]
async fn symlink_loops() {
    run_case(Hostile::SymlinkLoop).await;
}
