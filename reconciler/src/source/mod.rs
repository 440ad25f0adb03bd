//! The Git source: the DPDKConfigSource controller.
//!
//! fetch (git2: https, ssh, file://) → load and validate ([`crate::manifest`]) → plan
//! ([`plan`], pure) → apply by SSA (field manager `dpdk-reconciler`) and prune → status.
//! A revision that fails to fetch, parse or validate applies and prunes nothing; the last
//! good revision stays applied and the source turns Stalled with the reason.
//!
//! Triggers: the poll interval (with jitter; backoff on failure), a verified webhook
//! ([`webhook::Receiver`], on its own listener), and for file:// sources a local commit
//! (notify on the refs).
//!
//! Other components read the latest good documents of every source through the
//! [`SourceStore`] handle ([`SourceController::store`]); the drift engine uses it to compare
//! Git with the cluster, also in `ReportOnly` mode.
//!
//! ```ignore
//! let mut registry = metrics::Registry::default();
//! let sources = SourceController::new(client.clone(), SourceOptions::default(), &mut registry);
//! let receiver = sources.webhook_receiver(ReceiverOptions::default(), &mut registry);
//! tokio::spawn(receiver.serve(server::bind("0.0.0.0:9292").await?, shutdown.clone()));
//! let store = sources.store();               // hand to the drift engine
//! sources.run(shutdown.cancelled_owned()).await;
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use dpdk_bridge::api::{DPDKConfigSource, IgnoreRule, SourceMode};
use kube::Client;
use kube::runtime::reflector::ObjectRef;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, watch};

use crate::manifest::Manifests;
use crate::manifest::load::LoadOptions;

pub mod auth;
pub mod git;
pub mod plan;
mod reconcile;
pub mod spec;
pub mod webhook;

pub use reconcile::run_sources;

/// The longest label value the API server accepts.
const LABEL_VALUE_MAX: usize = 63;

/// A DPDKConfigSource, by namespace and name: the one key of a source for the source
/// controller, its store, the webhook and the drift report (`ns/name` when shown).
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct SourceKey {
    pub namespace: String,
    pub name: String,
}

impl SourceKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        SourceKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// Parses `ns/name`.
    pub fn parse(s: &str) -> Option<Self> {
        let (ns, name) = s.split_once('/')?;
        (!ns.is_empty() && !name.is_empty() && !name.contains('/')).then(|| Self::new(ns, name))
    }

    pub fn of(src: &DPDKConfigSource) -> Self {
        SourceKey::new(
            src.metadata.namespace.clone().unwrap_or_default(),
            src.metadata.name.clone().unwrap_or_default(),
        )
    }

    /// The value of the `dpdk.aws.k8s/source` label: `<namespace>.<name>`, or when that is
    /// longer than a label value may be (63), its first 46 characters, `-` and 16 hex
    /// digits of the SHA-256 of `<namespace>/<name>`.
    pub fn label_value(&self) -> String {
        let plain = format!("{}.{}", self.namespace, self.name);
        if plain.len() <= LABEL_VALUE_MAX {
            return plain;
        }
        use sha2::Digest;
        let digest = sha2::Sha256::digest(self.to_string().as_bytes());
        let hash = hex::encode(&digest[..8]);
        // Names are ASCII (DNS labels and subdomains); a label value must end alphanumeric.
        let prefix = plain[..LABEL_VALUE_MAX - 1 - hash.len()]
            .trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
        format!("{prefix}-{hash}")
    }
}

impl std::fmt::Display for SourceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The latest GOOD revision of a source: fetched, loaded and valid. In Apply mode it is
/// also the applied one; in ReportOnly mode it is what Argo CD / Flux should have applied.
#[derive(Clone, Debug)]
pub struct SourceSnapshot {
    pub key: SourceKey,
    pub url: String,
    /// spec.path, normalized (`""` is the repository root).
    pub path: String,
    pub mode: SourceMode,
    pub ignore_differences: Vec<IgnoreRule>,
    /// `<ref>@sha1:<sha>`.
    pub revision: String,
    pub sha: String,
    /// The checked-out tree of this revision (files are repo-relative to it).
    pub checkout: PathBuf,
    /// Files, documents with positions, and the valid DPDKConfigs.
    pub manifests: Arc<Manifests>,
    /// Objects left alone at this revision (Argo CD / Flux markers, relabelled).
    pub untouched: Vec<plan::Untouched>,
    pub fetched_at: SystemTime,
}

/// Shared, read-mostly handle on every source's latest good snapshot. Cheap to clone.
#[derive(Clone)]
pub struct SourceStore {
    inner: Arc<RwLock<BTreeMap<SourceKey, SourceSnapshot>>>,
    version: Arc<watch::Sender<u64>>,
}

impl Default for SourceStore {
    fn default() -> Self {
        SourceStore {
            inner: Arc::default(),
            version: Arc::new(watch::channel(0).0),
        }
    }
}

impl SourceStore {
    /// The snapshot of one source.
    pub fn get(&self, key: &SourceKey) -> Option<SourceSnapshot> {
        self.inner.read().ok()?.get(key).cloned()
    }

    /// Every source's snapshot, ordered by namespace and name.
    pub fn all(&self) -> Vec<SourceSnapshot> {
        self.inner
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// A receiver that changes whenever a snapshot is published or removed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    pub(crate) fn publish(&self, snap: SourceSnapshot) {
        if let Ok(mut m) = self.inner.write() {
            m.insert(snap.key.clone(), snap);
        }
        self.version.send_modify(|v| *v += 1);
    }

    pub(crate) fn retain(&self, keep: impl Fn(&SourceKey) -> bool) {
        let mut changed = false;
        if let Ok(mut m) = self.inner.write() {
            let before = m.len();
            m.retain(|k, _| keep(k));
            changed = m.len() != before;
        }
        if changed {
            self.version.send_modify(|v| *v += 1);
        }
    }
}

/// Why a fetch was asked for ahead of the interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TriggerReason {
    Webhook,
    LocalCommit,
}

/// Asks the controller to fetch a source now.
#[derive(Clone)]
pub struct Triggers {
    tx: mpsc::UnboundedSender<ObjectRef<DPDKConfigSource>>,
    forced: Arc<Mutex<HashMap<SourceKey, TriggerReason>>>,
}

impl Triggers {
    pub(crate) fn new() -> (
        Triggers,
        mpsc::UnboundedReceiver<ObjectRef<DPDKConfigSource>>,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Triggers {
                tx,
                forced: Arc::default(),
            },
            rx,
        )
    }

    /// Fetch `key` at once.
    pub fn fire(&self, key: &SourceKey, reason: TriggerReason) {
        if let Ok(mut f) = self.forced.lock() {
            // A webhook is the more specific reason; keep it if both arrive.
            let e = f.entry(key.clone()).or_insert(reason);
            if reason == TriggerReason::Webhook {
                *e = reason;
            }
        }
        let _ = self
            .tx
            .send(ObjectRef::new(&key.name).within(&key.namespace));
    }

    pub(crate) fn take(&self, key: &SourceKey) -> Option<TriggerReason> {
        self.forced.lock().ok()?.remove(key)
    }
}

/// Settings of the source controller.
#[derive(Clone, Debug)]
pub struct SourceOptions {
    /// Watch DPDKConfigSources in this namespace only (None: every namespace).
    pub namespace: Option<String>,
    /// Accept `file://` URLs (tests, demos, a repository on a mounted volume).
    pub allow_file_urls: bool,
    /// Where repositories are cached (one directory per source).
    pub cache_dir: PathBuf,
    /// Loader limits.
    pub load: LoadOptions,
    /// A fetch taking longer is aborted and fails.
    pub fetch_timeout: Duration,
    /// A fetch receiving more bytes from the server is aborted and fails.
    pub max_fetch_bytes: u64,
    /// First retry delay after a failure; doubles per failure up to `max_backoff` (and
    /// never beyond the source's interval).
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// Relative jitter on the interval (0.1 = ±10%), so sources don't poll in lockstep.
    pub jitter: f64,
    /// Concurrent SSA requests per source.
    pub apply_concurrency: usize,
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            namespace: None,
            allow_file_urls: false,
            cache_dir: std::env::temp_dir().join("dpdk-reconciler-sources"),
            load: LoadOptions::default(),
            fetch_timeout: Duration::from_secs(120),
            max_fetch_bytes: 256 * 1024 * 1024,
            min_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(300),
            jitter: 0.1,
            apply_concurrency: 16,
        }
    }
}

impl SourceOptions {
    /// The fetch of `src` (its `spec.path` only, within these limits).
    pub(crate) fn fetch_request(
        &self,
        src: &DPDKConfigSource,
        refspec: spec::RefSpec,
        creds: auth::Credentials,
        cache_dir: PathBuf,
    ) -> git::FetchRequest {
        git::FetchRequest {
            url: src.spec.url.clone(),
            refspec,
            creds,
            cache_dir,
            path: src.spec.path.clone(),
            limits: self.load.clone(),
            timeout: self.fetch_timeout,
            max_fetch_bytes: self.max_fetch_bytes,
        }
    }
}

/// `dpdk-reconciler run` flags of the Git source.
#[derive(clap::Args, Clone, Debug)]
pub struct SourceArgs {
    /// Directory for the Git sources' repository caches (one subdirectory per source).
    #[arg(
        long,
        env = "DPDK_SOURCE_CACHE_DIR",
        default_value = "/var/cache/dpdk-reconciler"
    )]
    pub source_cache_dir: PathBuf,
    /// Watch DPDKConfigSources in this namespace only; empty: every namespace (sources
    /// write cluster-scoped DPDKConfigs, so widen it only for namespaces you trust).
    #[arg(long, default_value = "dpdk-operator")]
    pub source_namespace: String,
    /// Accept `file://` source URLs (tests, demos, a repository on a mounted volume). Off:
    /// a local path could read another source's cache or any file the reconciler can.
    #[arg(long)]
    pub allow_file_urls: bool,
    /// A Git fetch taking longer than this is aborted (connect, negotiation and download
    /// alike) and fails (a Go duration: 30s, 2m).
    #[arg(long, default_value = "2m", value_parser = dpdk_bridge::duration::parse)]
    pub source_fetch_timeout: Duration,
    /// A Git fetch receiving more bytes than this from the server is aborted and fails.
    #[arg(long, default_value_t = SourceOptions::default().max_fetch_bytes)]
    pub source_max_fetch_bytes: u64,
    /// The loader's limits (the same flags as `validate`).
    #[command(flatten)]
    pub limits: crate::manifest::load::LimitArgs,
}

impl SourceArgs {
    pub fn into_options(self) -> SourceOptions {
        SourceOptions {
            namespace: Some(self.source_namespace).filter(|ns| !ns.is_empty()),
            allow_file_urls: self.allow_file_urls,
            cache_dir: self.source_cache_dir,
            fetch_timeout: self.source_fetch_timeout.max(Duration::from_secs(1)),
            max_fetch_bytes: self.source_max_fetch_bytes,
            load: self.limits.into_options(),
            ..SourceOptions::default()
        }
    }
}

/// Labels: the source.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// `<namespace>/<name>`.
    pub source: String,
    /// `success` or `error`.
    pub result: String,
}

/// Labels of `dpdk_source_reconcile_errors_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// `<namespace>/<name>`.
    pub source: String,
    /// The kind of failure ([`crate::ErrorKind::metric_label`]).
    pub error: String,
}

/// Labels of `dpdk_source_revision_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RevisionLabels {
    pub source: String,
    pub revision: String,
}

/// The Git source's metrics.
#[derive(Clone)]
pub struct SourceMetrics {
    /// `dpdk_source_fetch_duration_seconds{source,result}`.
    pub fetch_duration: Family<SourceLabels, Histogram>,
    /// `dpdk_source_revision_info{source,revision}` = 1 for the last applied (or, in
    /// ReportOnly, last good) revision.
    pub revision_info: Family<RevisionLabels, Gauge>,
    /// `dpdk_source_apply_results_total{source,result}`, result = applied, unchanged,
    /// pruned, skipped (foreign owner or relabelled), failed, invalid (a rejected revision).
    pub apply_results: Family<SourceLabels, Counter>,
    /// `dpdk_source_reconcile_errors_total{source,error}`: failed passes by kind.
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    last_revision: Arc<Mutex<HashMap<String, String>>>,
}

impl SourceMetrics {
    /// Registers the metrics under `dpdk_source_*`.
    pub fn register(registry: &mut Registry) -> SourceMetrics {
        let m = SourceMetrics {
            fetch_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.01, 2.0, 14))
            }),
            revision_info: Family::default(),
            apply_results: Family::default(),
            reconcile_errors: Family::default(),
            last_revision: Arc::default(),
        };
        let r = registry.sub_registry_with_prefix("dpdk_source");
        r.register(
            "fetch_duration_seconds",
            "Duration of Git fetches",
            m.fetch_duration.clone(),
        );
        r.register(
            "revision_info",
            "The revision a source last applied (ReportOnly: last loaded)",
            m.revision_info.clone(),
        );
        r.register(
            "apply_results",
            "Objects applied, unchanged, pruned, skipped or failed",
            m.apply_results.clone(),
        );
        r.register(
            "reconcile_errors",
            "Failed passes over a source, by kind of error",
            m.reconcile_errors.clone(),
        );
        m
    }

    pub(crate) fn observe_fetch(&self, source: &str, ok: bool, took: Duration) {
        self.fetch_duration
            .get_or_create(&SourceLabels {
                source: source.to_string(),
                result: if ok { "success" } else { "error" }.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    pub(crate) fn count_error(&self, source: &str, error: &str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels {
                source: source.to_string(),
                error: error.to_string(),
            })
            .inc();
    }

    pub(crate) fn set_revision(&self, source: &str, revision: &str) {
        if let Ok(mut last) = self.last_revision.lock()
            && let Some(old) = last.insert(source.to_string(), revision.to_string())
            && old != revision
        {
            self.revision_info.remove(&RevisionLabels {
                source: source.to_string(),
                revision: old,
            });
        }
        self.revision_info
            .get_or_create(&RevisionLabels {
                source: source.to_string(),
                revision: revision.to_string(),
            })
            .set(1);
    }

    pub(crate) fn count(&self, source: &str, result: &str, n: u64) {
        if n > 0 {
            self.apply_results
                .get_or_create(&SourceLabels {
                    source: source.to_string(),
                    result: result.to_string(),
                })
                .inc_by(n);
        }
    }
}

/// The source controller, built before it runs so its webhook receiver and store can be
/// handed out (to their listener and to the drift engine).
pub struct SourceController {
    client: Client,
    opts: SourceOptions,
    store: SourceStore,
    triggers: Triggers,
    rx: mpsc::UnboundedReceiver<ObjectRef<DPDKConfigSource>>,
    metrics: SourceMetrics,
    leading: Option<watch::Receiver<bool>>,
}

impl SourceController {
    /// Creates the controller and registers its metrics.
    pub fn new(client: Client, opts: SourceOptions, registry: &mut Registry) -> SourceController {
        let (triggers, rx) = Triggers::new();
        SourceController {
            client,
            opts,
            store: SourceStore::default(),
            triggers,
            rx,
            metrics: SourceMetrics::register(registry),
            leading: None,
        }
    }

    /// Works only while `leading` is true (the DPDK controller's Lease election): a
    /// follower fetches, applies, prunes and writes nothing. Without it, it always works.
    pub fn gated_by(mut self, leading: watch::Receiver<bool>) -> SourceController {
        self.leading = Some(leading);
        self
    }

    /// The latest good snapshot per source (for the drift engine).
    pub fn store(&self) -> SourceStore {
        self.store.clone()
    }

    /// Fetch-now handle (used by the webhook and the file:// watcher).
    pub fn triggers(&self) -> Triggers {
        self.triggers.clone()
    }

    /// The webhook receiver (`POST /hook/<namespace>/<name>`) for this controller's
    /// sources; serve it on its own listener. Registers `dpdk_webhook_*`.
    pub fn webhook_receiver(
        &self,
        opts: webhook::ReceiverOptions,
        registry: &mut Registry,
    ) -> webhook::Receiver {
        webhook::Receiver::new(
            self.client.clone(),
            self.opts.namespace.clone(),
            self.triggers.clone(),
            opts,
            webhook::WebhookMetrics::register(registry),
        )
    }

    /// Runs until `shutdown` completes.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
    ) {
        reconcile::run(self, shutdown).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_label_is_hashed_when_too_long() {
        let short = SourceKey::new("dpdk-operator", "production");
        assert_eq!(short.label_value(), "dpdk-operator.production");
        let long = SourceKey::new("dpdk-operator", "a".repeat(60));
        let v = long.label_value();
        assert_eq!(v.len(), LABEL_VALUE_MAX, "{v}");
        assert!(v.starts_with("dpdk-operator.aaaa"), "{v}");
        assert!(v.ends_with(|c: char| c.is_ascii_alphanumeric()), "{v}");
        assert_ne!(
            v,
            SourceKey::new("dpdk-operator", "a".repeat(61)).label_value(),
            "names that share the prefix differ by the hash"
        );
        // A cut at a dot or dash is trimmed, so the value stays a valid label value.
        let dotted = SourceKey::new("ns", format!("{}.{}", "b".repeat(42), "c".repeat(30)));
        let v = dotted.label_value();
        assert!(v.contains("bbb-") && !v.contains(".-"), "{v}");
        assert!(v.len() <= LABEL_VALUE_MAX);
    }
}
