//! What the controller benchmarks share: the fleet, the controller process, its audit-log
//! writes and its /proc figures.
// Each bench uses part of it.
#![allow(dead_code)]

use std::io::{Read, Write as _};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dpdk_bridge::api::{NodeENI, NodeENISpec, NodeENIStatus};
use dpdk_testenv::{ControlPlane, Reaper, fixtures};
use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::Value;

pub type BoxErr = Box<dyn std::error::Error + Send + Sync>;

/// The user the benchmarked controller impersonates, so the audit log names its writes.
pub const CONTROLLER_USER: &str = "bench-dpdk-controller";

pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `futs`, at most `concurrency` at once; the first error wins.
pub async fn run_all<F>(futs: Vec<F>, concurrency: usize) -> Result<(), BoxErr>
where
    F: std::future::Future<Output = Result<(), BoxErr>>,
{
    let results: Vec<Result<(), BoxErr>> = futures::stream::iter(futs)
        .buffer_unordered(concurrency)
        .collect()
        .await;
    results.into_iter().collect()
}

pub fn node_name(i: usize) -> String {
    format!(
        "ip-10-{}-{}-{}.ec2.internal",
        i / 65536,
        (i / 256) % 256,
        i % 256
    )
}

/// `nodes` Nodes labelled `bench/group=dpdk`, each with `per_node` NodeENIs (one node
/// each) attached at deviceIndex 1..=per_node.
pub async fn setup_fleet(client: &Client, nodes: usize, per_node: usize) -> Result<(), BoxErr> {
    let mut futs = Vec::new();
    for i in 0..nodes {
        let client = client.clone();
        futs.push(async move {
            let n = node_name(i);
            fixtures::create_node(
                &client,
                &n,
                &[("bench/group", "dpdk"), ("kubernetes.io/hostname", &n)],
                "10.0.0.1",
            )
            .await?;
            let api: Api<NodeENI> = Api::all(client.clone());
            for d in 1..=per_node as i32 {
                let spec = NodeENISpec {
                    node_selector: [("kubernetes.io/hostname".to_string(), n.clone())].into(),
                    device_index: Some(d),
                    subnet_id: Some("subnet-0123456789abcdef0".into()),
                    security_group_ids: Some(vec!["sg-0123456789abcdef0".into()]),
                    ..Default::default()
                };
                let mut eni = api
                    .create(
                        &PostParams::default(),
                        &NodeENI::new(&format!("{n}-eni{d}"), spec),
                    )
                    .await?;
                eni.status = Some(NodeENIStatus {
                    attachments: vec![fixtures::attachment(&n, d, &format!("eni-{i:08x}{d:02}"))],
                });
                api.replace_status(&format!("{n}-eni{d}"), &PostParams::default(), &eni)
                    .await?;
            }
            Ok::<(), BoxErr>(())
        });
    }
    run_all(futs, 32).await
}

/// A kubeconfig that impersonates `user` (in system:masters), so the audit log names it.
pub fn impersonating_kubeconfig(cp: &ControlPlane, user: &str) -> Result<PathBuf, BoxErr> {
    let text = std::fs::read_to_string(cp.kubeconfig_path())?;
    let patched = text.replacen("    client-key:", &format!("    as: {user}\n    as-groups: [\"system:masters\", \"system:authenticated\"]\n    client-key:"), 1);
    let path = cp.data_dir().join(format!("kubeconfig-{user}"));
    std::fs::write(&path, patched)?;
    Ok(path)
}

/// The running `dpdk-reconciler run` under test.
pub struct Controller {
    pub process: Reaper,
    pub port: u16,
    pub log_path: PathBuf,
}

impl Controller {
    /// Starts `dpdk-reconciler run` as [`CONTROLLER_USER`] with `args` (plus
    /// DPDK_BENCH_RECONCILER_ARGS, under DPDK_BENCH_RECONCILER_WRAPPER when set) and waits
    /// for `/readyz`.
    pub async fn start(cp: &ControlPlane, args: &[String]) -> Result<Self, BoxErr> {
        let kubeconfig = impersonating_kubeconfig(cp, CONTROLLER_USER)?;
        let port = free_port();
        let log_path = cp.data_dir().join("controller.log");
        let log = std::fs::File::create(&log_path)?;
        // A profiler in front of the binary, e.g. DPDK_BENCH_RECONCILER_WRAPPER="heaptrack
        // -o /tmp/reconciler". The RSS figures are then the wrapper's, not the controller's.
        let wrapper = std::env::var("DPDK_BENCH_RECONCILER_WRAPPER").unwrap_or_default();
        let mut wrapper = wrapper.split_whitespace();
        let mut cmd = match wrapper.next() {
            Some(program) => {
                let mut c = Command::new(program);
                c.args(wrapper).arg(env!("CARGO_BIN_EXE_dpdk-reconciler"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_dpdk-reconciler")),
        };
        cmd.args(["run", "--no-leader-election", "--log-format", "json"])
            .arg(format!("--http-addr=127.0.0.1:{port}"))
            .args(args)
            // Extra flags for side-by-side runs, e.g. DPDK_BENCH_RECONCILER_ARGS=--no-drift.
            .args(
                std::env::var("DPDK_BENCH_RECONCILER_ARGS")
                    .unwrap_or_default()
                    .split_whitespace(),
            )
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "info")
            // The allocator setting the Deployment ships, unless the caller sets its own.
            .envs(
                std::env::var_os("MALLOC_ARENA_MAX")
                    .is_none()
                    .then(|| shipped_env("MALLOC_ARENA_MAX").map(|v| ("MALLOC_ARENA_MAX", v)))
                    .flatten(),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // Stopped with SIGTERM (10 s to exit) when the bench drops it.
        let process = Reaper::spawn(cmd, Duration::from_secs(10))?;
        let deadline = Instant::now() + Duration::from_secs(120);
        while !matches!(http_get(port, "/readyz"), Some((200, _))) {
            if Instant::now() > deadline {
                return Err(format!(
                    "the controller did not become ready; see {}",
                    log_path.display()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Self {
            process,
            port,
            log_path,
        })
    }

    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// The controller's `/metrics` text.
    pub fn metrics(&self) -> String {
        http_get(self.port, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default()
    }
}

/// The value `deploy/dpdk-controller.yaml` gives the controller's environment variable `name`.
pub fn shipped_env(name: &str) -> Option<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/dpdk-controller.yaml"
    );
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines().map(str::trim);
    lines.find(|l| *l == format!("- name: {name}"))?;
    let value = lines.next()?.strip_prefix("value:")?.trim();
    Some(value.trim_matches('"').to_string())
}

pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, buf))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(18080)
}

/// User + system CPU seconds of a process, from /proc/<pid>/stat.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// One object write in the audit log.
pub struct AuditWrite {
    pub at: Timestamp,
    pub resource: String,
    pub subresource: String,
    pub verb: String,
    pub code: u64,
}

/// The controller's object writes in the audit log (leases and events left out).
pub fn controller_writes(cp: &ControlPlane) -> Vec<AuditWrite> {
    let text = std::fs::read_to_string(cp.audit_log_path()).unwrap_or_default();
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|v| {
            v["stage"] == "ResponseComplete" && v["impersonatedUser"]["username"] == CONTROLLER_USER
        })
        .filter_map(|v| {
            let str_of = |p: &str| {
                v.pointer(p)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            let resource = str_of("/objectRef/resource");
            if resource == "leases" || resource == "events" {
                return None;
            }
            Some(AuditWrite {
                at: v["stageTimestamp"].as_str()?.parse().ok()?,
                resource,
                subresource: str_of("/objectRef/subresource"),
                verb: str_of("/verb"),
                code: v["responseStatus"]["code"].as_u64().unwrap_or(0),
            })
        })
        .collect()
}

/// The sum and count of a Prometheus histogram in `/metrics` text.
pub fn histogram_sum_count(metrics: &str, name: &str) -> (f64, f64) {
    let value = |suffix: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}_{suffix} ")))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (value("sum"), value("count"))
}
