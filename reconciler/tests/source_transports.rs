//! The three transports against real servers on loopback and the real API server: each
//! fetches, applies by SSA and records the revision. Server identity checks are real:
//! an untrusted CA and an unknown SSH host key fail the fetch.

mod source_support;

use dpdk_bridge::labels;
use dpdk_testenv::git_server::{HttpAuth, HttpsGitServer, SshGitServer, WorkRepo};
use dpdk_testenv::unique_name;
use serde_json::json;
use source_support::{Harness, config_yaml};

fn stalled_reason(st: &dpdk_bridge::api::DPDKConfigSourceStatus) -> Option<(String, String)> {
    dpdk_bridge::conditions::find(&st.conditions, "Stalled")
        .map(|c| (c.reason.clone(), c.message.clone()))
}

#[tokio::test]
async fn https_with_basic_auth_and_a_private_ca() {
    let h = Harness::start("src-https").await;
    let root = tempfile::tempdir().expect("root");
    let repo = WorkRepo::init(&root.path().join("configs")).expect("repo");
    let name = unique_name("https-cfg");
    repo.write(
        &format!("clusters/prod/{name}.yaml"),
        &config_yaml(&name, 2),
    )
    .expect("write");
    let sha = repo.commit("first").expect("commit");
    let server = HttpsGitServer::start(
        root.path(),
        HttpAuth::Basic {
            username: "deploy".into(),
            password: "s3cret".into(),
        },
    )
    .await
    .expect("https server");

    // Without the CA the server is not trusted: the fetch fails, nothing is applied.
    h.secret("no-ca", &[("username", b"deploy"), ("password", b"s3cret")])
        .await;
    let untrusted = unique_name("untrusted");
    h.source(&untrusted, json!({"url": server.url("configs"), "ref": {"branch": "main"}, "path": "clusters/prod", "interval": "1h", "secretRef": {"name": "no-ca"}})).await;
    let st = h
        .wait_status(&untrusted, 60, |s| stalled_reason(s).is_some())
        .await;
    let (reason, msg) = stalled_reason(&st).expect("stalled");
    assert_eq!(reason, "FetchFailed");
    assert!(msg.to_lowercase().contains("certificate"), "{msg}");

    // A wrong password is refused by the server.
    h.secret(
        "wrong",
        &[
            ("username", b"deploy"),
            ("password", b"nope"),
            ("ca.crt", server.ca_pem.as_bytes()),
        ],
    )
    .await;
    let wrong = unique_name("wrong-pass");
    h.source(&wrong, json!({"url": server.url("configs"), "ref": {"branch": "main"}, "path": "clusters/prod", "interval": "1h", "secretRef": {"name": "wrong"}})).await;
    let st = h
        .wait_status(&wrong, 60, |s| stalled_reason(s).is_some())
        .await;
    assert_eq!(stalled_reason(&st).expect("stalled").0, "FetchFailed");
    assert!(
        h.configs().get_opt(&name).await.expect("get").is_none(),
        "nothing applied by failed sources"
    );

    // With ca.crt and the right password it applies.
    h.secret(
        "creds",
        &[
            ("username", b"deploy"),
            ("password", b"s3cret"),
            ("ca.crt", server.ca_pem.as_bytes()),
        ],
    )
    .await;
    let src = unique_name("https");
    h.source(&src, json!({"url": server.url("configs"), "ref": {"branch": "main"}, "path": "clusters/prod", "interval": "1h", "secretRef": {"name": "creds"}})).await;
    let st = h.wait_applied(&src, &sha).await;
    let revision = format!("main@sha1:{sha}");
    assert_eq!(st.last_applied_revision.as_deref(), Some(revision.as_str()));
    assert_eq!(st.last_fetched_revision.as_deref(), Some(revision.as_str()));
    assert!(dpdk_bridge::conditions::is_ready(&st.conditions), "{st:#?}");
    assert_eq!(
        st.inventory
            .iter()
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>(),
        vec![name.as_str()]
    );
    let cfg = h.configs().get(&name).await.expect("applied");
    let l = cfg.metadata.labels.clone().unwrap_or_default();
    let a = cfg.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        l.get(labels::MANAGED_BY_LABEL).map(String::as_str),
        Some("dpdk-reconciler")
    );
    assert_eq!(
        l.get(labels::SOURCE_LABEL),
        Some(&format!("{}.{src}", h.ns))
    );
    assert_eq!(a.get(labels::REVISION_ANNOTATION), Some(&revision));
    assert_eq!(
        a.get(labels::ORIGIN_ANNOTATION),
        Some(&format!("clusters/prod/{name}.yaml"))
    );
    let managers: Vec<String> = cfg
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(
        managers.contains(&"dpdk-reconciler".to_string()),
        "{managers:?}"
    );
    assert_eq!(cfg.spec.resource_mapping[0].device_index, 2);
    assert!(server.requests() > 0);
    // Fetched shallow (depth 1) into the on-disk cache.
    let cached = h.cache_dir.join(&h.ns).join(&src).join("repo.git");
    assert!(
        cached.join("shallow").is_file(),
        "https fetches are shallow: {}",
        cached.display()
    );

    // The next commit is fetched incrementally into the same cache and applied.
    repo.write(
        &format!("clusters/prod/{name}.yaml"),
        &config_yaml(&name, 3),
    )
    .expect("write");
    let sha2 = repo.commit("second").expect("commit");
    h.sources()
        .patch(
            &src,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"interval": "2h"}})),
        )
        .await
        .expect("poke the spec so it fetches now");
    h.wait_applied(&src, &sha2).await;
    assert_eq!(
        h.configs()
            .get(&name)
            .await
            .expect("get")
            .spec
            .resource_mapping[0]
            .device_index,
        3
    );
}

#[tokio::test]
async fn https_with_a_bearer_token() {
    let h = Harness::start("src-bearer").await;
    let root = tempfile::tempdir().expect("root");
    let repo = WorkRepo::init(&root.path().join("configs")).expect("repo");
    let name = unique_name("bearer-cfg");
    repo.write(&format!("{name}.yaml"), &config_yaml(&name, 4))
        .expect("write");
    let sha = repo.commit("first").expect("commit");
    let server = HttpsGitServer::start(root.path(), HttpAuth::Bearer("tok-123".into()))
        .await
        .expect("https server");
    h.secret(
        "bearer",
        &[
            ("bearerToken", b"tok-123"),
            ("ca.crt", server.ca_pem.as_bytes()),
        ],
    )
    .await;
    let src = unique_name("bearer");
    h.source(&src, json!({"url": server.url("configs"), "ref": {"branch": "main"}, "interval": "1h", "secretRef": {"name": "bearer"}})).await;
    h.wait_applied(&src, &sha).await;
    assert!(h.configs().get_opt(&name).await.expect("get").is_some());
}

#[tokio::test]
async fn ssh_with_a_deploy_key_and_required_known_hosts() {
    let h = Harness::start("src-ssh").await;
    let repo = WorkRepo::new().expect("repo");
    let name = unique_name("ssh-cfg");
    repo.write(&format!("prod/{name}.yaml"), &config_yaml(&name, 5))
        .expect("write");
    let sha = repo.commit("first").expect("commit");
    let sshd = SshGitServer::start().expect("sshd");
    let url = sshd.url(&repo.dir);

    // known_hosts is required: without it nothing is trusted.
    h.secret("key-only", &[("identity", sshd.client_key.as_bytes())])
        .await;
    let tofu = unique_name("no-known-hosts");
    h.source(&tofu, json!({"url": url, "ref": {"branch": "main"}, "path": "prod", "interval": "1h", "secretRef": {"name": "key-only"}})).await;
    let st = h
        .wait_status(&tofu, 60, |s| stalled_reason(s).is_some())
        .await;
    let (reason, msg) = stalled_reason(&st).expect("stalled");
    assert_eq!(reason, "FetchFailed");
    assert!(msg.contains("known_hosts; it is required"), "{msg}");

    // A known_hosts that does not list this server's key: unknown host, refused.
    let other_key = "[127.0.0.1]:1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n";
    let wrong_port = sshd.known_hosts.replace(&format!(":{}", sshd.port), ":1");
    h.secret(
        "unknown-host",
        &[
            ("identity", sshd.client_key.as_bytes()),
            ("known_hosts", format!("{other_key}{wrong_port}").as_bytes()),
        ],
    )
    .await;
    let unknown = unique_name("unknown-host");
    h.source(&unknown, json!({"url": url, "ref": {"branch": "main"}, "path": "prod", "interval": "1h", "secretRef": {"name": "unknown-host"}})).await;
    let st = h
        .wait_status(&unknown, 60, |s| stalled_reason(s).is_some())
        .await;
    let (_, msg) = stalled_reason(&st).expect("stalled");
    assert!(
        msg.contains(&format!(
            "host [127.0.0.1]:{} is not in known_hosts",
            sshd.port
        )),
        "{msg}"
    );
    assert!(h.configs().get_opt(&name).await.expect("get").is_none());

    // With the deploy key and the server's key in known_hosts it applies.
    h.secret(
        "deploy",
        &[
            ("identity", sshd.client_key.as_bytes()),
            ("known_hosts", sshd.known_hosts.as_bytes()),
        ],
    )
    .await;
    let src = unique_name("ssh");
    h.source(&src, json!({"url": url, "ref": {"branch": "main"}, "path": "prod", "interval": "1h", "secretRef": {"name": "deploy"}})).await;
    let st = h.wait_applied(&src, &sha).await;
    assert_eq!(st.last_applied_revision, Some(format!("main@sha1:{sha}")));
    let cfg = h.configs().get(&name).await.expect("applied");
    assert_eq!(
        cfg.metadata
            .annotations
            .unwrap_or_default()
            .get(labels::ORIGIN_ANNOTATION),
        Some(&format!("prod/{name}.yaml"))
    );
}

#[tokio::test]
async fn file_url_branch_tag_and_commit_and_local_commits_apply_at_once() {
    let h = Harness::start("src-file").await;
    let repo = WorkRepo::new().expect("repo");
    let a = unique_name("file-a");
    repo.write(&format!("c/{a}.yaml"), &config_yaml(&a, 1))
        .expect("write");
    let first = repo.commit("first").expect("commit");
    repo.tag("v1").expect("tag");

    // Branch, with a 1h interval: the local commit below must apply without waiting.
    let src = unique_name("file");
    h.source(
        &src,
        json!({"url": repo.file_url(), "ref": {"branch": "main"}, "path": "c", "interval": "1h"}),
    )
    .await;
    h.wait_applied(&src, &first).await;

    // Tag and pinned commit sources record their revision formats.
    let tagged = unique_name("file-tag");
    let pinned = unique_name("file-commit");
    let b = unique_name("file-b");
    let c = unique_name("file-c");
    let tag_repo = WorkRepo::new().expect("repo");
    tag_repo
        .write(&format!("{b}.yaml"), &config_yaml(&b, 1))
        .expect("write");
    let tag_sha = tag_repo.commit("t").expect("commit");
    tag_repo.tag("v1.0.0").expect("tag");
    tag_repo
        .write(&format!("{c}.yaml"), &config_yaml(&c, 1))
        .expect("write");
    let later = tag_repo.commit("after the tag").expect("commit");
    h.source(
        &tagged,
        json!({"url": tag_repo.file_url(), "ref": {"tag": "v1.0.0"}, "interval": "1h"}),
    )
    .await;
    h.source(
        &pinned,
        json!({"url": tag_repo.file_url(), "ref": {"commit": tag_sha}, "interval": "1h"}),
    )
    .await;
    let st = h.wait_applied(&tagged, &tag_sha).await;
    assert_eq!(
        st.last_applied_revision,
        Some(format!("v1.0.0@sha1:{tag_sha}"))
    );
    let st = h
        .wait_status(&pinned, 60, |s| s.last_applied_revision.is_some())
        .await;
    assert_eq!(st.last_applied_revision, Some(format!("sha1:{tag_sha}")));
    // c came after the tag and the pinned commit: neither source applies it.
    assert_ne!(later, tag_sha);
    assert!(h.configs().get_opt(&c).await.expect("get").is_none());

    // A local commit is picked up through notify on the refs.
    let d = unique_name("file-d");
    repo.write(&format!("c/{d}.yaml"), &config_yaml(&d, 2))
        .expect("write");
    let second = repo.commit("second").expect("commit");
    h.wait_applied(&src, &second).await;
    assert!(h.configs().get_opt(&d).await.expect("get").is_some());
    // libgit2 cannot shallow-fetch over file://: the cache holds full history.
    let cached = h.cache_dir.join(&h.ns).join(&src).join("repo.git");
    assert!(cached.is_dir() && !cached.join("shallow").exists());
    let metrics = h.metrics_text();
    assert!(
        metrics.contains("dpdk_source_fetch_duration_seconds"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "dpdk_source_revision_info{{source=\"{}/{src}\",revision=\"main@sha1:{second}\"}} 1",
            h.ns
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("dpdk_source_apply_results_total"),
        "{metrics}"
    );
}

/// Credentials written into the URL (`https://user:password@host/...`) work, and never
/// show: not in the status, not in the logs of `dpdk-reconciler run` (at debug level for
/// the reconciler), not in its metrics. The source controller publishes no Events.
#[tokio::test]
async fn credentials_in_the_url_never_appear_in_status_or_logs() {
    use std::process::{Command, Stdio};
    // The harness's own controller watches a namespace with no sources: the binary below
    // is the one that works on this test's namespace.
    let h = Harness::start_with("src-urlcreds", |o| {
        o.namespace = Some(unique_name("elsewhere"))
    })
    .await;
    let root = tempfile::tempdir().expect("root");
    let repo = WorkRepo::init(&root.path().join("configs")).expect("repo");
    let name = unique_name("urlcreds-cfg");
    repo.write(&format!("{name}.yaml"), &config_yaml(&name, 2))
        .expect("write");
    let sha = repo.commit("first").expect("commit");
    let (user, password) = ("deploy-user-in-url", "p4ss-in-url-Zq9");
    let server = HttpsGitServer::start(
        root.path(),
        HttpAuth::Basic {
            username: user.into(),
            password: password.into(),
        },
    )
    .await
    .expect("https server");
    h.secret("ca-only", &[("ca.crt", server.ca_pem.as_bytes())])
        .await;
    let url = server
        .url("configs")
        .replacen("https://", &format!("https://{user}:{password}@"), 1);

    // The real binary, so its logs can be read. Without leader election: it alone writes
    // here.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let cache = tempfile::tempdir().expect("cache");
    let log_path = cache.path().join("reconciler.log");
    let cp = dpdk_testenv::shared();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dpdk-reconciler"));
    cmd.args([
        "run",
        "--no-drift",
        "--no-leader-election",
        &format!("--http-addr=127.0.0.1:{port}"),
        &format!("--source-namespace={}", h.ns),
    ])
    .arg(format!(
        "--source-cache-dir={}",
        cache.path().join("c").display()
    ))
    .env("KUBECONFIG", cp.kubeconfig_path())
    .env("RUST_LOG", "info,dpdk_reconciler=debug")
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&log_path).expect("log"));
    let _run = dpdk_testenv::Reaper::spawn(cmd, std::time::Duration::ZERO).expect("run");

    let src = unique_name("urlcreds");
    h.source(&src, json!({"url": url, "ref": {"branch": "main"}, "interval": "1h", "secretRef": {"name": "ca-only"}})).await;
    // They work: the server took them.
    h.wait_applied(&src, &sha).await;
    // A failing fetch puts the URL into the message: redacted.
    h.sources()
        .patch(
            &src,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"ref": {"branch": "no-such-branch"}}})),
        )
        .await
        .expect("patch");
    let st = h
        .wait_status(&src, 60, |s| {
            stalled_reason(s).is_some_and(|(r, _)| r == "FetchFailed")
        })
        .await;
    let (_, msg) = stalled_reason(&st).expect("stalled");
    assert!(
        msg.contains(&format!("https://***@127.0.0.1:{}/configs", server.port)),
        "the message shows the URL without its credentials: {msg}"
    );
    let status = serde_json::to_string(&st).expect("status json");
    let logs = std::fs::read_to_string(&log_path).expect("log");
    assert!(
        logs.contains("fetch failed"),
        "the log has the fetch error: {logs}"
    );
    let metrics = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out
    };
    for (what, text) in [("status", &status), ("logs", &logs), ("metrics", &metrics)] {
        for secret in [password, user] {
            assert!(!text.contains(secret), "{what} shows {secret:?}:\n{text}");
        }
    }
}
