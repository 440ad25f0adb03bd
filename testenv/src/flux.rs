//! Flux's source-controller and kustomize-controller (built by
//! [`crate::binaries::ensure_flux`]) running as local processes against a [`ControlPlane`].
//!
//! They run as the ServiceAccounts Flux installs (`flux-system/source-controller`,
//! `flux-system/kustomize-controller`, through impersonating kubeconfigs, so the audit log
//! names them), bound to `cluster-admin` as Flux's own install binds kustomize-controller.
//! Nothing needs cluster networking: no leader election, no metrics listener, health
//! probes and the artifact server on free loopback ports, and the artifact server
//! advertised at that loopback address so kustomize-controller fetches over plain HTTP.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::binaries::ensure_flux;
use crate::control_plane::{ControlPlane, free_port};
use crate::process::Reaper;
use crate::{Error, Result, io_err, tail_file};

/// The namespace Flux runs in and keeps its objects in.
pub const FLUX_NAMESPACE: &str = "flux-system";

/// The field manager kustomize-controller applies with.
pub const KUSTOMIZE_MANAGER: &str = "kustomize-controller";

/// The user the audit log records for a Flux controller's requests.
pub fn flux_user(controller: &str) -> String {
    format!("system:serviceaccount:{FLUX_NAMESPACE}:{controller}")
}

/// One running controller.
struct Running {
    name: &'static str,
    log: PathBuf,
    health_port: u16,
    child: Reaper,
}

/// Both Flux controllers. Dropping it stops them (SIGTERM, then SIGKILL).
pub struct Flux {
    pub version: String,
    /// `127.0.0.1:<port>`: source-controller's artifact server.
    pub storage_addr: String,
    controllers: Vec<Running>,
}

impl Flux {
    /// A controller's log (stdout and stderr), `source-controller` or `kustomize-controller`.
    pub fn log_path(&self, controller: &str) -> Option<PathBuf> {
        self.controllers
            .iter()
            .find(|c| c.name == controller)
            .map(|c| c.log.clone())
    }

    /// Stops both controllers.
    pub fn stop(self) {
        drop(self);
    }

    /// Waits until every controller answers `/readyz`, or fails naming the one that exited.
    async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let started = Instant::now();
        for c in &mut self.controllers {
            loop {
                if let Ok(Some(status)) = c.child.try_wait() {
                    return Err(Error::Exited {
                        what: c.name.into(),
                        status: status.to_string(),
                        log: c.log.display().to_string(),
                        tail: tail_file(&c.log, 30),
                    });
                }
                if readyz(c.health_port).await {
                    break;
                }
                if started.elapsed() > timeout {
                    return Err(Error::NotReady {
                        what: c.name.into(),
                        secs: timeout.as_secs(),
                        log: c.log.display().to_string(),
                        tail: tail_file(&c.log, 30),
                    });
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }
}

/// True when the controller-runtime health endpoint on `port` says ready.
async fn readyz(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let req = "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200")
}

impl ControlPlane {
    /// Builds Flux if needed, installs its CRDs (from the same module versions), creates
    /// `flux-system` with the two ServiceAccounts and their bindings, starts both
    /// controllers and waits until they are ready.
    pub async fn start_flux(&self) -> Result<Flux> {
        let bins = tokio::task::spawn_blocking(ensure_flux)
            .await
            .map_err(|e| Error::Other(format!("flux build task: {e}")))??;
        let client = self.client().await?;
        crate::fixtures::apply_crd_files(&client, &bins.crd_files()?).await?;
        install_identities(&client).await?;
        let dir = self.data_dir().join("flux");
        // source-controller refuses a storage path that does not exist.
        let storage = dir.join("artifacts");
        std::fs::create_dir_all(&storage).map_err(io_err(&storage))?;
        let storage_addr = format!("127.0.0.1:{}", free_port()?);
        let source_args = vec![
            format!("--storage-path={}", storage.display()),
            format!("--storage-addr={storage_addr}"),
            format!("--storage-adv-addr={storage_addr}"),
        ];
        let mut flux = Flux {
            version: bins.version.clone(),
            storage_addr,
            controllers: Vec::new(),
        };
        for (name, exe, extra) in [
            ("source-controller", &bins.source_controller, source_args),
            ("kustomize-controller", &bins.kustomize_controller, vec![]),
        ] {
            let c = self.spawn_flux_controller(name, exe, &extra, &dir)?;
            flux.controllers.push(c);
        }
        flux.wait_ready(Duration::from_secs(120)).await?;
        Ok(flux)
    }

    fn spawn_flux_controller(
        &self,
        name: &'static str,
        exe: &std::path::Path,
        extra: &[String],
        dir: &std::path::Path,
    ) -> Result<Running> {
        let kubeconfig = dir.join(format!("kubeconfig-{name}"));
        self.write_service_account_kubeconfig(FLUX_NAMESPACE, name, &kubeconfig)?;
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).map_err(io_err(&log))?;
        let health_port = free_port()?;
        let mut cmd = Command::new(exe);
        // Flux's binaries take no --kubeconfig flag; controller-runtime reads $KUBECONFIG.
        cmd.env("KUBECONFIG", &kubeconfig)
            .arg("--enable-leader-election=false")
            // "0" turns controller-runtime's metrics listener off.
            .arg("--metrics-addr=0")
            .arg(format!("--health-addr=127.0.0.1:{health_port}"))
            .arg("--watch-all-namespaces=true")
            .arg("--log-level=info")
            .args(extra)
            .env("RUNTIME_NAMESPACE", FLUX_NAMESPACE)
            .stdin(Stdio::null())
            .stdout(file.try_clone().map_err(io_err(&log))?)
            .stderr(file);
        let child = Reaper::spawn(cmd, Duration::from_secs(5))?;
        Ok(Running {
            name,
            log,
            health_port,
            child,
        })
    }
}

/// `flux-system`, the two ServiceAccounts, and a `cluster-admin` binding for each.
async fn install_identities(client: &kube::Client) -> Result<()> {
    let pp = PatchParams::apply("dpdk-testenv").force();
    Api::<Namespace>::all(client.clone())
        .patch(
            FLUX_NAMESPACE,
            &pp,
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": FLUX_NAMESPACE}})),
        )
        .await?;
    for name in ["source-controller", "kustomize-controller"] {
        Api::<ServiceAccount>::namespaced(client.clone(), FLUX_NAMESPACE)
            .patch(
                name,
                &pp,
                &Patch::Apply(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": FLUX_NAMESPACE}})),
            )
            .await?;
        let binding = format!("flux-{name}");
        Api::<ClusterRoleBinding>::all(client.clone())
            .patch(
                &binding,
                &pp,
                &Patch::Apply(json!({
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "ClusterRoleBinding",
                    "metadata": {"name": binding},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                    "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": FLUX_NAMESPACE}],
                })),
            )
            .await?;
    }
    Ok(())
}
