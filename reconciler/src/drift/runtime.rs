//! The drift runtime: watches feed caches, a change (watch event or new Git revision)
//! triggers one recomputation, and the result is kept pre-rendered as the latest
//! snapshot. Requests only read that snapshot; nothing is computed per request.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use dpdk_bridge::api::{DPDKConfig, DPDKNodeState, NodeENI};
use dpdk_bridge::labels::CONTROLLER_MANAGER;
use dpdk_bridge::ssa;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Api, Client, Resource};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::engine::compute;
use super::model::{DriftReport, GitSource, Layer, LiveObjects, SourceKey};
use super::patch::{file_changes, render_patch};
use super::render::{render_diff_with, render_json, render_source_patch_with};

/// Where the Git side of the comparison comes from: the latest good documents of each
/// source, and a signal when they change.
pub trait GitProvider: Send + Sync + 'static {
    fn sources(&self) -> Vec<GitSource>;
    fn subscribe(&self) -> watch::Receiver<u64>;
}

/// A fixed set of sources, replaced by hand (tests, the CLI).
#[derive(Clone)]
pub struct StaticGit {
    sources: Arc<RwLock<Vec<GitSource>>>,
    version: Arc<watch::Sender<u64>>,
}

impl StaticGit {
    pub fn new(sources: Vec<GitSource>) -> Self {
        StaticGit { sources: Arc::new(RwLock::new(sources)), version: Arc::new(watch::channel(0).0) }
    }

    /// Replaces the sources and signals a change.
    pub fn set(&self, sources: Vec<GitSource>) {
        if let Ok(mut s) = self.sources.write() {
            *s = sources;
        }
        self.version.send_modify(|v| *v += 1);
    }
}

impl GitProvider for StaticGit {
    fn sources(&self) -> Vec<GitSource> {
        self.sources.read().map(|s| s.clone()).unwrap_or_default()
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }
}

/// What the drift runtime looks at.
#[derive(Clone, Debug)]
pub struct DriftOptions {
    /// Only objects whose name starts with this (cluster-scoped names are shared: tests
    /// and side-by-side setups scope by prefix). None: every object.
    pub name_prefix: Option<String>,
    /// Only these sources; None: every source the provider has.
    pub sources: Option<Vec<SourceKey>>,
    /// Quiet time after a change before recomputing, so bursts coalesce.
    pub debounce: Duration,
}

impl Default for DriftOptions {
    fn default() -> Self {
        DriftOptions { name_prefix: None, sources: None, debounce: Duration::from_millis(100) }
    }
}

/// One source's patch in a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourcePatch {
    pub revision: Option<String>,
    /// Empty when the source has no layer-1 drift.
    pub text: Bytes,
}

/// The latest drift, rendered in every format the endpoints serve.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub report: DriftReport,
    /// Rendered once; requests share the bytes.
    pub json: Bytes,
    pub diff: Bytes,
    /// By source (`ns/name`).
    pub patches: BTreeMap<String, SourcePatch>,
}

impl Snapshot {
    /// Computes and renders drift for these inputs.
    pub fn build(sources: &[GitSource], live: &LiveObjects, now: Timestamp, previous: Option<&DriftReport>) -> Snapshot {
        let report = compute(sources, live, now, previous);
        let json = Bytes::from(render_json(&report));
        // Each source's file changes are made once, for the diff and the patch.
        let bodies: Vec<String> = sources.iter().map(|s| render_patch(&file_changes(s, &report.findings, live))).collect();
        let diff = Bytes::from(render_diff_with(&report, sources, &bodies));
        let patches = sources
            .iter()
            .zip(&bodies)
            .filter_map(|(s, body)| {
                let key = s.key.as_ref()?.to_string();
                let text = Bytes::from(render_source_patch_with(&report, s, body));
                Some((key, SourcePatch { revision: s.revision.clone(), text }))
            })
            .collect();
        Snapshot { report, json, diff, patches }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FindingLabels {
    pub layer: String,
    pub kind: String,
}

/// `dpdk_drift_*` metrics.
#[derive(Clone)]
pub struct DriftMetrics {
    /// Findings in the latest snapshot, by layer and kind.
    pub findings: Family<FindingLabels, Gauge>,
    /// Time to compute and render one snapshot.
    pub compute_duration: Histogram,
    /// Unix time of the latest snapshot.
    pub last_computed: Gauge,
}

impl Default for DriftMetrics {
    fn default() -> Self {
        DriftMetrics {
            findings: Family::default(),
            compute_duration: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            last_computed: Gauge::default(),
        }
    }
}

impl DriftMetrics {
    /// Registers `dpdk_drift_findings`, `dpdk_drift_compute_duration_seconds` and
    /// `dpdk_drift_last_computed_timestamp_seconds`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("dpdk_drift");
        r.register("findings", "Drift findings in the latest report, by layer and kind", self.findings.clone());
        r.register("compute_duration_seconds", "Time to compute and render one drift report", self.compute_duration.clone());
        r.register("last_computed_timestamp_seconds", "Unix time of the latest drift report", self.last_computed.clone());
    }

    fn observe(&self, report: &DriftReport, took: Duration, now: Timestamp) {
        // Every kind a layer can have is exported, at zero when absent, so series stay
        // stable for alerts.
        self.findings.clear();
        for layer in Layer::ALL {
            for kind in layer.kinds() {
                let n = report.findings.iter().filter(|f| f.layer == layer && f.kind == *kind).count();
                self.findings.get_or_create(&FindingLabels { layer: layer.as_str().into(), kind: kind.as_str().into() }).set(n as i64);
            }
        }
        self.compute_duration.observe(took.as_secs_f64());
        self.last_computed.set(now.as_second());
    }
}

/// Shared handle on the latest snapshot. Cheap to clone.
#[derive(Clone)]
pub struct DriftState {
    latest: Arc<RwLock<Option<Arc<Snapshot>>>>,
    version: Arc<watch::Sender<u64>>,
    pub metrics: DriftMetrics,
}

impl Default for DriftState {
    fn default() -> Self {
        DriftState { latest: Arc::default(), version: Arc::new(watch::channel(0).0), metrics: DriftMetrics::default() }
    }
}

impl DriftState {
    pub fn new() -> Self {
        Self::default()
    }

    /// The latest snapshot, `None` until the first computation.
    pub fn latest(&self) -> Option<Arc<Snapshot>> {
        self.latest.read().ok().and_then(|s| s.clone())
    }

    /// Changes with every published snapshot.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    pub fn publish(&self, snap: Snapshot, took: Duration, now: Timestamp) {
        self.metrics.observe(&snap.report, took, now);
        if let Ok(mut l) = self.latest.write() {
            *l = Some(Arc::new(snap));
        }
        self.version.send_modify(|v| *v += 1);
    }
}

/// The drift runtime's caches.
#[derive(Clone)]
struct Caches {
    configs: Store<DPDKConfig>,
    nodes: Store<PartialObjectMeta<Node>>,
    node_enis: Store<NodeENI>,
    node_states: Store<DPDKNodeState>,
}

// The caches keep what the engine and the planner (layer 2) read. managedFields are most
// of an object's size and only the ownership the planner asks about matters; without this
// the drift caches held several times the controller's (trimmed) caches in big clusters.
fn trim_config(c: &mut DPDKConfig) {
    let paths: [&[&str]; 1] = [&["f:metadata", "f:finalizers"]];
    ssa::trim_managed_fields(&mut c.metadata, CONTROLLER_MANAGER, &paths);
}

fn trim_node(n: &mut PartialObjectMeta<Node>) {
    let label = ssa::enabled_label_path();
    let paths: [&[String]; 1] = [&label];
    ssa::trim_managed_fields(&mut n.metadata, ssa::NO_MANAGER, &paths);
    // Only labels are compared (selectors); node annotations can be large.
    n.metadata.annotations = None;
}

fn trim_node_eni(e: &mut NodeENI) {
    let paths: Vec<&[&str]> = ssa::NODEENI_PATHS.iter().map(|p| p.as_slice()).collect();
    ssa::trim_managed_fields(&mut e.metadata, ssa::NO_MANAGER, &paths);
}

fn trim_node_state(s: &mut DPDKNodeState) {
    let none: [&[&str]; 0] = [];
    ssa::trim_managed_fields(&mut s.metadata, CONTROLLER_MANAGER, &none);
}

fn spawn_reflector<K, S>(stream: S, writer: reflector::store::Writer<K>, trim: fn(&mut K), trigger: Arc<Notify>, stop: CancellationToken)
where
    K: Resource + Clone + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default,
    S: Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static,
{
    let stream = stream.default_backoff().modify(trim).reflect(writer);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            let ev = tokio::select! {
                _ = stop.cancelled() => return,
                ev = stream.next() => ev,
            };
            match ev {
                None => return,
                Some(Ok(Event::Init | Event::InitApply(_))) => {}
                Some(Ok(_)) => trigger.notify_one(),
                Some(Err(e)) => tracing::warn!(kind = %K::kind(&Default::default()), error = %e, "drift watch failed; retrying with backoff"),
            }
        }
    });
}

fn start_watches(client: &Client, trigger: &Arc<Notify>, stop: &CancellationToken) -> Caches {
    let (configs, w_configs) = reflector::store();
    let (nodes, w_nodes) = reflector::store();
    let (node_enis, w_enis) = reflector::store();
    let (node_states, w_states) = reflector::store();
    let cfg = watcher::Config::default;
    spawn_reflector(watcher(Api::<DPDKConfig>::all(client.clone()), cfg()), w_configs, trim_config, trigger.clone(), stop.clone());
    spawn_reflector(watcher(Api::<PartialObjectMeta<Node>>::all(client.clone()), cfg()), w_nodes, trim_node, trigger.clone(), stop.clone());
    spawn_reflector(watcher(Api::<NodeENI>::all(client.clone()), cfg()), w_enis, trim_node_eni, trigger.clone(), stop.clone());
    spawn_reflector(watcher(Api::<DPDKNodeState>::all(client.clone()), cfg()), w_states, trim_node_state, trigger.clone(), stop.clone());
    Caches { configs, nodes, node_enis, node_states }
}

/// The live objects in scope, from the caches.
fn live_objects(c: &Caches, opts: &DriftOptions) -> LiveObjects {
    let keep = |name: Option<&String>| match &opts.name_prefix {
        Some(p) => name.is_some_and(|n| n.starts_with(p.as_str())),
        None => true,
    };
    let configs = c.configs.state().iter().filter(|o| keep(o.metadata.name.as_ref())).map(|o| (**o).clone()).collect();
    let node_enis = c.node_enis.state().iter().filter(|o| keep(o.metadata.name.as_ref())).map(|o| (**o).clone()).collect();
    let node_states = c.node_states.state().iter().filter(|o| keep(o.metadata.name.as_ref())).map(|o| (**o).clone()).collect();
    let nodes = c.nodes.state().iter().filter(|o| keep(o.metadata.name.as_ref())).map(|o| o.metadata.clone()).collect();
    LiveObjects { configs, node_enis, node_states, nodes, complete: opts.name_prefix.is_none() }
}

/// The sources in scope. When exactly one is, live objects that no source labelled count
/// as its extras.
fn git_sources(git: &dyn GitProvider, opts: &DriftOptions) -> Vec<GitSource> {
    let mut sources: Vec<GitSource> = git
        .sources()
        .into_iter()
        .filter(|s| match (&opts.sources, &s.key) {
            (Some(keep), Some(k)) => keep.contains(k),
            (Some(_), None) => false,
            (None, _) => true,
        })
        .collect();
    let single = sources.len() == 1;
    for s in &mut sources {
        s.adopt_orphans = single;
    }
    sources
}

/// Recomputes drift on every change until `stop`. Returns when stopped.
pub async fn run(client: Client, git: Arc<dyn GitProvider>, opts: DriftOptions, state: DriftState, stop: CancellationToken) {
    let trigger = Arc::new(Notify::new());
    let caches = start_watches(&client, &trigger, &stop);
    let ready = async {
        caches.configs.wait_until_ready().await.is_ok()
            && caches.nodes.wait_until_ready().await.is_ok()
            && caches.node_enis.wait_until_ready().await.is_ok()
            && caches.node_states.wait_until_ready().await.is_ok()
    };
    tokio::select! {
        _ = stop.cancelled() => return,
        ok = ready => if !ok { tracing::error!("drift caches stopped before their first list"); return; },
    }
    let mut git_rx = git.subscribe();
    let mut git_open = true;
    loop {
        let started = Instant::now();
        let now = Timestamp::now();
        let sources = git_sources(git.as_ref(), &opts);
        let live = live_objects(&caches, &opts);
        // `since` carries over from the snapshot being served; no second copy of a report
        // (during a rollout a report holds a finding per NodeENI and node).
        let previous = state.latest();
        let snap = Snapshot::build(&sources, &live, now, previous.as_ref().map(|p| &p.report));
        drop((previous, live, sources));
        let took = started.elapsed();
        tracing::debug!(findings = snap.report.summary.total, took_ms = took.as_millis() as u64, "drift recomputed");
        state.publish(snap, took, now);

        tokio::select! {
            _ = stop.cancelled() => return,
            _ = trigger.notified() => {}
            r = git_rx.changed(), if git_open => if r.is_err() { git_open = false; },
        }
        // Coalesce bursts, and never spend more than about a fifth of the time recomputing:
        // while a large rollout writes thousands of objects, the report follows at a pace
        // the controller and the API server do not feel.
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(opts.debounce.max(took * 4)) => {}
        }
    }
}
