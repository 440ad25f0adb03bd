//! Fetches that really stop (issue 12): a loopback HTTPS git server that sends 1 byte/s
//! is aborted within the fetch timeout, leaves no thread behind (counted in
//! /proc/self/task), and a second fetch of the same source is refused while one runs.
//! Also: a `ca.crt` holding the root and the intermediate of a chained server certificate.

use std::time::{Duration, Instant};

use dpdk_reconciler::manifest::load::LoadOptions;
use dpdk_reconciler::source::auth::Credentials;
use dpdk_reconciler::source::git::{self, FetchRequest};
use dpdk_reconciler::source::spec::RefSpec;
use dpdk_testenv::git_server::{HttpAuth, HttpsGitServer, ServerOptions, WorkRepo};

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").expect("tasks").count()
}

fn auth() -> HttpAuth {
    HttpAuth::Basic {
        username: "deploy".into(),
        password: "s3cret".into(),
    }
}

fn request(
    url: String,
    ca: Option<String>,
    cache: &std::path::Path,
    timeout: Duration,
) -> FetchRequest {
    FetchRequest {
        url,
        refspec: RefSpec::Branch("main".into()),
        creds: Credentials {
            username: Some("deploy".into()),
            password: Some("s3cret".into()),
            ca_crt: ca.map(String::into_bytes),
            ..Default::default()
        },
        cache_dir: cache.to_path_buf(),
        path: String::new(),
        limits: LoadOptions::default(),
        timeout,
        max_fetch_bytes: 64 * 1024 * 1024,
    }
}

fn repo_under(root: &std::path::Path) -> WorkRepo {
    let repo = WorkRepo::init(&root.join("configs")).expect("repo");
    repo.write("a.yaml", "a: 1\n").expect("write");
    repo.commit("first").expect("commit");
    repo
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_server_fails_at_once() {
    let root = tempfile::tempdir().expect("root");
    let _repo = repo_under(root.path());
    let server = HttpsGitServer::start(root.path(), auth())
        .await
        .expect("server");
    let cache = tempfile::tempdir().expect("cache");
    let req = request(
        server.url("configs"),
        None,
        cache.path(),
        Duration::from_secs(20),
    );
    let started = Instant::now();
    let r = tokio::task::spawn_blocking(move || git::fetch(&req))
        .await
        .expect("join");
    let e = r.expect_err("untrusted");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?} {e}",
        started.elapsed()
    );
    assert!(e.message.to_lowercase().contains("certificate"), "{e}");
}

/// A repository big enough that its pack takes minutes at 1 byte/s.
fn slow_repo(root: &std::path::Path) {
    let repo = WorkRepo::init(&root.join("configs")).expect("repo");
    for i in 0..20 {
        repo.write(&format!("f{i}.yaml"), &format!("n: {i}\n"))
            .expect("write");
    }
    repo.commit("first").expect("commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_sending_1_byte_per_second_is_aborted_at_the_deadline_leaving_no_thread() {
    let root = tempfile::tempdir().expect("root");
    slow_repo(root.path());
    let opts = ServerOptions {
        trickle: Some(Duration::from_secs(1)),
        ..Default::default()
    };
    let server = HttpsGitServer::start_with(root.path(), auth(), opts)
        .await
        .expect("server");
    let cache = tempfile::tempdir().expect("cache");
    let timeout = Duration::from_secs(4);
    let req = request(
        server.url("configs"),
        Some(server.ca_pem.clone()),
        cache.path(),
        timeout,
    );
    let before = threads();
    let (tx, rx) = std::sync::mpsc::channel();
    let first = req.clone();
    let started = Instant::now();
    let t = std::thread::spawn(move || {
        let r = git::fetch(&first);
        let _ = tx.send((r, started.elapsed()));
    });
    // While it runs, a second fetch of the same source is refused at once.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = req.clone();
    let r2 = tokio::task::spawn_blocking(move || (git::fetch(&second), Instant::now()))
        .await
        .expect("join");
    let e2 = r2.0.expect_err("a second fetch of the same source");
    assert!(e2.message.contains("still running"), "{e2}");
    let (r, took) = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(30)))
        .await
        .expect("join")
        .expect("the fetch ends within 30 s");
    t.join().expect("fetch thread");
    let e = r.expect_err("aborted");
    println!("slow server: aborted after {took:?}: {e}");
    assert!(e.message.contains("timed out after 4s"), "{e}");
    assert!(
        took <= timeout + Duration::from_millis(1500),
        "aborted after {took:?}"
    );
    // No thread left behind: the fetch thread is joined, libgit2 started none that lives on
    // (the spawn_blocking thread of the second fetch may idle in tokio's pool: give it back).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = threads();
    assert!(
        after <= before + 1,
        "threads before {before}, after {after}"
    );
    // The slot is free again: the next fetch starts (and is aborted the same way).
    let third = req.clone();
    let r3 = tokio::task::spawn_blocking(move || git::fetch(&third))
        .await
        .expect("join");
    assert!(r3.expect_err("slow again").message.contains("timed out"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_crt_with_the_intermediate_chain_verifies_a_chained_server_certificate() {
    let root = tempfile::tempdir().expect("root");
    let _repo = repo_under(root.path());
    let opts = ServerOptions {
        intermediate: true,
        ..Default::default()
    };
    let server = HttpsGitServer::start_with(root.path(), auth(), opts)
        .await
        .expect("server");
    // As users paste it: intermediate first, then the root (a CA's "chain" file).
    for (label, bundle) in [
        (
            "intermediate+root",
            format!("{}{}", server.intermediate_pem, server.ca_pem),
        ),
        (
            "root+intermediate",
            format!("{}\n{}", server.ca_pem, server.intermediate_pem),
        ),
    ] {
        let cache = tempfile::tempdir().expect("cache");
        let req = request(
            server.url("configs"),
            Some(bundle),
            cache.path(),
            Duration::from_secs(30),
        );
        let r = tokio::task::spawn_blocking(move || git::fetch(&req))
            .await
            .expect("join");
        let f = r.unwrap_or_else(|e| panic!("{label}: {e}"));
        assert!(f.checkout.join("a.yaml").is_file(), "{label}");
    }
    // The root alone cannot verify the leaf (libgit2 hands only the leaf to the check).
    let cache = tempfile::tempdir().expect("cache");
    let req = request(
        server.url("configs"),
        Some(server.ca_pem.clone()),
        cache.path(),
        Duration::from_secs(30),
    );
    let r = tokio::task::spawn_blocking(move || git::fetch(&req))
        .await
        .expect("join");
    let e = r.expect_err("root only");
    assert!(e.message.contains("ca.crt"), "{e}");
}
