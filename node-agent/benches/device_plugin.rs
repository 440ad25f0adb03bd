//! Device plugin figures, against the test-side kubelet over real Unix sockets on a
//! fake sysfs in a tempdir (`cargo bench -p dpdk-node-agent --bench device_plugin`):
//!
//! - Allocate latency p50/p99 (target p99 < 1 ms), over gRPC and, side by side, the
//!   pure response builder alone;
//! - ListAndWatch propagation of a bind/unbind (target < 100 ms), with inotify and with
//!   the poll alone (a real kernel's sysfs reports no bind events);
//! - time to re-register after a kubelet restart (target < 1 s).

#[path = "../tests/device_plugin_support/mod.rs"]
mod device_plugin_support;

use std::time::{Duration, Instant};

use device_plugin_support::*;
use dpdk_bridge::api::DpdkDriver;
use dpdk_node_agent::device_plugin::OfferedDevice;
use dpdk_node_agent::device_plugin::allocate;
use dpdk_node_agent::device_plugin::api::v1beta1::{AllocateRequest, ContainerAllocateRequest};
use dpdk_node_agent::device_plugin::inventory::{self, HostPaths};

const DEVICES: usize = 8;
// Full counts under `cargo bench`; a short smoke run when built without optimizations
// (`cargo test --all-targets` runs this main too).
const FULL: bool = !cfg!(debug_assertions);
const ALLOCATIONS: usize = if FULL { 2000 } else { 100 };
const FLIPS: usize = if FULL { 40 } else { 6 };
const RESTARTS: usize = if FULL { 20 } else { 3 };
const T: Duration = Duration::from_secs(10);

fn bdf(i: usize) -> String {
    format!("0000:00:{:02x}.0", 6 + i)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn summary(mut samples: Vec<Duration>) -> (Duration, Duration, Duration) {
    samples.sort();
    (
        percentile(&samples, 0.50),
        percentile(&samples, 0.99),
        *samples.last().unwrap_or(&Duration::ZERO),
    )
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn host_with_devices() -> (FakeHost, Vec<String>) {
    let host = FakeHost::new();
    let ids: Vec<String> = (0..DEVICES).map(bdf).collect();
    for (i, id) in ids.iter().enumerate() {
        host.add_device(id, Some((i % 2) as u32), Group::Iommu(40 + i as u32));
        host.bind_vfio(id);
    }
    (host, ids)
}

/// Flips device 0 between bound and unbound `FLIPS` times; time from the sysfs change
/// to the ListAndWatch update that shows it.
async fn propagation(inotify: bool, poll: Duration) -> Vec<Duration> {
    let (host, ids) = host_with_devices();
    let kubelet = TestKubelet::start(&host.plugin_dir);
    let mut config = host.config();
    config.health_inotify = inotify;
    config.health_poll = poll;
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let plugin = Plugin::start(config, desired(SEED_RESOURCE, &id_refs));
    kubelet.next_registration(T).await;
    let mut client = kubelet.plugin(SEED_SOCKET).await;
    let mut stream = list_and_watch(&mut client).await;
    wait_list(&mut stream, T, |d| {
        d.len() == DEVICES && d.iter().all(|x| x.health == "Healthy")
    })
    .await;

    let mut samples = Vec::with_capacity(FLIPS);
    for i in 0..FLIPS {
        // Let the previous change settle, then change at a random point of the poll cycle.
        tokio::time::sleep(Duration::from_millis(7 * (i as u64 % 11))).await;
        let (want, t0) = if i % 2 == 0 {
            let t0 = Instant::now();
            host.unbind_to_ena(&ids[0]);
            ("Unhealthy", t0)
        } else {
            let t0 = Instant::now();
            host.bind_vfio(&ids[0]);
            ("Healthy", t0)
        };
        wait_list(&mut stream, T, |d| health_of(d, &ids[0]) == Some(want)).await;
        samples.push(t0.elapsed());
    }
    plugin.shutdown().await;
    samples
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    println!(
        "## device plugin benchmark ({DEVICES} devices, fake sysfs, test kubelet over Unix sockets)\n"
    );

    // --- Allocate latency ---
    let (host, ids) = host_with_devices();
    let kubelet = TestKubelet::start(&host.plugin_dir);
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let plugin = Plugin::start(host.config(), desired(SEED_RESOURCE, &id_refs));
    kubelet.next_registration(T).await;
    let mut client = kubelet.plugin(SEED_SOCKET).await;
    let mut stream = list_and_watch(&mut client).await;
    wait_list(&mut stream, T, |d| {
        d.len() == DEVICES && d.iter().all(|x| x.health == "Healthy")
    })
    .await;
    let request = |i: usize| AllocateRequest {
        container_requests: vec![ContainerAllocateRequest {
            devices_ids: vec![ids[i % DEVICES].clone()],
        }],
    };
    for i in 0..ALLOCATIONS / 10 {
        client.allocate(request(i)).await.expect("warm-up allocate");
    }
    let mut grpc = Vec::with_capacity(ALLOCATIONS);
    for i in 0..ALLOCATIONS {
        let t0 = Instant::now();
        client.allocate(request(i)).await.expect("allocate");
        grpc.push(t0.elapsed());
    }
    // Side by side: the same work without gRPC (sysfs read + response build).
    let paths = HostPaths {
        sysfs_root: host.sysfs.clone(),
        dev_root: host.dev.clone(),
    };
    let mut pure = Vec::with_capacity(ALLOCATIONS);
    for i in 0..ALLOCATIONS {
        let id = ids[i % DEVICES].clone();
        let t0 = Instant::now();
        let r = allocate::container_response(SEED_RESOURCE, std::slice::from_ref(&id), |id| {
            Some(inventory::observe(
                &paths,
                &OfferedDevice {
                    pci_address: id.to_string(),
                    driver: DpdkDriver::VfioPci,
                },
            ))
        });
        pure.push(t0.elapsed());
        assert!(r.is_ok());
    }
    plugin.shutdown().await;
    drop(kubelet);
    let under_1ms = |v: &[Duration]| {
        100.0 * v.iter().filter(|d| **d < Duration::from_millis(1)).count() as f64 / v.len() as f64
    };
    let (grpc_fast, pure_fast) = (under_1ms(&grpc), under_1ms(&pure));
    let (g50, g99, gmax) = summary(grpc);
    let (p50, p99, pmax) = summary(pure);
    println!("| Allocate (1 device, vfio) | p50 | p99 | max | under 1 ms | n |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| over gRPC/UDS from the test kubelet | {} | {} | {} | {grpc_fast:.1}% | {ALLOCATIONS} |",
        ms(g50),
        ms(g99),
        ms(gmax)
    );
    println!(
        "| sysfs check + response only (in process) | {} | {} | {} | {pure_fast:.1}% | {ALLOCATIONS} |",
        ms(p50),
        ms(p99),
        ms(pmax)
    );
    println!(
        "| ratio gRPC / in-process (p50) | {:.1}x | | | | |\n",
        g50.as_secs_f64() / p50.as_secs_f64().max(1e-9)
    );

    // --- ListAndWatch propagation ---
    let fast = propagation(true, Duration::from_millis(50)).await;
    let polled = propagation(false, Duration::from_millis(50)).await;
    let (f50, f99, fmax) = summary(fast);
    let (q50, q99, qmax) = summary(polled);
    println!("| ListAndWatch propagation (bind/unbind → update) | p50 | p99 | max | n |");
    println!("|---|---|---|---|---|");
    println!(
        "| inotify + 50 ms poll (default) | {} | {} | {} | {FLIPS} |",
        ms(f50),
        ms(f99),
        ms(fmax)
    );
    println!(
        "| 50 ms poll only (sysfs without events) | {} | {} | {} | {FLIPS} |",
        ms(q50),
        ms(q99),
        ms(qmax)
    );
    println!();

    // --- Re-registration after a kubelet restart ---
    let (host, ids) = host_with_devices();
    let mut kubelet = TestKubelet::start(&host.plugin_dir);
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let plugin = Plugin::start(host.config(), desired(SEED_RESOURCE, &id_refs));
    kubelet.next_registration(T).await;
    let mut wiped = Vec::with_capacity(RESTARTS);
    let mut recreated = Vec::with_capacity(RESTARTS);
    for _ in 0..RESTARTS {
        let t0 = kubelet.restart().await;
        let reg = kubelet.next_registration(T).await;
        assert!(reg.dial_back.is_ok(), "{:?}", reg.dial_back);
        wiped.push(reg.at.duration_since(t0));
        // Late duplicates (socket and kubelet.sock events of one restart) are not counted.
        tokio::time::sleep(Duration::from_millis(100)).await;
        kubelet.drain().await;
        let t0 = kubelet.recreate_socket().await;
        let reg = kubelet.next_registration(T).await;
        recreated.push(reg.at.duration_since(t0));
        tokio::time::sleep(Duration::from_millis(100)).await;
        kubelet.drain().await;
    }
    plugin.shutdown().await;
    let (w50, w99, wmax) = summary(wiped);
    let (r50, r99, rmax) = summary(recreated);
    println!(
        "| Re-register after kubelet restart (new kubelet.sock listening → Register received) | p50 | p99 | max | n |"
    );
    println!("|---|---|---|---|---|");
    println!(
        "| dir wiped (plugin socket deleted) + new kubelet.sock | {} | {} | {} | {RESTARTS} |",
        ms(w50),
        ms(w99),
        ms(wmax)
    );
    println!(
        "| only kubelet.sock recreated | {} | {} | {} | {RESTARTS} |",
        ms(r50),
        ms(r99),
        ms(rmax)
    );
}
