//! The README's demo command, run as a user would (`dpdk-testenv demo --once`).

#[test]
fn demo_once_converges_and_prints_the_tour() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dpdk-testenv"))
        .args(["demo", "--once"])
        .output()
        .expect("demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo --once failed:\n{stdout}\n{stderr}");
    assert!(stderr.contains("[demo] starting the local control plane"), "no progress shown:\n{stderr}");
    assert!(stdout.contains("$ kubectl get dpdkconfigs,dpdknodestates"), "{stdout}");
    assert!(stdout.contains("default-dpdk-config"), "the seed's config is missing from the tour:\n{stdout}");
    assert!(stdout.contains("daemonset.apps/dpdk-driver-loader"), "{stdout}");
    // Applied from the Git repository over HTTPS by the real reconciler binary.
    assert!(stdout.contains("main@sha1:"), "the config was not applied from Git:\n{stdout}");
    assert!(stderr.contains("3/3 nodes enabled, NodeENI DPDK fields true, 3 DPDKNodeStates"), "{stderr}");
    assert!(stdout.contains("git repository: https://127.0.0.1:"), "{stdout}");
    assert!(stdout.contains("deployment.apps/dpdk-controller"), "{stdout}");
}
