//! The seed guide's scenario end to end on a private API server, with the controller as
//! in production: installed with the seed's three `kubectl apply -f` files, running as
//! its ServiceAccount (the deploy/ RBAC), leader election on, whole-cluster scope. Then:
//! a converged cluster gets zero writes on forced resyncs and after a restart, counted
//! from the API server's audit log.

mod controller_common;

use std::time::Duration;

use controller_common::*;
use dpdk_bridge::api::{DPDKConfig, DPDKNodeState, DpdkDriver};
use dpdk_bridge::labels::CONTROLLER_MANAGER;
use dpdk_bridge::plan::reason;
use dpdk_reconciler::controller::{LeaderElectionConfig, Options};
use dpdk_testenv::control_plane::workspace_root;
use dpdk_testenv::{ControlPlane, StartOptions, fixtures};
use kube::Api;
use kube::api::ListParams;

/// The seed guide's DPDKConfig, verbatim.
use dpdk_testenv::fixtures::SEED_DPDKCONFIG;

const SA_USER: &str = "system:serviceaccount:dpdk-operator:dpdk-controller";
const NODES: [&str; 3] = [
    "ip-10-0-1-11.ec2.internal",
    "ip-10-0-1-12.ec2.internal",
    "ip-10-0-1-13.ec2.internal",
];

fn kubectl(cp: &ControlPlane, args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let mut cmd = cp.kubectl();
    cmd.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("kubectl runs");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).expect("write stdin");
    }
    drop(input);
    let out = child.wait_with_output().expect("kubectl finishes");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn seed_yaml_matches_the_guide() {
    let guide = workspace_root().join("../shared/seed/cloud-native-dpdk-guide.md");
    if let Ok(text) = std::fs::read_to_string(&guide) {
        assert!(
            text.contains(&dpdk_testenv::fixtures::seed_dpdkconfig_as_in_the_guide()),
            "SEED_DPDKCONFIG drifted from {}",
            guide.display()
        );
    }
}

fn options(identity: &str) -> Options {
    let mut le = LeaderElectionConfig::new("dpdk-operator", "dpdk-controller", identity);
    le.lease_duration = Duration::from_secs(4);
    le.renew_deadline = Duration::from_secs(3);
    le.retry_period = Duration::from_millis(500);
    Options {
        // A forced full resync twice a second: the converged cluster must not see writes.
        resync_interval: Duration::from_millis(500),
        debounce: Duration::from_millis(50),
        leader_election: Some(le),
        identity: identity.into(),
        ..Options::default()
    }
}

#[tokio::test]
async fn seed_scenario_converges_and_rests_with_zero_writes() {
    let cp = ControlPlane::start(StartOptions {
        install_crds: false,
        audit_log: true,
        ..Default::default()
    })
    .await
    .expect("control plane");
    let root = workspace_root();
    // The Multi-ENI Controller's CRD (test copy), then the seed's install command.
    kubectl(
        &cp,
        &[
            "apply",
            "-f",
            &root
                .join("deploy/testing/nodeeni-crd.yaml")
                .display()
                .to_string(),
        ],
        None,
    );
    let files: Vec<String> = [
        "deploy/dpdk-crd.yaml",
        "deploy/dpdk-operator.yaml",
        "deploy/dpdk-controller.yaml",
    ]
    .iter()
    .map(|f| root.join(f).display().to_string())
    .collect();
    kubectl(
        &cp,
        &["apply", "-f", &files[0], "-f", &files[1], "-f", &files[2]],
        None,
    );
    kubectl(
        &cp,
        &[
            "wait",
            "--for=condition=Established",
            "crd/dpdkconfigs.networking.k8s.aws",
            "crd/nodeenis.networking.k8s.aws",
            "--timeout=30s",
        ],
        None,
    );

    let admin = cp.client().await.expect("admin client");
    // Nodes of the multi-ENI node group and the NodeENI that gives each an ENI at index 2.
    for (i, n) in NODES.iter().enumerate() {
        fixtures::create_node(
            &admin,
            n,
            &[("ng", "multi-eni")],
            &format!("10.0.1.{}", 11 + i),
        )
        .await
        .expect("node");
    }
    fixtures::create_node(
        &admin,
        "ip-10-0-9-9.ec2.internal",
        &[("ng", "general")],
        "10.0.9.9",
    )
    .await
    .expect("node");
    fixtures::create_nodeeni(
        &admin,
        "multi-eni-dpdk",
        &[("ng", "multi-eni")],
        2,
        &["subnet-0123456789abcdef0"],
    )
    .await
    .expect("nodeeni");
    for n in NODES {
        fixtures::upsert_attachment(
            &admin,
            "multi-eni-dpdk",
            fixtures::attachment(n, 2, &format!("eni-{}", &n[3..12])),
        )
        .await
        .expect("attachment");
    }
    kubectl(&cp, &["apply", "-f", "-"], Some(SEED_DPDKCONFIG));

    // The controller as its ServiceAccount: the deploy/ RBAC must be enough.
    let sa = cp
        .service_account_client("dpdk-operator", "dpdk-controller")
        .await
        .expect("sa client");
    let ctrl = start(sa, options("dpdk-controller-0"));

    // Nodes labelled, NodeENI enabled, one DPDKNodeState per node.
    for n in NODES {
        eventually(
            &format!("{n} labelled"),
            Duration::from_secs(60),
            || async { (node_label(&admin, n).await.as_deref() == Some("true")).then_some(()) },
        )
        .await;
    }
    assert_eq!(
        node_label(&admin, "ip-10-0-9-9.ec2.internal").await,
        None,
        "a node outside the selector is left alone"
    );
    let eni = eventually("NodeENI enabled", Duration::from_secs(60), || async {
        let e = get_eni(&admin, "multi-eni-dpdk").await;
        (e.spec.enable_dpdk == Some(true)).then_some(e)
    })
    .await;
    assert_eq!(eni.spec.dpdk_driver.as_deref(), Some("vfio-pci"));
    assert_eq!(
        eni.spec.dpdk_resource_name.as_deref(),
        Some("intel.com/intel_sriov_netdevice_2")
    );
    assert_eq!(
        eni.status.as_ref().map(|s| s.attachments.len()),
        Some(3),
        "the atomic attachments list is untouched"
    );
    let states: Vec<DPDKNodeState> = eventually(
        "one DPDKNodeState per node",
        Duration::from_secs(60),
        || async {
            let l = Api::<DPDKNodeState>::all(admin.clone())
                .list(&ListParams::default())
                .await
                .ok()?;
            (l.items.len() == 3).then_some(l.items)
        },
    )
    .await;
    for s in &states {
        assert!(NODES.contains(&s.metadata.name.as_deref().unwrap_or("")));
        assert_eq!(s.spec.devices.len(), 1);
        let d = &s.spec.devices[0];
        assert_eq!(
            (d.device_index, d.node_eni.as_str(), d.driver),
            (2, "multi-eni-dpdk", DpdkDriver::VfioPci)
        );
        assert_eq!(d.resource_name, "intel.com/intel_sriov_netdevice_2");
        assert!(
            d.eni_id.as_deref().is_some_and(|e| e.starts_with("eni-")),
            "{d:?}"
        );
        assert!(s.spec.driver_options.enable_unsafe_no_iommu);
        assert!(
            s.spec.driver_options.write_combining,
            "the seed's writeCombing: true is honoured"
        );
        assert_eq!(s.spec.configs, vec!["default-dpdk-config".to_string()]);
    }
    let ev = wait_event(
        &admin,
        "default-dpdk-config",
        reason::DEPRECATED_WRITE_COMBING,
    )
    .await;
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    assert!(
        ev.note.as_deref().unwrap_or("").contains("writeCombining"),
        "{ev:?}"
    );

    // Not ready until the agents report; then Ready with the right counts.
    let c = wait_status(&admin, "default-dpdk-config", "3 matched", |s| {
        s.matched_nodes == 3
    })
    .await;
    assert_eq!(c.status.as_ref().map(|s| s.ready_nodes), Some(0));
    assert_eq!(ready(&c).0, "False");
    for n in NODES {
        agent_reports(&admin, n).await;
    }
    let c = wait_status(&admin, "default-dpdk-config", "Ready", |s| {
        s.ready_nodes == 3
    })
    .await;
    assert_eq!(ready(&c), ("True".into(), "NodesReady".into()));
    let st = c.status.clone().expect("status");
    assert_eq!(st.matched_nodes, 3);
    assert_eq!(
        st.nodes_ready,
        NODES.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    );
    assert_eq!(st.updated_node_enis, vec!["multi-eni-dpdk".to_string()]);
    assert_eq!(st.observed_generation, c.metadata.generation);
    assert!(
        c.metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == dpdk_bridge::labels::CONFIG_FINALIZER)
    );
    let table = kubectl(&cp, &["get", "dpdkconfigs"], None);
    let row = table
        .lines()
        .find(|l| l.starts_with("default-dpdk-config"))
        .unwrap_or_else(|| panic!("no row in:\n{table}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &cols[..4],
        &["default-dpdk-config", "True", "3", "3"],
        "kubectl get dpdkconfigs:\n{table}"
    );
    let described = kubectl(
        &cp,
        &["describe", "dpdkconfig", "default-dpdk-config"],
        None,
    );
    assert!(
        described.contains("DeprecatedWriteCombing"),
        "events show in kubectl describe:\n{described}"
    );

    // Every write went through SSA as dpdk-controller (or is a Lease/Event or a delete).
    let writes = object_writes(&cp.audit_log_path(), SA_USER);
    assert!(!writes.is_empty());
    for w in &writes {
        assert!(w.code < 300, "failed write {w:?}");
        assert_eq!(w.verb, "patch", "{w:?}");
        assert!(
            w.uri
                .contains(&format!("fieldManager={CONTROLLER_MANAGER}")),
            "{w:?}"
        );
        assert!(
            !(w.resource == "nodeenis" && w.subresource == "status"),
            "NodeENI status is never written: {w:?}"
        );
    }

    // Converged: forced resyncs write nothing.
    let before = object_writes(&cp.audit_log_path(), SA_USER).len();
    ctrl.wait_passes(5, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = object_writes(&cp.audit_log_path(), SA_USER);
    assert_eq!(
        after.len(),
        before,
        "writes after convergence: {:?}",
        &after[before..]
    );
    let events_before = audit_writes(&cp.audit_log_path(), SA_USER)
        .iter()
        .filter(|w| w.resource == "events")
        .count();

    // A restarted controller (fresh caches, new term) writes nothing either.
    ctrl.stop().await;
    let sa = cp
        .service_account_client("dpdk-operator", "dpdk-controller")
        .await
        .expect("sa client");
    let ctrl = start(sa, options("dpdk-controller-1"));
    eventually("the new replica leads", Duration::from_secs(30), || async {
        ctrl.is_leader().then_some(())
    })
    .await;
    ctrl.wait_passes(5, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = object_writes(&cp.audit_log_path(), SA_USER);
    assert_eq!(
        after.len(),
        before,
        "writes after a restart: {:?}",
        &after[before..]
    );
    let events_after = audit_writes(&cp.audit_log_path(), SA_USER)
        .iter()
        .filter(|w| w.resource == "events")
        .count();
    assert_eq!(
        events_after, events_before,
        "no event is repeated after a restart"
    );
    let c: DPDKConfig = Api::<DPDKConfig>::all(admin.clone())
        .get("default-dpdk-config")
        .await
        .expect("config");
    assert_eq!(ready(&c).0, "True");
    ctrl.stop().await;
}
