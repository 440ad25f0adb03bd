//! Node agent benchmarks (`cargo bench -p dpdk-node-agent --bench agent`):
//! 1. binding and restoring 16 devices on a fake sysfs tree (kernel model, real journal
//!    with fsync on the target filesystem), next to 1 device and a no-op pass;
//! 2. converging one device in a QEMU guest on a real kernel (skipped with a message when
//!    QEMU cannot start; DPDK_BENCH_QEMU=0 skips it).

#[path = "../tests/agent_support/mod.rs"]
mod agent_support;
#[path = "../tests/qemu/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use agent_support::{FakeNic, FakeNode};
use dpdk_bridge::api::DpdkDriver;
use dpdk_node_agent::journal::Journal;
use dpdk_node_agent::modules::ModuleConfig;
use dpdk_node_agent::reconcile::{self, NodeContext, Target};
use dpdk_node_agent::safety::{HostNetwork, SafetyPolicy};
use dpdk_node_agent::sysfs::{PciAddress, Sysfs};

const ROUNDS: usize = 30;

fn nics(n: u8) -> Vec<FakeNic> {
    (0..n).map(|i| FakeNic::ena(0x10 + i)).collect()
}

fn targets(nics: &[FakeNic]) -> Vec<Target> {
    nics.iter()
        .enumerate()
        .map(|(i, n)| Target {
            device_index: i as i32 + 1,
            node_eni: Some(format!("eni-{i}")),
            eni_id: None,
            address: PciAddress::parse(&n.bdf).expect("bdf"),
            driver: "vfio-pci".into(),
            resource_name: Some("intel.com/dpdk".into()),
            eni_mac: Default::default(),
        })
        .collect()
}

/// (bind all, no-op pass, restore all) for `n` devices on a fresh tree.
fn one_round(n: u8) -> (Duration, Duration, Duration) {
    let nics = nics(n);
    let node = FakeNode::new(&nics);
    let sysfs = Sysfs::new(&node.sys);
    node.load_modules(&ModuleConfig {
        driver: DpdkDriver::VfioPci,
        noiommu: false,
        write_combining: false,
    })
    .expect("load");
    let (network, policy) = (HostNetwork::default(), SafetyPolicy::default());
    let ctx = NodeContext {
        sysfs: &sysfs,
        dev_root: &node.dev,
        kernel: &node.kernel,
        network: &network,
        policy: &policy,
        in_use: None,
    };
    let mut journal = Journal::open(&node.state).expect("journal");
    let t = targets(&nics);
    let start = Instant::now();
    let r = reconcile::converge(&ctx, &mut journal, &t);
    let bind = start.elapsed();
    assert!(
        r.errors.is_empty() && r.bound_devices() == n as usize,
        "{:?}",
        r.errors
    );
    let start = Instant::now();
    reconcile::converge(&ctx, &mut journal, &t);
    let noop = start.elapsed();
    let start = Instant::now();
    let r = reconcile::converge(&ctx, &mut journal, &[]);
    let restore = start.elapsed();
    assert!(r.errors.is_empty() && journal.is_empty());
    (bind, noop, restore)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn fake_tree() {
    // Interleave the two sizes so machine noise hits both alike.
    let (mut b1, mut n1, mut r1, mut b16, mut n16, mut r16) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..ROUNDS {
        let (b, n, r) = one_round(1);
        b1.push(b);
        n1.push(n);
        r1.push(r);
        let (b, n, r) = one_round(16);
        b16.push(b);
        n16.push(n);
        r16.push(r);
    }
    let (b1, n1, r1, b16, n16, r16) = (
        median(b1),
        median(n1),
        median(r1),
        median(b16),
        median(n16),
        median(r16),
    );
    println!(
        "fake sysfs tree, kernel model, journal fsync on the target dir; median of {ROUNDS} rounds"
    );
    println!(
        "  bind 16 devices        {:8.2} ms  ({:.2} ms/device)",
        ms(b16),
        ms(b16) / 16.0
    );
    println!("  bind 1 device          {:8.2} ms", ms(b1));
    println!("  ratio 16 / 1           {:8.1}x", ms(b16) / ms(b1));
    println!(
        "  no-op pass, 16 devices {:8.3} ms  (converged: zero writes)",
        ms(n16)
    );
    println!("  no-op pass, 1 device   {:8.3} ms", ms(n1));
    println!("  restore 16 devices     {:8.2} ms", ms(r16));
    println!("  restore 1 device       {:8.2} ms", ms(r1));
}

fn qemu_guest() {
    if std::env::var("DPDK_BENCH_QEMU").is_ok_and(|v| v == "0") {
        println!("QEMU guest: skipped (DPDK_BENCH_QEMU=0)");
        return;
    }
    match harness::qemu_status() {
        harness::QemuStatus::Ready => {}
        harness::QemuStatus::Missing(why) | harness::QemuStatus::CannotStart(why) => {
            println!("QEMU guest: SKIPPED, QEMU cannot run here: {why}");
            return;
        }
    }
    let agent = harness::build_static_agent();
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("qemu-bench");
    let guest = harness::build_guest(&agent, &out);
    let boot = harness::boot(&guest, "bench", true, Duration::from_secs(400));
    let times: std::collections::BTreeMap<String, u64> = boot.times().into_iter().collect();
    let failed: Vec<_> = boot.checks().into_iter().filter(|c| !c.1).collect();
    if boot.timed_out || !boot.done() || !failed.is_empty() {
        println!(
            "QEMU guest: FAILED ({failed:?}); console:\n{}",
            boot.console
        );
        std::process::exit(1);
    }
    let n = times.get("iterations").copied().unwrap_or(1).max(1) as f64;
    let bind = times.get("bind_total_ms").copied().unwrap_or(0) as f64 / n;
    let unbind = times.get("unbind_total_ms").copied().unwrap_or(0) as f64 / n;
    println!(
        "QEMU guest (TCG, kernel {}, e1000e at 0000:00:03.0, emulated VT-d); {} bind/unbind cycles",
        guest.release, n
    );
    println!("  converge one device (e1000e -> vfio-pci, one-shot bind)  {bind:8.1} ms/cycle");
    println!("  restore one device (vfio-pci -> e1000e, one-shot unbind) {unbind:8.1} ms/cycle");
    println!(
        "  ratio restore / bind                                      {:8.2}x",
        unbind / bind.max(1.0)
    );
    println!(
        "  whole guest run (boot, modules, {n} cycles, power-off)    {:8.1} s",
        boot.elapsed.as_secs_f64()
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this too, so keep it quick there.
    let quick = !std::env::args().any(|a| a == "--bench");
    if quick {
        one_round(16);
        println!("agent bench: smoke run only (use cargo bench)");
        return;
    }
    fake_tree();
    qemu_guest();
}
