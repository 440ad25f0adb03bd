//! The README's demo command, run as a user would (`dpdk-testenv demo --once`).

#[test]
fn demo_once_converges_and_prints_the_tour() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dpdk-testenv"))
        .args(["demo", "--once"])
        .output()
        .expect("demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo --once failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stderr.contains("[demo] starting the local control plane"),
        "no progress shown:\n{stderr}"
    );
    // Every component runs with its ServiceAccount's RBAC from deploy/.
    for sa in ["dpdk-controller", "dpdk-node-agent", "dpdk-device-plugin"] {
        assert!(
            stderr.contains(&format!("as ServiceAccount dpdk-operator/{sa}")),
            "{sa}:\n{stderr}"
        );
    }
    assert!(
        stdout.contains("$ kubectl get dpdkconfigs,dpdknodestates"),
        "{stdout}"
    );
    assert!(
        stdout.contains("default-dpdk-config"),
        "the seed's config is missing from the tour:\n{stdout}"
    );
    assert!(
        stdout.contains("daemonset.apps/dpdk-driver-loader"),
        "{stdout}"
    );
    // Applied from the Git repository over HTTPS by the real reconciler binary.
    assert!(
        stdout.contains("main@sha1:"),
        "the config was not applied from Git:\n{stdout}"
    );
    assert!(
        stderr.contains("3/3 nodes enabled, NodeENI DPDK fields true, 3 DPDKNodeStates"),
        "{stderr}"
    );
    assert!(
        stdout.contains("git repository: https://127.0.0.1:"),
        "{stdout}"
    );
    assert!(
        stdout.contains("deployment.apps/dpdk-controller"),
        "{stdout}"
    );

    // The node side: one agent and one device plugin per simulated node, as their ServiceAccounts.
    assert!(
        stderr.contains("3/3 DPDKNodeStates Succeeded, 3/3 nodes ready, 3/3 nodes allocatable intel.com/intel_sriov_netdevice_2: 1"),
        "the node agents and device plugins did not converge:\n{stderr}"
    );
    assert!(
        stderr.contains("3/3 device plugins reporting, default-dpdk-config ready on 3/3 nodes"),
        "{stderr}"
    );
    let nodes = [
        "ip-10-0-1-10.ec2.internal",
        "ip-10-0-1-11.ec2.internal",
        "ip-10-0-1-12.ec2.internal",
    ];
    let ready = section(&stdout, "$ kubectl get nodes -l dpdk.aws.k8s/ready=true");
    for node in nodes {
        assert!(
            ready.contains(node),
            "{node} is not labelled ready:\n{ready}"
        );
    }
    let states = section(&stdout, "$ kubectl get dpdkconfigs,dpdknodestates");
    // The rollout's printer column: every matched node up to date.
    let header = states
        .lines()
        .find(|l| l.contains("UP-TO-DATE"))
        .unwrap_or_else(|| panic!("no UP-TO-DATE column:\n{states}"));
    let col = header
        .split_whitespace()
        .position(|c| c == "UP-TO-DATE")
        .expect("column");
    let row = states
        .lines()
        .find(|l| l.starts_with("dpdkconfig.networking.k8s.aws/default-dpdk-config "))
        .unwrap_or_else(|| panic!("no DPDKConfig row:\n{states}"));
    assert_eq!(
        row.split_whitespace().nth(col),
        Some("3/3"),
        "UP-TO-DATE of the seed's config:\n{states}"
    );
    for node in nodes {
        let row = states
            .lines()
            .find(|l| l.starts_with(&format!("dpdknodestate.networking.k8s.aws/{node} ")))
            .unwrap_or_else(|| panic!("no DPDKNodeState row for {node}:\n{states}"));
        assert!(
            row.contains("Succeeded"),
            "{node} not synced by its agent: {row}"
        );
    }
    let allocatable = section(
        &stdout,
        "$ kubectl get nodes -l ng=multi-eni -o custom-columns=",
    );
    for node in nodes {
        let row = allocatable
            .lines()
            .find(|l| l.starts_with(node))
            .unwrap_or_else(|| panic!("{node} missing:\n{allocatable}"));
        assert_eq!(
            row.split_whitespace().nth(1),
            Some("1"),
            "{node}'s allocatable devices: {row}"
        );
    }
    let described = section(&stdout, "$ kubectl describe node ip-10-0-1-10.ec2.internal");
    // Capacity and Allocatable, as the (simulated) kubelet reported them.
    let counts: Vec<&str> = described
        .lines()
        .filter_map(|l| l.trim().strip_prefix("intel.com/intel_sriov_netdevice_2:"))
        .map(str::trim)
        .collect();
    assert!(
        counts.len() >= 2 && counts.iter().all(|c| *c == "1"),
        "{described}"
    );
    let config = section(&stdout, "$ kubectl describe dpdkconfig default-dpdk-config");
    assert!(
        config.contains("Name:") && config.contains("default-dpdk-config"),
        "{config}"
    );
    assert!(
        config.contains("intel.com/intel_sriov_netdevice_2"),
        "{config}"
    );
    for node in nodes {
        assert!(
            config.contains(node),
            "the config's status does not list {node}:\n{config}"
        );
    }
    // The seed's `kubectl get pods -n dpdk-operator`: each node has its agent and device plugin pod.
    let pods = section(&stdout, "$ kubectl get pods -n dpdk-operator -o wide");
    for node in nodes {
        for ds in ["dpdk-driver-loader-", "sriov-device-plugin-"] {
            let row = pods
                .lines()
                .find(|l| l.starts_with(ds) && l.contains(node))
                .unwrap_or_else(|| panic!("no {ds}* pod on {node}:\n{pods}"));
            assert!(row.contains("Running"), "{row}");
        }
    }
    let daemonsets = section(
        &stdout,
        "$ kubectl get daemonsets,deployments -n dpdk-operator",
    );
    let loader = daemonsets
        .lines()
        .find(|l| l.starts_with("daemonset.apps/dpdk-driver-loader"))
        .unwrap_or_else(|| panic!("{daemonsets}"));
    assert_eq!(
        loader.split_whitespace().nth(1),
        Some("3"),
        "desired pods: {loader}"
    );
    // The drift endpoint answers. Git and the cluster agree after convergence; the node layer
    // reports, per node, the write-combining the seed's config asks for and the simulated
    // vfio-pci (like mainline) cannot give, with the node named in the diff headers.
    let drift = section(&stdout, "$ curl -s http://127.0.0.1:");
    assert!(
        drift.contains("\"git-cluster\":0") && drift.contains("\"cluster-nodeeni\":0"),
        "{drift}"
    );
    assert!(
        drift.contains("\"byKind\":{\"writeCombining\":3}"),
        "{drift}"
    );
    let diff = &stdout[stdout
        .find("/drift.diff | head")
        .unwrap_or_else(|| panic!("no drift diff in the tour:\n{stdout}"))..];
    assert!(
        nodes.iter().any(|n| diff.contains(n)),
        "node-layer headers name the node:\n{diff}"
    );
    assert!(
        stdout.contains("drift:          http://127.0.0.1:"),
        "{stdout}"
    );
    assert!(
        stdout
            .contains("/drift (also /drift.diff, /drift.patch?source=dpdk-operator/platform-dpdk)"),
        "{stdout}"
    );
    assert!(stdout.contains("node agents:    /"), "{stdout}");
    assert!(stdout.contains("device plugins: /"), "{stdout}");
}

/// The tour's output of one command: from its `$ ...` line to the next one.
fn section<'a>(stdout: &'a str, command: &str) -> &'a str {
    let start = stdout
        .find(command)
        .unwrap_or_else(|| panic!("{command:?} not in the tour:\n{stdout}"));
    let rest = &stdout[start + command.len()..];
    let end = rest.find("\n$ ").map_or(rest.len(), |i| i + 1);
    &rest[..end]
}
