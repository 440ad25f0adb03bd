//! Drift end to end on the real API server: the Git source controller applies a repo
//! served over file://, the drift runtime watches, and its endpoints are served by the
//! reconciler's HTTP server. A live change shows up in `/drift.patch`; `git apply` on a
//! checkout at the reported revision, commit and push, and after the source reconciles the
//! report is empty again.

mod drift_support;

use drift_support::{World, git, kubectl};
use serde_json::Value;

/// The repo each test starts from: one commented multi-document file.
fn pools(prefix: &str) -> String {
    format!(
        r#"# DPDK pools of this cluster.
# Reviewed by the platform team.
apiVersion: networking.k8s.aws/v1alpha1
kind: DPDKConfig
metadata:
  name: {prefix}a
spec:
  nodeSelector:
    ng: {prefix}pool-a      # the Multi-ENI node group
  resourceMapping:
  - deviceIndex: 2
    resourceName: intel.com/intel_sriov_netdevice_2
---
# Second pool.
apiVersion: networking.k8s.aws/v1alpha1
kind: DPDKConfig
metadata:
  name: {prefix}b
spec:
  nodeSelector:
    ng: {prefix}pool-b
  driverOptions:
    enableUnsafeNoIOMMU: true
  resourceMapping:
  - deviceIndex: 3
    resourceName: "example.com/dpdk_b"   # quoted on purpose
    driver: vfio-pci
"#
    )
}

/// Applies the patch the endpoint serves on the work checkout (which is at the reported
/// revision), commits and pushes; returns the new revision.
fn apply_commit_push(w: &World, patch: &str, message: &str) -> String {
    let p = w.work.join("drift.patch");
    std::fs::write(&p, patch).expect("write patch");
    git(&w.work, &["apply", "--check", "drift.patch"]);
    git(&w.work, &["apply", "drift.patch"]);
    std::fs::remove_file(&p).expect("rm patch");
    git(&w.work, &["add", "-A"]);
    git(&w.work, &["commit", "-q", "-m", message]);
    git(&w.work, &["push", "-q", "origin", "main"]);
    w.head_revision()
}

#[tokio::test]
async fn round_trip_live_edit() {
    let w = World::start(
        "drift-edit",
        |p| vec![("pools.yaml".into(), pools(p))],
        Vec::new(),
    )
    .await;
    let rev = w.wait_applied_and_clean().await;

    // Edit live with kubectl: another field manager.
    let name = format!("{}b", w.prefix);
    kubectl(
        &w,
        &[
            "patch",
            "dpdkconfig",
            &name,
            "--type",
            "json",
            "-p",
            r#"[{"op":"replace","path":"/spec/resourceMapping/0/resourceName","value":"example.com/dpdk_live"}]"#,
        ],
    );
    let report = w
        .wait_report(|r| r["summary"]["total"] == 1, "the live edit shows up")
        .await;
    let f = &report["findings"][0];
    assert_eq!(f["layer"], "git-cluster");
    assert_eq!(f["kind"], "modified");
    assert_eq!(f["object"]["name"], name.as_str());
    assert_eq!(f["file"], format!("{}/pools.yaml", w.path));
    assert_eq!(f["line"], 26, "the line of resourceName in Git");
    assert_eq!(f["fieldPath"], "/spec/resourceMapping/0/resourceName");
    assert_eq!(
        (f["git"].clone(), f["live"].clone()),
        (
            Value::from("example.com/dpdk_b"),
            Value::from("example.com/dpdk_live")
        )
    );

    let (status, headers, patch) = w
        .get(&format!("/drift.patch?source={}", w.source_param()))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        headers.get("x-drift-revision"),
        Some(&rev),
        "the patch names the revision it applies to"
    );
    assert!(headers.contains_key("x-drift-generated-at"));
    // Only the differing line changes, quoting and comment kept.
    let changed: Vec<&str> = patch
        .lines()
        .filter(|l| {
            (l.starts_with('+') || l.starts_with('-'))
                && !l.starts_with("+++")
                && !l.starts_with("---")
        })
        .collect();
    assert_eq!(
        changed,
        vec![
            r#"-    resourceName: "example.com/dpdk_b"   # quoted on purpose"#,
            r#"+    resourceName: "example.com/dpdk_live"   # quoted on purpose"#,
        ]
    );

    let new_rev = apply_commit_push(&w, &patch, "take the live resourceName");
    w.wait_revision_and_clean(&new_rev).await;
    w.stop().await;
}

#[tokio::test]
async fn round_trip_object_deleted_live() {
    let w = World::start(
        "drift-del",
        |p| vec![("pools.yaml".into(), pools(p))],
        Vec::new(),
    )
    .await;
    w.wait_applied_and_clean().await;

    let name = format!("{}a", w.prefix);
    kubectl(&w, &["delete", "dpdkconfig", &name, "--wait=true"]);
    let report = w
        .wait_report(
            |r| r["summary"]["byKind"]["missing"] == 1,
            "the deletion shows up",
        )
        .await;
    assert_eq!(
        report["findings"][0]["line"], 3,
        "the document's first line"
    );
    let (_, _, patch) = w
        .get(&format!("/drift.patch?source={}", w.source_param()))
        .await;
    assert!(
        !patch.contains("deleted file"),
        "the file keeps its other document:\n{patch}"
    );

    let new_rev = apply_commit_push(&w, &patch, "drop pool a, deleted in the cluster");
    let text = std::fs::read_to_string(w.work.join(&w.path).join("pools.yaml")).expect("read");
    assert!(!text.contains(&name), "{text}");
    assert!(
        text.contains("# Second pool.\n")
            && text.contains(r#"resourceName: "example.com/dpdk_b"   # quoted on purpose"#),
        "{text}"
    );
    w.wait_revision_and_clean(&new_rev).await;
    // Reconcile did not bring it back.
    let (ok, _, _) = drift_support::kubectl_status(&w, &["get", "dpdkconfig", &name]);
    assert!(!ok, "{name} must stay deleted");
    w.stop().await;
}

#[tokio::test]
async fn round_trip_object_created_live() {
    let w = World::start(
        "drift-new",
        |p| vec![("pools.yaml".into(), pools(p))],
        Vec::new(),
    )
    .await;
    w.wait_applied_and_clean().await;

    let name = format!("{}c", w.prefix);
    let yaml = format!(
        "apiVersion: networking.k8s.aws/v1alpha1\nkind: DPDKConfig\nmetadata:\n  name: {name}\nspec:\n  nodeSelector:\n    ng: {p}pool-c\n  resourceMapping:\n  - deviceIndex: 4\n    resourceName: example.com/dpdk_c\n    driver: igb_uio\n",
        p = w.prefix
    );
    drift_support::kubectl_stdin(&w, &["create", "-f", "-"], &yaml);
    let report = w
        .wait_report(
            |r| r["summary"]["byKind"]["extra"] == 1,
            "the new object shows up",
        )
        .await;
    let new_file = format!("{}/{name}.yaml", w.path);
    assert_eq!(report["findings"][0]["file"], new_file.as_str());
    let (_, _, patch) = w
        .get(&format!("/drift.patch?source={}", w.source_param()))
        .await;
    assert!(
        patch.contains(&format!(
            "new file mode 100644\n--- /dev/null\n+++ b/{new_file}\n"
        )),
        "{patch}"
    );

    let new_rev = apply_commit_push(&w, &patch, "adopt pool c, created in the cluster");
    w.wait_revision_and_clean(&new_rev).await;
    // The source now owns it.
    let (ok, out, _) = drift_support::kubectl_status(
        &w,
        &[
            "get",
            "dpdkconfig",
            &name,
            "-o",
            "jsonpath={.metadata.labels.dpdk\\.aws\\.k8s/source}",
        ],
    );
    assert!(ok);
    assert_eq!(
        out.trim(),
        format!("{}.{}", w.ns, drift_support::SOURCE_NAME)
    );
    // Reverse-applying the patch would remove it again: what reconcile would do before.
    git(&w.work, &["diff", "--quiet"]);
    w.stop().await;
}
