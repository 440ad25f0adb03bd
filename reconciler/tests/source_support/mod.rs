//! Shared by the Git source tests and benchmark: an in-process source controller scoped
//! to the test's own namespace, with its webhook receiver on its own loopback listener,
//! plus helpers to create sources, secrets and repo content with unique names.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use dpdk_bridge::api::{DPDKConfig, DPDKConfigSource, DPDKConfigSourceStatus};
use dpdk_reconciler::source::webhook::ReceiverOptions;
use dpdk_reconciler::source::{SourceController, SourceOptions, SourceStore};
use dpdk_testenv::ControlPlane;
use hmac::{Hmac, Mac};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// A running source controller for one test namespace.
pub struct Harness {
    pub client: Client,
    pub ns: String,
    pub store: SourceStore,
    pub hook_addr: SocketAddr,
    pub registry: std::sync::Arc<std::sync::Mutex<prometheus_client::registry::Registry>>,
    /// The controller's repository cache (`<cache>/<ns>/<name>/repo.git`).
    pub cache_dir: std::path::PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _cache: tempfile::TempDir,
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// How [`Harness::start_on`] runs the controller and its webhook receiver.
#[derive(Clone, Default)]
pub struct HarnessOptions {
    /// The controller and the receiver act as this (impersonated, in system:masters)
    /// user, so an audit log tells their requests apart; None: the admin client.
    pub user: Option<String>,
    pub receiver: ReceiverOptions,
}

impl Harness {
    /// Creates namespace `<prefix>-xxxx` and starts a controller watching only it.
    pub async fn start(prefix: &str) -> Harness {
        Harness::start_with(prefix, |_| {}).await
    }

    /// [`Harness::start`] with options changed by `configure`.
    pub async fn start_with(prefix: &str, configure: impl FnOnce(&mut SourceOptions)) -> Harness {
        let ho = HarnessOptions::default();
        Harness::start_on_with(dpdk_testenv::shared(), prefix, ho, configure).await
    }

    /// [`Harness::start`] on the control plane `cp`.
    pub async fn start_on(cp: &ControlPlane, prefix: &str, ho: HarnessOptions) -> Harness {
        Harness::start_on_with(cp, prefix, ho, |_| {}).await
    }

    /// [`Harness::start_on`] with options changed by `configure`.
    pub async fn start_on_with(
        cp: &ControlPlane,
        prefix: &str,
        ho: HarnessOptions,
        configure: impl FnOnce(&mut SourceOptions),
    ) -> Harness {
        let client = cp.client().await.expect("client");
        let controller_client = match &ho.user {
            Some(user) => cp
                .client_as(user, &["system:masters", "system:authenticated"])
                .await
                .expect("impersonating client"),
            None => client.clone(),
        };
        let ns = dpdk_testenv::unique_name(prefix);
        let nss: Api<Namespace> = Api::all(client.clone());
        nss.create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(ns.clone()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .expect("create namespace");
        let cache = tempfile::tempdir().expect("cache dir");
        let mut opts = SourceOptions {
            namespace: Some(ns.clone()),
            allow_file_urls: true,
            cache_dir: cache.path().to_path_buf(),
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(2),
            ..Default::default()
        };
        configure(&mut opts);
        let mut registry = prometheus_client::registry::Registry::default();
        let controller = SourceController::new(controller_client, opts, &mut registry);
        let store = controller.store();
        let receiver = controller.webhook_receiver(ho.receiver, &mut registry);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let hook_addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let srv_stop = CancellationToken::new();
        tokio::spawn(receiver.serve(listener, srv_stop.clone()));
        tokio::spawn(controller.run(async move {
            let _ = stopped.await;
            srv_stop.cancel();
        }));
        Harness {
            client,
            ns,
            store,
            hook_addr,
            registry: std::sync::Arc::new(std::sync::Mutex::new(registry)),
            cache_dir: cache.path().to_path_buf(),
            stop: Some(stop),
            _cache: cache,
        }
    }

    pub fn sources(&self) -> Api<DPDKConfigSource> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub fn configs(&self) -> Api<DPDKConfig> {
        Api::all(self.client.clone())
    }

    /// Creates a Secret in the test namespace.
    pub async fn secret(&self, name: &str, data: &[(&str, &[u8])]) {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.ns);
        let data: BTreeMap<String, ByteString> = data
            .iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
            .collect();
        api.create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    ..Default::default()
                },
                data: Some(data),
                ..Default::default()
            },
        )
        .await
        .expect("create secret");
    }

    /// Creates a DPDKConfigSource from a spec (JSON).
    pub async fn source(&self, name: &str, spec: serde_json::Value) -> DPDKConfigSource {
        let src: DPDKConfigSource = serde_json::from_value(serde_json::json!({
            "apiVersion": "networking.k8s.aws/v1alpha1",
            "kind": "DPDKConfigSource",
            "metadata": {"name": name, "namespace": self.ns},
            "spec": spec,
        }))
        .expect("source json");
        self.sources()
            .create(&PostParams::default(), &src)
            .await
            .expect("create source")
    }

    pub async fn status(&self, name: &str) -> DPDKConfigSourceStatus {
        self.sources()
            .get(name)
            .await
            .expect("get source")
            .status
            .unwrap_or_default()
    }

    /// Waits until the source's status satisfies `f`; panics with the last status after `secs`.
    pub async fn wait_status(
        &self,
        name: &str,
        secs: u64,
        f: impl Fn(&DPDKConfigSourceStatus) -> bool,
    ) -> DPDKConfigSourceStatus {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let st = self.status(name).await;
            if f(&st) {
                return st;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "source {name} did not reach the expected status within {secs}s; last status: {st:#?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `lastAppliedRevision` ends with `sha`.
    pub async fn wait_applied(&self, name: &str, sha: &str) -> DPDKConfigSourceStatus {
        self.wait_status(name, 60, |s| {
            s.last_applied_revision
                .as_deref()
                .is_some_and(|r| r.ends_with(sha))
        })
        .await
    }

    /// Waits until `lastAttemptedRevision` ends with `sha`.
    pub async fn wait_attempted(&self, name: &str, sha: &str) -> DPDKConfigSourceStatus {
        self.wait_status(name, 60, |s| {
            s.last_attempted_revision
                .as_deref()
                .is_some_and(|r| r.ends_with(sha))
        })
        .await
    }

    /// POSTs a webhook; returns the HTTP status code.
    pub async fn post_hook(&self, source: &str, headers: &[(&str, String)], body: &[u8]) -> u16 {
        post(
            self.hook_addr,
            &format!("/hook/{}/{source}", self.ns),
            headers,
            body,
        )
        .await
    }

    pub fn metrics_text(&self) -> String {
        let mut out = String::new();
        let reg = self.registry.lock().expect("registry");
        prometheus_client::encoding::text::encode(&mut out, &reg).expect("encode");
        out
    }
}

/// A minimal HTTP/1.1 POST; returns the status code.
pub async fn post(addr: SocketAddr, path: &str, headers: &[(&str, String)], body: &[u8]) -> u16 {
    request(addr, "POST", path, headers, body).await.0
}

/// A minimal HTTP/1.1 request on a new connection; returns the status code and body.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    s.write_all(body).await.expect("write body");
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await.expect("read");
    let text = String::from_utf8_lossy(&resp);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// `sha256=<hex>` GitHub signature.
pub fn github_signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("mac");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A DPDKConfig document.
pub fn config_yaml(name: &str, device_index: i32) -> String {
    format!(
        "apiVersion: networking.k8s.aws/v1alpha1\nkind: DPDKConfig\nmetadata:\n  name: {name}\nspec:\n  nodeSelector:\n    ng: {name}\n  resourceMapping:\n  - deviceIndex: {device_index}\n    resourceName: intel.com/dpdk_{device_index}\n    driver: vfio-pci\n"
    )
}

/// Names, resourceVersions and specs of the DPDKConfigs with these names: "the cluster".
pub async fn snapshot(
    client: &Client,
    names: &[String],
) -> Vec<(String, Option<String>, Option<serde_json::Value>)> {
    let api: Api<DPDKConfig> = Api::all(client.clone());
    let mut out = Vec::new();
    for n in names {
        let o = api.get_opt(n).await.expect("get");
        out.push((
            n.clone(),
            o.as_ref().and_then(|o| o.metadata.resource_version.clone()),
            o.map(|o| serde_json::to_value(o.spec).expect("spec json")),
        ));
    }
    out
}
