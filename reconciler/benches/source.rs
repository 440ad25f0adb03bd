//! Commit → applied latency of the Git source for a repository of 200 DPDKConfigs, on the
//! real API server with real Git servers on loopback:
//!
//! - through a GitHub-signed webhook to an https (git http-backend) source;
//! - through notify on the refs of a file:// source;
//! - and, side by side, the offline load + validate of the same 200 files.
//!
//! `cargo bench -p dpdk-reconciler --bench source` (prints figures; no harness).

#[path = "../tests/source_support/mod.rs"]
mod source_support;

use std::time::{Duration, Instant};

use futures::StreamExt;

use dpdk_reconciler::manifest::Manifests;
use dpdk_reconciler::manifest::load::LoadOptions;
use dpdk_testenv::git_server::{HttpAuth, HttpsGitServer, WorkRepo};
use dpdk_testenv::unique_name;
use serde_json::json;
use source_support::{Harness, config_yaml, github_signature};

const CONFIGS: usize = 200;
const COMMITS: usize = 8;

fn stats(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    let median = v[v.len() / 2];
    (v[0], median, v[v.len() - 1])
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn fill(repo: &WorkRepo, prefix: &str, round: usize) -> Vec<String> {
    let mut names = Vec::new();
    for i in 0..CONFIGS {
        let name = format!("{prefix}-{i:03}");
        // Each commit changes one object; the revision annotation changes on all of them.
        let idx = if i == round % CONFIGS {
            2 + (round % 30) as i32
        } else {
            1
        };
        repo.write(
            &format!("clusters/bench/{:02}/{name}.yaml", i % 10),
            &config_yaml(&name, idx),
        )
        .expect("write");
        names.push(name);
    }
    names
}

async fn wait_applied(h: &Harness, src: &str, sha: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let st = h.status(src).await;
        if st
            .last_applied_revision
            .as_deref()
            .is_some_and(|r| r.ends_with(sha))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not applied within 120s: {st:#?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn bench() {
    println!(
        "Git source: commit -> applied, {CONFIGS} DPDKConfigs, {COMMITS} commits per transport"
    );
    let h = Harness::start("bench-src").await;

    // https + webhook.
    let root = tempfile::tempdir().expect("root");
    let repo = WorkRepo::init(&root.path().join("cfg")).expect("repo");
    let prefix = unique_name("bench-https");
    fill(&repo, &prefix, 0);
    let first = repo.commit("initial").expect("commit");
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
        "bench",
        &[
            ("username", b"u"),
            ("password", b"p"),
            ("ca.crt", server.ca_pem.as_bytes()),
            ("webhookSecret", b"bench"),
        ],
    )
    .await;
    let src = unique_name("bench-https");
    let cold = Instant::now();
    h.source(&src, json!({"url": server.url("cfg"), "ref": {"branch": "main"}, "path": "clusters/bench", "interval": "1h", "secretRef": {"name": "bench"}}))
        .await;
    wait_applied(&h, &src, &first).await;
    let cold = cold.elapsed();
    let body = br#"{"ref":"refs/heads/main"}"#;
    let mut webhook = Vec::new();
    for round in 1..=COMMITS {
        fill(&repo, &prefix, round);
        let sha = repo.commit(&format!("round {round}")).expect("commit");
        let t = Instant::now();
        let code = h
            .post_hook(
                &src,
                &[("X-Hub-Signature-256", github_signature(b"bench", body))],
                body,
            )
            .await;
        assert_eq!(code, 202);
        wait_applied(&h, &src, &sha).await;
        webhook.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // file:// + notify.
    let frepo = WorkRepo::new().expect("repo");
    let fprefix = unique_name("bench-file");
    fill(&frepo, &fprefix, 0);
    let ffirst = frepo.commit("initial").expect("commit");
    let fsrc = unique_name("bench-file");
    h.source(&fsrc, json!({"url": frepo.file_url(), "ref": {"branch": "main"}, "path": "clusters/bench", "interval": "1h"})).await;
    wait_applied(&h, &fsrc, &ffirst).await;
    let mut notify = Vec::new();
    for round in 1..=COMMITS {
        fill(&frepo, &fprefix, round);
        let t = Instant::now();
        let sha = frepo.commit(&format!("round {round}")).expect("commit");
        wait_applied(&h, &fsrc, &sha).await;
        notify.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Offline load + validate of the same 200 files.
    let mut load = Vec::new();
    for _ in 0..COMMITS {
        let t = Instant::now();
        let m = Manifests::load(&frepo.dir, "clusters/bench", &LoadOptions::default());
        load.push(t.elapsed());
        assert!(m.is_valid() && m.objects.len() == CONFIGS);
    }

    // The floor: the same 200 server-side applies sent straight to the API server, 16 at a
    // time (what one revision costs the source in writes), without Git or the controller.
    let api: kube::Api<kube::api::DynamicObject> = kube::Api::all_with(
        h.client.clone(),
        &kube::api::ApiResource::erase::<dpdk_bridge::api::DPDKConfig>(&()),
    );
    let mut raw = Vec::new();
    for round in 0..COMMITS {
        let bodies: Vec<(String, serde_json::Value)> = (0..CONFIGS)
            .map(|i| {
                let name = format!("{}-raw-{i:03}", prefix);
                let body = json!({
                    "apiVersion": "networking.k8s.aws/v1alpha1", "kind": "DPDKConfig",
                    "metadata": {"name": name, "annotations": {"bench/round": round.to_string()}},
                    "spec": {"nodeSelector": {"ng": "bench"}, "resourceMapping": [{"deviceIndex": 1, "resourceName": "intel.com/dpdk_1"}]}
                });
                (name, body)
            })
            .collect();
        let t = Instant::now();
        futures::stream::iter(bodies)
            .map(|(name, body)| {
                let api = api.clone();
                async move {
                    api.patch(
                        &name,
                        &kube::api::PatchParams::apply("bench").force(),
                        &kube::api::Patch::Apply(&body),
                    )
                    .await
                    .expect("apply");
                }
            })
            .buffer_unordered(16)
            .collect::<Vec<()>>()
            .await;
        raw.push(t.elapsed());
    }
    let (rmin, rmed, rmax) = stats(raw);
    let (wmin, wmed, wmax) = stats(webhook);
    let (nmin, nmed, nmax) = stats(notify);
    let (lmin, lmed, lmax) = stats(load);
    println!(
        "cold start (create source -> 200 applied), https: {}",
        ms(cold)
    );
    println!(
        "commit -> applied via webhook (https, git http-backend): min {} median {} max {}",
        ms(wmin),
        ms(wmed),
        ms(wmax)
    );
    println!(
        "commit -> applied via notify (file://):                  min {} median {} max {}",
        ms(nmin),
        ms(nmed),
        ms(nmax)
    );
    println!(
        "load + validate 200 files (offline):                     min {} median {} max {}",
        ms(lmin),
        ms(lmed),
        ms(lmax)
    );
    println!(
        "200 raw SSA applies, 16 in flight (floor):               min {} median {} max {}",
        ms(rmin),
        ms(rmed),
        ms(rmax)
    );
    println!(
        "ratios: webhook/raw-apply median {:.2}; webhook/notify median {:.2}; load+validate is {:.1}% of the webhook median",
        wmed.as_secs_f64() / rmed.as_secs_f64(),
        wmed.as_secs_f64() / nmed.as_secs_f64(),
        100.0 * lmed.as_secs_f64() / wmed.as_secs_f64()
    );
    println!(
        "target: webhook median < 2000 ms: {}",
        if wmed < Duration::from_secs(2) {
            "met"
        } else {
            "MISSED"
        }
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(bench());
}
