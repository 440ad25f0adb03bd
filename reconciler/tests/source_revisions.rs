//! Last good revision: every kind of bad revision applies nothing and prunes nothing (the
//! cluster stays exactly as it was), the source goes Stalled with its documented reason and
//! file:line, and the next good commit applies.

mod source_support;

use dpdk_bridge::api::DPDKConfigSourceStatus;
use dpdk_bridge::conditions;
use dpdk_testenv::git_server::WorkRepo;
use dpdk_testenv::unique_name;
use serde_json::json;
use source_support::{Harness, config_yaml, snapshot};

fn stalled(st: &DPDKConfigSourceStatus) -> (String, String) {
    let c = conditions::find(&st.conditions, "Stalled")
        .unwrap_or_else(|| panic!("not Stalled: {st:#?}"));
    let ready = conditions::find(&st.conditions, "Ready").expect("Ready present");
    assert_eq!(ready.status, "False");
    (c.reason.clone(), c.message.clone())
}

/// One bad revision: `break_it` edits the repo; returns the expected reason and a
/// fragment of the message (file:line...).
async fn bad_then_good(
    h: &Harness,
    label: &str,
    break_it: impl Fn(&WorkRepo, &str),
    expect_reason: &str,
    expect_msg: impl Fn(&str) -> String,
) {
    let repo = WorkRepo::new().expect("repo");
    let a = unique_name(&format!("{label}-a"));
    let b = unique_name(&format!("{label}-b"));
    repo.write(&format!("prod/{a}.yaml"), &config_yaml(&a, 1))
        .expect("write");
    repo.write(&format!("prod/{b}.yaml"), &config_yaml(&b, 2))
        .expect("write");
    let good = repo.commit("good").expect("commit");
    let src = unique_name(label);
    h.source(&src, json!({"url": repo.file_url(), "ref": {"branch": "main"}, "path": "prod", "interval": "1h"})).await;
    h.wait_applied(&src, &good).await;
    let names = vec![a.clone(), b.clone()];
    let before = snapshot(&h.client, &names).await;

    // The bad revision also removes b and changes a: neither may happen.
    repo.write(&format!("prod/{a}.yaml"), &config_yaml(&a, 7))
        .expect("write");
    repo.remove(&format!("prod/{b}.yaml")).expect("rm");
    break_it(&repo, &a);
    let bad = repo.commit("bad").expect("commit");
    let st = h.wait_attempted(&src, &bad).await;
    let (reason, msg) = stalled(&st);
    assert_eq!(reason, expect_reason, "{label}: {msg}");
    let want = expect_msg(&a);
    assert!(
        msg.contains(&want),
        "{label}: message {msg:?} lacks {want:?}"
    );
    assert!(
        msg.contains(&bad),
        "{label}: the message names the rejected revision: {msg}"
    );
    assert_eq!(
        st.last_applied_revision,
        Some(format!("main@sha1:{good}")),
        "{label}: the last good revision stays"
    );
    assert_eq!(st.inventory.len(), 2, "{label}: the inventory is unchanged");
    assert_eq!(
        snapshot(&h.client, &names).await,
        before,
        "{label}: the cluster must be exactly as before"
    );

    // The next good commit recovers.
    repo.git(&["reset", "-q", "--hard", &good]).expect("reset");
    repo.write(&format!("prod/{a}.yaml"), &config_yaml(&a, 9))
        .expect("write");
    let fixed = repo.commit("fixed").expect("commit");
    let st = h.wait_applied(&src, &fixed).await;
    assert!(conditions::is_ready(&st.conditions), "{label}: {st:#?}");
    assert!(conditions::find(&st.conditions, "Stalled").is_none());
    assert_eq!(
        h.configs().get(&a).await.expect("a").spec.resource_mapping[0].device_index,
        9
    );
}

#[tokio::test]
async fn invalid_yaml() {
    let h = Harness::start("rev-yaml").await;
    bad_then_good(
        &h,
        "yaml",
        |r, _| {
            r.write(
                "prod/broken.yaml",
                "apiVersion: networking.k8s.aws/v1alpha1\nkind: DPDKConfig\nmetadata: [\n",
            )
            .expect("write")
        },
        "ValidationFailed",
        |_| "prod/broken.yaml:4:1: invalid YAML".to_string(),
    )
    .await;
}

#[tokio::test]
async fn schema_violation() {
    let h = Harness::start("rev-schema").await;
    bad_then_good(
        &h,
        "schema",
        |r, a| {
            let text = config_yaml(a, 7).replace("driver: vfio-pci", "driver: mlx5_core");
            r.write(&format!("prod/{a}.yaml"), &text).expect("write")
        },
        "ValidationFailed",
        |a| format!("prod/{a}.yaml:11:13: spec.resourceMapping[0].driver: unsupported value \"mlx5_core\""),
    )
    .await;
}

#[tokio::test]
async fn duplicate_name() {
    let h = Harness::start("rev-dup").await;
    bad_then_good(
        &h,
        "dup",
        |r, a| r.write("prod/zz-copy.yaml", &config_yaml(a, 3)).expect("write"),
        "ValidationFailed",
        |a| format!("prod/zz-copy.yaml:4:9: duplicate DPDKConfig name \"{a}\": already declared at prod/{a}.yaml:4:9"),
    )
    .await;
}

#[tokio::test]
async fn device_index_zero() {
    let h = Harness::start("rev-idx0").await;
    bad_then_good(
        &h,
        "idx0",
        |r, a| {
            r.write(&format!("prod/{a}.yaml"), &config_yaml(a, 0))
                .expect("write")
        },
        "ValidationFailed",
        |a| {
            format!(
                "prod/{a}.yaml:9:18: deviceIndex must be >= 1: index 0 is the node's primary ENI"
            )
        },
    )
    .await;
}

#[tokio::test]
async fn symlink_to_etc_passwd() {
    let h = Harness::start("rev-link").await;
    bad_then_good(
        &h,
        "link",
        |r, _| {
            r.symlink("prod/passwd.yaml", "/etc/passwd")
                .expect("symlink")
        },
        "ValidationFailed",
        |_| "prod/passwd.yaml: symlink to /etc/passwd leaves the repository; refused".to_string(),
    )
    .await;
}

#[tokio::test]
async fn dot_dot_path_escaping_the_repo() {
    let h = Harness::start("rev-dotdot").await;
    // A symlinked directory under the path that climbs out with ../../
    bad_then_good(
        &h,
        "dotdot",
        |r, _| {
            r.symlink("prod/up", "../../../../../../etc")
                .expect("symlink")
        },
        "ValidationFailed",
        |_| "prod/up: symlink to ../../../../../../etc leaves the repository; refused".to_string(),
    )
    .await;

    // spec.path itself may not climb out: the API server refuses it (CRD rule) ...
    let repo = WorkRepo::new().expect("repo");
    let err = h
        .sources()
        .create(
            &kube::api::PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "networking.k8s.aws/v1alpha1", "kind": "DPDKConfigSource",
                "metadata": {"name": unique_name("escape")},
                "spec": {"url": repo.file_url(), "ref": {"branch": "main"}, "path": "../../etc"}
            }))
            .expect("json"),
        )
        .await
        .expect_err("spec.path with .. is refused at admission");
    assert!(
        err.to_string()
            .contains("spec.path must be a relative path inside the repository"),
        "{err}"
    );

    // ... and a spec.path that is a symlink leaving the repo is refused by the loader.
    let x = unique_name("dotdot-x");
    repo.write(&format!("prod/{x}.yaml"), &config_yaml(&x, 1))
        .expect("write");
    repo.symlink("escape", "../../../../../../etc")
        .expect("symlink");
    let sha = repo.commit("escape").expect("commit");
    let src = unique_name("escape-link");
    h.source(&src, json!({"url": repo.file_url(), "ref": {"branch": "main"}, "path": "escape", "interval": "1h"})).await;
    let st = h.wait_attempted(&src, &sha).await;
    let (reason, msg) = stalled(&st);
    assert_eq!(reason, "ValidationFailed");
    assert!(
        msg.contains("escape: spec.path \"escape\" resolves to /etc outside the repository"),
        "{msg}"
    );
    assert!(st.last_applied_revision.is_none());
}

#[tokio::test]
async fn an_unreachable_repository_is_fetch_failed_and_keeps_the_last_good_revision() {
    let h = Harness::start("rev-fetch").await;
    let repo = WorkRepo::new().expect("repo");
    let a = unique_name("fetch-a");
    repo.write(&format!("{a}.yaml"), &config_yaml(&a, 1))
        .expect("write");
    let good = repo.commit("good").expect("commit");
    let src = unique_name("fetch");
    h.source(
        &src,
        json!({"url": repo.file_url(), "ref": {"branch": "main"}, "interval": "1h"}),
    )
    .await;
    h.wait_applied(&src, &good).await;
    let before = snapshot(&h.client, std::slice::from_ref(&a)).await;
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
            conditions::find(&s.conditions, "Stalled").is_some_and(|c| c.reason == "FetchFailed")
        })
        .await;
    let (_, msg) = stalled(&st);
    assert!(msg.contains("branch no-such-branch not found"), "{msg}");
    assert_eq!(st.last_applied_revision, Some(format!("main@sha1:{good}")));
    assert_eq!(snapshot(&h.client, &[a]).await, before);
}
