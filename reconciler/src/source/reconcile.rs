//! The reconcile loop of DPDKConfigSource: thin I/O around [`super::git`],
//! [`crate::manifest`] and the pure steps of [`super::plan`]. One pass over a source is
//! fetch → load/validate → plan → apply → prune → status ([`reconcile_inner`]); a failure
//! is an [`Error`] whose kind decides the retry ([`retry_policy`]).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use dpdk_bridge::api::{DPDKConfig, DPDKConfigSource, DPDKConfigSourceStatus, SourceMode};
use dpdk_bridge::labels;
use futures::FutureExt;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, Preconditions,
};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, Resource};
use notify::Watcher;
use rand::Rng;
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tracing::{Instrument, info, info_span, warn};

use super::auth::Credentials;
use super::git::{self, Fetched};
use super::plan::{
    self, AppliedRevision, Attempt, LiveObject, PlanInput, SourcePlan, StatusStamp, WriteFailure,
    WriteResults,
};
use super::spec::{
    RefSpec, Transport, check_interval, check_url, parse_interval, parse_url, redact_url,
};
use super::{
    SourceKey, SourceMetrics, SourceOptions, SourceSnapshot, SourceStore, TriggerReason, Triggers,
};
use crate::manifest::Manifests;
use crate::manifest::load::normalize_repo_path;
use crate::{Error, ErrorKind};

/// When a source is next due and what the last pass saw.
#[derive(Default)]
struct RunState {
    next_due: Option<Instant>,
    generation: Option<i64>,
    failures: u32,
}

/// The source controller's shared state: the API client, its options, the store other
/// components read, the fetch-now triggers, metrics, and per source its schedule and
/// file:// watcher.
struct SourceReconciler {
    client: Client,
    opts: SourceOptions,
    store: SourceStore,
    triggers: Triggers,
    metrics: SourceMetrics,
    state: Mutex<HashMap<SourceKey, RunState>>,
    watchers: Mutex<HashMap<SourceKey, (PathBuf, notify::RecommendedWatcher)>>,
    sources: Mutex<Option<Store<DPDKConfigSource>>>,
    /// True while this replica holds the Lease (always, when not gated).
    leading: watch::Receiver<bool>,
    _always_leading: Option<watch::Sender<bool>>,
}

/// Runs the source controller (without the webhook route) until `shutdown` completes:
/// the in-process entry point for tests and `dpdk-reconciler run`.
pub async fn run_sources(
    client: Client,
    opts: SourceOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let mut registry = prometheus_client::registry::Registry::default();
    super::SourceController::new(client, opts, &mut registry)
        .run(shutdown)
        .await
}

pub(super) async fn run(
    controller: super::SourceController,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let super::SourceController {
        client,
        opts,
        store,
        triggers,
        rx,
        metrics,
        leading,
    } = controller;
    // Ungated: always leading (the sender lives as long as the reconciler).
    let (always, leading) = match leading {
        Some(rx) => (None, rx),
        None => {
            let (tx, rx) = watch::channel(true);
            (Some(tx), rx)
        }
    };
    let ctx = Arc::new(SourceReconciler {
        client,
        opts,
        store,
        triggers,
        metrics,
        state: Mutex::default(),
        watchers: Mutex::default(),
        sources: Mutex::default(),
        leading: leading.clone(),
        _always_leading: always,
    });
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let shutdown = shutdown.shared();
    let mut leading = leading;
    loop {
        // Follow until this replica leads.
        tokio::select! {
            _ = shutdown.clone() => break,
            r = leading.wait_for(|l| *l) => if r.is_err() { break },
        }
        info!("leading: the source controller starts");
        let mut watch_lost = leading.clone();
        let lost = async move {
            let _ = watch_lost.wait_for(|l| !*l).await;
        };
        let stop = futures::future::select(shutdown.clone(), Box::pin(lost)).map(|_| ());
        run_term(&ctx, rx.clone(), stop).await;
        // Followers keep nothing: a new term fetches and plans afresh.
        if let Ok(mut st) = ctx.state.lock() {
            st.clear();
        }
        if let Ok(mut w) = ctx.watchers.lock() {
            w.clear();
        }
        if shutdown.peek().is_some() {
            break;
        }
        info!("not leading: the source controller stops");
    }
}

/// The kube controller over every DPDKConfigSource, for one term of leadership.
async fn run_term(
    ctx: &Arc<SourceReconciler>,
    rx: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<ObjectRef<DPDKConfigSource>>>>,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let api: Api<DPDKConfigSource> = match &ctx.opts.namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    // kube's per-object `reconcile_on` is unstable; wake every source instead: the one
    // asked for is marked forced, the others find they are not due and go back to sleep.
    let trigger_stream = futures::stream::unfold(rx, |rx| async move {
        let got = rx.lock().await.recv().await;
        got.map(|_| ((), rx))
    });
    let controller = Controller::new(api, watcher::Config::default())
        .reconcile_all_on(trigger_stream)
        .graceful_shutdown_on(stop);
    if let Ok(mut s) = ctx.sources.lock() {
        *s = Some(controller.store());
    }
    controller
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|res| async move {
            if let Err(e) = res {
                warn!(error = %e, "DPDKConfigSource reconcile failed");
            }
        })
        .await;
}

/// How a failure of each kind is retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Only a change of the object can help (its spec is unusable).
    AwaitChange,
    /// The revision was refused: retrying it cannot help; look for the next one at the
    /// interval (webhooks and local commits still fetch at once).
    NextInterval,
    /// Someone else wrote first: retry at the shortest backoff, without escalating.
    Soon,
    /// Exponential backoff (see [`backoff_delay`]).
    Backoff,
}

/// The retry of a failure of `kind`.
pub(crate) fn retry_policy(kind: ErrorKind) -> Retry {
    match kind {
        ErrorKind::InvalidSpec => Retry::AwaitChange,
        ErrorKind::InvalidInput => Retry::NextInterval,
        ErrorKind::Conflict => Retry::Soon,
        ErrorKind::Transient | ErrorKind::NotFound | ErrorKind::Forbidden | ErrorKind::Internal => {
            Retry::Backoff
        }
    }
}

fn error_policy(src: Arc<DPDKConfigSource>, err: &Error, ctx: Arc<SourceReconciler>) -> Action {
    let key = SourceKey::of(&src);
    ctx.metrics
        .count_error(&key.to_string(), err.metric_label());
    let interval = parse_interval(&src.spec.interval).ok();
    let action = ctx.retry(&key, err.kind(), interval);
    warn!(source = %key, error = %err, kind = err.metric_label(), ?action, "retrying");
    action
}

impl SourceReconciler {
    /// The requeue after a failure of `kind`; remembers when the source is due.
    fn retry(&self, key: &SourceKey, kind: ErrorKind, interval: Option<Duration>) -> Action {
        match (retry_policy(kind), interval) {
            (Retry::AwaitChange, _) => Action::await_change(),
            (Retry::NextInterval, Some(i)) => Action::requeue(self.schedule(key, self.jitter(i))),
            (Retry::Soon, _) => Action::requeue(self.schedule(key, self.opts.min_backoff)),
            (Retry::Backoff | Retry::NextInterval, _) => {
                Action::requeue(self.fail_delay(key, interval))
            }
        }
    }

    /// Remembers that `key` is due in `d`.
    fn schedule(&self, key: &SourceKey, d: Duration) -> Duration {
        if let Ok(mut st) = self.state.lock() {
            st.entry(key.clone()).or_default().next_due = Some(Instant::now() + d);
        }
        d
    }

    fn jitter(&self, interval: Duration) -> Duration {
        jittered(interval, self.opts.jitter, rand::rng().random::<f64>())
    }

    /// Backoff after a failure (see [`backoff_delay`]); remembers when the source is due.
    fn fail_delay(&self, key: &SourceKey, interval: Option<Duration>) -> Duration {
        let Ok(mut st) = self.state.lock() else {
            return self.opts.max_backoff;
        };
        let s = st.entry(key.clone()).or_default();
        s.failures = s.failures.saturating_add(1);
        let d = backoff_delay(
            s.failures,
            self.opts.min_backoff,
            self.opts.max_backoff,
            interval,
        );
        s.next_due = Some(Instant::now() + d);
        d
    }

    /// The interval with jitter (see [`jittered`]); resets the failure count.
    fn ok_delay(&self, key: &SourceKey, interval: Duration) -> Duration {
        let d = self.jitter(interval);
        if let Ok(mut st) = self.state.lock() {
            let s = st.entry(key.clone()).or_default();
            s.failures = 0;
            s.next_due = Some(Instant::now() + d);
        }
        d
    }

    /// Forget snapshots and watchers of sources that no longer exist.
    fn gc(&self) {
        let existing: Option<Vec<SourceKey>> = self.sources.lock().ok().and_then(|s| {
            s.as_ref()
                .map(|s| s.state().iter().map(|o| SourceKey::of(o)).collect())
        });
        let Some(existing) = existing else { return };
        // An empty cache right after start says nothing.
        if existing.is_empty() {
            return;
        }
        self.store.retain(|k| existing.contains(k));
        if let Ok(mut w) = self.watchers.lock() {
            w.retain(|k, _| existing.contains(k));
        }
    }

    fn is_leading(&self) -> bool {
        *self.leading.borrow()
    }

    /// Whether to run a pass now: not on a follower, not for a deleted or suspended
    /// source, nor for one
    /// woken (by our own status write, say) before it is due, unless asked or changed.
    fn begin(&self, src: &DPDKConfigSource, key: &SourceKey) -> Begin {
        if !self.is_leading() {
            return Begin::Idle(Action::await_change());
        }
        self.gc();
        if src.meta().deletion_timestamp.is_some() {
            return Begin::Idle(Action::await_change());
        }
        let generation = src.metadata.generation;
        let forced = self.triggers.take(key);
        if src.spec.suspend {
            info!("suspended; not fetching");
            if let Ok(mut w) = self.watchers.lock() {
                w.remove(key);
            }
            return Begin::Idle(Action::await_change());
        }
        let now = Instant::now();
        let (due_at, seen_gen) = self
            .state
            .lock()
            .ok()
            .and_then(|st| st.get(key).map(|s| (s.next_due, s.generation)))
            .unwrap_or((None, None));
        let spec_changed = seen_gen != generation;
        if forced.is_none()
            && !spec_changed
            && let Some(due) = due_at
            && due > now
        {
            return Begin::Idle(Action::requeue(due - now));
        }
        if let Ok(mut st) = self.state.lock() {
            st.entry(key.clone()).or_default().generation = generation;
        }
        Begin::Run(Pass {
            generation,
            webhook_at: (forced == Some(TriggerReason::Webhook)).then(|| Time(Timestamp::now())),
        })
    }
}

/// Whether a pass runs.
enum Begin {
    Idle(Action),
    Run(Pass),
}

/// One pass over a source: the generation it works on, and when a webhook asked for it.
struct Pass {
    generation: Option<i64>,
    webhook_at: Option<Time>,
}

/// Delay before retry number `failures` (1-based): `min` doubling per failure, capped by
/// `max` and by the source's interval (a failing source never waits longer than a
/// healthy one would).
pub(crate) fn backoff_delay(
    failures: u32,
    min: Duration,
    max: Duration,
    interval: Option<Duration>,
) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    let mut d = min.saturating_mul(1u32 << exp).min(max);
    if let Some(i) = interval {
        d = d.min(i.max(min));
    }
    d
}

/// `interval` scaled by a factor in `[1 - jitter, 1 + jitter]`, chosen by `unit` in [0, 1].
pub(crate) fn jittered(interval: Duration, jitter: f64, unit: f64) -> Duration {
    let j = jitter.clamp(0.0, 0.5);
    let factor = 1.0 - j + 2.0 * j * unit.clamp(0.0, 1.0);
    interval.mul_f64(factor)
}

async fn reconcile(
    src: Arc<DPDKConfigSource>,
    ctx: Arc<SourceReconciler>,
) -> Result<Action, Error> {
    let key = SourceKey::of(&src);
    let span = info_span!("reconcile_source", source = %key);
    reconcile_inner(src, ctx, key).instrument(span).await
}

/// One pass: fetch → load/validate → plan → apply → prune ([`sync`]), then metrics and
/// status; a failure goes to [`error_policy`], which retries it by kind.
async fn reconcile_inner(
    src: Arc<DPDKConfigSource>,
    ctx: Arc<SourceReconciler>,
    key: SourceKey,
) -> Result<Action, Error> {
    let pass = match ctx.begin(&src, &key) {
        Begin::Idle(action) => return Ok(action),
        Begin::Run(pass) => pass,
    };
    let attempt = sync(&ctx, &src, &key).await.unwrap_or_else(|f| f);
    if !ctx.is_leading() {
        // Lost the Lease during the pass: the new leader records its own.
        return Ok(Action::await_change());
    }
    record_metrics(&ctx.metrics, &key, &attempt);
    let stamp = StatusStamp {
        generation: pass.generation,
        webhook_at: pass.webhook_at.as_ref(),
        now: &Time(Timestamp::now()),
    };
    write_status(&ctx.client, &src, |st| {
        plan::record_status(st, &attempt, &stamp)
    })
    .await?;
    match attempt.into_error() {
        Some(e) => Err(e),
        None => {
            let interval = parse_interval(&src.spec.interval).unwrap_or(ctx.opts.max_backoff);
            Ok(Action::requeue(ctx.ok_delay(&key, interval)))
        }
    }
}

/// The steps up to the writes. `Err` is an attempt that stopped early (still recorded).
async fn sync(
    ctx: &SourceReconciler,
    src: &DPDKConfigSource,
    key: &SourceKey,
) -> Result<Attempt, Attempt> {
    let failed = |revision: Option<&str>| {
        let revision = revision.map(str::to_string);
        move |error: Error| Attempt::Failed { revision, error }
    };
    let refspec = check_spec(src, ctx.opts.allow_file_urls).map_err(failed(None))?;
    let fetched = fetch(ctx, src, key, &refspec)
        .await
        .map_err(|f| failed(f.revision.as_deref())(f.error))?;
    let manifests = load(ctx, src, &fetched)
        .await
        .map_err(failed(Some(&fetched.revision)))?;
    if src.spec.mode == SourceMode::ReportOnly {
        ctx.store
            .publish(snapshot(src, key, &fetched, &manifests, Vec::new()));
        return Ok(Attempt::Loaded {
            revision: fetched.revision.clone(),
            objects: manifests.objects.len(),
        });
    }
    let live = list_live(&ctx.client)
        .await
        .map_err(failed(Some(&fetched.revision)))?;
    let old_inventory = src
        .status
        .as_ref()
        .map(|s| s.inventory.clone())
        .unwrap_or_default();
    let source_label = key.label_value();
    let plan = plan::plan(&PlanInput {
        source_label: &source_label,
        revision: &fetched.revision,
        desired: &manifests.objects,
        live: &live.objects,
        inventory: &old_inventory,
        prune: src.spec.prune,
    });
    for u in &plan.untouched {
        info!(object = %u.name, owned_by = ?u.owned_by, "left alone: {}", u.reason);
    }
    if !ctx.is_leading() {
        return Err(failed(Some(&fetched.revision))(Error::LostLeadership));
    }
    let applied = apply(ctx, &plan).await;
    let pruned = prune(&ctx.client, plan::to_prune_after(&plan, &applied), &live).await;
    ctx.store.publish(snapshot(
        src,
        key,
        &fetched,
        &manifests,
        plan.untouched.clone(),
    ));
    Ok(Attempt::Applied(AppliedRevision {
        revision: fetched.revision.clone(),
        objects: manifests.objects.len(),
        inventory: plan::next_inventory(&old_inventory, &plan, &applied, &pruned),
        prune_withheld: plan::prune_withheld(&plan, &applied),
        unchanged: plan.unchanged.len(),
        untouched: plan.untouched,
        applied,
        pruned,
    }))
}

/// Check the spec: the interval (at least [`MIN_INTERVAL`](super::spec::MIN_INTERVAL)),
/// the URL (`file://` only with `--allow-file-urls`) and the ref to fetch.
fn check_spec(src: &DPDKConfigSource, allow_file_urls: bool) -> Result<RefSpec, Error> {
    check_interval(&src.spec.interval)?;
    check_url(&src.spec.url, allow_file_urls)?;
    RefSpec::from_git_ref(&src.spec.git_ref)
}

/// Fetch: the Secret's credentials, then the revision into the source's cache.
async fn fetch(
    ctx: &SourceReconciler,
    src: &DPDKConfigSource,
    key: &SourceKey,
    refspec: &RefSpec,
) -> Result<Fetched, FetchFailure> {
    let creds = read_credentials(&ctx.client, src)
        .await
        .map_err(FetchFailure::before_revision)?;
    let cache = ctx.opts.cache_dir.join(&key.namespace).join(&key.name);
    let started = Instant::now();
    let request = ctx.opts.fetch_request(src, refspec.clone(), creds, cache);
    let fetched = git::fetch_async(request).await;
    ctx.metrics
        .observe_fetch(&key.to_string(), fetched.is_ok(), started.elapsed());
    ensure_watcher(ctx, key, &src.spec.url);
    let fetched = fetched
        .inspect_err(|e| warn!(error = %e, "fetch failed"))
        .map_err(FetchFailure::from)?;
    info!(revision = %fetched.revision, shallow = fetched.shallow, "fetched");
    Ok(fetched)
}

/// A failed fetch: the revision when one was fetched and then refused (over a loader
/// limit: `ValidationFailed`), else none (`FetchFailed`).
struct FetchFailure {
    revision: Option<String>,
    error: Error,
}

impl FetchFailure {
    fn before_revision(error: Error) -> FetchFailure {
        FetchFailure {
            revision: None,
            error,
        }
    }
}

impl From<git::FetchError> for FetchFailure {
    fn from(e: git::FetchError) -> FetchFailure {
        let error = match &e.revision {
            Some(revision) => Error::InvalidRevision {
                revision: revision.clone(),
                message: e.message.clone(),
            },
            None => Error::Fetch(e.message.clone()),
        };
        FetchFailure {
            revision: e.revision,
            error,
        }
    }
}

/// Load and validate every DPDKConfig under `spec.path`; any error rejects the revision.
async fn load(
    ctx: &SourceReconciler,
    src: &DPDKConfigSource,
    fetched: &Fetched,
) -> Result<Arc<Manifests>, Error> {
    let path = src.spec.path.clone();
    let load_opts = ctx.opts.load.clone();
    let root = fetched.checkout.clone();
    let manifests = tokio::task::spawn_blocking(move || Manifests::load(&root, &path, &load_opts))
        .await
        .map_err(|e| Error::Task {
            task: "loader",
            message: e.to_string(),
        })?;
    if !manifests.is_valid() {
        let message = plan::rejected_message(&fetched.revision, &manifests);
        warn!(revision = %fetched.revision, "revision rejected: {message}");
        return Err(Error::InvalidRevision {
            revision: fetched.revision.clone(),
            message,
        });
    }
    for w in manifests.warnings() {
        info!(warning = %w, "manifest warning");
    }
    Ok(Arc::new(manifests))
}

/// The snapshot other components read of a good revision.
fn snapshot(
    src: &DPDKConfigSource,
    key: &SourceKey,
    fetched: &Fetched,
    manifests: &Arc<Manifests>,
    untouched: Vec<plan::Untouched>,
) -> SourceSnapshot {
    SourceSnapshot {
        key: key.clone(),
        url: redact_url(&src.spec.url),
        path: normalize_repo_path(&src.spec.path).unwrap_or_default(),
        mode: src.spec.mode,
        ignore_differences: src.spec.ignore_differences.clone(),
        revision: fetched.revision.clone(),
        sha: fetched.sha.clone(),
        checkout: fetched.checkout.clone(),
        manifests: manifests.clone(),
        untouched,
        fetched_at: SystemTime::now(),
    }
}

/// The live DPDKConfigs, for the plan, and their versions, for the prune preconditions.
struct LiveConfigs {
    objects: BTreeMap<String, LiveObject>,
    versions: BTreeMap<String, Preconditions>,
}

fn dpdkconfig_api(client: &Client) -> Api<DynamicObject> {
    let ar = ApiResource::erase::<DPDKConfig>(&());
    Api::all_with(client.clone(), &ar)
}

async fn list_live(client: &Client) -> Result<LiveConfigs, Error> {
    let list = dpdkconfig_api(client)
        .list(&ListParams::default())
        .await
        .map_err(|source| Error::Kube {
            context: "listing DPDKConfigs".into(),
            source,
        })?;
    let mut live = LiveConfigs {
        objects: BTreeMap::new(),
        versions: BTreeMap::new(),
    };
    for o in list.items {
        let name = o.metadata.name.clone().unwrap_or_default();
        live.versions.insert(
            name.clone(),
            Preconditions {
                resource_version: o.metadata.resource_version.clone(),
                uid: o.metadata.uid.clone(),
            },
        );
        let value = serde_json::to_value(&o).unwrap_or_default();
        live.objects.insert(name, plan::live_from_value(value));
    }
    Ok(live)
}

/// Apply: server-side apply (field manager `dpdk-reconciler`, forced) of what the plan
/// writes, `apply_concurrency` at a time.
async fn apply(ctx: &SourceReconciler, plan: &SourcePlan) -> WriteResults {
    let api = dpdkconfig_api(&ctx.client);
    let pp = PatchParams::apply(labels::RECONCILER_MANAGER).force();
    let results: Vec<(String, Result<(), kube::Error>)> =
        futures::stream::iter(plan.apply.iter().cloned())
            .map(|(name, body)| {
                let api = api.clone();
                let pp = pp.clone();
                async move {
                    let r = api
                        .patch(&name, &pp, &Patch::Apply(&body))
                        .await
                        .map(|_| ());
                    (name, r)
                }
            })
            .buffer_unordered(ctx.opts.apply_concurrency.max(1))
            .collect()
            .await;
    let mut out = WriteResults::default();
    for (name, r) in results {
        match r {
            Ok(()) => out.done.push(name),
            Err(e) => out.failed.push(WriteFailure {
                message: format!("DPDKConfig {name}: {e}"),
                kind: ErrorKind::of_kube(&e),
                name,
            }),
        }
    }
    out
}

/// Prune: delete `names`, each only if it is still the version the plan saw.
async fn prune(client: &Client, names: &[String], live: &LiveConfigs) -> WriteResults {
    let api = dpdkconfig_api(client);
    let mut out = WriteResults::default();
    for name in names {
        // Preconditions: if someone changed the object since we looked, don't delete it.
        let dp = DeleteParams {
            preconditions: live.versions.get(name).cloned(),
            ..Default::default()
        };
        match api.delete(name, &dp).await {
            Ok(_) => {
                info!(object = %name, "pruned");
                out.done.push(name.clone());
            }
            Err(kube::Error::Api(e)) if e.code == 404 => out.done.push(name.clone()),
            Err(e) => out.failed.push(WriteFailure {
                name: name.clone(),
                message: format!("pruning DPDKConfig {name}: {e}"),
                kind: ErrorKind::of_kube(&e),
            }),
        }
    }
    out
}

/// The `dpdk_source_*` counters of one attempt.
fn record_metrics(m: &SourceMetrics, key: &SourceKey, attempt: &Attempt) {
    let name = key.to_string();
    match attempt {
        Attempt::Failed {
            error: Error::InvalidRevision { .. },
            ..
        } => m.count(&name, "invalid", 1),
        Attempt::Failed { .. } => {}
        Attempt::Loaded { revision, .. } => m.set_revision(&name, revision),
        Attempt::Applied(a) => {
            m.count(&name, "applied", a.applied.done.len() as u64);
            m.count(&name, "unchanged", a.unchanged as u64);
            m.count(&name, "pruned", a.pruned.done.len() as u64);
            m.count(&name, "skipped", a.untouched.len() as u64);
            m.count(&name, "failed", a.failures().count() as u64);
            if a.complete() {
                m.set_revision(&name, &a.revision);
            }
        }
    }
}

/// Status: writes the status computed by `f` from the current one, unless nothing changed.
async fn write_status(
    client: &Client,
    src: &DPDKConfigSource,
    f: impl FnOnce(&mut DPDKConfigSourceStatus),
) -> Result<(), Error> {
    let current = src.status.clone().unwrap_or_default();
    let mut next = current.clone();
    f(&mut next);
    if next == current {
        return Ok(());
    }
    let key = SourceKey::of(src);
    let api: Api<DPDKConfigSource> = Api::namespaced(client.clone(), &key.namespace);
    // A merge patch replaces lists (conditions, inventory) whole; an empty inventory must
    // be sent explicitly (the type skips empty lists when serializing).
    let mut patch = json!({ "status": next });
    patch["status"]["inventory"] = json!(next.inventory);
    api.patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| Error::Kube {
            context: format!("writing status of DPDKConfigSource {key}"),
            source,
        })?;
    Ok(())
}

async fn read_credentials(client: &Client, src: &DPDKConfigSource) -> Result<Credentials, Error> {
    let Some(r) = &src.spec.secret_ref else {
        return Ok(Credentials::default());
    };
    let ns = src.metadata.namespace.clone().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let secret = api
        .get(&r.name)
        .await
        .map_err(|source| Error::Credentials {
            namespace: ns.clone(),
            name: r.name.clone(),
            source,
        })?;
    Ok(Credentials::from_secret(&secret))
}

/// For file:// sources: fetch when a ref of the local repository changes.
fn ensure_watcher(ctx: &SourceReconciler, key: &SourceKey, url: &str) {
    let Ok(remote) = parse_url(url) else { return };
    let Ok(mut watchers) = ctx.watchers.lock() else {
        return;
    };
    if remote.transport != Transport::File {
        watchers.remove(key);
        return;
    }
    let repo = PathBuf::from(&remote.path);
    let gitdir = if repo.join(".git").is_dir() {
        repo.join(".git")
    } else {
        repo
    };
    if watchers.get(key).is_some_and(|(p, _)| *p == gitdir) {
        return;
    }
    let triggers = ctx.triggers.clone();
    let k = key.clone();
    let handler = move |res: notify::Result<notify::Event>| {
        let Ok(ev) = res else { return };
        let relevant = ev.paths.iter().any(|p| {
            p.components().any(|c| c.as_os_str() == "refs")
                || p.file_name()
                    .is_some_and(|n| n == "packed-refs" || n == "HEAD")
        });
        if relevant && !matches!(ev.kind, notify::EventKind::Access(_)) {
            triggers.fire(&k, TriggerReason::LocalCommit);
        }
    };
    let mut w = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            warn!(error = %e, "cannot watch {}", gitdir.display());
            return;
        }
    };
    let refs = gitdir.join("refs");
    let r1 = w.watch(&refs, notify::RecursiveMode::Recursive);
    let r2 = w.watch(&gitdir, notify::RecursiveMode::NonRecursive);
    if r1.is_err() || r2.is_err() {
        warn!(
            "cannot watch the refs of {}; polling only",
            gitdir.display()
        );
        return;
    }
    watchers.insert(key.clone(), (gitdir, w));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let (min, max) = (Duration::from_secs(2), Duration::from_secs(300));
        let d: Vec<u64> = (1..=10)
            .map(|f| backoff_delay(f, min, max, None).as_secs())
            .collect();
        assert_eq!(d, vec![2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        // Never longer than the interval.
        assert_eq!(
            backoff_delay(9, min, max, Some(Duration::from_secs(60))),
            Duration::from_secs(60)
        );
        assert_eq!(backoff_delay(u32::MAX, min, max, None), max);
    }

    #[test]
    fn each_kind_of_failure_has_its_retry() {
        let policies: Vec<Retry> = [
            ErrorKind::InvalidSpec,
            ErrorKind::InvalidInput,
            ErrorKind::Conflict,
            ErrorKind::Transient,
            ErrorKind::NotFound,
            ErrorKind::Forbidden,
            ErrorKind::Internal,
        ]
        .into_iter()
        .map(retry_policy)
        .collect();
        assert_eq!(
            policies,
            vec![
                Retry::AwaitChange,
                Retry::NextInterval,
                Retry::Soon,
                Retry::Backoff,
                Retry::Backoff,
                Retry::Backoff,
                Retry::Backoff
            ]
        );
    }

    #[test]
    fn jitter_spreads_around_the_interval() {
        let i = Duration::from_secs(100);
        assert_eq!(jittered(i, 0.1, 0.0), Duration::from_secs(90));
        assert_eq!(jittered(i, 0.1, 1.0), Duration::from_secs(110));
        assert_eq!(jittered(i, 0.1, 0.5), i);
        assert_eq!(jittered(i, 0.0, 0.9), i);
    }
}
