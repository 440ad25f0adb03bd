//! The kubelet of the QEMU guest (`node-agent/tests/qemu_dpdk.rs`), built statically with
//! the agent. It serves the v1beta1 Registration service on `<plugin-dir>/kubelet.sock`
//! with the simulated kubelet ([`dpdk_node_agent::sim::kubelet::SimKubelet`], generated from
//! the same proto as the plugin), follows the plugin's ListAndWatch, and once `<resource>`
//! has a Healthy device calls `Allocate` for it on the plugin's socket, as the kubelet does
//! when it admits a pod. It prints the container's answer as one line of JSON,
//!
//! ```text
//! DPDKTEST-ALLOCATE {"envs":{...},"devices":[{"hostPath":..,"containerPath":..,"permissions":..}],"mounts":[..]}
//! ```
//!
//! and writes it for the guest's shell: `<out-dir>/devices` (`<host path> <container path>`
//! per line) and `<out-dir>/env` (`export NAME='value'` per line).
//!
//! Usage: `guest_kubelet <plugin-dir> <resource> <out-dir> <timeout, e.g. 60s>`; exits 1 when
//! no Healthy device appears in time or Allocate fails.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use dpdk_node_agent::device_plugin::api::v1beta1::device_plugin_client::DevicePluginClient;
use dpdk_node_agent::device_plugin::api::v1beta1::{
    AllocateRequest, ContainerAllocateRequest, ContainerAllocateResponse,
};
use dpdk_node_agent::device_plugin::api::{HEALTHY, unix_channel};
use dpdk_node_agent::device_plugin::naming::socket_file_name;
use dpdk_node_agent::sim::kubelet::SimKubelet;
use serde_json::json;

struct Args {
    plugin_dir: PathBuf,
    resource: String,
    out_dir: PathBuf,
    timeout: Duration,
}

fn parse_args() -> Result<Args, String> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let [dir, resource, out, timeout] = a.as_slice() else {
        return Err("usage: guest_kubelet <plugin-dir> <resource> <out-dir> <timeout>".into());
    };
    let timeout = dpdk_bridge::duration::parse(timeout).map_err(|e| e.to_string())?;
    Ok(Args {
        plugin_dir: dir.into(),
        resource: resource.clone(),
        out_dir: out.into(),
        timeout,
    })
}

/// The answer as JSON (the generated messages have no serde).
fn answer_json(r: &ContainerAllocateResponse) -> serde_json::Value {
    json!({
        "envs": r.envs,
        "devices": r.devices.iter().map(|d| json!({
            "hostPath": d.host_path,
            "containerPath": d.container_path,
            "permissions": d.permissions,
        })).collect::<Vec<_>>(),
        "mounts": r.mounts.iter().map(|m| json!({
            "hostPath": m.host_path,
            "containerPath": m.container_path,
            "readOnly": m.read_only,
        })).collect::<Vec<_>>(),
    })
}

/// `export NAME='value'` lines; values never hold a single quote (BDFs and JSON of BDFs).
fn env_file(r: &ContainerAllocateResponse) -> String {
    r.envs
        .iter()
        .map(|(k, v)| format!("export {k}='{}'\n", v.replace('\'', "'\\''")))
        .collect()
}

fn devices_file(r: &ContainerAllocateResponse) -> String {
    r.devices
        .iter()
        .map(|d| format!("{} {}\n", d.host_path, d.container_path))
        .collect()
}

async fn run(args: Args) -> Result<ContainerAllocateResponse, String> {
    let kubelet = SimKubelet::start(&args.plugin_dir, None).map_err(|e| e.to_string())?;
    let mut devices = kubelet.devices();
    let wait = async {
        loop {
            let healthy = devices.borrow().get(&args.resource).and_then(|list| {
                list.iter()
                    .find(|d| d.health == HEALTHY)
                    .map(|d| d.id.clone())
            });
            if let Some(id) = healthy {
                return Ok::<_, String>(id);
            }
            devices
                .changed()
                .await
                .map_err(|_| "the simulated kubelet stopped".to_string())?;
        }
    };
    let id = tokio::time::timeout(args.timeout, wait)
        .await
        .map_err(|_| {
            format!(
                "no Healthy device of {} within {:?}; last lists: {:?}",
                args.resource,
                args.timeout,
                devices.borrow()
            )
        })??;
    eprintln!(
        "guest_kubelet: {} offers {id}; calling Allocate",
        args.resource
    );
    let socket = args.plugin_dir.join(socket_file_name(&args.resource));
    let channel = unix_channel(&socket)
        .await
        .map_err(|e| format!("dialing {}: {e}", socket.display()))?;
    let response = DevicePluginClient::new(channel)
        .allocate(AllocateRequest {
            container_requests: vec![ContainerAllocateRequest {
                devices_ids: vec![id],
            }],
        })
        .await
        .map_err(|s| format!("Allocate: {s}"))?
        .into_inner();
    let _ = kubelet.shutdown().await;
    response
        .container_responses
        .into_iter()
        .next()
        .ok_or_else(|| "Allocate answered no container".to_string())
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("guest_kubelet: {e}");
            return ExitCode::FAILURE;
        }
    };
    let out_dir = args.out_dir.clone();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("guest_kubelet: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(args)).and_then(|answer| {
        println!("DPDKTEST-ALLOCATE {}", answer_json(&answer));
        write(&out_dir.join("devices"), &devices_file(&answer))?;
        write(&out_dir.join("env"), &env_file(&answer))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("guest_kubelet: {e}");
            ExitCode::FAILURE
        }
    }
}
