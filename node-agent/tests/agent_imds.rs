//! ENI → PCI mapping through IMDSv2 against a local stub that enforces the token flow, and
//! the shortcuts that skip IMDS (dpdkPCIAddress, the journal once the netdev is gone).

mod agent_support;

use agent_support::imds::ImdsStub;
use agent_support::{FakeNic, FakeNode};
use dpdk_bridge::api::{DesiredDevice, DpdkDriver};
use dpdk_node_agent::journal::Journal;
use dpdk_node_agent::mapping::{self, Imds};
use dpdk_node_agent::modules::ModuleConfig;
use dpdk_node_agent::reconcile::{self, NodeContext};
use dpdk_node_agent::safety::{EniMac, HostNetwork, SafetyPolicy};
use dpdk_node_agent::sysfs::Sysfs;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn desired(eni: Option<&str>, pci: Option<&str>) -> DesiredDevice {
    DesiredDevice {
        device_index: 2,
        node_eni: "multus-eni-2".into(),
        eni_id: eni.map(String::from),
        pci_address: pci.map(String::from),
        resource_name: "intel.com/intel_sriov_netdevice_2".into(),
        driver: DpdkDriver::VfioPci,
    }
}

fn nodes() -> (FakeNode, [FakeNic; 3]) {
    let nics = [FakeNic::ena(5), FakeNic::ena(6), FakeNic::ena(7)];
    (FakeNode::new(&nics), nics)
}

async fn stub(nics: &[FakeNic; 3]) -> ImdsStub {
    ImdsStub::start(&[
        (&nics[0].mac, "eni-0primary", 0),
        (&nics[1].mac, "eni-0aaaa", 1),
        (&nics[2].mac, "eni-0bbbb", 2),
    ])
    .await
}

#[tokio::test]
async fn the_stub_refuses_metadata_without_a_session_token() {
    let (_node, nics) = nodes();
    let stub = stub(&nics).await;
    let mut s = tokio::net::TcpStream::connect(stub.addr)
        .await
        .expect("connect");
    s.write_all(b"GET /latest/meta-data/mac HTTP/1.1\r\nHost: imds\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    assert!(
        out.starts_with("HTTP/1.1 401"),
        "IMDSv1-style request must be refused: {out}"
    );
}

#[tokio::test]
async fn maps_an_eni_to_its_pci_device_through_imdsv2() {
    let (node, nics) = nodes();
    let stub = stub(&nics).await;
    let imds = Imds::new(&stub.endpoint()).expect("endpoint");
    let journal = Journal::open(&node.state).expect("journal");
    let sysfs = Sysfs::new(&node.sys);

    let t = mapping::resolve(
        &desired(Some("eni-0bbbb"), None),
        &sysfs,
        &journal,
        Some(&imds),
    )
    .await
    .expect("mapped");
    assert_eq!(t.address.as_str(), nics[2].bdf);
    assert_eq!(t.eni_id.as_deref(), Some("eni-0bbbb"));
    let log = stub.log();
    assert_eq!(
        log[0],
        ("PUT".to_string(), "/latest/api/token".to_string(), 200),
        "token first: {log:?}"
    );
    assert!(
        log[1..].iter().all(|(m, _, s)| m == "GET" && *s == 200),
        "every GET carried the token: {log:?}"
    );
    assert!(
        log.iter()
            .any(|(_, p, _)| p.ends_with(&format!("/macs/{}/interface-id", nics[2].mac))),
        "{log:?}"
    );
    assert_eq!(
        stub.state.lock().expect("lock").issued,
        1,
        "one token for the whole lookup"
    );
    assert_eq!(
        imds.primary_mac().await.expect("mac").as_deref(),
        Some(nics[0].mac.as_str())
    );

    // The token expires: the client gets a 401, fetches a new token and carries on.
    stub.expire_tokens();
    let t = mapping::resolve(
        &desired(Some("eni-0aaaa"), None),
        &sysfs,
        &journal,
        Some(&imds),
    )
    .await
    .expect("mapped");
    assert_eq!(t.address.as_str(), nics[1].bdf);
    assert_eq!(stub.state.lock().expect("lock").issued, 2);
    assert!(stub.log().iter().any(|(_, _, s)| *s == 401));

    let err = mapping::resolve(
        &desired(Some("eni-0ffff"), None),
        &sysfs,
        &journal,
        Some(&imds),
    )
    .await
    .expect_err("unknown ENI");
    assert!(
        err.to_string()
            .contains("no interface whose interface-id is eni-0ffff"),
        "{err}"
    );
}

#[tokio::test]
async fn explicit_pci_address_and_the_journal_skip_imds() {
    let (node, nics) = nodes();
    let stub = stub(&nics).await;
    let imds = Imds::new(&stub.endpoint()).expect("endpoint");
    let sysfs = Sysfs::new(&node.sys);
    let mut journal = Journal::open(&node.state).expect("journal");

    let t = mapping::resolve(
        &desired(Some("eni-0bbbb"), Some("00:06.0")),
        &sysfs,
        &journal,
        None,
    )
    .await
    .expect("mapped");
    assert_eq!(t.address.as_str(), nics[1].bdf, "dpdkPCIAddress wins");
    assert_eq!(t.eni_mac, EniMac::Unchecked, "no IMDS, nothing to compare");
    assert!(stub.log().is_empty(), "no IMDS request: {:?}", stub.log());
    // With IMDS the address still wins, but the ENI's MAC goes with it for the safety
    // check: 00:06.0 is ens6 (eni-0aaaa), not eni-0bbbb's ens7.
    let t = mapping::resolve(
        &desired(Some("eni-0bbbb"), Some("00:06.0")),
        &sysfs,
        &journal,
        Some(&imds),
    )
    .await
    .expect("mapped");
    assert_eq!(t.address.as_str(), nics[1].bdf, "dpdkPCIAddress wins");
    assert_eq!(
        t.eni_mac,
        EniMac::Listed {
            eni: "eni-0bbbb".into(),
            mac: nics[2].mac.clone()
        }
    );
    let t_unknown = mapping::resolve(
        &desired(Some("eni-0ffff"), Some("00:06.0")),
        &sysfs,
        &journal,
        Some(&imds),
    )
    .await
    .expect("mapped");
    assert_eq!(
        t_unknown.eni_mac,
        EniMac::NotListed {
            eni: "eni-0ffff".into()
        }
    );
    stub.state.lock().expect("lock").log.clear();

    // Bind eni-0bbbb; its netdev disappears, so only the journal can still map it.
    node.load_modules(&ModuleConfig {
        driver: DpdkDriver::VfioPci,
        noiommu: false,
        write_combining: false,
    })
    .expect("load");
    let t = mapping::resolve(
        &desired(Some("eni-0bbbb"), None),
        &sysfs,
        &journal,
        Some(&imds),
    )
    .await
    .expect("mapped");
    let (network, policy) = (HostNetwork::default(), SafetyPolicy::default());
    let ctx = NodeContext {
        sysfs: &sysfs,
        dev_root: &node.dev,
        kernel: &node.kernel,
        network: &network,
        policy: &policy,
        in_use: None,
    };
    let report = reconcile::converge(&ctx, &mut journal, std::slice::from_ref(&t));
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(!node.netdev_exists(&nics[2].ifname));
    let before = stub.log().len();
    let again = mapping::resolve(
        &desired(Some("eni-0bbbb"), None),
        &sysfs,
        &journal,
        Some(&imds),
    )
    .await
    .expect("mapped from the journal");
    assert_eq!(again.address, t.address);
    assert_eq!(
        stub.log().len(),
        before,
        "no IMDS request for a bound device"
    );

    let err = mapping::resolve(&desired(None, None), &sysfs, &journal, None)
        .await
        .expect_err("nothing to map");
    assert!(
        err.to_string()
            .contains("neither dpdkPCIAddress nor an attachment"),
        "{err}"
    );
}
