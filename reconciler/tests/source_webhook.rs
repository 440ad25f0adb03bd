//! The webhook receiver, on its own loopback listener, against a real API server whose
//! audit log records every request (reads included) and real git servers on loopback:
//! - a verified GitHub or GitLab webhook applies a new revision at once (the interval is an
//!   hour), and its fetch starts within 2 s;
//! - a forged or missing proof, an unknown source, a source without webhookSecret, a bad
//!   path and a wrong method all get the same answer, and nothing is fetched;
//! - the injection path `/hook/dpdk-operator/%3Fwatch%3Dtrue` is answered at once, and
//!   1,000 unauthenticated requests cost no API request (the audit log, per impersonated
//!   user, between two marker requests);
//! - the rate limit, the body limit and the request timeout.
//!
//! Each test runs its controller and receiver as its own impersonated user, so the audit
//! log tells its requests apart from the other tests' and from the test's own.

mod source_support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use dpdk_reconciler::source::webhook::{REFUSED, ReceiverOptions, rate::RateLimit};
use dpdk_testenv::git_server::{HttpAuth, HttpsGitServer, WorkRepo};
use dpdk_testenv::{ControlPlane, StartOptions, unique_name};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use serde_json::{Value, json};
use source_support::{Harness, HarnessOptions, config_yaml, github_signature, request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One control plane for this binary, auditing every request.
fn audited() -> &'static ControlPlane {
    static CP: OnceLock<ControlPlane> = OnceLock::new();
    CP.get_or_init(|| {
        ControlPlane::start_blocking(StartOptions {
            install_crds: true,
            audit_log: true,
            audit_reads: true,
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("the local control plane could not start: {e}"))
    })
}

/// A harness on the audited control plane whose controller and receiver act as a user
/// of their own; returns it with that user.
async fn start(prefix: &str, receiver: ReceiverOptions) -> (Harness, String) {
    let user = unique_name("webhook-user");
    let h = Harness::start_on(
        audited(),
        prefix,
        HarnessOptions {
            user: Some(user.clone()),
            receiver,
        },
    )
    .await;
    (h, user)
}

/// The rate limit off: every request reaches the receiver's checks.
fn unlimited() -> ReceiverOptions {
    ReceiverOptions {
        rate: RateLimit {
            per_second: 0.0,
            burst: 1,
        },
        ..ReceiverOptions::default()
    }
}

fn refused() -> (u16, String) {
    (REFUSED.0.as_u16(), REFUSED.1.to_string())
}

/// Every audit event, parsed.
fn audit_events() -> Vec<Value> {
    let text = std::fs::read_to_string(audited().audit_log_path()).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A marker request (by the admin, a GET of a ConfigMap that does not exist); returns its
/// `requestReceivedTimestamp` once the audit log has it.
async fn mark(h: &Harness) -> String {
    let name = unique_name("audit-mark");
    let cms: Api<ConfigMap> = Api::namespaced(h.client.clone(), &h.ns);
    assert!(cms.get_opt(&name).await.expect("marker").is_none());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = audit_events()
            .into_iter()
            .find(|e| e["objectRef"]["name"] == name.as_str() && e["stage"] == "ResponseComplete");
        if let Some(e) = found {
            return e["requestReceivedTimestamp"]
                .as_str()
                .expect("timestamp")
                .to_string();
        }
        assert!(
            Instant::now() < deadline,
            "marker {name} not in the audit log"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The requests (`verb requestURI`) `user` made whose receipt falls between `from` and
/// `to` (MicroTime stamps: fixed width, so they order as strings), one per auditID.
fn requests_between(user: &str, from: &str, to: &str) -> Vec<String> {
    let mut by_id = BTreeMap::new();
    for e in audit_events() {
        let at = e["requestReceivedTimestamp"].as_str().unwrap_or("");
        if e["impersonatedUser"]["username"] == user && at > from && at < to {
            by_id.insert(
                e["auditID"].as_str().unwrap_or("").to_string(),
                format!("{} {}", e["verb"], e["requestURI"]),
            );
        }
    }
    by_id.into_values().collect()
}

/// Waits until `user`'s controller and receiver are watching (at least `watches` watch
/// requests started) and have then been quiet, no new request, for a second.
async fn settled(user: &str, watches: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let by_user = || {
        let events = audit_events();
        let mine: Vec<Value> = events
            .into_iter()
            .filter(|e| e["impersonatedUser"]["username"] == user)
            .collect();
        let watching = mine
            .iter()
            .filter(|e| e["verb"] == "watch" && e["stage"] == "ResponseStarted")
            .count();
        (mine.len(), watching)
    };
    let mut last = by_user();
    let mut quiet_since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = by_user();
        if now != last {
            last = now;
            quiet_since = Instant::now();
        } else if now.1 >= watches && quiet_since.elapsed() >= Duration::from_secs(1) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{user} never settled: {last:?} requests/watches"
        );
    }
}

/// A file:// repository with one DPDKConfig, and a source `src` on it whose Secret has
/// `webhook_secret`; waits until it is applied. Keep the repository: dropping it deletes
/// it, and the source then fails and retries (API requests).
async fn source_with_secret(h: &Harness, src: &str, webhook_secret: &[u8]) -> WorkRepo {
    let repo = WorkRepo::new().expect("repo");
    let a = unique_name("wh-a");
    repo.write(&format!("{a}.yaml"), &config_yaml(&a, 1))
        .expect("write");
    let first = repo.commit("first").expect("commit");
    let secret = format!("{src}-creds");
    h.secret(&secret, &[("webhookSecret", webhook_secret)])
        .await;
    h.source(src, json!({"url": repo.file_url(), "ref": {"branch": "main"}, "interval": "1h", "secretRef": {"name": secret}}))
        .await;
    h.wait_applied(src, &first).await;
    repo
}

#[tokio::test]
async fn verified_webhooks_apply_at_once_and_forged_ones_fetch_nothing() {
    let (h, _) = start("hook", ReceiverOptions::default()).await;
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
    // An unknown source gets the same answer as a forged proof (it was 404): answers do
    // not tell which sources exist.
    assert_eq!(
        h.post_hook(
            "no-such-source",
            &[("X-Gitlab-Token", "hook-s3cret".to_string())],
            body
        )
        .await,
        401
    );
    let path = |s: &str| format!("/hook/{}/{s}", h.ns);
    let forged = [("X-Hub-Signature-256", github_signature(b"wrong", body))];
    let token = [("X-Gitlab-Token", "hook-s3cret".to_string())];
    assert_eq!(
        request(h.hook_addr, "POST", &path(&src), &forged, body).await,
        refused()
    );
    assert_eq!(
        request(h.hook_addr, "POST", &path("no-such-source"), &token, body).await,
        refused(),
        "the same status and body for an unknown source and a forged signature"
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

    // A correctly signed GitHub webhook applies the new commit at once; its fetch reaches
    // the Git server within 2 s.
    let posted = Instant::now();
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
    while server.requests() == before && posted.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let fetch_started = posted.elapsed();
    assert!(
        fetch_started < Duration::from_secs(2),
        "the fetch did not start within 2 s of the webhook"
    );
    let st = h.wait_applied(&src, &second).await;
    println!(
        "webhook -> fetch at the git server: {} ms; -> applied: {} ms",
        fetch_started.as_millis(),
        posted.elapsed().as_millis()
    );
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
    let (h, _) = start("hook-none", ReceiverOptions::default()).await;
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

#[tokio::test]
async fn the_injection_path_is_refused_at_once_without_an_api_request() {
    let (h, user) = start("hook-inject", unlimited()).await;
    let src = unique_name("inject");
    let _repo = source_with_secret(&h, &src, b"inject-s3cret").await;
    // Two DPDKConfigSource watches (controller, receiver) and the Secret's.
    settled(&user, 3).await;

    let from = mark(&h).await;
    let started = Instant::now();
    let answer = request(
        h.hook_addr,
        "POST",
        "/hook/dpdk-operator/%3Fwatch%3Dtrue",
        &[("X-Gitlab-Token", "inject-s3cret".to_string())],
        b"{}",
    )
    .await;
    let took = started.elapsed();
    // The same injection into this test's own namespace, where the source exists.
    let own = request(
        h.hook_addr,
        "POST",
        &format!("/hook/{}/%3Fwatch%3Dtrue", h.ns),
        &[("X-Gitlab-Token", "inject-s3cret".to_string())],
        b"{}",
    )
    .await;
    let to = mark(&h).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!("injection path answered in {} µs", took.as_micros());
    assert_eq!(answer, refused());
    assert_eq!(own, refused());
    assert!((400..500).contains(&answer.0), "{answer:?}");
    assert!(took < Duration::from_millis(100), "answered after {took:?}");
    assert_eq!(
        requests_between(&user, &from, &to),
        Vec::<String>::new(),
        "the receiver made API requests"
    );
}

/// An HTTP request to send.
struct Attempt {
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: String,
}

/// Unauthenticated request number `i`: the loop cycles through ten kinds.
fn unauthenticated(ns: &str, src: &str, bare: &str, i: usize) -> Attempt {
    let body = format!("{{\"n\":{i}}}");
    let hook = |s: &str| format!("/hook/{ns}/{s}");
    let token = || vec![("X-Gitlab-Token", "flood-s3cret".to_string())];
    let (method, path, headers) = match i % 10 {
        0 => {
            let forged = github_signature(b"wrong", body.as_bytes());
            ("POST", hook(src), vec![("X-Hub-Signature-256", forged)])
        }
        1 => (
            "POST",
            hook(src),
            vec![("X-Gitlab-Token", format!("guess-{i}"))],
        ),
        2 => ("POST", hook(src), vec![]),
        3 => ("POST", hook(&format!("no-such-{i}")), token()),
        4 => ("POST", hook(bare), token()),
        5 => ("POST", "/hook/dpdk-operator/%3Fwatch%3Dtrue".into(), vec![]),
        6 => ("POST", format!("/hook/{ns}/{src}/extra"), token()),
        7 => (
            "POST",
            format!("/hook/{}/{src}", ns.to_uppercase()),
            token(),
        ),
        8 => ("GET", hook(src), token()),
        _ => ("POST", "/metrics".into(), vec![]),
    };
    Attempt {
        method,
        path,
        headers,
        body,
    }
}

#[tokio::test]
async fn a_thousand_unauthenticated_requests_cost_no_api_request() {
    let (h, user) = start("hook-flood", unlimited()).await;
    let src = unique_name("flood");
    let _repo = source_with_secret(&h, &src, b"flood-s3cret").await;
    // A source without a secretRef.
    let bare = unique_name("flood-bare");
    let repo = WorkRepo::new().expect("repo");
    let c = unique_name("flood-c");
    repo.write(&format!("{c}.yaml"), &config_yaml(&c, 1))
        .expect("write");
    let sha = repo.commit("first").expect("commit");
    h.source(
        &bare,
        json!({"url": repo.file_url(), "ref": {"branch": "main"}, "interval": "1h"}),
    )
    .await;
    h.wait_applied(&bare, &sha).await;
    settled(&user, 3).await;

    let from = mark(&h).await;
    let started = Instant::now();
    let mut answers: BTreeMap<(u16, String), usize> = BTreeMap::new();
    for i in 0..1000 {
        let a = unauthenticated(&h.ns, &src, &bare, i);
        let answer = request(
            h.hook_addr,
            a.method,
            &a.path,
            &a.headers,
            a.body.as_bytes(),
        )
        .await;
        *answers.entry(answer).or_default() += 1;
    }
    let took = started.elapsed();
    let to = mark(&h).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!(
        "1000 unauthenticated requests in {} ms ({} µs each)",
        took.as_millis(),
        took.as_micros() / 1000
    );
    assert_eq!(
        answers,
        BTreeMap::from([(refused(), 1000)]),
        "every refusal gets the same status and body"
    );
    assert_eq!(
        requests_between(&user, &from, &to),
        Vec::<String>::new(),
        "unauthenticated requests made API requests"
    );
    let metrics = h.metrics_text();
    assert!(
        metrics.contains("dpdk_webhook_requests_total{result=\"refused\"} 1000"),
        "{metrics}"
    );
    // The receiver still accepts a proof.
    assert_eq!(
        h.post_hook(
            &src,
            &[("X-Gitlab-Token", "flood-s3cret".to_string())],
            b"{}"
        )
        .await,
        202
    );
}

/// Sends `head` (request line and headers) and then only `body`, and returns what the
/// server answered (its status, 0 if it closed without an answer) and when.
async fn stall(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, Duration) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let started = Instant::now();
    s.write_all(head.as_bytes()).await.expect("write");
    s.write_all(body).await.expect("write");
    let mut resp = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut resp)).await;
    assert!(read.is_ok(), "the server kept a stalled request open 10 s");
    let code = String::from_utf8_lossy(&resp)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, started.elapsed())
}

#[tokio::test]
async fn body_limit_request_timeout_and_rate_limit() {
    let limits = ReceiverOptions {
        request_timeout: Duration::from_millis(500),
        max_body_bytes: 1024,
        ..unlimited()
    };
    let (h, _) = start("hook-limits", limits).await;
    let path = format!("/hook/{}/any", h.ns);
    let big = vec![b'x'; 2048];
    assert_eq!(
        request(h.hook_addr, "POST", &path, &[], &big).await.0,
        413,
        "a body over --webhook-max-body-bytes"
    );
    assert_eq!(
        request(h.hook_addr, "POST", &path, &[], &big[..1024]).await,
        refused(),
        "a body at the limit is read"
    );
    // A body that never arrives: 408 after the request timeout.
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nConnection: close\r\n\r\n"
    );
    let (code, after) = stall(h.hook_addr, &head, b"{\"partial\":").await;
    assert_eq!(code, 408);
    assert!(
        after >= Duration::from_millis(450) && after < Duration::from_secs(3),
        "{after:?}"
    );
    // Headers that never end: the connection is closed after the timeout.
    let (_, after) = stall(
        h.hook_addr,
        &format!("POST {path} HTTP/1.1\r\nHost: x\r\n"),
        b"",
    )
    .await;
    assert!(after < Duration::from_secs(3), "{after:?}");

    // The rate limit: a burst of 5, then 429 until tokens refill (one in 1000 s here);
    // another client (127.0.0.2) has its own bucket.
    let rated = ReceiverOptions {
        rate: RateLimit {
            per_second: 0.001,
            burst: 5,
        },
        ..ReceiverOptions::default()
    };
    let (h, _) = start("hook-rate", rated).await;
    let path = format!("/hook/{}/any", h.ns);
    let mut codes = Vec::new();
    for _ in 0..8 {
        codes.push(request(h.hook_addr, "POST", &path, &[], b"{}").await.0);
    }
    assert_eq!(codes, [401, 401, 401, 401, 401, 429, 429, 429]);
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.2:0".parse().expect("addr"))
        .expect("bind 127.0.0.2");
    let mut s = socket.connect(h.hook_addr).await.expect("connect");
    s.write_all(
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.expect("read");
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");
    assert!(
        h.metrics_text()
            .contains("dpdk_webhook_requests_total{result=\"rate_limited\"} 3")
    );
}
