//! ReportOnly never writes DPDKConfigs (checked through managedFields) but still fetches
//! and publishes the documents for drift; suspend pauses the source.

mod source_support;

use dpdk_bridge::api::DPDKConfig;
use dpdk_testenv::git_server::WorkRepo;
use dpdk_testenv::unique_name;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use source_support::{Harness, config_yaml};

fn managers(cfg: &DPDKConfig) -> Vec<String> {
    cfg.metadata
        .managed_fields
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect()
}

#[tokio::test]
async fn report_only_fetches_and_publishes_but_never_writes() {
    let h = Harness::start("reportonly").await;
    let repo = WorkRepo::new().expect("repo");
    let existing = unique_name("ro-existing");
    let absent = unique_name("ro-absent");
    repo.write(&format!("prod/{existing}.yaml"), &config_yaml(&existing, 2))
        .expect("write");
    repo.write(&format!("prod/{absent}.yaml"), &config_yaml(&absent, 3))
        .expect("write");
    let sha = repo.commit("two").expect("commit");
    // Argo CD applied `existing` (with a different value).
    let obj: DPDKConfig = serde_json::from_value(json!({
        "apiVersion": "networking.k8s.aws/v1alpha1", "kind": "DPDKConfig", "metadata": {"name": existing},
        "spec": {"nodeSelector": {"ng": "x"}, "resourceMapping": [{"deviceIndex": 5, "resourceName": "intel.com/x"}]}
    }))
    .expect("cfg");
    h.configs()
        .create(
            &PostParams {
                field_manager: Some("argocd-controller".into()),
                ..Default::default()
            },
            &obj,
        )
        .await
        .expect("create");

    let src = unique_name("ro");
    h.source(&src, json!({"url": repo.file_url(), "ref": {"branch": "main"}, "path": "prod", "interval": "1h", "mode": "ReportOnly"})).await;
    let revision = format!("main@sha1:{sha}");
    let st = h
        .wait_status(&src, 60, |s| {
            s.last_fetched_revision.as_deref() == Some(revision.as_str())
        })
        .await;
    let ready = dpdk_bridge::conditions::find(&st.conditions, "Ready").expect("ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "ReportOnly")
    );
    assert!(
        st.last_applied_revision.is_none(),
        "ReportOnly applies nothing"
    );
    assert!(st.inventory.is_empty());

    // The documents are available to the drift engine.
    let snap = h
        .store
        .get(&dpdk_reconciler::source::SourceKey::new(&h.ns, &src))
        .expect("snapshot published");
    assert_eq!(snap.revision, revision);
    let mut names: Vec<&str> = snap
        .manifests
        .objects
        .iter()
        .map(|o| o.name.as_str())
        .collect();
    names.sort();
    let mut want = vec![existing.as_str(), absent.as_str()];
    want.sort();
    assert_eq!(names, want);

    // A new commit is fetched too; still nothing is written.
    repo.write(&format!("prod/{existing}.yaml"), &config_yaml(&existing, 6))
        .expect("write");
    let sha2 = repo.commit("change").expect("commit");
    let revision2 = format!("main@sha1:{sha2}");
    h.wait_status(&src, 60, |s| {
        s.last_fetched_revision.as_deref() == Some(revision2.as_str())
    })
    .await;
    let cfg = h.configs().get(&existing).await.expect("get");
    assert!(
        !managers(&cfg).contains(&"dpdk-reconciler".to_string()),
        "managers: {:?}",
        managers(&cfg)
    );
    assert_eq!(managers(&cfg), vec!["argocd-controller".to_string()]);
    assert_eq!(cfg.spec.resource_mapping[0].device_index, 5);
    assert!(
        h.configs().get_opt(&absent).await.expect("get").is_none(),
        "ReportOnly never creates"
    );
    assert_eq!(
        h.store.get(&snap.key).expect("snapshot").revision,
        revision2
    );
}

#[tokio::test]
async fn suspend_pauses_and_resume_applies() {
    let h = Harness::start("suspend").await;
    let repo = WorkRepo::new().expect("repo");
    let a = unique_name("susp-a");
    repo.write(&format!("{a}.yaml"), &config_yaml(&a, 1))
        .expect("write");
    let first = repo.commit("one").expect("commit");
    let src = unique_name("susp");
    h.source(
        &src,
        json!({"url": repo.file_url(), "ref": {"branch": "main"}, "interval": "1h"}),
    )
    .await;
    h.wait_applied(&src, &first).await;
    h.sources()
        .patch(
            &src,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": true}})),
        )
        .await
        .expect("suspend");
    // Let the controller see the suspension before committing.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let b = unique_name("susp-b");
    repo.write(&format!("{b}.yaml"), &config_yaml(&b, 1))
        .expect("write");
    let second = repo.commit("two").expect("commit");
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let st = h.status(&src).await;
    assert_eq!(
        st.last_fetched_revision,
        Some(format!("main@sha1:{first}")),
        "a suspended source does not fetch"
    );
    assert!(h.configs().get_opt(&b).await.expect("get").is_none());
    h.sources()
        .patch(
            &src,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": false}})),
        )
        .await
        .expect("resume");
    h.wait_applied(&src, &second).await;
    assert!(h.configs().get_opt(&b).await.expect("get").is_some());
}
