//! The drift runtime: watches feed caches, a change (watch event or new Git revision)
//! triggers one recomputation, and the result is kept as the latest snapshot. Requests
//! only read that snapshot; drift is never computed per request (each rendering of a
//! snapshot is made once, on the first request for it).
//!
//! In `dpdk-reconciler run` the caches are the controller's (one set of watches for both).

use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use dpdk_bridge::api::{DPDKConfig, DPDKNodeState, NodeENI};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::core::PartialObjectMeta;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::engine::compute;
use super::model::{DriftReport, GitSource, Layer, LiveView, SourceKey};
use super::patch::{file_changes, render_patch};
use super::render::{render_diff_with, render_json, render_source_patch_with};
use crate::controller::cache::{self, Caches, Subscribers};

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
        StaticGit {
            sources: Arc::new(RwLock::new(sources)),
            version: Arc::new(watch::channel(0).0),
        }
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
        DriftOptions {
            name_prefix: None,
            sources: None,
            debounce: Duration::from_millis(100),
        }
    }
}

/// One source's patch in a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourcePatch {
    pub revision: Option<String>,
    /// Empty when the source has no layer-1 drift.
    pub text: Bytes,
}

/// The latest drift: the report, and its renderings made at most once each.
///
/// The JSON, the diff and each source's patch are rendered on the first request for them
/// and kept with the snapshot, so every later request shares the bytes. Rendering them eagerly on every
/// recompute cost memory nobody asked for: in the middle of a large rollout a report has
/// a finding for every NodeENI not yet written, and the previous snapshot's renderings
/// stayed alive next to the new ones (≈ 25 MB at 1000 nodes × 4 NodeENIs).
#[derive(Debug)]
pub struct Snapshot {
    pub report: DriftReport,
    /// The sources compared (their files and documents are shared, not copied).
    sources: Vec<GitSource>,
    /// Each source's layer-1 patch body, made while the live objects were at hand.
    bodies: Vec<String>,
    json: OnceLock<Bytes>,
    diff: OnceLock<Bytes>,
    /// Each source's patch (`bodies` with its header), as `sources`.
    patches: Vec<OnceLock<Bytes>>,
}

impl Snapshot {
    /// Computes drift for these inputs.
    pub fn build<'a>(
        sources: &[GitSource],
        live: impl Into<LiveView<'a>>,
        now: Timestamp,
        previous: Option<&DriftReport>,
    ) -> Snapshot {
        let live = live.into();
        let mut report = compute(sources, live.clone(), now, previous);
        report.findings.shrink_to_fit();
        // Each source's file changes are made once, for the diff and the patch.
        let bodies = sources
            .iter()
            .map(|s| render_patch(&file_changes(s, &report.findings, live.clone())))
            .collect();
        let patches = sources.iter().map(|_| OnceLock::new()).collect();
        Snapshot {
            report,
            sources: sources.to_vec(),
            bodies,
            json: OnceLock::new(),
            diff: OnceLock::new(),
            patches,
        }
    }

    /// The report as JSON (`/drift`).
    pub fn json(&self) -> Bytes {
        self.json
            .get_or_init(|| Bytes::from(render_json(&self.report)))
            .clone()
    }

    /// The unified diff of all layers (`/drift.diff`).
    pub fn diff(&self) -> Bytes {
        self.diff
            .get_or_init(|| {
                Bytes::from(render_diff_with(&self.report, &self.sources, &self.bodies))
            })
            .clone()
    }

    /// The keys (`ns/name`) of the sources that have a patch.
    pub fn patch_sources(&self) -> Vec<String> {
        self.sources
            .iter()
            .filter_map(|s| s.key.as_ref().map(ToString::to_string))
            .collect()
    }

    /// One source's layer-1 patch (`/drift.patch?source=`); its text is empty when the
    /// source has no layer-1 drift.
    pub fn patch(&self, source: &str) -> Option<SourcePatch> {
        let i = self
            .sources
            .iter()
            .position(|s| s.key.as_ref().is_some_and(|k| k.to_string() == source))?;
        let s = &self.sources[i];
        let text = self.patches[i]
            .get_or_init(|| Bytes::from(render_source_patch_with(&self.report, s, &self.bodies[i])))
            .clone();
        Some(SourcePatch {
            revision: s.revision.clone(),
            text,
        })
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
        r.register(
            "findings",
            "Drift findings in the latest report, by layer and kind",
            self.findings.clone(),
        );
        r.register(
            "compute_duration_seconds",
            "Time to compute and render one drift report",
            self.compute_duration.clone(),
        );
        r.register(
            "last_computed_timestamp_seconds",
            "Unix time of the latest drift report",
            self.last_computed.clone(),
        );
    }

    fn observe(&self, report: &DriftReport, took: Duration, now: Timestamp) {
        // Every kind a layer can have is exported, at zero when absent, so series stay
        // stable for alerts.
        self.findings.clear();
        for layer in Layer::ALL {
            for kind in layer.kinds() {
                let n = report
                    .findings
                    .iter()
                    .filter(|f| f.layer == layer && f.kind == *kind)
                    .count();
                self.findings
                    .get_or_create(&FindingLabels {
                        layer: layer.as_str().into(),
                        kind: kind.as_str().into(),
                    })
                    .set(n as i64);
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
        DriftState {
            latest: Arc::default(),
            version: Arc::new(watch::channel(0).0),
            metrics: DriftMetrics::default(),
        }
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

/// The caches' objects at one moment, shared with the caches (not copied).
struct CachedObjects {
    configs: Vec<Arc<DPDKConfig>>,
    nodes: Vec<Arc<PartialObjectMeta<Node>>>,
    node_enis: Vec<Arc<NodeENI>>,
    node_states: Vec<Arc<DPDKNodeState>>,
}

impl CachedObjects {
    fn read(c: &Caches) -> Self {
        CachedObjects {
            configs: c.configs.state(),
            nodes: c.nodes.state(),
            node_enis: c.node_enis.state(),
            node_states: c.node_states.state(),
        }
    }

    /// The objects in scope, as the engine reads them.
    fn view(&self, opts: &DriftOptions) -> LiveView<'_> {
        let keep = |name: Option<&String>| match &opts.name_prefix {
            Some(p) => name.is_some_and(|n| n.starts_with(p.as_str())),
            None => true,
        };
        LiveView {
            configs: self
                .configs
                .iter()
                .map(|o| o.as_ref())
                .filter(|o| keep(o.metadata.name.as_ref()))
                .collect(),
            node_enis: self
                .node_enis
                .iter()
                .map(|o| o.as_ref())
                .filter(|o| keep(o.metadata.name.as_ref()))
                .collect(),
            node_states: self
                .node_states
                .iter()
                .map(|o| o.as_ref())
                .filter(|o| keep(o.metadata.name.as_ref()))
                .collect(),
            nodes: self
                .nodes
                .iter()
                .map(|o| &o.metadata)
                .filter(|m| keep(m.name.as_ref()))
                .collect(),
            complete: opts.name_prefix.is_none(),
        }
    }
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

/// Recomputes drift on every change until `stop`, on watches of its own. Returns when
/// stopped.
pub async fn run(
    client: Client,
    git: Arc<dyn GitProvider>,
    opts: DriftOptions,
    state: DriftState,
    stop: CancellationToken,
) {
    let changed = Arc::new(Notify::new());
    let subs = Subscribers {
        triggers: vec![changed.clone()],
        ..Default::default()
    };
    let caches = cache::start(&client, None, subs, stop.clone());
    run_on(caches, changed, git, opts, state, stop).await;
}

/// Recomputes drift on every change until `stop`, reading caches someone else keeps (the
/// controller's, in `dpdk-reconciler run`); `changed` is notified on their every change.
pub async fn run_on(
    caches: Caches,
    changed: Arc<Notify>,
    git: Arc<dyn GitProvider>,
    opts: DriftOptions,
    state: DriftState,
    stop: CancellationToken,
) {
    tokio::select! {
        _ = stop.cancelled() => return,
        ok = caches.wait_until_ready() => if !ok { tracing::error!("drift caches stopped before their first list"); return; },
    }
    let mut git_rx = git.subscribe();
    let mut git_open = true;
    loop {
        let started = Instant::now();
        let now = Timestamp::now();
        let sources = git_sources(git.as_ref(), &opts);
        let cached = CachedObjects::read(&caches);
        // `since` carries over from the snapshot being served; no second copy of a report
        // (during a rollout a report holds a finding per NodeENI and node).
        let previous = state.latest();
        let snap = Snapshot::build(
            &sources,
            cached.view(&opts),
            now,
            previous.as_ref().map(|p| &p.report),
        );
        // The caches' old versions of objects are not pinned past the recompute.
        drop((previous, cached, sources));
        let took = started.elapsed();
        tracing::debug!(
            findings = snap.report.summary.total,
            took_ms = took.as_millis() as u64,
            "drift recomputed"
        );
        state.publish(snap, took, now);

        tokio::select! {
            _ = stop.cancelled() => return,
            _ = changed.notified() => {}
            r = git_rx.changed(), if git_open => if r.is_err() { git_open = false; },
        }
        // Coalesce bursts, and never spend more than about a tenth of the time recomputing:
        // while a large rollout writes thousands of objects, the report follows at a pace
        // the controller and the API server (on the same small nodes) do not feel.
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(opts.debounce.max(took * 9)) => {}
        }
    }
}
