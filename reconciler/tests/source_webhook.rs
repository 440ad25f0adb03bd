//! Webhooks: a verified GitHub or GitLab webhook applies a new revision at once (the
//! interval is an hour); a forged or missing signature gets 401 and nothing is fetched
//! (the Git server sees no request).

mod source_support;

use std::time::Duration;

use dpdk_testenv::git_server::{HttpAuth, HttpsGitServer, WorkRepo};
use dpdk_testenv::unique_name;
use serde_json::json;
use source_support::{Harness, config_yaml, github_signature};

#[tokio::test]
async fn verified_webhooks_apply_at_once_and_forged_ones_fetch_nothing() {
    let h = Harness::start("hook").await;
    let root = tempfile::tempdir().expect("root");
    let repo = WorkRepo::init(&root.path().join("cfg")).expect("repo");
    let a = unique_name("hook-a");
    repo.write(&format!("{a}.yaml"), &config_yaml(&a, 1))
        .expect("write");
    let first = repo.commit("first").expect("commit");
    let server = HttpsGitServer::start(
        root.path(),
        HttpAuth::Basic {
            username: "u".into(),
            password: "p".into(),
        },
    )
    .await
    .expect("https");
    h.secret(
        "hook-creds",
        &[
            ("username", b"u"),
            ("password", b"p"),
            ("ca.crt", server.ca_pem.as_bytes()),
            ("webhookSecret", b"hook-s3cret\n"),
        ],
    )
    .await;
    let src = unique_name("hook");
    h.source(&src, json!({"url": server.url("cfg"), "ref": {"branch": "main"}, "interval": "1h", "secretRef": {"name": "hook-creds"}})).await;
    h.wait_applied(&src, &first).await;
    // Let the status write's own wake-up settle.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let b = unique_name("hook-b");
    repo.write(&format!("{b}.yaml"), &config_yaml(&b, 2))
        .expect("write");
    let second = repo.commit("second").expect("commit");
    let body = br#"{"ref":"refs/heads/main"}"#;

    // Forged, missing, and wrong-token requests: 401, and the Git server is not contacted.
    let before = server.requests();
    assert_eq!(
        h.post_hook(
            &src,
            &[("X-Hub-Signature-256", github_signature(b"wrong", body))],
            body
        )
        .await,
        401
    );
    assert_eq!(
        h.post_hook(
            &src,
            &[(
                "X-Hub-Signature-256",
                github_signature(b"hook-s3cret", b"other body")
            )],
            body
        )
        .await,
        401
    );
    assert_eq!(h.post_hook(&src, &[], body).await, 401);
    assert_eq!(
        h.post_hook(&src, &[("X-Gitlab-Token", "guess".to_string())], body)
            .await,
        401
    );
    assert_eq!(
        h.post_hook(
            "no-such-source",
            &[("X-Gitlab-Token", "hook-s3cret".to_string())],
            body
        )
        .await,
        404
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        server.requests(),
        before,
        "a rejected webhook fetches nothing"
    );
    let st = h.status(&src).await;
    assert_eq!(st.last_applied_revision, Some(format!("main@sha1:{first}")));
    assert!(st.last_handled_webhook_at.is_none());

    // A correctly signed GitHub webhook applies the new commit at once.
    assert_eq!(
        h.post_hook(
            &src,
            &[(
                "X-Hub-Signature-256",
                github_signature(b"hook-s3cret", body)
            )],
            body
        )
        .await,
        202
    );
    let st = h.wait_applied(&src, &second).await;
    assert!(st.last_handled_webhook_at.is_some());
    assert!(h.configs().get_opt(&b).await.expect("get").is_some());
    assert!(server.requests() > before);

    // GitLab's token works too.
    let c = unique_name("hook-c");
    repo.write(&format!("{c}.yaml"), &config_yaml(&c, 3))
        .expect("write");
    let third = repo.commit("third").expect("commit");
    assert_eq!(
        h.post_hook(&src, &[("X-Gitlab-Token", "hook-s3cret".to_string())], body)
            .await,
        202
    );
    h.wait_applied(&src, &third).await;
}

#[tokio::test]
async fn a_source_without_webhook_secret_refuses_webhooks() {
    let h = Harness::start("hook-none").await;
    let repo = WorkRepo::new().expect("repo");
    let a = unique_name("nohook-a");
    repo.write(&format!("{a}.yaml"), &config_yaml(&a, 1))
        .expect("write");
    repo.commit("first").expect("commit");
    let src = unique_name("nohook");
    h.source(
        &src,
        json!({"url": repo.file_url(), "ref": {"branch": "main"}, "interval": "1h"}),
    )
    .await;
    let body = b"{}";
    assert_eq!(
        h.post_hook(&src, &[("X-Gitlab-Token", String::new())], body)
            .await,
        401
    );
    assert_eq!(
        h.post_hook(
            &src,
            &[("X-Hub-Signature-256", github_signature(b"", body))],
            body
        )
        .await,
        401
    );
}
