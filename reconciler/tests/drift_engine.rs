//! The drift engine and its patch, without a server: Git documents and live objects as
//! data, `git apply` run for real on a temporary checkout.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use dpdk_bridge::api::{
    DPDKConfig, DPDKConfigStatus, DPDKNodeState, DPDKNodeStateSpec, DPDKNodeStateStatus,
    DesiredDevice, DeviceStatus, DpdkDriver, ENIAttachment, EffectiveDriverOptions, IgnoreRule,
    ModuleStatus, NodeENI, NodeENISpec, NodeENIStatus, WriteCombiningState, WriteCombiningStatus,
};
use dpdk_reconciler::drift::patch::{FileChange, file_changes, render_patch};
use dpdk_reconciler::drift::{
    FindingKind, GitDocument, GitSource, Layer, LiveObjects, SourceKey, compute,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

/// The objects of one YAML file, through the real manifest loader.
fn docs(file: &str, text: &str) -> Vec<GitDocument> {
    GitDocument::from_text(file, text)
}

const SOURCE: &str = "dpdk-operator/prod";

fn source(path: &str, files: &[(&str, &str)]) -> GitSource {
    let mut documents = Vec::new();
    let mut texts = BTreeMap::new();
    for (file, text) in files {
        documents.extend(docs(file, text));
        texts.insert(file.to_string(), text.to_string());
    }
    GitSource {
        key: SourceKey::parse(SOURCE),
        revision: Some("main@sha1:0123456789abcdef0123456789abcdef01234567".into()),
        path: path.into(),
        files: std::sync::Arc::new(texts),
        documents: std::sync::Arc::new(documents),
        ignore: Vec::new(),
        adopt_orphans: false,
    }
}

/// A DPDKConfig as the API server returns it after our SSA: defaults filled, server
/// metadata, our labels and annotations, managedFields and status.
fn live_from_yaml(yaml: &str) -> DPDKConfig {
    let v = docs("live.yaml", yaml)
        .pop()
        .expect("a valid DPDKConfig")
        .value;
    live_from_json(v)
}

fn live_from_json(v: Value) -> DPDKConfig {
    let mut cfg: DPDKConfig = serde_json::from_value(v).expect("a DPDKConfig");
    let m = &mut cfg.metadata;
    m.uid = Some("6f1c1f3e-5a7e-4c61-9d0b-3a2f5b7c9e11".into());
    m.resource_version = Some("4711".into());
    m.generation = Some(3);
    m.creation_timestamp = Some(Time("2025-01-02T03:04:05Z".parse().expect("ts")));
    m.finalizers = Some(vec!["dpdk.aws.k8s/teardown".into()]);
    m.labels.get_or_insert_default().extend([
        (
            "app.kubernetes.io/managed-by".to_string(),
            "dpdk-reconciler".to_string(),
        ),
        (
            "dpdk.aws.k8s/source".to_string(),
            "dpdk-operator.prod".to_string(),
        ),
    ]);
    m.annotations.get_or_insert_default().extend([
        (
            "dpdk.aws.k8s/revision".to_string(),
            "main@sha1:0123456789abcdef0123456789abcdef01234567".to_string(),
        ),
        (
            "dpdk.aws.k8s/origin".to_string(),
            "clusters/prod/dpdk.yaml".to_string(),
        ),
    ]);
    m.managed_fields = Some(vec![ManagedFieldsEntry {
        manager: Some("dpdk-reconciler".into()),
        operation: Some("Apply".into()),
        ..Default::default()
    }]);
    cfg.status = Some(DPDKConfigStatus {
        observed_generation: Some(3),
        matched_nodes: 2,
        ready_nodes: 2,
        ..Default::default()
    });
    cfg
}

fn now() -> Timestamp {
    "2025-06-01T12:00:00Z".parse().expect("ts")
}

/// A commented multi-document file with mixed quoting and an indented sequence.
const MULTI: &str = r#"# Production DPDK configs.
# Owned by the platform team; see RUNBOOK.md before editing.
apiVersion: networking.k8s.aws/v1alpha1
kind: DPDKConfig
metadata:
  name: prod-a
  labels:
    team: "net"   # quoted on purpose
spec:
  nodeSelector:
    ng: multi-eni
  driverOptions:
    writeCombing: true     # the seed's spelling
  resourceMapping:
    # data plane ENI
    - deviceIndex: 2
      resourceName: 'intel.com/intel_sriov_netdevice_2'
---
# Second pool: two ENIs.
apiVersion: networking.k8s.aws/v1alpha1
kind: DPDKConfig
metadata:
  name: prod-b
spec:
  nodeSelector: {ng: pool-b}
  resourceMapping:
    - deviceIndex: 2
      resourceName: "example.com/dpdk_b2"   # keep quotes
      driver: vfio-pci
    - deviceIndex: 3
      resourceName: example.com/dpdk_b3
"#;

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes `files` into a fresh repository, commits, applies `patch` with `git apply
/// --check` then `git apply`, and returns the files afterwards.
fn git_apply(files: &[(&str, &str)], patch: &str) -> BTreeMap<String, String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    git(d, &["init", "-q", "-b", "main"]);
    for (f, t) in files {
        let p = d.join(f);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, t).expect("write");
    }
    git(d, &["add", "-A"]);
    git(
        d,
        &[
            "-c",
            "user.email=t@example.com",
            "-c",
            "user.name=t",
            "commit",
            "-q",
            "-m",
            "init",
        ],
    );
    std::fs::write(d.join("drift.patch"), patch).expect("write patch");
    git(d, &["apply", "--check", "drift.patch"]);
    git(d, &["apply", "drift.patch"]);
    // `git apply -R --check` must accept it too: it shows what reconcile will do.
    git(d, &["apply", "-R", "--check", "drift.patch"]);
    std::fs::remove_file(d.join("drift.patch")).expect("rm");
    let mut out = BTreeMap::new();
    for entry in walk(d) {
        let rel = entry
            .strip_prefix(d)
            .expect("rel")
            .to_string_lossy()
            .replace('\\', "/");
        out.insert(rel, std::fs::read_to_string(&entry).expect("read"));
    }
    out
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("readdir").flatten() {
        let p = e.path();
        if p.file_name().is_some_and(|n| n == ".git") {
            continue;
        }
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Patch for the source, applied for real; then the engine on the patched files must find
/// no git ↔ cluster drift.
fn round_trip(
    path: &str,
    files: &[(&str, &str)],
    live: &LiveObjects,
) -> (String, BTreeMap<String, String>) {
    let mut src = source(path, files);
    src.adopt_orphans = true;
    let report = compute(std::slice::from_ref(&src), live, now(), None);
    assert!(!report.findings.is_empty(), "expected drift");
    let changes = file_changes(&src, &report.findings, live);
    let patch = render_patch(&changes);
    let after = git_apply(files, &patch);
    let after_files: Vec<(&str, &str)> = after
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut src2 = source(path, &after_files);
    src2.adopt_orphans = true;
    let report2 = compute(&[src2], live, now(), None);
    let layer1: Vec<_> = report2
        .findings
        .iter()
        .filter(|f| f.layer == Layer::GitCluster)
        .collect();
    assert!(
        layer1.is_empty(),
        "drift left after applying the patch:\n{patch}\n{layer1:#?}"
    );
    (patch, after)
}

fn live_configs_of(text: &str) -> Vec<DPDKConfig> {
    docs("x.yaml", text)
        .into_iter()
        .map(|d| live_from_json(d.value))
        .collect()
}

fn changed_lines(patch: &str) -> Vec<&str> {
    patch
        .lines()
        .filter(|l| {
            (l.starts_with('+') || l.starts_with('-'))
                && !l.starts_with("+++")
                && !l.starts_with("---")
        })
        .collect()
}

#[test]
fn no_noise_defaults_and_server_metadata_are_not_drift() {
    let src = source("clusters/prod", &[("clusters/prod/dpdk.yaml", MULTI)]);
    // The live objects carry every default the server fills and all its metadata.
    let mut live = LiveObjects {
        configs: live_configs_of(MULTI),
        ..Default::default()
    };
    for cfg in &mut live.configs {
        cfg.spec.driver_options.enable_unsafe_no_iommu = true;
        for m in &mut cfg.spec.resource_mapping {
            m.driver = DpdkDriver::VfioPci;
        }
    }
    // Explicit false equals the default too.
    live.configs[1].spec.driver_options.write_combining = Some(false);
    let report = compute(&[src], &live, now(), None);
    assert_eq!(
        report.findings,
        vec![],
        "defaults and server metadata must not be drift"
    );
    assert_eq!(report.summary.total, 0);
}

#[test]
fn formatting_survives_a_one_field_change() {
    let mut live = LiveObjects {
        configs: live_configs_of(MULTI),
        ..Default::default()
    };
    live.configs[1].spec.resource_mapping[0].resource_name = "example.com/dpdk_b2_live".into();
    let (patch, after) = round_trip(
        "clusters/prod",
        &[("clusters/prod/dpdk.yaml", MULTI)],
        &live,
    );
    assert_eq!(
        changed_lines(&patch),
        vec![
            r#"-      resourceName: "example.com/dpdk_b2"   # keep quotes"#,
            r#"+      resourceName: "example.com/dpdk_b2_live"   # keep quotes"#,
        ]
    );
    assert_eq!(
        after["clusters/prod/dpdk.yaml"],
        MULTI.replace("example.com/dpdk_b2\"", "example.com/dpdk_b2_live\"")
    );
    insta::assert_snapshot!("formatting_survives_a_one_field_change", patch);
}

#[test]
fn the_finding_names_the_file_line_and_field() {
    let src = source("clusters/prod", &[("clusters/prod/dpdk.yaml", MULTI)]);
    let mut live = LiveObjects {
        configs: live_configs_of(MULTI),
        ..Default::default()
    };
    live.configs[0].spec.driver_options.write_combing = Some(false);
    let report = compute(&[src], &live, now(), None);
    assert_eq!(report.findings.len(), 1, "{:#?}", report.findings);
    let f = &report.findings[0];
    assert_eq!(
        (f.layer, f.kind),
        (Layer::GitCluster, FindingKind::Modified)
    );
    assert_eq!(f.object.name, "prod-a");
    assert_eq!(f.file.as_deref(), Some("clusters/prod/dpdk.yaml"));
    assert_eq!(f.line, Some(13));
    assert_eq!(f.field_path, "/spec/driverOptions/writeCombing");
    assert_eq!((f.git.clone(), f.live.clone()), (json!(true), json!(false)));
    assert_eq!(f.source.as_deref(), Some(SOURCE));
    assert_eq!(&*f.since, "2025-06-01T12:00:00Z");
}

#[test]
fn since_carries_over_between_recomputations() {
    let src = source("clusters/prod", &[("clusters/prod/dpdk.yaml", MULTI)]);
    let mut live = LiveObjects {
        configs: live_configs_of(MULTI),
        ..Default::default()
    };
    live.configs[0]
        .spec
        .node_selector
        .insert("zone".into(), "a".into());
    let first = compute(std::slice::from_ref(&src), &live, now(), None);
    let later: Timestamp = "2025-06-01T12:05:00Z".parse().expect("ts");
    let second = compute(&[src], &live, later, Some(&first));
    assert_eq!(second.findings.len(), 1);
    assert_eq!(&*second.findings[0].since, "2025-06-01T12:00:00Z");
    assert_eq!(second.generated_at, "2025-06-01T12:05:00Z");
}

#[test]
fn added_removed_and_defaulted_fields_patch_in_place() {
    let mut live = LiveObjects {
        configs: live_configs_of(MULTI),
        ..Default::default()
    };
    let a = &mut live.configs[0];
    a.spec
        .node_selector
        .insert("zone".into(), "us-east-1a".into()); // a key Git lacks
    a.spec.resource_mapping[0].driver = DpdkDriver::IgbUio; // Git relies on the default
    a.spec.driver_options.enable_unsafe_no_iommu = false; // Git relies on the default
    a.metadata.labels.as_mut().expect("labels").remove("team"); // a label Git declares
    let b = &mut live.configs[1];
    b.spec.node_selector.insert("zone".into(), "b".into()); // inside a flow mapping
    b.spec.resource_mapping.remove(1); // an item removed live
    b.spec
        .resource_mapping
        .push(dpdk_bridge::api::ResourceMapping {
            device_index: 4,
            resource_name: "example.com/dpdk_b4".into(),
            driver: DpdkDriver::UioPciGeneric,
        });
    let (patch, after) = round_trip(
        "clusters/prod",
        &[("clusters/prod/dpdk.yaml", MULTI)],
        &live,
    );
    let text = &after["clusters/prod/dpdk.yaml"];
    // Everything Git wrote that the cluster still has is byte-for-byte the same.
    for kept in [
        "# Production DPDK configs.",
        "    writeCombing: true     # the seed's spelling",
        "    # data plane ENI",
        "      resourceName: 'intel.com/intel_sriov_netdevice_2'",
        "# Second pool: two ENIs.",
        r#"      resourceName: "example.com/dpdk_b2"   # keep quotes"#,
    ] {
        assert!(text.contains(kept), "lost {kept:?}:\n{text}");
    }
    assert!(!text.contains("example.com/dpdk_b3"), "{text}");
    assert!(!text.contains("team:"), "{text}");
    assert!(
        text.contains("      driver: igb_uio\n"),
        "inserted in the item's indentation:\n{text}"
    );
    assert!(text.contains("    - deviceIndex: 4\n      resourceName: example.com/dpdk_b4\n      driver: uio_pci_generic\n"), "{text}");
    assert!(text.contains("    enableUnsafeNoIOMMU: false\n"), "{text}");
    assert!(
        text.contains("    ng: multi-eni\n    zone: us-east-1a\n"),
        "{text}"
    );
    // The flow mapping is rewritten on its line only, in flow style.
    assert!(
        text.contains("  nodeSelector: {ng: pool-b, zone: b}\n"),
        "{text}"
    );
    assert!(
        patch.starts_with("diff --git a/clusters/prod/dpdk.yaml b/clusters/prod/dpdk.yaml\n"),
        "{patch}"
    );
}

#[test]
fn a_missing_object_removes_its_document_and_keeps_the_rest() {
    let mut live = LiveObjects {
        configs: live_configs_of(MULTI),
        ..Default::default()
    };
    live.configs.remove(0);
    let (patch, after) = round_trip(
        "clusters/prod",
        &[("clusters/prod/dpdk.yaml", MULTI)],
        &live,
    );
    let text = &after["clusters/prod/dpdk.yaml"];
    assert!(!text.contains("prod-a"), "{text}");
    let second = MULTI.split("---\n").nth(1).expect("two documents");
    assert!(
        text.contains(second),
        "the second document must stay as it was:\n{text}"
    );
    assert!(!patch.contains("deleted file"), "{patch}");
}

#[test]
fn a_missing_sole_object_deletes_its_file() {
    let one = "# only one\napiVersion: networking.k8s.aws/v1alpha1\nkind: DPDKConfig\nmetadata:\n  name: solo\nspec:\n  nodeSelector:\n    ng: x\n";
    let files = [
        ("clusters/prod/solo.yaml", one),
        ("clusters/prod/dpdk.yaml", MULTI),
    ];
    let live = LiveObjects {
        configs: live_configs_of(MULTI),
        ..Default::default()
    };
    let (patch, after) = round_trip("clusters/prod", &files, &live);
    assert!(
        patch.contains("deleted file mode 100644\n--- a/clusters/prod/solo.yaml\n+++ /dev/null\n"),
        "{patch}"
    );
    assert!(!after.contains_key("clusters/prod/solo.yaml"));
    assert_eq!(after["clusters/prod/dpdk.yaml"], MULTI);
}

#[test]
fn an_extra_object_becomes_a_new_file_under_the_source_path() {
    let mut live = LiveObjects {
        configs: live_configs_of(MULTI),
        ..Default::default()
    };
    let mut extra = live_from_yaml(
        "apiVersion: networking.k8s.aws/v1alpha1\nkind: DPDKConfig\nmetadata:\n  name: hand-made\nspec:\n  nodeSelector:\n    ng: lab\n  resourceMapping:\n  - deviceIndex: 5\n    resourceName: lab.example.com/dpdk\n",
    );
    // Created by hand: no source label.
    extra.metadata.labels = Some([("owner".to_string(), "alice".to_string())].into());
    live.configs.push(extra);
    let (patch, after) = round_trip(
        "clusters/prod",
        &[("clusters/prod/dpdk.yaml", MULTI)],
        &live,
    );
    assert!(
        patch.contains("new file mode 100644\n--- /dev/null\n+++ b/clusters/prod/hand-made.yaml\n"),
        "{patch}"
    );
    let created = &after["clusters/prod/hand-made.yaml"];
    assert!(
        created.contains("  name: hand-made\n  labels:\n    owner: alice\n"),
        "{created}"
    );
    assert!(
        !created.contains("dpdk.aws.k8s/revision") && !created.contains("resourceVersion"),
        "{created}"
    );
    assert_eq!(after["clusters/prod/dpdk.yaml"], MULTI);
}

#[test]
fn objects_of_other_sources_and_other_tools_are_not_extra() {
    let src = source("clusters/prod", &[("clusters/prod/dpdk.yaml", MULTI)]);
    let mut live = LiveObjects {
        configs: live_configs_of(MULTI),
        ..Default::default()
    };
    let mut other = live_from_yaml(
        "apiVersion: networking.k8s.aws/v1alpha1\nkind: DPDKConfig\nmetadata:\n  name: other\nspec:\n  nodeSelector:\n    a: b\n",
    );
    other
        .metadata
        .labels
        .as_mut()
        .expect("labels")
        .insert("dpdk.aws.k8s/source".into(), "dpdk-operator.staging".into());
    let mut argo = live_from_yaml(
        "apiVersion: networking.k8s.aws/v1alpha1\nkind: DPDKConfig\nmetadata:\n  name: argo\nspec:\n  nodeSelector:\n    a: b\n",
    );
    argo.metadata
        .labels
        .as_mut()
        .expect("labels")
        .remove("dpdk.aws.k8s/source");
    argo.metadata.annotations = Some(
        [(
            "argocd.argoproj.io/tracking-id".to_string(),
            "app:x/DPDKConfig:/argo".to_string(),
        )]
        .into(),
    );
    let mut orphan = live_from_yaml(
        "apiVersion: networking.k8s.aws/v1alpha1\nkind: DPDKConfig\nmetadata:\n  name: orphan\nspec:\n  nodeSelector:\n    a: b\n",
    );
    orphan.metadata.labels = None;
    live.configs.extend([other, argo, orphan]);
    let report = compute(std::slice::from_ref(&src), &live, now(), None);
    assert_eq!(
        report.findings,
        vec![],
        "without adopt_orphans only our labelled objects are extra"
    );
    let mut adopting = src.clone();
    adopting.adopt_orphans = true;
    let report = compute(&[adopting], &live, now(), None);
    let extra: Vec<_> = report
        .findings
        .iter()
        .map(|f| (f.kind, f.object.name.as_str()))
        .collect();
    assert_eq!(extra, vec![(FindingKind::Extra, "orphan")]);
}

#[test]
fn owned_by_names_argo_cd() {
    let src = source("clusters/prod", &[("clusters/prod/dpdk.yaml", MULTI)]);
    let mut live = LiveObjects {
        configs: live_configs_of(MULTI),
        ..Default::default()
    };
    live.configs[0]
        .metadata
        .annotations
        .get_or_insert_default()
        .insert("argocd.argoproj.io/tracking-id".into(), "app:x".into());
    live.configs[0]
        .spec
        .node_selector
        .insert("zone".into(), "a".into());
    let report = compute(&[src], &live, now(), None);
    assert_eq!(report.findings.len(), 1);
    assert_eq!(report.findings[0].owned_by.as_deref(), Some("argocd"));
}

#[test]
fn an_ignore_rule_suppresses_its_finding() {
    let mut src = source("clusters/prod", &[("clusters/prod/dpdk.yaml", MULTI)]);
    let mut live = LiveObjects {
        configs: live_configs_of(MULTI),
        ..Default::default()
    };
    live.configs[0].spec.driver_options.write_combing = Some(false);
    live.configs[1].spec.resource_mapping[1].resource_name = "example.com/changed".into();
    let before = compute(std::slice::from_ref(&src), &live, now(), None);
    assert_eq!(before.findings.len(), 2);
    src.ignore = vec![IgnoreRule {
        kind: Some("DPDKConfig".into()),
        name: Some("prod-a".into()),
        json_pointers: vec!["/spec/driverOptions/writeCombining".into()],
    }];
    let after = compute(std::slice::from_ref(&src), &live, now(), None);
    assert_eq!(after.findings.len(), 1, "{:#?}", after.findings);
    assert_eq!(after.findings[0].object.name, "prod-b");
    assert_eq!(after.summary.ignored, 1);
    // The patch leaves the ignored field alone.
    let patch = render_patch(&file_changes(&src, &after.findings, &live));
    assert!(!patch.contains("writeCombing"), "{patch}");
    assert!(
        patch.contains("+      resourceName: example.com/changed"),
        "{patch}"
    );
}

// ---------------------------------------------------------------------------------------
// Layers 2 and 3.

fn node(name: &str, labels: &[(&str, &str)]) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        uid: Some(format!("uid-{name}")),
        labels: Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    }
}

fn eni(name: &str, selector: &[(&str, &str)], index: i32, attached: &[&str]) -> NodeENI {
    let mut e = NodeENI::new(
        name,
        NodeENISpec {
            node_selector: selector
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            device_index: Some(index),
            subnet_id: Some("subnet-1".into()),
            ..Default::default()
        },
    );
    e.status = Some(NodeENIStatus {
        attachments: attached
            .iter()
            .map(|n| ENIAttachment {
                node_id: Some(n.to_string()),
                device_index: Some(index),
                eni_id: Some(format!("eni-{n}")),
                ..Default::default()
            })
            .collect(),
    });
    e
}

const SEEDLIKE: &str = "# seed-like config
apiVersion: networking.k8s.aws/v1alpha1
kind: DPDKConfig
metadata:
  name: seed
spec:
  nodeSelector:
    ng: multi-eni
  driverOptions:
    enableUnsafeNoIOMMU: true
    writeCombining: true
  resourceMapping:
  - deviceIndex: 2
    resourceName: intel.com/intel_sriov_netdevice_2
    driver: vfio-pci
";

fn node_state(node: &str, status: Option<DPDKNodeStateStatus>) -> DPDKNodeState {
    let mut ns = DPDKNodeState::new(
        node,
        DPDKNodeStateSpec {
            driver_options: EffectiveDriverOptions {
                enable_unsafe_no_iommu: true,
                write_combining: true,
            },
            devices: vec![DesiredDevice {
                device_index: 2,
                node_eni: "eni-pool".into(),
                eni_id: Some(format!("eni-{node}")),
                pci_address: None,
                resource_name: "intel.com/intel_sriov_netdevice_2".into(),
                driver: DpdkDriver::VfioPci,
            }],
            configs: vec!["seed".into()],
            revision: None,
        },
    );
    ns.status = status;
    ns
}

fn healthy_status() -> DPDKNodeStateStatus {
    DPDKNodeStateStatus {
        modules: Some(ModuleStatus {
            vfio: true,
            vfio_pci: true,
            noiommu: true,
            others: vec![],
            write_combining: WriteCombiningStatus {
                state: WriteCombiningState::Enabled,
                reason: None,
            },
        }),
        devices: vec![DeviceStatus {
            device_index: 2,
            pci_address: Some("0000:00:06.0".into()),
            mac: Some("02:00:00:00:00:02".into()),
            interface_name: Some("eth1".into()),
            driver: Some("vfio-pci".into()),
            original_driver: Some("ena".into()),
            bound: true,
            resource_name: Some("intel.com/intel_sriov_netdevice_2".into()),
            health: Some("Healthy".into()),
            message: None,
        }],
        bound_devices: 1,
        ..Default::default()
    }
}

fn seed_world() -> (GitSource, LiveObjects) {
    let src = source("clusters/prod", &[("clusters/prod/seed.yaml", SEEDLIKE)]);
    let mut pool = eni("eni-pool", &[("ng", "multi-eni")], 2, &["n1", "n2"]);
    pool.spec.enable_dpdk = Some(true);
    pool.spec.dpdk_driver = Some("vfio-pci".into());
    pool.spec.dpdk_resource_name = Some("intel.com/intel_sriov_netdevice_2".into());
    let live = LiveObjects {
        configs: live_configs_of(SEEDLIKE),
        node_enis: vec![pool],
        node_states: vec![
            node_state("n1", Some(healthy_status())),
            node_state("n2", Some(healthy_status())),
        ],
        nodes: vec![
            node("n1", &[("ng", "multi-eni")]),
            node("n2", &[("ng", "multi-eni")]),
            node("other", &[("ng", "x")]),
        ],
        complete: true,
    };
    (src, live)
}

#[test]
fn a_converged_cluster_has_no_drift_in_any_layer() {
    let (src, live) = seed_world();
    let report = compute(&[src], &live, now(), None);
    assert_eq!(report.findings, vec![]);
}

#[test]
fn nodeeni_fields_that_differ_from_what_the_configs_imply() {
    let (src, mut live) = seed_world();
    live.node_enis[0].spec.dpdk_driver = Some("igb_uio".into());
    let report = compute(&[src], &live, now(), None);
    assert_eq!(report.findings.len(), 1, "{:#?}", report.findings);
    let f = &report.findings[0];
    assert_eq!(
        (
            f.layer,
            f.kind,
            f.object.kind.as_str(),
            f.object.name.as_str()
        ),
        (
            Layer::ClusterNodeEni,
            FindingKind::Modified,
            "NodeENI",
            "eni-pool"
        )
    );
    assert_eq!(f.field_path, "/spec/dpdkDriver");
    assert_eq!(
        (f.git.clone(), f.live.clone()),
        (json!("vfio-pci"), json!("igb_uio"))
    );
    // The line of `driver: vfio-pci` in the config that implies it.
    assert_eq!(
        (f.file.as_deref(), f.line),
        (Some("clusters/prod/seed.yaml"), Some(15))
    );
}

#[test]
fn a_nodeeni_reaching_other_nodes_is_not_expected_to_change_and_conflicts_are_reported() {
    let (src, mut live) = seed_world();
    // The selector reaches a node the config does not select: the controller leaves it.
    live.node_enis[0].spec.node_selector = [("pool".to_string(), "shared".to_string())].into();
    live.node_enis[0].spec.enable_dpdk = None;
    for n in &mut live.nodes {
        n.labels
            .get_or_insert_default()
            .insert("pool".into(), "shared".into());
    }
    let report = compute(&[src], &live, now(), None);
    let kinds: Vec<_> = report.findings.iter().map(|f| (f.layer, f.kind)).collect();
    // The blocked NodeENI's devices leave the nodes' specs: a counted change, staged one
    // node at a time (25% of 2), so both nodes wait their turn in the rollout.
    assert_eq!(
        kinds,
        vec![
            (Layer::ClusterNodeEni, FindingKind::Conflict),
            (Layer::DesiredNode, FindingKind::RolloutPending),
            (Layer::DesiredNode, FindingKind::RolloutPending),
        ],
        "{:#?}",
        report.findings
    );
    assert_eq!(
        report.findings[0].live["reason"],
        json!("SelectorReachesUnmatchedNodes")
    );
    // The selector's line in Git.
    assert_eq!(report.findings[0].line, Some(7));
}

#[test]
fn nodeeni_dpdk_left_on_by_the_controller_without_a_config() {
    let (src, mut live) = seed_world();
    live.configs.clear();
    live.node_states.clear();
    live.complete = true;
    let mut fields = serde_json::Map::new();
    fields.insert(
        "f:spec".into(),
        json!({"f:enableDPDK": {}, "f:dpdkDriver": {}}),
    );
    live.node_enis[0].metadata.managed_fields = Some(vec![ManagedFieldsEntry {
        manager: Some("dpdk-controller".into()),
        operation: Some("Apply".into()),
        fields_type: Some("FieldsV1".into()),
        fields_v1: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1(
            Value::Object(fields),
        )),
        ..Default::default()
    }]);
    let report = compute(&[src], &live, now(), None);
    let kinds: Vec<_> = report
        .findings
        .iter()
        .map(|f| (f.layer, f.kind, f.object.kind.as_str()))
        .collect();
    assert!(
        kinds.contains(&(Layer::ClusterNodeEni, FindingKind::Extra, "NodeENI")),
        "{kinds:?}"
    );
}

#[test]
fn node_layer_device_left_on_ena() {
    let (src, mut live) = seed_world();
    let st = live.node_states[0].status.as_mut().expect("status");
    st.devices[0].driver = Some("ena".into());
    st.devices[0].bound = false;
    let report = compute(&[src], &live, now(), None);
    assert_eq!(report.findings.len(), 1, "{:#?}", report.findings);
    let f = &report.findings[0];
    assert_eq!(
        (f.layer, f.kind),
        (Layer::DesiredNode, FindingKind::DeviceDriver)
    );
    assert_eq!(f.node.as_deref(), Some("n1"));
    assert_eq!(
        (f.git.clone(), f.live.clone()),
        (json!("vfio-pci"), json!("ena"))
    );
    assert_eq!(
        (f.file.as_deref(), f.line),
        (Some("clusters/prod/seed.yaml"), Some(15))
    );
    assert!(
        f.message.contains("is on ena, not vfio-pci")
            && f.message.contains("clusters/prod/seed.yaml:15"),
        "{}",
        f.message
    );
}

/// The node agent's refusal (here: dpdkPCIAddress named the root volume) reaches the
/// drift report with its reason, as the agent wrote it into the status.
#[test]
fn node_layer_refused_device_carries_the_agents_reason() {
    let (src, mut live) = seed_world();
    let st = live.node_states[0].status.as_mut().expect("status");
    let reason = "refusing to bind 0000:00:04.0 (device index 2): it is not a network controller (PCI class 0x010802, a NIC is 0x02xxxx); binding it could take a disk or another device away from the node";
    st.devices[0].pci_address = Some("0000:00:04.0".into());
    st.devices[0].interface_name = None;
    st.devices[0].driver = Some("nvme".into());
    st.devices[0].bound = false;
    st.devices[0].health = Some("Refused".into());
    st.devices[0].message = Some(reason.into());
    let report = compute(&[src], &live, now(), None);
    assert_eq!(report.findings.len(), 1, "{:#?}", report.findings);
    let f = &report.findings[0];
    assert_eq!(
        (f.layer, f.kind, f.node.as_deref()),
        (Layer::DesiredNode, FindingKind::DeviceDriver, Some("n1"))
    );
    assert!(
        f.message.contains("is on nvme, not vfio-pci")
            && f.message.contains(&format!("[Refused: {reason}]")),
        "{}",
        f.message
    );
}

#[test]
fn node_layer_module_unloaded() {
    let (src, mut live) = seed_world();
    live.node_states[1]
        .status
        .as_mut()
        .expect("status")
        .modules
        .as_mut()
        .expect("modules")
        .vfio_pci = false;
    let report = compute(&[src], &live, now(), None);
    assert_eq!(report.findings.len(), 1, "{:#?}", report.findings);
    let f = &report.findings[0];
    assert_eq!(
        (f.layer, f.kind, f.node.as_deref()),
        (Layer::DesiredNode, FindingKind::ModuleUnloaded, Some("n2"))
    );
    assert_eq!(f.field_path, "/status/modules/vfioPci");
    assert_eq!(
        (f.file.as_deref(), f.line),
        (Some("clusters/prod/seed.yaml"), Some(15))
    );
}

#[test]
fn node_layer_write_combining_unavailable() {
    let (src, mut live) = seed_world();
    live.node_states[0]
        .status
        .as_mut()
        .expect("status")
        .modules
        .as_mut()
        .expect("modules")
        .write_combining = WriteCombiningStatus {
        state: WriteCombiningState::Unavailable,
        reason: Some("mainline vfio-pci has no write-combining support".into()),
    };
    let report = compute(&[src], &live, now(), None);
    assert_eq!(report.findings.len(), 1, "{:#?}", report.findings);
    let f = &report.findings[0];
    assert_eq!(
        (f.layer, f.kind),
        (Layer::DesiredNode, FindingKind::WriteCombining)
    );
    assert_eq!(
        (f.git.clone(), f.live.clone()),
        (json!("Enabled"), json!("Unavailable"))
    );
    // `writeCombining: true` is line 11.
    assert_eq!(
        (f.file.as_deref(), f.line),
        (Some("clusters/prod/seed.yaml"), Some(11))
    );
    assert!(f.message.contains("mainline vfio-pci"), "{}", f.message);
}

#[test]
fn node_layer_silent_agent() {
    let (src, mut live) = seed_world();
    live.node_states[0].status = None;
    let report = compute(&[src], &live, now(), None);
    let kinds: Vec<_> = report.findings.iter().map(|f| f.kind).collect();
    assert_eq!(kinds, vec![FindingKind::NotReported]);
}

#[test]
fn file_changes_are_sorted_and_new_files_have_no_old_side() {
    let mut live = LiveObjects {
        configs: live_configs_of(MULTI),
        ..Default::default()
    };
    let mut extra = live_from_yaml(
        "apiVersion: networking.k8s.aws/v1alpha1\nkind: DPDKConfig\nmetadata:\n  name: aaa\nspec:\n  nodeSelector:\n    a: b\n",
    );
    extra.metadata.labels = None;
    live.configs.push(extra);
    live.configs[0]
        .spec
        .node_selector
        .insert("zone".into(), "a".into());
    let mut src = source("clusters/prod", &[("clusters/prod/dpdk.yaml", MULTI)]);
    src.adopt_orphans = true;
    let report = compute(std::slice::from_ref(&src), &live, now(), None);
    let changes = file_changes(&src, &report.findings, &live);
    let paths: Vec<(&str, bool)> = changes
        .iter()
        .map(|c: &FileChange| (c.path.as_str(), c.old.is_some()))
        .collect();
    assert_eq!(
        paths,
        vec![
            ("clusters/prod/aaa.yaml", false),
            ("clusters/prod/dpdk.yaml", true)
        ]
    );
}

/// A node waiting its turn in a staged rollout keeps its old spec on purpose: drift names
/// its place in the rollout and does not call it a driver mismatch.
#[test]
fn node_layer_a_node_waiting_its_turn_is_rollout_pending() {
    let (_, mut live) = seed_world();
    let changed = SEEDLIKE.replace("driver: vfio-pci", "driver: igb_uio");
    let src = source("clusters/prod", &[("clusters/prod/seed.yaml", &changed)]);
    live.configs = live_configs_of(&changed);
    // n1 has the new spec (its agent has not caught up); n2 waits: 25% of 2 is 1 node.
    let n1 = &mut live.node_states[0];
    n1.spec.devices[0].driver = DpdkDriver::IgbUio;
    n1.metadata.generation = Some(2);
    n1.status.as_mut().expect("status").observed_generation = Some(1);
    n1.metadata.annotations = Some(
        [
            ("dpdk.aws.k8s/updating-since".to_string(), now().to_string()),
            (
                "dpdk.aws.k8s/rollout-counted".to_string(),
                "true".to_string(),
            ),
        ]
        .into(),
    );
    for s in &mut live.node_states {
        s.spec.revision = Some("main@sha1:0123456789abcdef0123456789abcdef01234567".into());
    }
    let report = compute(&[src], &live, now(), None);
    let of_n2: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.node.as_deref() == Some("n2"))
        .collect();
    assert_eq!(of_n2.len(), 1, "{:#?}", report.findings);
    let f = of_n2[0];
    assert_eq!(
        (f.layer, f.kind),
        (Layer::DesiredNode, FindingKind::RolloutPending)
    );
    assert!(
        f.message.contains("wave 1 of 1, position 1 of 1") && f.message.contains("seed"),
        "{}",
        f.message
    );
    assert!(
        !report
            .findings
            .iter()
            .any(|f| f.node.as_deref() == Some("n2") && f.kind == FindingKind::DeviceDriver),
        "not a driver mismatch"
    );
}
