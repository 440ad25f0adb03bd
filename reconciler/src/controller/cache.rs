//! Watches and caches: one reflector per kind the controller and the drift runtime read,
//! trimmed for memory, plus "expectations" so a write the cache has not seen yet is not
//! repeated.
//!
//! In `dpdk-reconciler run` the controller and the drift runtime share one set of
//! reflectors: two sets doubled the watch traffic and the cached objects, and during a
//! large rollout the second set's share of a 6000-write burst was most of the process's
//! peak memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dpdk_bridge::api::{DPDKConfig, DPDKNodeState, NodeENI};
use dpdk_bridge::labels::CONTROLLER_MANAGER;
use dpdk_bridge::plan::Kind;
use dpdk_bridge::ssa;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Node;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::metrics::ControllerMetrics;

/// How long a write may stay unobserved before the cache is trusted again.
const EXPECTATION_TTL: Duration = Duration::from_secs(15);

/// Writes the controller made that its caches have not reflected yet, by object:
/// the resourceVersion the write produced, or `None` for a delete. While one is
/// pending, the planner's idea of that object is stale and its writes are skipped;
/// the watch event that brings the cache up to date triggers the next pass.
#[derive(Default)]
pub struct Expectations {
    inner: Mutex<HashMap<(Kind, String), Expected>>,
}

/// The resourceVersion a write produced (if it returned one) and when it was made.
type Expected = (Option<String>, Instant);

impl Expectations {
    pub fn expect(&self, kind: Kind, name: &str, rv: Option<String>) {
        if let Ok(mut m) = self.inner.lock() {
            m.insert((kind, name.to_string()), (rv, Instant::now()));
        }
    }

    /// A watch event: clears the expectation when it is the awaited version.
    pub fn observe(&self, kind: Kind, name: &str, rv: Option<&str>) {
        if let Ok(mut m) = self.inner.lock() {
            let key = (kind, name.to_string());
            if m.get(&key).is_some_and(|(want, _)| want.as_deref() == rv) {
                m.remove(&key);
            }
        }
    }

    /// True while a write to this object is unobserved: the cache does not show the
    /// version the write produced (or a later one), and the TTL has not run out.
    pub fn pending(&self, kind: Kind, name: &str, cached_rv: Option<&str>) -> bool {
        let Ok(mut m) = self.inner.lock() else {
            return false;
        };
        let key = (kind, name.to_string());
        match m.get(&key) {
            Some((want, at))
                if !caught_up(cached_rv, want.as_deref()) && at.elapsed() < EXPECTATION_TTL =>
            {
                true
            }
            Some(_) => {
                m.remove(&key);
                false
            }
            None => false,
        }
    }

    /// Forgets writes unobserved for longer than the TTL. A write whose watch event
    /// arrived before its response was handled is never observed (the event came first)
    /// and, on a converged cluster, never asked about again: without this, every such
    /// write of a rollout stayed in the map until the next relist.
    pub fn sweep(&self) {
        self.sweep_older_than(EXPECTATION_TTL);
    }

    fn sweep_older_than(&self, ttl: Duration) {
        if let Ok(mut m) = self.inner.lock() {
            m.retain(|_, (_, at)| at.elapsed() < ttl);
        }
    }

    pub fn clear(&self) {
        if let Ok(mut m) = self.inner.lock() {
            m.clear();
        }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Does the cache (at `cached`) already reflect a write that produced `wanted`?
///
/// The watch event of a write can reach the cache before the write's response is
/// handled, and a later change can follow it; so "equal" is not enough. etcd-backed API
/// servers hand out increasing integer resourceVersions, which order them; when they do
/// not parse, only equality counts (and the TTL ends the wait).
fn caught_up(cached: Option<&str>, wanted: Option<&str>) -> bool {
    match (cached, wanted) {
        (c, w) if c == w => true,
        // Deleted: waiting for the object to disappear.
        (Some(_), None) => false,
        // Gone although we wrote it: whatever happened next, the cache is current.
        (None, Some(_)) => true,
        (Some(c), Some(w)) => match (c.parse::<u64>(), w.parse::<u64>()) {
            (Ok(c), Ok(w)) => c >= w,
            _ => false,
        },
        (None, None) => true,
    }
}

/// The controller's (and the drift runtime's) view of the cluster.
#[derive(Clone)]
pub struct Caches {
    pub configs: Store<DPDKConfig>,
    pub nodes: Store<PartialObjectMeta<Node>>,
    pub node_enis: Store<NodeENI>,
    pub node_states: Store<DPDKNodeState>,
    /// `Some(true)` once every reflector has its initial list, `Some(false)` if one
    /// stopped before that.
    ready: watch::Receiver<Option<bool>>,
}

impl Caches {
    /// Waits until every reflector has its initial list. Any number of tasks may wait:
    /// `Store::wait_until_ready` wakes only the last task that polled it, so one task
    /// waits on the stores and tells everyone else.
    pub async fn wait_until_ready(&self) -> bool {
        let mut rx = self.ready.clone();
        match rx.wait_for(Option::is_some).await {
            Ok(v) => v.unwrap_or(false),
            Err(_) => false,
        }
    }

    /// The cached resourceVersion of an object the planner may write.
    pub fn resource_version(&self, kind: Kind, name: &str) -> Option<String> {
        match kind {
            Kind::Config => self
                .configs
                .get(&ObjectRef::new(name))
                .and_then(|o| o.resource_version()),
            Kind::Node => self
                .nodes
                .get(&ObjectRef::new(name))
                .and_then(|o| o.metadata.resource_version.clone()),
            Kind::NodeEni => self
                .node_enis
                .get(&ObjectRef::new(name))
                .and_then(|o| o.resource_version()),
            Kind::NodeState => self
                .node_states
                .get(&ObjectRef::new(name))
                .and_then(|o| o.resource_version()),
        }
    }
}

// The trims drop what neither the planner nor the drift engine reads, so a big cluster
// fits in a small pod. managedFields are most of an object's size; only the ownership the
// planner asks about is kept.

fn trim_config(c: &mut DPDKConfig) {
    // Labels and annotations stay: the drift engine compares them with Git and looks for
    // Argo CD / Flux markers; configs are few.
    let paths: [&[&str]; 1] = [&["f:metadata", "f:finalizers"]];
    ssa::trim_managed_fields(&mut c.metadata, CONTROLLER_MANAGER, &paths);
}

fn trim_node(n: &mut PartialObjectMeta<Node>) {
    // Only labels are compared (selectors); node annotations can be large. Ownership of
    // the enabled label (conflicts, release) and the agent's ready label (teardown) is read.
    let (enabled, ready) = (ssa::enabled_label_path(), ssa::ready_label_path());
    let paths: [&[String]; 2] = [&enabled, &ready];
    ssa::trim_managed_fields(&mut n.metadata, ssa::NO_MANAGER, &paths);
    n.metadata.annotations = None;
    n.metadata.owner_references = None;
}

fn trim_node_eni(e: &mut NodeENI) {
    let paths: Vec<&[&str]> = ssa::NODEENI_PATHS.iter().map(|p| p.as_slice()).collect();
    ssa::trim_managed_fields(&mut e.metadata, ssa::NO_MANAGER, &paths);
    e.metadata.annotations = None;
    if let Some(st) = e.status.as_mut() {
        for a in st.attachments.iter_mut() {
            // Read: nodeID, deviceIndex, eniID, status, dpdkBound and dpdkPCIAddress.
            a.instance_id = None;
            a.attachment_id = None;
            a.subnet_id = None;
            a.subnet_cidr = None;
            a.last_updated = None;
            a.dpdk_resource_name = None;
            a.dpdk_driver = None;
        }
    }
}

fn trim_node_state(s: &mut DPDKNodeState) {
    // Only the existence of our Apply entry is read. The status stays but for conditions,
    // the plugin's registration time and MACs: the drift engine reports devices (with their
    // interface and message) and modules per node, and the rollout reads what the device
    // plugin advertises.
    let none: [&[&str]; 0] = [];
    ssa::trim_managed_fields(&mut s.metadata, CONTROLLER_MANAGER, &none);
    if let Some(st) = s.status.as_mut() {
        st.conditions.clear();
        if let Some(p) = st.device_plugin.as_mut() {
            p.last_registration_time = None;
        }
        for d in st.devices.iter_mut() {
            d.mac = None;
        }
    }
}

/// Who hears from the reflectors.
#[derive(Clone, Default)]
pub struct Subscribers {
    /// The controller's expectations, told about every version the caches see.
    pub expectations: Option<Arc<Expectations>>,
    /// Notified on every change after the initial list (one per consumer).
    pub triggers: Vec<Arc<Notify>>,
    /// Counts watch errors (`dpdk_controller_watch_errors_total`).
    pub metrics: Option<Arc<ControllerMetrics>>,
}

fn spawn_reflector<K, S>(
    kind: Kind,
    stream: S,
    writer: reflector::store::Writer<K>,
    trim: fn(&mut K),
    subs: Subscribers,
    stop: CancellationToken,
) where
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
                Some(Ok(ev)) => {
                    if let Some(expectations) = &subs.expectations {
                        match &ev {
                            Event::Apply(o) | Event::InitApply(o) => expectations.observe(
                                kind,
                                &o.name_any(),
                                o.meta().resource_version.as_deref(),
                            ),
                            Event::Delete(o) => expectations.observe(kind, &o.name_any(), None),
                            Event::Init => {}
                            // A relist replaced the cache wholesale; nothing awaited can be trusted.
                            Event::InitDone => expectations.clear(),
                        }
                    }
                    if !matches!(ev, Event::Init | Event::InitApply(_)) {
                        for t in &subs.triggers {
                            t.notify_one();
                        }
                    }
                }
                Some(Err(e)) => {
                    if let Some(m) = &subs.metrics {
                        m.watch_errors.inc();
                    }
                    tracing::warn!(?kind, error = %e, "watch failed; retrying with backoff");
                }
            }
        }
    });
}

/// Starts the four watches. `config_selector` limits the DPDKConfigs (sharding).
pub fn start(
    client: &Client,
    config_selector: Option<&str>,
    subs: Subscribers,
    stop: CancellationToken,
) -> Caches {
    let (configs, w_configs) = reflector::store();
    let (nodes, w_nodes) = reflector::store();
    let (node_enis, w_enis) = reflector::store();
    let (node_states, w_states) = reflector::store();
    let mut config_cfg = watcher::Config::default();
    if let Some(sel) = config_selector {
        config_cfg = config_cfg.labels(sel);
    }
    let cfg = watcher::Config::default;
    spawn_reflector(
        Kind::Config,
        watcher(Api::<DPDKConfig>::all(client.clone()), config_cfg),
        w_configs,
        trim_config,
        subs.clone(),
        stop.clone(),
    );
    spawn_reflector(
        Kind::Node,
        watcher(Api::<PartialObjectMeta<Node>>::all(client.clone()), cfg()),
        w_nodes,
        trim_node,
        subs.clone(),
        stop.clone(),
    );
    spawn_reflector(
        Kind::NodeEni,
        watcher(Api::<NodeENI>::all(client.clone()), cfg()),
        w_enis,
        trim_node_eni,
        subs.clone(),
        stop.clone(),
    );
    spawn_reflector(
        Kind::NodeState,
        watcher(Api::<DPDKNodeState>::all(client.clone()), cfg()),
        w_states,
        trim_node_state,
        subs,
        stop,
    );
    let (ready_tx, ready) = watch::channel(None);
    let stores = (
        configs.clone(),
        nodes.clone(),
        node_enis.clone(),
        node_states.clone(),
    );
    tokio::spawn(async move {
        let (c, n, e, s) = stores;
        let ok = c.wait_until_ready().await.is_ok()
            && n.wait_until_ready().await.is_ok()
            && e.wait_until_ready().await.is_ok()
            && s.wait_until_ready().await.is_ok();
        let _ = ready_tx.send(Some(ok));
    });
    Caches {
        configs,
        nodes,
        node_enis,
        node_states,
        ready,
    }
}

use kube::runtime::watcher::watcher;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectations_hold_until_the_version_is_seen() {
        let e = Expectations::default();
        e.expect(Kind::NodeEni, "a", Some("10".into()));
        assert!(
            e.pending(Kind::NodeEni, "a", Some("9")),
            "the cache still has the old version"
        );
        assert!(!e.pending(Kind::NodeEni, "b", Some("9")));
        e.observe(Kind::NodeEni, "a", Some("9"));
        assert!(e.pending(Kind::NodeEni, "a", Some("9")));
        e.observe(Kind::NodeEni, "a", Some("10"));
        assert!(
            !e.pending(Kind::NodeEni, "a", Some("9")),
            "seen: the cache is trusted again"
        );
    }

    #[test]
    fn a_no_op_write_is_satisfied_by_the_cache_itself() {
        let e = Expectations::default();
        e.expect(Kind::Node, "n", Some("5".into()));
        assert!(!e.pending(Kind::Node, "n", Some("5")));
        assert!(e.is_empty());
    }

    #[test]
    fn a_later_version_in_the_cache_also_satisfies_it() {
        // The watch event of our write came first, then someone else's change.
        let e = Expectations::default();
        e.expect(Kind::Config, "c", Some("10".into()));
        assert!(!e.pending(Kind::Config, "c", Some("12")));
        e.expect(Kind::Config, "c", Some("opaque-b".into()));
        assert!(
            e.pending(Kind::Config, "c", Some("opaque-a")),
            "unordered versions: only equality counts"
        );
    }

    #[test]
    fn expectations_never_asked_about_again_are_swept_after_the_ttl() {
        // The watch event came before the write's response: `observe` found nothing to
        // clear, and a converged cluster never plans that write again.
        let e = Expectations::default();
        e.observe(Kind::NodeEni, "a", Some("10"));
        e.expect(Kind::NodeEni, "a", Some("10".into()));
        e.sweep();
        assert_eq!(e.len(), 1, "still within the TTL");
        e.sweep_older_than(Duration::ZERO);
        assert!(
            e.is_empty(),
            "expired entries are dropped without being asked about"
        );
    }

    #[test]
    fn deletes_are_awaited_until_the_object_is_gone() {
        let e = Expectations::default();
        e.expect(Kind::NodeState, "n", None);
        assert!(e.pending(Kind::NodeState, "n", Some("7")));
        assert!(!e.pending(Kind::NodeState, "n", None));
    }
}
