//! Running an image from the OCI layout under runc, with the security settings a shipped
//! manifest gives its container: the image is unpacked with umoci, and the bundle's
//! config.json gets the container's user, read-only root, capabilities and
//! no-new-privileges (translated by [`Security::of_container`]), the host network (to reach
//! the loopback control plane), tmpfs for its emptyDirs and bind mounts for test files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

use crate::images::BuiltImage;
use crate::{Error, Result, io_err};

/// Every capability, for a privileged container, in number order (CAP_CHOWN is 0).
const ALL_CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// What a manifest's securityContext asks of the runtime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Security {
    /// runAsUser/runAsGroup (container over pod); None keeps the image's USER.
    pub user: Option<(u32, u32)>,
    pub read_only_root: bool,
    pub capabilities: Vec<String>,
    pub no_new_privileges: bool,
    /// emptyDir mount paths: tmpfs in the container.
    pub scratch_dirs: Vec<String>,
}

impl Security {
    /// The settings of container `container` of a pod template's `spec` (JSON as in the
    /// manifest). Privileged gets every capability; otherwise Kubernetes' default set minus
    /// `capabilities.drop` ("ALL" drops all).
    pub fn of_container(pod_spec: &Value, container: &str) -> Result<Security> {
        let c = pod_spec["containers"]
            .as_array()
            .into_iter()
            .chain(pod_spec["initContainers"].as_array())
            .flatten()
            .find(|c| c["name"] == container)
            .ok_or_else(|| Error::Other(format!("no container {container}")))?;
        let (pod_sc, sc) = (&pod_spec["securityContext"], &c["securityContext"]);
        let id = |key: &str| sc[key].as_u64().or_else(|| pod_sc[key].as_u64());
        let user = id("runAsUser").map(|u| (u as u32, id("runAsGroup").unwrap_or(u) as u32));
        let privileged = sc["privileged"].as_bool().unwrap_or(false);
        let drops: Vec<&str> = sc["capabilities"]["drop"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let capabilities = if privileged {
            ALL_CAPABILITIES.iter().map(|c| c.to_string()).collect()
        } else if drops.contains(&"ALL") {
            Vec::new()
        } else {
            // runc's (and containerd's) default set, less what the manifest drops.
            [
                "CAP_AUDIT_WRITE",
                "CAP_KILL",
                "CAP_NET_BIND_SERVICE",
                "CAP_CHOWN",
                "CAP_DAC_OVERRIDE",
                "CAP_FOWNER",
                "CAP_FSETID",
                "CAP_SETGID",
                "CAP_SETUID",
                "CAP_SETPCAP",
                "CAP_NET_RAW",
                "CAP_SYS_CHROOT",
                "CAP_MKNOD",
                "CAP_SETFCAP",
            ]
            .iter()
            .filter(|cap| !drops.contains(&cap.trim_start_matches("CAP_")))
            .map(|c| c.to_string())
            .collect()
        };
        let empty_dirs: Vec<&str> = pod_spec["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|v| v.get("emptyDir").is_some())
            .filter_map(|v| v["name"].as_str())
            .collect();
        let scratch_dirs = c["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["name"].as_str().is_some_and(|n| empty_dirs.contains(&n)))
            .filter_map(|m| m["mountPath"].as_str().map(str::to_string))
            .collect();
        Ok(Security {
            user,
            read_only_root: sc["readOnlyRootFilesystem"].as_bool().unwrap_or(false),
            capabilities,
            no_new_privileges: sc["allowPrivilegeEscalation"] == false,
            scratch_dirs,
        })
    }
}

/// A host path bind-mounted into the container.
#[derive(Clone, Debug)]
pub struct BindMount {
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
}

/// An unpacked image, ready to run.
pub struct Bundle {
    dir: tempfile::TempDir,
}

impl Bundle {
    /// `umoci unpack` of the image into a fresh directory.
    pub fn unpack(image: &BuiltImage) -> Result<Bundle> {
        let dir = tempfile::Builder::new()
            .prefix("dpdk-bundle-")
            .tempdir()
            .map_err(io_err("bundle"))?;
        let bundle = dir.path().join("bundle");
        let out = Command::new("umoci")
            .args(["unpack", "--image", &image.oci_ref()])
            .arg(&bundle)
            .output()
            .map_err(io_err("umoci"))?;
        if !out.status.success() {
            return Err(Error::Other(format!(
                "umoci unpack {}: {}",
                image.oci_ref(),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(Bundle { dir })
    }

    fn bundle(&self) -> PathBuf {
        self.dir.path().join("bundle")
    }

    /// The unpacked root filesystem.
    pub fn rootfs(&self) -> PathBuf {
        self.bundle().join("rootfs")
    }

    /// The image's config.json as umoci wrote it.
    pub fn config(&self) -> Result<Value> {
        let p = self.bundle().join("config.json");
        let text = std::fs::read_to_string(&p).map_err(io_err(&p))?;
        serde_json::from_str(&text).map_err(|e| Error::Other(format!("{}: {e}", p.display())))
    }

    /// A `runc run` of `args` (after the image's entrypoint) with `security`, the host
    /// network, and `mounts`; `id` names the container. Stdout and stderr are captured by
    /// the caller.
    pub fn command(
        &self,
        id: &str,
        args: &[&str],
        security: &Security,
        env: &[(&str, &str)],
        mounts: &[BindMount],
    ) -> Result<Command> {
        let mut config = self.config()?;
        // Nobody can grant what this process's bounding set lacks (sandboxes drop some):
        // privileged means every capability the host has, as container runtimes do.
        let bounding = host_bounding_set()?;
        let security = Security {
            capabilities: security
                .capabilities
                .iter()
                .filter(|c| capability_bit(c).is_none_or(|bit| bounding & (1 << bit) != 0))
                .cloned()
                .collect(),
            ..security.clone()
        };
        let security = &security;
        configure(&mut config, args, security, env, mounts);
        self.make_scratch_mountpoints(&security.scratch_dirs)?;
        let p = self.bundle().join("config.json");
        let text = serde_json::to_string_pretty(&config)
            .map_err(|e| Error::Other(format!("config.json: {e}")))?;
        std::fs::write(&p, text).map_err(io_err(&p))?;
        let mut cmd = Command::new("runc");
        cmd.arg("--root")
            .arg(self.state_root())
            .args(["run", "--bundle"])
            .arg(self.bundle())
            .arg(id);
        Ok(cmd)
    }

    /// Runs to completion (see [`Bundle::command`]).
    pub fn run(
        &self,
        id: &str,
        args: &[&str],
        security: &Security,
        env: &[(&str, &str)],
        mounts: &[BindMount],
    ) -> Result<Output> {
        self.command(id, args, security, env, mounts)?
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(io_err("runc"))
    }

    /// runc gives a tmpfs the mode of the directory it is mounted on, so each emptyDir's
    /// mount point is made world-writable (sticky) first, like an emptyDir.
    fn make_scratch_mountpoints(&self, dirs: &[String]) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        for dir in dirs {
            let p = self.rootfs().join(dir.trim_start_matches('/'));
            std::fs::create_dir_all(&p).map_err(io_err(&p))?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o1777))
                .map_err(io_err(&p))?;
        }
        Ok(())
    }

    /// runc's state directory for this bundle's containers.
    pub fn state_root(&self) -> PathBuf {
        self.dir.path().join("runc")
    }

    /// `runc delete --force` (kills it first when it still runs).
    pub fn delete(&self, id: &str) {
        let _ = Command::new("runc")
            .arg("--root")
            .arg(self.state_root())
            .args(["delete", "--force", id])
            .output();
    }
}

/// The capability's number (its position in [`ALL_CAPABILITIES`]).
fn capability_bit(cap: &str) -> Option<usize> {
    ALL_CAPABILITIES.iter().position(|c| *c == cap)
}

/// This process's capability bounding set (`CapBnd:` of /proc/self/status).
fn host_bounding_set() -> Result<u64> {
    let status =
        std::fs::read_to_string("/proc/self/status").map_err(io_err("/proc/self/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .ok_or_else(|| Error::Other("/proc/self/status has no CapBnd".into()))
}

/// Applies the run settings to an OCI runtime config (pure; the tests check it).
pub fn configure(
    config: &mut Value,
    args: &[&str],
    security: &Security,
    env: &[(&str, &str)],
    mounts: &[BindMount],
) {
    let entrypoint = config["process"]["args"]
        .as_array()
        .and_then(|a| a.first())
        .cloned()
        .unwrap_or(Value::Null);
    let mut full = vec![entrypoint];
    full.extend(args.iter().map(|a| json!(a)));
    let process = &mut config["process"];
    process["args"] = json!(full);
    process["terminal"] = json!(false);
    if let Some((uid, gid)) = security.user {
        process["user"] = json!({"uid": uid, "gid": gid});
    }
    let caps = json!(security.capabilities);
    process["capabilities"] = json!({
        "bounding": caps, "effective": caps, "permitted": caps, "inheritable": [], "ambient": []
    });
    process["noNewPrivileges"] = json!(security.no_new_privileges);
    if let Some(list) = process["env"].as_array_mut() {
        list.extend(env.iter().map(|(k, v)| json!(format!("{k}={v}"))));
    }
    config["root"]["readonly"] = json!(security.read_only_root);
    // The host network: the pod network is not what is tested here, the loopback API is.
    if let Some(ns) = config["linux"]["namespaces"].as_array_mut() {
        ns.retain(|n| n["type"] != "network");
    }
    let list = config["mounts"].as_array_mut();
    if let Some(list) = list {
        // A host-network container sees the host's sysfs; a bind over /sys replaces it.
        list.retain(|m| !mounts.iter().any(|b| b.destination == m["destination"]));
        for dir in &security.scratch_dirs {
            list.push(
                json!({"destination": dir, "type": "tmpfs", "source": "tmpfs",
                             "options": ["nosuid", "nodev", "mode=1777"]}),
            );
        }
        for b in mounts {
            let mut options = vec!["rbind"];
            if b.read_only {
                options.push("ro");
            }
            list.push(json!({"destination": b.destination, "type": "bind",
                             "source": b.source.display().to_string(), "options": options}));
        }
    }
}

/// The pod template spec of `kind`/`name` in a manifest file (multi-document YAML).
pub fn pod_spec(manifest: &Path, kind: &str, name: &str) -> Result<Value> {
    let text = std::fs::read_to_string(manifest).map_err(io_err(manifest))?;
    let mut objs = crate::objects::Objects::new();
    crate::objects::add_objects(&mut objs, &text, &manifest.display().to_string())?;
    objs.values()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .map(|o| o["spec"]["template"]["spec"].clone())
        .ok_or_else(|| Error::Other(format!("{}: no {kind} {name}", manifest.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn controller_spec() -> Value {
        let path = crate::control_plane::workspace_root().join("deploy/dpdk-controller.yaml");
        pod_spec(&path, "Deployment", "dpdk-controller").expect("the controller Deployment")
    }

    #[test]
    fn the_controller_runs_as_65532_read_only_without_capabilities() {
        let s = Security::of_container(&controller_spec(), "controller").expect("container");
        assert_eq!(s.user, Some((65532, 65532)));
        assert!(s.read_only_root && s.no_new_privileges);
        assert!(s.capabilities.is_empty());
        assert_eq!(s.scratch_dirs, ["/var/cache/dpdk-reconciler", "/tmp"]);
    }

    #[test]
    fn privileged_gets_every_capability_and_a_drop_list_removes_its_own() {
        let spec = json!({"containers": [
            {"name": "p", "securityContext": {"privileged": true}},
            {"name": "d", "securityContext": {"capabilities": {"drop": ["NET_RAW"]}}}]});
        let p = Security::of_container(&spec, "p").expect("p");
        assert!(p.capabilities.iter().any(|c| c == "CAP_SYS_MODULE"));
        assert_eq!(p.user, None);
        let d = Security::of_container(&spec, "d").expect("d");
        assert!(!d.capabilities.iter().any(|c| c == "CAP_NET_RAW"));
        assert!(d.capabilities.iter().any(|c| c == "CAP_CHOWN"));
    }

    #[test]
    fn capabilities_are_numbered_as_the_kernel_numbers_them() {
        assert_eq!(capability_bit("CAP_CHOWN"), Some(0));
        assert_eq!(capability_bit("CAP_SYS_MODULE"), Some(16));
        assert_eq!(capability_bit("CAP_SYS_RESOURCE"), Some(24));
        assert_eq!(capability_bit("CAP_CHECKPOINT_RESTORE"), Some(40));
        assert!(host_bounding_set().is_ok());
    }

    #[test]
    fn configure_writes_the_settings_into_the_runtime_config() {
        let mut config = json!({
            "process": {"args": ["/usr/local/bin/x", "run"], "env": ["PATH=/bin"],
                        "capabilities": {"bounding": ["CAP_KILL"]}},
            "root": {"path": "rootfs"},
            "mounts": [{"destination": "/sys", "type": "sysfs"}, {"destination": "/proc", "type": "proc"}],
            "linux": {"namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "mount"}]}
        });
        let s = Security::of_container(&controller_spec(), "controller").expect("container");
        let mounts = [BindMount {
            source: "/tmp/fake-sys".into(),
            destination: "/sys".into(),
            read_only: false,
        }];
        configure(
            &mut config,
            &["validate", "/repo"],
            &s,
            &[("A", "b")],
            &mounts,
        );
        assert_eq!(
            config["process"]["args"],
            json!(["/usr/local/bin/x", "validate", "/repo"])
        );
        assert_eq!(
            config["process"]["user"],
            json!({"uid": 65532, "gid": 65532})
        );
        assert_eq!(config["process"]["capabilities"]["effective"], json!([]));
        assert_eq!(config["process"]["noNewPrivileges"], true);
        assert_eq!(config["process"]["env"], json!(["PATH=/bin", "A=b"]));
        assert_eq!(config["root"]["readonly"], true);
        assert_eq!(
            config["linux"]["namespaces"],
            json!([{"type": "pid"}, {"type": "mount"}])
        );
        let dests: Vec<&str> = config["mounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .filter_map(|m| m["destination"].as_str())
            .collect();
        assert_eq!(
            dests,
            ["/proc", "/var/cache/dpdk-reconciler", "/tmp", "/sys"]
        );
    }
}
