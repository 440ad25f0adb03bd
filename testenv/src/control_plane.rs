//! A running kube-apiserver + etcd pair on loopback.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::binaries::{Binaries, ensure_binaries};
use crate::certs::{self, CertFiles};
use crate::process::{spawn_tied, stop};
use crate::{Error, Result, io_err, tail_file};

/// How to start a control plane.
#[derive(Clone, Debug, Default)]
pub struct StartOptions {
    /// Write an audit log of every write (create/update/patch/delete) to `audit.log`.
    pub audit_log: bool,
    /// With `audit_log`, record every request, reads (get, list, watch) included, so a
    /// test can count all the requests a client makes. The log then has a
    /// `ResponseStarted` (watches) or `ResponseComplete` event per request; count distinct
    /// `auditID`s by `requestReceivedTimestamp` (`RequestReceived` is not recorded: it
    /// comes before impersonation, so it would not name an impersonated user).
    pub audit_reads: bool,
    /// Install the CRDs from `deploy/` (ours and the NodeENI test copy) once ready.
    pub install_crds: bool,
    /// Keep the data directory here instead of a temporary one (for `dpdk-testenv up`).
    pub data_dir: Option<PathBuf>,
    /// Extra kube-apiserver flags.
    pub extra_apiserver_args: Vec<String>,
}

/// A local control plane. Dropping it stops both processes; if the process dies instead,
/// the kernel kills them (see `process`).
pub struct ControlPlane {
    _tmp: Option<tempfile::TempDir>,
    dir: PathBuf,
    bins: Binaries,
    certs: CertFiles,
    apiserver_port: u16,
    etcd_port: u16,
    kubeconfig: PathBuf,
    opts: StartOptions,
    etcd: Mutex<Option<Child>>,
    apiserver: Mutex<Option<Child>>,
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub(crate) fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(io_err("127.0.0.1:0"))?;
    Ok(l.local_addr().map_err(io_err("127.0.0.1:0"))?.port())
}

const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [\"RequestReceived\"]
rules:
- level: Metadata
  verbs: [\"create\", \"update\", \"patch\", \"delete\", \"deletecollection\"]
- level: None
";

/// The user extra a pod-bound ServiceAccount token carries (Kubernetes 1.30+, GA in 1.32):
/// the name of the node the pod is bound to. deploy/dpdk-node-policy.yaml keys on it.
pub const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";

/// Who an impersonating client or kubeconfig acts as: a ServiceAccount's user name, the
/// groups the API server gives its tokens, and the user extras of a pod-bound token.
struct ServiceAccountIdentity {
    user: String,
    groups: Vec<String>,
    extra: Option<HashMap<String, Vec<String>>>,
}

impl ServiceAccountIdentity {
    fn new(namespace: &str, name: &str) -> Self {
        Self {
            user: format!("system:serviceaccount:{namespace}:{name}"),
            groups: vec![
                "system:serviceaccounts".to_string(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".to_string(),
            ],
            extra: None,
        }
    }

    /// As the token of a pod bound to `node`.
    fn on_node(mut self, node: &str) -> Self {
        self.extra = Some(HashMap::from([(
            NODE_NAME_EXTRA.to_string(),
            vec![node.to_string()],
        )]));
        self
    }
}

/// [`StartOptions::audit_reads`]: every request, at the same level.
const AUDIT_POLICY_ALL_REQUESTS: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [\"RequestReceived\"]
rules:
- level: Metadata
";

impl ControlPlane {
    /// Builds the binaries if needed, then starts etcd and kube-apiserver and waits for `/readyz`.
    pub async fn start(opts: StartOptions) -> Result<Self> {
        let bins = tokio::task::spawn_blocking(ensure_binaries)
            .await
            .map_err(|e| Error::Other(format!("binary build task: {e}")))??;
        let (tmp, dir) = match &opts.data_dir {
            Some(d) => {
                std::fs::create_dir_all(d).map_err(io_err(d))?;
                (None, d.clone())
            }
            None => {
                sweep_stale_dirs();
                let prefix = format!("dpdk-testenv-{}-", std::process::id());
                let t = tempfile::Builder::new()
                    .prefix(&prefix)
                    .tempdir()
                    .map_err(io_err("/tmp"))?;
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        let certs = certs::generate(&dir.join("pki"))?;
        let apiserver_port = free_port()?;
        let etcd_port = free_port()?;
        let kubeconfig = dir.join("kubeconfig");
        let cp = ControlPlane {
            _tmp: tmp,
            dir,
            bins,
            certs,
            apiserver_port,
            etcd_port,
            kubeconfig,
            opts,
            etcd: Mutex::new(None),
            apiserver: Mutex::new(None),
        };
        cp.write_kubeconfig()?;
        cp.start_etcd()?;
        cp.start_apiserver().await?;
        if cp.opts.install_crds {
            cp.install_crds().await?;
        }
        Ok(cp)
    }

    /// Starts a control plane from synchronous code (its own short-lived runtime).
    pub fn start_blocking(opts: StartOptions) -> Result<Self> {
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::Other(format!("runtime: {e}")))?;
            rt.block_on(ControlPlane::start(opts))
        })
        .join()
        .map_err(|_| Error::Other("control plane start panicked".into()))?
    }

    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn server_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.apiserver_port)
    }

    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    pub fn binaries(&self) -> &Binaries {
        &self.bins
    }

    /// The audit log (only written with [`StartOptions::audit_log`]).
    pub fn audit_log_path(&self) -> PathBuf {
        self.dir.join("audit.log")
    }

    pub fn apiserver_log_path(&self) -> PathBuf {
        self.dir.join("kube-apiserver.log")
    }

    /// A `kubectl` command bound to this control plane.
    pub fn kubectl(&self) -> Command {
        let mut c = Command::new(&self.bins.kubectl);
        c.env("KUBECONFIG", &self.kubeconfig);
        c
    }

    /// `kubectl apply -f <file>`, once per file for the life of this process.
    ///
    /// Tests in one binary share a control plane and run in parallel; two concurrent
    /// client-side applies of the same new object race (the loser gets AlreadyExists), so
    /// applies are serialised and remembered.
    pub fn kubectl_apply_once(&self, file: &Path) -> Result<()> {
        static APPLIED: Mutex<Vec<(PathBuf, PathBuf)>> = Mutex::new(Vec::new());
        let mut applied = APPLIED.lock().unwrap_or_else(|p| p.into_inner());
        let key = (self.kubeconfig.clone(), file.to_path_buf());
        if applied.contains(&key) {
            return Ok(());
        }
        let out = self
            .kubectl()
            .args(["apply", "-f"])
            .arg(file)
            .output()
            .map_err(io_err(&self.bins.kubectl))?;
        if !out.status.success() {
            return Err(Error::Other(format!(
                "kubectl apply -f {}: {}",
                file.display(),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        applied.push(key);
        Ok(())
    }

    /// A copy of the admin kubeconfig that impersonates the ServiceAccount `namespace/name`
    /// with the groups the API server gives its tokens (`as`/`as-groups`).
    pub fn write_service_account_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
        out: &Path,
    ) -> Result<()> {
        self.write_impersonating_kubeconfig(&ServiceAccountIdentity::new(namespace, name), out)
    }

    /// [`Self::write_service_account_kubeconfig`] for a ServiceAccount whose pod runs on
    /// `node`: the impersonation also carries the [`NODE_NAME_EXTRA`] user extra
    /// (`as-user-extra`), as that pod's token would.
    pub fn write_node_service_account_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
        node: &str,
        out: &Path,
    ) -> Result<()> {
        let id = ServiceAccountIdentity::new(namespace, name).on_node(node);
        self.write_impersonating_kubeconfig(&id, out)
    }

    fn write_impersonating_kubeconfig(
        &self,
        id: &ServiceAccountIdentity,
        out: &Path,
    ) -> Result<()> {
        let admin = self.kubeconfig.as_path();
        let text = std::fs::read_to_string(admin).map_err(io_err(admin))?;
        let mut kc: serde_yaml::Value = serde_yaml::from_str(&text)
            .map_err(|e| Error::Other(format!("{}: {e}", admin.display())))?;
        let users = kc
            .get_mut("users")
            .and_then(serde_yaml::Value::as_sequence_mut)
            .ok_or_else(|| Error::Other(format!("{}: no users", admin.display())))?;
        for user in users.iter_mut() {
            let Some(auth) = user
                .get_mut("user")
                .and_then(serde_yaml::Value::as_mapping_mut)
            else {
                continue;
            };
            auth.insert("as".into(), id.user.clone().into());
            auth.insert(
                "as-groups".into(),
                serde_yaml::Value::Sequence(id.groups.iter().cloned().map(Into::into).collect()),
            );
            if let Some(extra) = &id.extra {
                let extra = serde_yaml::to_value(extra)
                    .map_err(|e| Error::Other(format!("{}: {e}", out.display())))?;
                auth.insert("as-user-extra".into(), extra);
            }
        }
        let text = serde_yaml::to_string(&kc)
            .map_err(|e| Error::Other(format!("{}: {e}", out.display())))?;
        std::fs::write(out, text).map_err(io_err(out))
    }

    /// A client with cluster-admin rights (O=system:masters).
    pub async fn client(&self) -> Result<Client> {
        Ok(Client::try_from(self.config().await?)?)
    }

    /// A client that impersonates `user` with `groups`, for RBAC tests.
    pub async fn client_as(&self, user: &str, groups: &[&str]) -> Result<Client> {
        let mut config = self.config().await?;
        config.auth_info.impersonate = Some(user.to_string());
        config.auth_info.impersonate_groups = Some(groups.iter().map(|g| g.to_string()).collect());
        Ok(Client::try_from(config)?)
    }

    /// A client that acts as the ServiceAccount `namespace/name`, as its pod would.
    pub async fn service_account_client(&self, namespace: &str, name: &str) -> Result<Client> {
        self.impersonating_client(&ServiceAccountIdentity::new(namespace, name))
            .await
    }

    /// A client that acts as the ServiceAccount `namespace/name` of a pod on `node`: the
    /// impersonation carries the [`NODE_NAME_EXTRA`] user extra, as that pod's token would
    /// (deploy/dpdk-node-policy.yaml refuses the node ServiceAccounts without it).
    pub async fn node_service_account_client(
        &self,
        namespace: &str,
        name: &str,
        node: &str,
    ) -> Result<Client> {
        self.impersonating_client(&ServiceAccountIdentity::new(namespace, name).on_node(node))
            .await
    }

    async fn impersonating_client(&self, id: &ServiceAccountIdentity) -> Result<Client> {
        let mut config = self.config().await?;
        config.auth_info.impersonate = Some(id.user.clone());
        config.auth_info.impersonate_groups = Some(id.groups.clone());
        config.auth_info.impersonate_user_extra = id.extra.clone();
        Ok(Client::try_from(config)?)
    }

    /// A client that authenticates with the bearer `token` alone (no client certificate,
    /// no impersonation), e.g. a TokenRequest token, trusting this control plane's CA.
    pub async fn token_client(&self, token: &str) -> Result<Client> {
        let mut config = self.config().await?;
        config.auth_info = kube::config::AuthInfo {
            token: Some(token.to_string().into()),
            ..Default::default()
        };
        Ok(Client::try_from(config)?)
    }

    /// The kube-rs config for the admin user.
    pub async fn config(&self) -> Result<Config> {
        let kc = Kubeconfig::read_from(&self.kubeconfig)
            .map_err(|e| Error::Kubeconfig(e.to_string()))?;
        Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .map_err(|e| Error::Kubeconfig(e.to_string()))
    }

    fn write_kubeconfig(&self) -> Result<()> {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: dpdk-testenv\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\nusers:\n- name: admin\n  user:\n    client-certificate: {cert}\n    client-key: {key}\ncontexts:\n- name: dpdk-testenv\n  context:\n    cluster: dpdk-testenv\n    user: admin\ncurrent-context: dpdk-testenv\n",
            server = self.server_url(),
            ca = self.certs.ca_cert.display(),
            cert = self.certs.admin_cert.display(),
            key = self.certs.admin_key.display(),
        );
        std::fs::write(&self.kubeconfig, text).map_err(io_err(&self.kubeconfig))
    }

    fn start_etcd(&self) -> Result<()> {
        let log_path = self.dir.join("etcd.log");
        let log = std::fs::File::create(&log_path).map_err(io_err(&log_path))?;
        let peer_port = free_port()?;
        let client_url = format!("http://127.0.0.1:{}", self.etcd_port);
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let mut cmd = Command::new(&self.bins.etcd);
        cmd.arg("--name=testenv")
            .arg(format!("--data-dir={}", self.dir.join("etcd").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=testenv={peer_url}"))
            // Test data is disposable: skipping fsync makes etcd an order of magnitude faster here.
            .arg("--unsafe-no-fsync")
            .arg("--log-level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io_err(&log_path))?)
            .stderr(log);
        let child = spawn_tied(cmd)?;
        *self
            .etcd
            .lock()
            .map_err(|_| Error::Other("etcd lock poisoned".into()))? = Some(child);
        Ok(())
    }

    /// (Re)starts kube-apiserver on the same port and data, and waits for `/readyz`.
    pub async fn start_apiserver(&self) -> Result<()> {
        let log_path = self.apiserver_log_path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_err(&log_path))?;
        let mut cmd = Command::new(&self.bins.kube_apiserver);
        cmd.arg(format!(
            "--etcd-servers=http://127.0.0.1:{}",
            self.etcd_port
        ))
        .arg(format!("--secure-port={}", self.apiserver_port))
        .arg("--bind-address=127.0.0.1")
        .arg("--advertise-address=127.0.0.1")
        // The kubernetes Service endpoint cannot point at loopback; nothing here needs it.
        .arg("--endpoint-reconciler-type=none")
        .arg(format!("--cert-dir={}", self.dir.join("pki").display()))
        .arg(format!(
            "--tls-cert-file={}",
            self.certs.serving_cert.display()
        ))
        .arg(format!(
            "--tls-private-key-file={}",
            self.certs.serving_key.display()
        ))
        .arg(format!("--client-ca-file={}", self.certs.ca_cert.display()))
        .arg(format!(
            "--service-account-key-file={}",
            self.certs.sa_pub.display()
        ))
        .arg(format!(
            "--service-account-signing-key-file={}",
            self.certs.sa_key.display()
        ))
        .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
        .arg("--service-cluster-ip-range=10.0.0.0/24")
        .arg("--authorization-mode=RBAC")
        .arg("--allow-privileged=true")
        // No controller-manager runs here, so no "default" ServiceAccount is ever created.
        .arg("--disable-admission-plugins=ServiceAccount")
        .arg("--profiling=false")
        .arg("--v=1");
        if self.opts.audit_log {
            let policy = self.dir.join("audit-policy.yaml");
            let text = if self.opts.audit_reads {
                AUDIT_POLICY_ALL_REQUESTS
            } else {
                AUDIT_POLICY
            };
            std::fs::write(&policy, text).map_err(io_err(&policy))?;
            cmd.arg(format!("--audit-policy-file={}", policy.display()))
                .arg(format!(
                    "--audit-log-path={}",
                    self.audit_log_path().display()
                ))
                .arg("--audit-log-format=json");
        }
        cmd.args(&self.opts.extra_apiserver_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io_err(&log_path))?)
            .stderr(log);
        let child = spawn_tied(cmd)?;
        *self
            .apiserver
            .lock()
            .map_err(|_| Error::Other("apiserver lock poisoned".into()))? = Some(child);
        self.wait_ready(Duration::from_secs(120)).await
    }

    /// Stops kube-apiserver (etcd and its data stay), for fault tests.
    pub fn stop_apiserver(&self) {
        if let Ok(mut g) = self.apiserver.lock()
            && let Some(mut child) = g.take()
        {
            stop(&mut child, Duration::from_secs(10));
        }
    }

    async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let started = Instant::now();
        let client = self.client().await?;
        loop {
            if let Some(status) = self.exited("kube-apiserver", &self.apiserver)? {
                return Err(Error::Exited {
                    what: "kube-apiserver".into(),
                    status,
                    log: self.apiserver_log_path().display().to_string(),
                    tail: tail_file(&self.apiserver_log_path(), 30),
                });
            }
            if let Some(status) = self.exited("etcd", &self.etcd)? {
                let log = self.dir.join("etcd.log");
                return Err(Error::Exited {
                    what: "etcd".into(),
                    status,
                    log: log.display().to_string(),
                    tail: tail_file(&log, 30),
                });
            }
            let req = http::Request::get("/readyz")
                .body(Vec::new())
                .map_err(|e| Error::Other(e.to_string()))?;
            if let Ok(body) = client.request_text(req).await
                && body.trim() == "ok"
            {
                return Ok(());
            }
            if started.elapsed() > timeout {
                return Err(Error::NotReady {
                    what: "kube-apiserver".into(),
                    secs: timeout.as_secs(),
                    log: self.apiserver_log_path().display().to_string(),
                    tail: tail_file(&self.apiserver_log_path(), 30),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn exited(&self, what: &str, slot: &Mutex<Option<Child>>) -> Result<Option<String>> {
        let mut g = slot
            .lock()
            .map_err(|_| Error::Other(format!("{what} lock poisoned")))?;
        match g.as_mut().map(|c| c.try_wait()) {
            Some(Ok(Some(status))) => Ok(Some(status.to_string())),
            _ => Ok(None),
        }
    }

    /// Applies `deploy/dpdk-crd.yaml` and `deploy/testing/nodeeni-crd.yaml` and waits until
    /// every CRD is Established.
    pub async fn install_crds(&self) -> Result<()> {
        let root = workspace_root();
        let files = [
            root.join("deploy/dpdk-crd.yaml"),
            root.join("deploy/testing/nodeeni-crd.yaml"),
        ];
        let client = self.client().await?;
        crate::fixtures::apply_crd_files(&client, &files).await
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        for slot in [&self.apiserver, &self.etcd] {
            if let Ok(mut g) = slot.lock()
                && let Some(mut child) = g.take()
            {
                stop(&mut child, Duration::from_secs(5));
            }
        }
    }
}

/// Removes data directories left by test processes that are gone. A shared control plane
/// lives in a static and is never dropped, so its temporary directory outlives the test
/// binary; the next start cleans it up. Directory names carry the owner's pid.
fn sweep_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(rest) = name.strip_prefix("dpdk-testenv-") else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The workspace root (where `deploy/` lives).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// One control plane per test binary, with the CRDs installed. Tests in the binary share it
/// and keep out of each other's way with [`unique_name`]s. Each test makes its own client
/// ([`ControlPlane::client`]) in its own runtime.
///
/// It panics when no control plane can start: an integration test must fail, never skip.
pub fn shared() -> &'static ControlPlane {
    static SHARED: OnceLock<ControlPlane> = OnceLock::new();
    SHARED.get_or_init(|| {
        ControlPlane::start_blocking(StartOptions { install_crds: true, ..Default::default() })
            .unwrap_or_else(|e| panic!("the local control plane could not start (run `cargo run -p dpdk-testenv -- build` to see the build): {e}"))
    })
}

/// A DNS-1123 name unique within this process and across concurrent test processes.
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn stale_dirs_of_dead_processes_are_swept_and_live_ones_kept() {
        let tmp = std::env::temp_dir();
        // pid_max is at most 2^22, so this pid cannot be alive.
        let dead = tmp.join("dpdk-testenv-4294967295-abc");
        let live = tmp.join(format!("dpdk-testenv-{}-keepme", std::process::id()));
        std::fs::create_dir_all(dead.join("etcd")).expect("dead dir");
        std::fs::create_dir_all(&live).expect("live dir");
        super::sweep_stale_dirs();
        assert!(!dead.exists(), "a dead process's data dir must be removed");
        assert!(live.exists(), "a live process's data dir must be kept");
        std::fs::remove_dir_all(&live).expect("cleanup");
    }
}
