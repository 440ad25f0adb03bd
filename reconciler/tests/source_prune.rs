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

/// A ValidatingAdmissionPolicy (and its binding) that refuses the DPDKConfig `refused`:
/// a site policy offline validation cannot know. Removed on drop.
struct RefusingPolicy {
    api: kube::Api<kube::api::DynamicObject>,
    binding_api: kube::Api<kube::api::DynamicObject>,
    name: String,
}

impl RefusingPolicy {
    async fn install(client: &kube::Client, refused: &str) -> RefusingPolicy {
        use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
        let gvk = |kind| GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", kind);
        let api = kube::Api::<DynamicObject>::all_with(
            client.clone(),
            &ApiResource::from_gvk_with_plural(
                &gvk("ValidatingAdmissionPolicy"),
                "validatingadmissionpolicies",
            ),
        );
        let binding_api = kube::Api::<DynamicObject>::all_with(
            client.clone(),
            &ApiResource::from_gvk_with_plural(
                &gvk("ValidatingAdmissionPolicyBinding"),
                "validatingadmissionpolicybindings",
            ),
        );
        let name = unique_name("refuse");
        let policy: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {"resourceRules": [{
                    "apiGroups": ["networking.k8s.aws"], "apiVersions": ["*"],
                    "operations": ["CREATE", "UPDATE"], "resources": ["dpdkconfigs"]
                }]},
                "validations": [{
                    "expression": format!("object.metadata.name != '{refused}'"),
                    "message": format!("site policy: {refused} is not allowed here"),
                }]
            }
        }))
        .expect("policy");
        let binding: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name},
            "spec": {"policyName": name, "validationActions": ["Deny"]}
        }))
        .expect("binding");
        api.create(&PostParams::default(), &policy)
            .await
            .expect("create policy");
        binding_api
            .create(&PostParams::default(), &binding)
            .await
            .expect("create binding");
        RefusingPolicy {
            api,
            binding_api,
            name,
        }
    }
}

impl Drop for RefusingPolicy {
    fn drop(&mut self) {
        let (api, binding_api, name) = (
            self.api.clone(),
            self.binding_api.clone(),
            self.name.clone(),
        );
        tokio::spawn(async move {
            let _ = binding_api.delete(&name, &Default::default()).await;
            let _ = api.delete(&name, &Default::default()).await;
        });
    }
}

/// Waits until the API server enforces the policy (its policy cache syncs in the
/// background): a dry-run create of `refused` is denied.
async fn wait_refused(h: &Harness, refused: &str) {
    let obj: DPDKConfig = serde_json::from_value(config_json(refused, 2)).expect("cfg");
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match h.configs().create(&dry, &obj).await {
            Err(e) if e.to_string().contains("site policy") => return,
            r => assert!(
                tokio::time::Instant::now() < deadline,
                "the policy is not enforced: {r:?}"
            ),
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_rename_whose_new_object_is_refused_prunes_nothing_and_names_it() {
    let h = Harness::start("rename").await;
    let repo = WorkRepo::new().expect("repo");
    let a = unique_name("rename-a");
    let b = unique_name("rename-b");
    repo.write(&format!("prod/{a}.yaml"), &config_yaml(&a, 1))
        .expect("write");
    let first = repo.commit("a").expect("commit");
    let src = unique_name("rename");
    h.source(&src, json!({"url": repo.file_url(), "ref": {"branch": "main"}, "path": "prod", "interval": "1h"})).await;
    h.wait_applied(&src, &first).await;
    let before = source_support::snapshot(&h.client, std::slice::from_ref(&a)).await;

    // The cluster refuses b (offline validation accepts it: `validate` passes).
    let _policy = RefusingPolicy::install(&h.client, &b).await;
    wait_refused(&h, &b).await;

    // Rename a → b in Git.
    repo.remove(&format!("prod/{a}.yaml")).expect("rm");
    repo.write(&format!("prod/{b}.yaml"), &config_yaml(&b, 1))
        .expect("write");
    let second = repo.commit("rename a to b").expect("commit");
    let st = h.wait_attempted(&src, &second).await;

    assert_eq!(
        source_support::snapshot(&h.client, std::slice::from_ref(&a)).await,
        before,
        "a survives untouched"
    );
    assert!(h.configs().get_opt(&b).await.expect("get").is_none());
    let stalled = dpdk_bridge::conditions::find(&st.conditions, "Stalled").expect("stalled");
    assert_eq!(stalled.reason, "ApplyFailed", "{}", stalled.message);
    assert!(
        stalled.message.contains(&format!("DPDKConfig {b}:"))
            && stalled.message.contains("site policy"),
        "the status names the object that failed and why: {}",
        stalled.message
    );
    assert!(
        stalled
            .message
            .contains(&format!("not pruned while an apply fails: {a}")),
        "{}",
        stalled.message
    );
    assert_eq!(
        st.last_applied_revision,
        Some(format!("main@sha1:{first}")),
        "the last good revision stays"
    );
    assert_eq!(
        st.inventory
            .iter()
            .map(|e| e.name.clone())
            .collect::<Vec<_>>(),
        vec![a.clone()],
        "the previous inventory is kept"
    );
}

#[tokio::test]
async fn a_long_source_name_gets_a_hashed_label_within_63_characters() {
    let h = Harness::start("label").await;
    let repo = WorkRepo::new().expect("repo");
    let a = unique_name("label-a");
    repo.write(&format!("{a}.yaml"), &config_yaml(&a, 1))
        .expect("write");
    let first = repo.commit("a").expect("commit");
    // `<namespace>.<name>` is far over 63 characters.
    let src = format!("{}-{}", unique_name("label"), "x".repeat(60));
    h.source(
        &src,
        json!({"url": repo.file_url(), "ref": {"branch": "main"}, "interval": "1h"}),
    )
    .await;
    h.wait_applied(&src, &first).await;
    let cfg = h.configs().get(&a).await.expect("applied");
    let label = cfg
        .metadata
        .labels
        .unwrap_or_default()
        .get(labels::SOURCE_LABEL)
        .cloned()
        .expect("source label");
    assert!(label.len() <= 63, "{label}");
    assert!(
        label.starts_with(&format!("{}.label-", h.ns)),
        "readable prefix: {label}"
    );
    assert_eq!(
        label,
        dpdk_reconciler::source::SourceKey::new(&h.ns, &src).label_value()
    );
    // Pruning recognizes the hashed label as this source's.
    repo.remove(&format!("{a}.yaml")).expect("rm");
    let second = repo.commit("none").expect("commit");
    let st = h.wait_applied(&src, &second).await;
    assert!(st.inventory.is_empty(), "{st:#?}");
    assert!(h.configs().get_opt(&a).await.expect("get").is_none());
}
