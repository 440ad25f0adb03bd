//! Shared by the drift tests on the real API server: a config repository served over
//! file:// (a bare repo plus a work clone), a DPDKConfigSource in the test's own namespace,
//! the real source controller, the drift runtime scoped to the test's objects (by name
//! prefix and source), and the reconciler's HTTP server with the drift routes merged.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use dpdk_bridge::api::{DPDKConfigSource, IgnoreRule};
use dpdk_reconciler::drift::SourceKey;
use dpdk_reconciler::drift::runtime::{DriftOptions, DriftState};
use dpdk_reconciler::server::{AppState, Probes};
use dpdk_reconciler::source::{SourceController, SourceOptions};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// Name of the DPDKConfigSource every test creates in its namespace.
pub const SOURCE_NAME: &str = "config-repo";

pub struct World {
    pub client: Client,
    /// The test's namespace; also the prefix of every cluster-scoped name it creates.
    pub ns: String,
    /// `<ns>-`: DPDKConfig, Node, NodeENI and DPDKNodeState names start with it.
    pub prefix: String,
    /// The source's spec.path: `clusters/<ns>`.
    pub path: String,
    /// The bare repository the source fetches (file://).
    pub remote: PathBuf,
    /// A clone to edit, commit and push from.
    pub work: PathBuf,
    pub addr: SocketAddr,
    pub drift: DriftState,
    stop: CancellationToken,
    _dirs: tempfile::TempDir,
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.email=drift@example.com",
            "-c",
            "user.name=drift-test",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn kubectl_status(_w: &World, args: &[&str]) -> (bool, String, String) {
    let out = dpdk_testenv::shared()
        .kubectl()
        .args(args)
        .output()
        .expect("kubectl runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn kubectl(w: &World, args: &[&str]) -> String {
    let (ok, out, err) = kubectl_status(w, args);
    assert!(ok, "kubectl {args:?}: {out}{err}");
    out
}

pub fn kubectl_stdin(_w: &World, args: &[&str], stdin: &str) -> String {
    use std::io::Write;
    let mut child = dpdk_testenv::shared()
        .kubectl()
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("kubectl finishes");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl World {
    /// Creates the namespace, the repository with `files(prefix)` under `clusters/<ns>/`,
    /// the source (with `ignore` as spec.ignoreDifferences), and starts the source
    /// controller, the drift runtime and the HTTP server.
    pub async fn start(
        base: &str,
        files: impl Fn(&str) -> Vec<(String, String)>,
        ignore: Vec<IgnoreRule>,
    ) -> World {
        let cp = dpdk_testenv::shared();
        let client = cp.client().await.expect("client");
        let ns = dpdk_testenv::unique_name(base);
        let prefix = format!("{ns}-");
        let path = format!("clusters/{ns}");
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
            .expect("create namespace");

        let dirs = tempfile::tempdir().expect("tempdir");
        let remote = dirs.path().join("remote.git");
        let work = dirs.path().join("work");
        std::fs::create_dir_all(&remote).expect("mkdir");
        git(&remote, &["init", "-q", "--bare", "-b", "main"]);
        git(
            dirs.path(),
            &["clone", "-q", remote.to_str().expect("utf8"), "work"],
        );
        std::fs::create_dir_all(work.join(&path)).expect("mkdir");
        for (name, text) in files(&prefix) {
            std::fs::write(work.join(&path).join(name), text).expect("write");
        }
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", "initial configs"]);
        git(&work, &["push", "-q", "origin", "HEAD:main"]);
        git(&work, &["branch", "-q", "--set-upstream-to=origin/main"]);

        let src: DPDKConfigSource = serde_json::from_value(json!({
            "apiVersion": "networking.k8s.aws/v1alpha1",
            "kind": "DPDKConfigSource",
            "metadata": {"name": SOURCE_NAME, "namespace": ns},
            // A long interval: only pushes (file:// ref changes) trigger fetches, so a live
            // edit stays until the test pushes.
            "spec": {"url": format!("file://{}", remote.display()), "ref": {"branch": "main"}, "path": path, "interval": "1h", "ignoreDifferences": ignore},
        }))
        .expect("source json");
        Api::<DPDKConfigSource>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &src)
            .await
            .expect("create source");

        let stop = CancellationToken::new();
        let mut registry = prometheus_client::registry::Registry::default();
        let opts = SourceOptions {
            namespace: Some(ns.clone()),
            allow_file_urls: true,
            cache_dir: dirs.path().join("cache"),
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(2),
            ..Default::default()
        };
        let sources = SourceController::new(client.clone(), opts, &mut registry);
        let store = sources.store();
        let drift = DriftState::new();
        drift.metrics.register(&mut registry);
        tokio::spawn(sources.run(stop.clone().cancelled_owned()));
        let drift_opts = DriftOptions {
            name_prefix: Some(prefix.clone()),
            sources: Some(vec![SourceKey::new(&ns, SOURCE_NAME)]),
            debounce: Duration::from_millis(50),
        };
        tokio::spawn(dpdk_reconciler::drift::runtime::run(
            client.clone(),
            Arc::new(store),
            drift_opts,
            drift.clone(),
            stop.clone(),
        ));

        let app = dpdk_reconciler::server::router(
            AppState {
                registry: Arc::new(registry),
                health: Probes::new(),
            },
            vec![dpdk_reconciler::drift::http::routes(drift.clone())],
        );
        let listener = dpdk_reconciler::server::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(dpdk_reconciler::server::serve(listener, app, stop.clone()));

        World {
            client,
            ns,
            prefix,
            path,
            remote,
            work,
            addr,
            drift,
            stop,
            _dirs: dirs,
        }
    }

    pub fn source_param(&self) -> String {
        format!("{}%2F{SOURCE_NAME}", self.ns)
    }

    /// `main@sha1:<sha>` of the work clone's HEAD.
    pub fn head_revision(&self) -> String {
        format!(
            "main@sha1:{}",
            git(&self.work, &["rev-parse", "HEAD"]).trim()
        )
    }

    /// GET on the reconciler's HTTP server: status, headers (lower-case names), body.
    pub async fn get(&self, path: &str) -> (u16, BTreeMap<String, String>, String) {
        let mut s = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("connect");
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("send");
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.expect("read");
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        (status, headers, body.to_string())
    }

    /// The `/drift` report (None while it is not computed yet).
    pub async fn report(&self) -> Option<Value> {
        let (status, _, body) = self.get("/drift").await;
        (status == 200).then(|| serde_json::from_str(&body).expect("/drift is JSON"))
    }

    /// Polls `/drift` until `pred` holds; panics with the last report after 60 s.
    pub async fn wait_report(&self, pred: impl Fn(&Value) -> bool, what: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let r = self.report().await;
            if let Some(r) = &r
                && pred(r)
            {
                return r.clone();
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "{what}: not within 60s; last /drift: {}",
                    r.map(|r| serde_json::to_string_pretty(&r).unwrap_or_default())
                        .unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the source applied `rev` and the report, computed at that revision, is
    /// empty.
    pub async fn wait_revision_and_clean(&self, rev: &str) -> Value {
        self.wait_report(
            |r| r["sources"][0]["revision"] == rev && r["summary"]["total"] == 0,
            &format!("an empty report at {rev}"),
        )
        .await
    }

    /// Waits for the initial revision to be applied with no drift; returns the revision.
    pub async fn wait_applied_and_clean(&self) -> String {
        let rev = self.head_revision();
        self.wait_revision_and_clean(&rev).await;
        rev
    }

    pub async fn stop(self) {
        self.stop.cancel();
        // Best effort: leave no objects behind for other tests' listings.
        let label = format!("dpdk.aws.k8s/source={}.{SOURCE_NAME}", self.ns);
        let _ = dpdk_testenv::shared()
            .kubectl()
            .args(["delete", "dpdkconfig", "-l", &label, "--wait=false"])
            .output();
    }
}
