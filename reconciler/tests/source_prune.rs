//! Pruning and coexistence: removing a file prunes its object; an object relabelled by
//! someone else is not pruned; objects carrying Argo CD or Flux markers are reported as
//! ownedBy and never applied over or pruned; spec.prune=false keeps everything.

mod source_support;

use std::collections::BTreeMap;

use dpdk_bridge::api::DPDKConfig;
use dpdk_bridge::labels;
use dpdk_testenv::git_server::WorkRepo;
use dpdk_testenv::unique_name;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use source_support::{Harness, config_yaml};

async fn set_labels(
    h: &Harness,
    name: &str,
    labels_: serde_json::Value,
    annotations: serde_json::Value,
) {
    h.configs()
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": labels_, "annotations": annotations}})),
        )
        .await
        .expect("relabel");
}

#[tokio::test]
async fn removing_a_file_prunes_its_object_but_not_relabelled_or_foreign_ones() {
    let h = Harness::start("prune").await;
    let repo = WorkRepo::new().expect("repo");
    let [gone, relabelled, argo, flux, stays] =
        ["gone", "relabelled", "argo", "flux", "stays"].map(|p| unique_name(&format!("prune-{p}")));
    for (i, n) in [&gone, &relabelled, &argo, &flux, &stays]
        .iter()
        .enumerate()
    {
        repo.write(&format!("prod/{n}.yaml"), &config_yaml(n, i as i32 + 1))
            .expect("write");
    }
    let first = repo.commit("five").expect("commit");
    let src = unique_name("prune");
    h.source(&src, json!({"url": repo.file_url(), "ref": {"branch": "main"}, "path": "prod", "interval": "1h"})).await;
    let st = h.wait_applied(&src, &first).await;
    assert_eq!(st.inventory.len(), 5);

    // Someone takes `relabelled` over; Argo CD and Flux adopt two others.
    set_labels(
        &h,
        &relabelled,
        json!({labels::MANAGED_BY_LABEL: "helm"}),
        json!({}),
    )
    .await;
    set_labels(
        &h,
        &argo,
        json!({}),
        json!({labels::ARGOCD_TRACKING_ANNOTATION: "app:networking.k8s.aws/DPDKConfig:x"}),
    )
    .await;
    set_labels(
        &h,
        &flux,
        json!({labels::FLUX_KUSTOMIZE_NAME_LABEL: "dpdk"}),
        json!({}),
    )
    .await;
    let flux_rv = h
        .configs()
        .get(&flux)
        .await
        .expect("flux")
        .metadata
        .resource_version;

    // All four files go away.
    for n in [&gone, &relabelled, &argo, &flux] {
        repo.remove(&format!("prod/{n}.yaml")).expect("rm");
    }
    let second = repo.commit("remove four").expect("commit");
    let st = h.wait_applied(&src, &second).await;
    assert!(
        h.configs().get_opt(&gone).await.expect("get").is_none(),
        "a removed file prunes its object"
    );
    assert!(
        h.configs()
            .get_opt(&relabelled)
            .await
            .expect("get")
            .is_some(),
        "relabelled by someone else: not pruned"
    );
    assert!(
        h.configs().get_opt(&argo).await.expect("get").is_some(),
        "Argo CD's: not pruned"
    );
    let flux_obj = h.configs().get(&flux).await.expect("flux's: not pruned");
    assert_eq!(
        flux_obj.metadata.resource_version, flux_rv,
        "Flux's object is not touched at all"
    );
    assert_eq!(
        st.inventory
            .iter()
            .map(|e| e.name.clone())
            .collect::<Vec<_>>(),
        vec![stays.clone()]
    );
    let ready = dpdk_bridge::conditions::find(&st.conditions, "Ready").expect("ready");
    assert!(
        ready.message.contains(&format!("{argo} (ownedBy: argocd)")),
        "{}",
        ready.message
    );
    assert!(
        ready.message.contains(&format!("{flux} (ownedBy: flux)")),
        "{}",
        ready.message
    );
    assert!(
        ready.message.contains(&format!(
            "{relabelled} (no longer carries this source's labels; not pruned)"
        )),
        "{}",
        ready.message
    );
    // The drift engine sees the same through the store.
    let snap = h
        .store
        .get(&dpdk_reconciler::source::SourceKey::new(&h.ns, &src))
        .expect("snapshot");
    let owned: BTreeMap<String, Option<&str>> = snap
        .untouched
        .iter()
        .map(|u| (u.name.clone(), u.owned_by.map(|o| o.as_str())))
        .collect();
    assert_eq!(owned.get(&argo), Some(&Some("argocd")));
    assert_eq!(owned.get(&flux), Some(&Some("flux")));
    assert_eq!(owned.get(&relabelled), Some(&None));
}

#[tokio::test]
async fn objects_with_argo_or_flux_markers_are_never_applied_over() {
    let h = Harness::start("coexist").await;
    let argo = unique_name("coexist-argo");
    let flux = unique_name("coexist-flux");
    // Argo CD and Flux applied these first, with other values.
    for (n, marker) in [
        (&argo, json!({labels::ARGOCD_INSTANCE_LABEL: "dpdk"})),
        (&flux, json!({labels::FLUX_KUSTOMIZE_NAME_LABEL: "dpdk"})),
    ] {
        let mut value = config_json(n, 9);
        value["metadata"]["labels"] = marker;
        let obj: DPDKConfig = serde_json::from_value(value).expect("cfg");
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
    }
    let mut rv_before = Vec::new();
    for n in [&argo, &flux] {
        rv_before.push(
            h.configs()
                .get(n)
                .await
                .expect("get")
                .metadata
                .resource_version,
        );
    }
    let repo = WorkRepo::new().expect("repo");
    let mine = unique_name("coexist-mine");
    for n in [&argo, &flux, &mine] {
        repo.write(&format!("{n}.yaml"), &config_yaml(n, 1))
            .expect("write");
    }
    let sha = repo.commit("three").expect("commit");
    let src = unique_name("coexist");
    h.source(
        &src,
        json!({"url": repo.file_url(), "ref": {"branch": "main"}, "interval": "1h"}),
    )
    .await;
    let st = h.wait_applied(&src, &sha).await;
    let mut rv_after = Vec::new();
    for n in [&argo, &flux] {
        rv_after.push(
            h.configs()
                .get(n)
                .await
                .expect("get")
                .metadata
                .resource_version,
        );
    }
    assert_eq!(
        rv_before, rv_after,
        "objects owned by Argo CD / Flux are not written"
    );
    assert_eq!(
        h.configs()
            .get(&argo)
            .await
            .expect("get")
            .spec
            .resource_mapping[0]
            .device_index,
        9
    );
    assert!(h.configs().get_opt(&mine).await.expect("get").is_some());
    assert_eq!(
        st.inventory
            .iter()
            .map(|e| e.name.clone())
            .collect::<Vec<_>>(),
        vec![mine]
    );
    let msg = dpdk_bridge::conditions::find(&st.conditions, "Ready")
        .expect("ready")
        .message
        .clone();
    assert!(
        msg.contains(&format!("{argo} (ownedBy: argocd)"))
            && msg.contains(&format!("{flux} (ownedBy: flux)")),
        "{msg}"
    );
}

/// The spec of `config_yaml(name, index)` as a JSON object.
fn config_json(name: &str, index: i32) -> serde_json::Value {
    json!({
        "apiVersion": "networking.k8s.aws/v1alpha1", "kind": "DPDKConfig",
        "metadata": {"name": name},
        "spec": {"nodeSelector": {"ng": name}, "resourceMapping": [{"deviceIndex": index, "resourceName": format!("intel.com/dpdk_{index}"), "driver": "vfio-pci"}]}
    })
}

#[tokio::test]
async fn prune_false_keeps_removed_objects() {
    let h = Harness::start("noprune").await;
    let repo = WorkRepo::new().expect("repo");
    let a = unique_name("noprune-a");
    let b = unique_name("noprune-b");
    repo.write(&format!("{a}.yaml"), &config_yaml(&a, 1))
        .expect("write");
    repo.write(&format!("{b}.yaml"), &config_yaml(&b, 1))
        .expect("write");
    let first = repo.commit("two").expect("commit");
    let src = unique_name("noprune");
    h.source(&src, json!({"url": repo.file_url(), "ref": {"branch": "main"}, "interval": "1h", "prune": false})).await;
    h.wait_applied(&src, &first).await;
    repo.remove(&format!("{b}.yaml")).expect("rm");
    let second = repo.commit("one").expect("commit");
    h.wait_applied(&src, &second).await;
    assert!(
        h.configs().get_opt(&b).await.expect("get").is_some(),
        "prune: false never deletes"
    );
}

#[tokio::test]
async fn removing_every_file_prunes_everything_and_empties_the_inventory() {
    let h = Harness::start("prune-all").await;
    let repo = WorkRepo::new().expect("repo");
    let a = unique_name("pruneall-a");
    repo.write(&format!("prod/{a}.yaml"), &config_yaml(&a, 1))
        .expect("write");
    repo.write("prod/README.md", "configs live here\n")
        .expect("write");
    let first = repo.commit("one").expect("commit");
    let src = unique_name("prune-all");
    h.source(&src, json!({"url": repo.file_url(), "ref": {"branch": "main"}, "path": "prod", "interval": "1h"})).await;
    assert_eq!(h.wait_applied(&src, &first).await.inventory.len(), 1);
    repo.remove(&format!("prod/{a}.yaml")).expect("rm");
    let second = repo.commit("none").expect("commit");
    let st = h.wait_applied(&src, &second).await;
    assert!(st.inventory.is_empty(), "{st:#?}");
    assert!(h.configs().get_opt(&a).await.expect("get").is_none());
}
