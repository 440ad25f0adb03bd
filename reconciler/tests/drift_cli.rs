//! `dpdk-reconciler diff` on the real API server: the same report as the endpoints, from a
//! local checkout or from the source's repository, with `kubectl diff` exit codes.

mod drift_support;

use std::process::Command;

use drift_support::{World, kubectl};
use serde_json::Value;

/// A test on an HTTP answer (status, body).
type StatusPredicate = Box<dyn Fn(u16, &str) -> bool>;

fn config(prefix: &str) -> String {
    format!(
        "# one pool\napiVersion: networking.k8s.aws/v1alpha1\nkind: DPDKConfig\nmetadata:\n  name: {prefix}one\nspec:\n  nodeSelector:\n    ng: {prefix}one\n  resourceMapping:\n  - deviceIndex: 2\n    resourceName: example.com/one   # the one\n"
    )
}

fn diff(w: &World, args: &[&str]) -> (i32, String, String) {
    let kubeconfig = dpdk_testenv::shared().kubeconfig_path().to_path_buf();
    let out = Command::new(env!("CARGO_BIN_EXE_dpdk-reconciler"))
        .arg("diff")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--name-prefix", &w.prefix])
        .args(args)
        .output()
        .expect("dpdk-reconciler runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The patch body without the comment header (which carries the computation time).
fn body(patch: &str) -> String {
    patch
        .lines()
        .filter(|l| !l.starts_with("# "))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[tokio::test]
async fn diff_matches_the_endpoints_with_kubectl_diff_exit_codes() {
    let w = World::start(
        "drift-cli",
        |p| vec![("one.yaml".into(), config(p))],
        Vec::new(),
    )
    .await;
    let rev = w.wait_applied_and_clean().await;
    let checkout = w.work.to_str().expect("utf8").to_string();

    let (code, out, err) = diff(&w, &["--checkout", &checkout, "--path", &w.path]);
    assert_eq!(
        (code, out.as_str()),
        (0, ""),
        "no drift: exit 0, nothing printed; stderr: {err}"
    );

    let name = format!("{}one", w.prefix);
    kubectl(
        &w,
        &[
            "patch",
            "dpdkconfig",
            &name,
            "--type",
            "json",
            "-p",
            r#"[{"op":"replace","path":"/spec/resourceMapping/0/resourceName","value":"example.com/edited"}]"#,
        ],
    );
    w.wait_report(|r| r["summary"]["total"] == 1, "the edit is visible")
        .await;
    let (_, _, served) = w
        .get(&format!("/drift.patch?source={}", w.source_param()))
        .await;

    let (code, patch, err) = diff(
        &w,
        &[
            "--checkout",
            &checkout,
            "--path",
            &w.path,
            "--format",
            "patch",
        ],
    );
    assert_eq!(code, 1, "drift: exit 1; stderr: {err}");
    assert_eq!(
        body(&patch),
        body(&served),
        "the CLI prints the endpoint's patch"
    );
    assert!(
        patch.contains(&format!("revision {rev}")),
        "the header names the checkout's revision:\n{patch}"
    );
    assert!(
        patch.contains("+    resourceName: example.com/edited   # the one"),
        "{patch}"
    );

    // From the source: its path and its repository at the revision it applied.
    let source = format!("{}/{}", w.ns, drift_support::SOURCE_NAME);
    let (code, json, err) = diff(&w, &["--source", &source, "--format", "json"]);
    assert_eq!(code, 1, "stderr: {err}");
    let v: Value = serde_json::from_str(&json).expect("json");
    assert_eq!(v["summary"]["total"], 1);
    assert_eq!(v["sources"][0]["revision"], rev.as_str());
    assert_eq!(
        v["findings"][0]["fieldPath"],
        "/spec/resourceMapping/0/resourceName"
    );
    let (code, from_source, _) = diff(&w, &["--source", &source, "--format", "patch"]);
    assert_eq!((code, body(&from_source)), (1, body(&served)));
    let (code, human, _) = diff(&w, &["--source", &source]);
    assert_eq!(code, 1);
    assert!(
        human.contains(&format!("--- a/{}/one.yaml", w.path)),
        "{human}"
    );

    // Errors are > 1 and say what is wrong.
    let (code, _, err) = diff(&w, &["--source", "no-slash"]);
    assert_eq!(code, 2);
    assert!(err.contains("--source \"no-slash\""), "{err}");
    let (code, _, err) = diff(&w, &[]);
    assert_eq!(code, 2);
    assert!(err.contains("--checkout"), "{err}");
    let (code, _, err) = diff(&w, &["--format", "yaml", "--checkout", &checkout]);
    assert_eq!(code, 2);
    assert!(err.contains("--format"), "a bad flag names itself: {err}");
    let (code, _, err) = diff(&w, &["--source", &format!("{}/missing", w.ns)]);
    assert_eq!(code, 2);
    assert!(err.contains("missing"), "{err}");
    w.stop().await;
}

/// `dpdk-reconciler run` serves the drift routes next to /metrics, fed by its own Git
/// source and watches.
#[tokio::test]
async fn the_run_binary_serves_drift() {
    use drift_support::git;
    use k8s_openapi::api::core::v1::Namespace;
    use kube::Api;
    use kube::api::{ObjectMeta, PostParams};

    let cp = dpdk_testenv::shared();
    let client = cp.client().await.expect("client");
    let ns = dpdk_testenv::unique_name("drift-run");
    let prefix = format!("{ns}-");
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
    let dirs = tempfile::tempdir().expect("tempdir");
    let remote = dirs.path().join("remote.git");
    std::fs::create_dir_all(&remote).expect("mkdir");
    git(&remote, &["init", "-q", "--bare", "-b", "main"]);
    git(
        dirs.path(),
        &["clone", "-q", remote.to_str().expect("utf8"), "work"],
    );
    let work = dirs.path().join("work");
    std::fs::write(work.join("one.yaml"), config(&prefix)).expect("write");
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "one"]);
    git(&work, &["push", "-q", "origin", "HEAD:main"]);

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dpdk-reconciler"));
    cmd.args([
        "run",
        "--http-addr",
        &format!("127.0.0.1:{port}"),
        "--no-leader-election",
        "--allow-file-urls",
        "--source-namespace",
        &ns,
    ])
    .arg("--source-cache-dir")
    .arg(dirs.path().join("cache"))
    .env("KUBECONFIG", cp.kubeconfig_path())
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null());
    let _run = dpdk_testenv::Reaper::spawn(cmd, std::time::Duration::ZERO).expect("run starts");
    let src: dpdk_bridge::api::DPDKConfigSource = serde_json::from_value(serde_json::json!({
        "apiVersion": "networking.k8s.aws/v1alpha1", "kind": "DPDKConfigSource",
        "metadata": {"name": "repo", "namespace": ns},
        "spec": {"url": format!("file://{}", remote.display()), "ref": {"branch": "main"}, "interval": "1h"}
    }))
    .expect("json");
    Api::<dpdk_bridge::api::DPDKConfigSource>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &src)
        .await
        .expect("create source");

    let get = |path: String| http_get(port, path);
    let name = format!("{prefix}one");
    let wait = |what: &'static str, pred: StatusPredicate, path: String| async move {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(90);
        loop {
            let (status, body) = get(path.clone()).await;
            if pred(status, &body) {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: last answer {status}: {body}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    };
    // Applied and clean: no finding names our object.
    let n = name.clone();
    let configs: Api<dpdk_bridge::api::DPDKConfig> = Api::all(client.clone());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(90);
    while configs.get_opt(&name).await.expect("get").is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} not applied by `run`"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    wait(
        "a report without our object",
        Box::new(move |s, b| s == 200 && !b.contains(&n)),
        "/drift".into(),
    )
    .await;

    let out = dpdk_testenv::shared()
        .kubectl()
        .args(["patch", "dpdkconfig", &name, "--type", "json", "-p", r#"[{"op":"replace","path":"/spec/resourceMapping/0/resourceName","value":"example.com/edited"}]"#])
        .output()
        .expect("kubectl");
    assert!(out.status.success());
    let patch = wait(
        "the edit in /drift.patch",
        Box::new(|s, b| {
            s == 200 && b.contains("+    resourceName: example.com/edited   # the one")
        }),
        format!("/drift.patch?source={ns}/repo"),
    )
    .await;
    assert!(
        patch.contains("--- a/one.yaml\n+++ b/one.yaml\n"),
        "{patch}"
    );
    let (_, metrics) = get("/metrics".into()).await;
    assert!(
        metrics.contains("dpdk_drift_findings{layer=\"git-cluster\",kind=\"modified\"}"),
        "{metrics}"
    );
    let _ = dpdk_testenv::shared()
        .kubectl()
        .args(["delete", "dpdkconfig", &name, "--wait=false"])
        .output();
}

/// `run --no-drift`: no drift runtime, no /drift* routes, no drift metrics; the rest serves.
#[tokio::test]
async fn run_without_drift_serves_no_drift_endpoints() {
    let cp = dpdk_testenv::shared();
    let dirs = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dpdk-reconciler"));
    cmd.args([
        "run",
        "--no-drift",
        "--http-addr",
        &format!("127.0.0.1:{port}"),
        "--no-leader-election",
        "--allow-file-urls",
        "--source-namespace",
        "no-such-namespace",
    ])
    .arg("--source-cache-dir")
    .arg(dirs.path().join("cache"))
    .env("KUBECONFIG", cp.kubeconfig_path())
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null());
    let _run = dpdk_testenv::Reaper::spawn(cmd, std::time::Duration::ZERO).expect("run starts");
    let get = |path: &'static str| http_get(port, path.to_string());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let metrics = loop {
        let (status, body) = get("/metrics").await;
        if status == 200 {
            break body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the HTTP server never came up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert!(
        metrics.contains("dpdk_controller_"),
        "the controller's metrics are served:\n{metrics}"
    );
    assert!(
        !metrics.contains("dpdk_drift_"),
        "no drift metrics without the drift runtime:\n{metrics}"
    );
    for path in ["/drift", "/drift.diff", "/drift.patch"] {
        assert_eq!(get(path).await.0, 404, "{path}");
    }
}

/// One GET on loopback: (status, body); (0, "") while nothing listens.
async fn http_get(port: u16, path: String) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return (0, String::new());
    };
    let _ = s
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (
        status,
        text.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default(),
    )
}
