//! Foundation tests on the real kube-apiserver + etcd: the generated CRDs, the seed's
//! DPDKConfig, server-side validation messages, printer columns, the NodeENI copy, and
//! the harness itself (impersonation, restart on the same data, no orphans).

use std::time::Duration;

use dpdk_bridge::api::{DPDKConfig, DpdkDriver, NodeENI};
use dpdk_testenv::{ControlPlane, StartOptions, fixtures, shared, unique_name};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};

/// The seed guide's DPDKConfig, verbatim (misspelt `writeCombing` included).
use dpdk_testenv::fixtures::SEED_DPDKCONFIG;

fn kubectl(cp: &ControlPlane, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    use std::io::Write;
    let mut cmd = cp.kubectl();
    cmd.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("kubectl runs");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().expect("kubectl finishes");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn seed_yaml_in_test_matches_the_seed_guide() {
    // CI lays shared/ beside the clone; keep this copy honest where the guide is readable.
    let guide = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/seed/cloud-native-dpdk-guide.md");
    if let Ok(text) = std::fs::read_to_string(&guide) {
        assert!(
            text.contains(&dpdk_testenv::fixtures::seed_dpdkconfig_as_in_the_guide()),
            "SEED_DPDKCONFIG drifted from {}",
            guide.display()
        );
    }
}

#[tokio::test]
async fn seed_dpdkconfig_applies_and_writecombing_means_writecombining() {
    let cp = shared();
    // A unique name so parallel tests sharing the control plane never collide.
    let name = unique_name("seed");
    let yaml = SEED_DPDKCONFIG.replace("name: default-dpdk-config", &format!("name: {name}"));
    let (ok, out, err) = kubectl(cp, &["apply", "-f", "-"], Some(&yaml));
    assert!(
        ok,
        "kubectl apply of the seed's DPDKConfig failed: {out}{err}"
    );

    let client = cp.client().await.expect("client");
    let api: Api<DPDKConfig> = Api::all(client);
    let cfg = api.get(&name).await.expect("seed config readable");
    assert_eq!(
        cfg.spec.driver_options.write_combing,
        Some(true),
        "the server pruned the seed's writeCombing"
    );
    assert!(
        cfg.spec.driver_options.effective_write_combining(),
        "writeCombing: true must mean writeCombining = true"
    );
    assert!(cfg.spec.driver_options.enable_unsafe_no_iommu);
    assert_eq!(cfg.spec.resource_mapping.len(), 1);
    assert_eq!(cfg.spec.resource_mapping[0].device_index, 2);
    assert_eq!(
        cfg.spec.resource_mapping[0].resource_name,
        "intel.com/intel_sriov_netdevice_2"
    );
    assert_eq!(cfg.spec.resource_mapping[0].driver, DpdkDriver::VfioPci);
    api.delete(&name, &DeleteParams::default())
        .await
        .expect("delete");
}

#[tokio::test]
async fn defaults_are_applied_by_the_server() {
    let cp = shared();
    let name = unique_name("defaults");
    let yaml = format!(
        "apiVersion: networking.k8s.aws/v1alpha1\nkind: DPDKConfig\nmetadata:\n  name: {name}\nspec:\n  nodeSelector:\n    ng: multi-eni\n  resourceMapping:\n  - deviceIndex: 3\n    resourceName: example.com/dpdk_3\n"
    );
    let (ok, out, err) = kubectl(cp, &["apply", "-f", "-"], Some(&yaml));
    assert!(ok, "{out}{err}");
    let api: Api<DPDKConfig> = Api::all(cp.client().await.expect("client"));
    let raw: serde_json::Value =
        serde_json::to_value(api.get(&name).await.expect("get")).expect("json");
    assert_eq!(raw["spec"]["driverOptions"]["enableUnsafeNoIOMMU"], true);
    assert_eq!(raw["spec"]["resourceMapping"][0]["driver"], "vfio-pci");
    // writeCombining has no schema default, or it would contradict the seed's writeCombing.
    assert!(raw["spec"]["driverOptions"].get("writeCombining").is_none());
}

async fn rejection(body: &str) -> String {
    let cp = shared();
    let client = cp.client().await.expect("client");
    let api: Api<DPDKConfig> = Api::all(client);
    let name = unique_name("bad");
    let mut obj: serde_json::Value = serde_yaml::from_str(body).expect("test yaml");
    obj["metadata"]["name"] = serde_json::Value::String(name.clone());
    let obj: DPDKConfig = serde_json::from_value(obj).expect("typed");
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => {
            let _ = api.delete(&name, &DeleteParams::default()).await;
            panic!("the server accepted an invalid DPDKConfig:\n{body}");
        }
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 422, "expected 422 Invalid, got {s:?}");
            s.message
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
}

fn config_with(mapping: &str, selector: &str) -> String {
    format!(
        "apiVersion: networking.k8s.aws/v1alpha1\nkind: DPDKConfig\nmetadata:\n  name: x\nspec:\n  nodeSelector: {selector}\n  resourceMapping:\n{mapping}"
    )
}

#[tokio::test]
async fn device_index_zero_is_rejected_naming_the_primary_eni() {
    let msg = rejection(&config_with(
        "  - deviceIndex: 0\n    resourceName: intel.com/x\n",
        "{ng: multi-eni}",
    ))
    .await;
    assert!(msg.contains("spec.resourceMapping[0].deviceIndex"), "{msg}");
    assert!(msg.contains("primary ENI"), "{msg}");
}

#[tokio::test]
async fn resource_name_without_domain_is_rejected() {
    let msg = rejection(&config_with(
        "  - deviceIndex: 2\n    resourceName: intel_sriov_netdevice_2\n",
        "{ng: multi-eni}",
    ))
    .await;
    assert!(
        msg.contains("spec.resourceMapping[0].resourceName"),
        "{msg}"
    );
    assert!(msg.contains("<domain>/<name>"), "{msg}");
}

#[tokio::test]
async fn unknown_driver_is_rejected() {
    // The typed enum cannot hold a bad driver, so send raw JSON.
    let cp = shared();
    let client = cp.client().await.expect("client");
    let api: Api<kube::api::DynamicObject> =
        Api::all_with(client, &kube::api::ApiResource::erase::<DPDKConfig>(&()));
    let name = unique_name("baddriver");
    let obj: kube::api::DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "networking.k8s.aws/v1alpha1", "kind": "DPDKConfig",
        "metadata": {"name": name},
        "spec": {"nodeSelector": {"ng": "multi-eni"}, "resourceMapping": [{"deviceIndex": 2, "resourceName": "intel.com/x", "driver": "mlx5_core"}]}
    }))
    .expect("dynamic");
    let err = api
        .create(&PostParams::default(), &obj)
        .await
        .expect_err("mlx5_core must be rejected");
    let msg = err.to_string();
    assert!(msg.contains("spec.resourceMapping[0].driver"), "{msg}");
    assert!(
        msg.contains("vfio-pci") && msg.contains("igb_uio") && msg.contains("uio_pci_generic"),
        "{msg}"
    );
}

#[tokio::test]
async fn empty_node_selector_is_rejected() {
    let msg = rejection(&config_with(
        "  - deviceIndex: 2\n    resourceName: intel.com/x\n",
        "{}",
    ))
    .await;
    assert!(msg.contains("spec.nodeSelector"), "{msg}");
    assert!(msg.contains("must not be empty"), "{msg}");
}

#[tokio::test]
async fn duplicate_device_index_is_rejected() {
    let msg = rejection(&config_with(
        "  - deviceIndex: 2\n    resourceName: intel.com/a\n  - deviceIndex: 2\n    resourceName: intel.com/b\n",
        "{ng: multi-eni}",
    ))
    .await;
    assert!(msg.contains("spec.resourceMapping[1]"), "{msg}");
    assert!(msg.contains("Duplicate value"), "{msg}");
}

#[tokio::test]
async fn kubectl_get_prints_the_printer_columns() {
    let cp = shared();
    let name = unique_name("cols");
    let yaml = SEED_DPDKCONFIG.replace("name: default-dpdk-config", &format!("name: {name}"));
    let (ok, out, err) = kubectl(cp, &["apply", "-f", "-"], Some(&yaml));
    assert!(ok, "{out}{err}");
    for resource in ["dpdkconfigs", "dpdk"] {
        let (ok, out, err) = kubectl(cp, &["get", resource, &name], None);
        assert!(ok, "kubectl get {resource}: {err}");
        let header: Vec<&str> = out
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        assert_eq!(
            header,
            [
                "NAME",
                "READY",
                "READYNODES",
                "MATCHEDNODES",
                "UP-TO-DATE",
                "REVISION",
                "AGE"
            ],
            "kubectl get {resource}:\n{out}"
        );
        assert!(out.contains(&name), "{out}");
    }
    let (ok, out, err) = kubectl(cp, &["get", "dpdkns"], None);
    assert!(ok, "kubectl get dpdkns: {err}");
    let _ = out;
    let (ok, _, err) = kubectl(cp, &["describe", "dpdkconfig", &name], None);
    assert!(ok, "kubectl describe dpdkconfig: {err}");
}

#[tokio::test]
async fn nodeeni_copy_accepts_upstream_attachments() {
    let cp = shared();
    let client = cp.client().await.expect("client");
    let name = unique_name("eni");
    let node = unique_name("node");
    fixtures::create_nodeeni(&client, &name, &[("ng", "multi-eni")], 2, &["subnet-0a"])
        .await
        .expect("create NodeENI");
    let mut att = fixtures::attachment(&node, 2, "eni-0123456789abcdef0");
    att.last_updated = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::from_second(1_790_000_000).expect("ts"),
    ));
    let written = fixtures::upsert_attachment(&client, &name, att.clone())
        .await
        .expect("status update");
    let got = &written.status.expect("status").attachments;
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0], att,
        "the CRD copy pruned or altered an upstream attachment field"
    );
    let api: Api<NodeENI> = Api::all(client);
    let eni = api.get(&name).await.expect("get");
    assert_eq!(eni.spec.device_index, Some(2));
    assert_eq!(
        eni.spec.delete_on_termination,
        Some(true),
        "upstream default deleteOnTermination=true"
    );
}

#[tokio::test]
async fn impersonated_service_account_is_bound_by_rbac() {
    let cp = shared();
    let sa = cp
        .service_account_client("dpdk-operator", "nobody")
        .await
        .expect("impersonating client");
    let err = Api::<Secret>::all(sa)
        .list(&ListParams::default())
        .await
        .expect_err("an unbound ServiceAccount must not list secrets");
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 403, "{s:?}");
            assert!(
                s.message
                    .contains("system:serviceaccount:dpdk-operator:nobody"),
                "{}",
                s.message
            );
        }
        e => panic!("expected 403, got {e}"),
    }
    // The admin client, by contrast, may.
    Api::<Secret>::all(cp.client().await.expect("admin"))
        .list(&ListParams::default())
        .await
        .expect("admin lists secrets");
}

#[tokio::test]
async fn apiserver_restarts_on_the_same_data() {
    // Its own control plane: restarting the shared one would disturb parallel tests.
    let cp = ControlPlane::start(StartOptions {
        install_crds: true,
        ..Default::default()
    })
    .await
    .expect("start");
    let name = unique_name("persist");
    let yaml = SEED_DPDKCONFIG.replace("name: default-dpdk-config", &format!("name: {name}"));
    let (ok, out, err) = kubectl(&cp, &["apply", "-f", "-"], Some(&yaml));
    assert!(ok, "{out}{err}");
    cp.stop_apiserver();
    let api: Api<DPDKConfig> = Api::all(cp.client().await.expect("client"));
    assert!(
        api.get(&name).await.is_err(),
        "the API server should be down"
    );
    cp.start_apiserver().await.expect("restart");
    let api: Api<DPDKConfig> = Api::all(cp.client().await.expect("client"));
    let cfg = api
        .get(&name)
        .await
        .expect("object survives an API server restart");
    assert!(cfg.spec.driver_options.effective_write_combining());
}

/// Run as a child process by `no_orphans_after_a_panicking_test`: starts a control plane,
/// records the pids of its processes, then panics without dropping it.
#[test]
#[ignore = "helper for no_orphans_after_a_panicking_test"]
fn orphan_child() {
    let Some(out) = std::env::var_os("DPDK_TESTENV_ORPHAN_PIDS") else {
        return;
    };
    let cp = ControlPlane::start_blocking(StartOptions::default()).expect("start");
    let pids = pids_under(cp.data_dir());
    std::fs::write(
        &out,
        pids.iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .expect("write pids");
    std::mem::forget(cp);
    panic!("deliberate panic with a live control plane");
}

/// Pids of live processes whose command line mentions `dir`.
fn pids_under(dir: &std::path::Path) -> Vec<u32> {
    let needle = dir.display().to_string();
    let mut pids = vec![];
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let state = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let zombie = state
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z'));
        if !zombie && String::from_utf8_lossy(&cmdline).contains(&needle) {
            pids.push(pid);
        }
    }
    pids
}

#[test]
fn no_orphans_after_a_panicking_test() {
    let tmp = tempfile::tempdir().expect("tmp");
    let pid_file = tmp.path().join("pids");
    let status = std::process::Command::new(std::env::current_exe().expect("test exe"))
        .args([
            "--exact",
            "orphan_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("DPDK_TESTENV_ORPHAN_PIDS", &pid_file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("child test runs");
    assert!(!status.success(), "the child test was supposed to panic");
    let pids: Vec<u32> = std::fs::read_to_string(&pid_file)
        .expect("child recorded its control plane's pids")
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect();
    assert_eq!(
        pids.len(),
        2,
        "expected etcd and kube-apiserver, got {pids:?}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let alive: Vec<u32> = pids
            .iter()
            .copied()
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/stat"))
                    .map(|s| {
                        !s.rsplit(')')
                            .next()
                            .is_some_and(|r| r.trim_start().starts_with('Z'))
                    })
                    .unwrap_or(false)
            })
            .collect();
        if alive.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "orphaned control-plane processes still alive: {alive:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
