//! `dpdk-reconciler run` runs the Git source too: the binary applies a file:// source and
//! serves its webhook receiver on a listener of its own (`--webhook-addr`), not on the
//! HTTP port of /metrics and /drift*.

mod source_support;

use std::process::{Command, Stdio};
use std::time::Duration;

use dpdk_testenv::git_server::WorkRepo;
use dpdk_testenv::unique_name;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use serde_json::json;
use source_support::{config_yaml, github_signature, post};

#[tokio::test]
async fn the_run_binary_applies_sources_and_serves_their_webhooks() {
    let cp = dpdk_testenv::shared();
    let client = cp.client().await.expect("client");
    let ns = unique_name("src-run");
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
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let hook_port = std::net::TcpListener::bind("127.0.0.1:0")
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
        "--webhook-addr",
        &format!("127.0.0.1:{hook_port}"),
        "--no-leader-election",
        "--allow-file-urls",
        "--source-namespace",
        &ns,
    ])
    .arg("--source-cache-dir")
    .arg(cache.path())
    .env("KUBECONFIG", cp.kubeconfig_path())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let _run = dpdk_testenv::Reaper::spawn(cmd, std::time::Duration::ZERO).expect("run starts");

    let repo = WorkRepo::new().expect("repo");
    let name = unique_name("run-cfg");
    repo.write(&format!("{name}.yaml"), &config_yaml(&name, 2))
        .expect("write");
    let sha = repo.commit("first").expect("commit");
    let src = unique_name("run");
    let sources: Api<dpdk_bridge::api::DPDKConfigSource> = Api::namespaced(client.clone(), &ns);
    let obj = serde_json::from_value(json!({
        "apiVersion": "networking.k8s.aws/v1alpha1", "kind": "DPDKConfigSource",
        "metadata": {"name": src, "namespace": ns},
        "spec": {"url": repo.file_url(), "ref": {"branch": "main"}, "interval": "1h"}
    }))
    .expect("json");
    sources
        .create(&PostParams::default(), &obj)
        .await
        .expect("create source");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let st = sources
            .get(&src)
            .await
            .expect("get")
            .status
            .unwrap_or_default();
        if st
            .last_applied_revision
            .as_deref()
            .is_some_and(|r| r.ends_with(&sha))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not applied by `run`: {st:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let configs: Api<dpdk_bridge::api::DPDKConfig> = Api::all(client.clone());
    assert!(configs.get_opt(&name).await.expect("get").is_some());

    // The webhook receiver has its own listener: a forged signature gets 401 there, and
    // the HTTP port of /metrics and /drift* does not serve /hook at all.
    let addr: std::net::SocketAddr = format!("127.0.0.1:{hook_port}").parse().expect("addr");
    let body = b"{}";
    let code = post(
        addr,
        &format!("/hook/{ns}/{src}"),
        &[("X-Hub-Signature-256", github_signature(b"forged", body))],
        body,
    )
    .await;
    assert_eq!(code, 401);
    let http: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let code = post(
        http,
        &format!("/hook/{ns}/{src}"),
        &[("X-Hub-Signature-256", github_signature(b"forged", body))],
        body,
    )
    .await;
    assert_eq!(code, 404, "/hook is not on the HTTP port");
}
