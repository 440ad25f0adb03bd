//! The reconcile loop of DPDKConfigSource: thin I/O glue around [`super::git`],
//! [`crate::manifest`] and [`super::plan`].

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use dpdk_bridge::api::{
    DPDKConfig, DPDKConfigSource, DPDKConfigSourceStatus, InventoryEntry, SourceMode,
};
use dpdk_bridge::conditions::{self, Health};
use dpdk_bridge::labels;
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
use tokio::sync::mpsc;
use tracing::{Instrument, info, info_span, warn};

use super::auth::Credentials;
use super::git::{self, Fetched};
use super::plan::{self, LiveObject, PlanInput};
use super::spec::{RefSpec, Transport, parse_interval, parse_url};
use super::{
    SourceKey, SourceMetrics, SourceOptions, SourceSnapshot, SourceStore, TriggerReason, Triggers,
};
use crate::Error;
use crate::manifest::Manifests;
use crate::manifest::load::normalize_repo_path;

/// How many diagnostics the status message lists before "and N more".
const STATUS_DIAGNOSTICS: usize = 5;

#[derive(Default)]
struct RunState {
    next_due: Option<Instant>,
    generation: Option<i64>,
    failures: u32,
}

struct Ctx {
    client: Client,
    opts: SourceOptions,
    store: SourceStore,
    triggers: Triggers,
    metrics: SourceMetrics,
    state: Mutex<HashMap<SourceKey, RunState>>,
    watchers: Mutex<HashMap<SourceKey, (PathBuf, notify::RecommendedWatcher)>>,
    sources: Mutex<Option<Store<DPDKConfigSource>>>,
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
    client: Client,
    opts: SourceOptions,
    store: SourceStore,
    triggers: Triggers,
    rx: mpsc::UnboundedReceiver<ObjectRef<DPDKConfigSource>>,
    metrics: SourceMetrics,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let api: Api<DPDKConfigSource> = match &opts.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let ctx = Arc::new(Ctx {
        client,
        opts,
        store,
        triggers,
        metrics,
        state: Mutex::default(),
        watchers: Mutex::default(),
        sources: Mutex::default(),
    });
    // kube's per-object `reconcile_on` is unstable; wake every source instead: the one
    // asked for is marked forced, the others find they are not due and go back to sleep.
    let trigger_stream =
        futures::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|_| ((), rx)) },
        );
    let controller = Controller::new(api, watcher::Config::default())
        .reconcile_all_on(trigger_stream)
        .graceful_shutdown_on(shutdown);
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
    // Stop the file watchers.
    if let Ok(mut w) = ctx.watchers.lock() {
        w.clear();
    }
}

fn error_policy(src: Arc<DPDKConfigSource>, err: &Error, ctx: Arc<Ctx>) -> Action {
    let key = SourceKey::of(&src);
    warn!(source = %key, error = %err, "retrying");
    Action::requeue(ctx.fail_delay(&key, None))
}

impl Ctx {
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
        let d = jittered(interval, self.opts.jitter, rand::rng().random::<f64>());
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

async fn reconcile(src: Arc<DPDKConfigSource>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let key = SourceKey::of(&src);
    let span = info_span!("reconcile_source", source = %key);
    reconcile_inner(src, ctx, key).instrument(span).await
}

async fn reconcile_inner(
    src: Arc<DPDKConfigSource>,
    ctx: Arc<Ctx>,
    key: SourceKey,
) -> Result<Action, Error> {
    ctx.gc();
    if src.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let generation = src.metadata.generation;
    let forced = ctx.triggers.take(&key);
    if src.spec.suspend {
        info!("suspended; not fetching");
        if let Ok(mut w) = ctx.watchers.lock() {
            w.remove(&key);
        }
        return Ok(Action::await_change());
    }
    let interval = match parse_interval(&src.spec.interval) {
        Ok(i) => i,
        Err(e) => {
            write_status(&ctx, &src, |st| stalled(st, "InvalidSpec", &e, generation)).await?;
            return Ok(Action::await_change());
        }
    };
    // Our own status writes wake us too: only work when due, asked, or the spec changed.
    let now = Instant::now();
    let (due_at, seen_gen) = ctx
        .state
        .lock()
        .ok()
        .and_then(|st| st.get(&key).map(|s| (s.next_due, s.generation)))
        .unwrap_or((None, None));
    let spec_changed = seen_gen != generation;
    if forced.is_none() && !spec_changed {
        if let Some(due) = due_at
            && due > now
        {
            return Ok(Action::requeue(due - now));
        }
    }
    if let Ok(mut st) = ctx.state.lock() {
        st.entry(key.clone()).or_default().generation = generation;
    }
    let webhook_at = (forced == Some(TriggerReason::Webhook)).then(|| Time(Timestamp::now()));

    // Fetch.
    let refspec = match RefSpec::from_git_ref(&src.spec.git_ref) {
        Ok(r) => r,
        Err(e) => {
            write_status(&ctx, &src, |st| stalled(st, "InvalidSpec", &e, generation)).await?;
            return Ok(Action::await_change());
        }
    };
    let creds = match read_credentials(&ctx.client, &src).await {
        Ok(c) => c,
        Err(e) => {
            write_status(&ctx, &src, |st| {
                stalled(st, "FetchFailed", &e, generation);
                set_webhook(st, &webhook_at);
            })
            .await?;
            return Ok(Action::requeue(ctx.fail_delay(&key, Some(interval))));
        }
    };
    let cache = ctx.opts.cache_dir.join(&key.namespace).join(&key.name);
    let started = Instant::now();
    let fetched = fetch_blocking(
        &src.spec.url,
        &refspec,
        &creds,
        &cache,
        ctx.opts.fetch_timeout,
    )
    .await;
    let result = if fetched.is_ok() { "success" } else { "error" };
    ctx.metrics
        .fetch_duration
        .get_or_create(&super::SourceLabels {
            source: key.to_string(),
            result: result.to_string(),
        })
        .observe(started.elapsed().as_secs_f64());
    ensure_watcher(&ctx, &key, &src.spec.url);
    let fetched = match fetched {
        Ok(f) => f,
        Err(e) => {
            warn!(error = %e, "fetch failed");
            write_status(&ctx, &src, |st| {
                stalled(st, "FetchFailed", &e, generation);
                set_webhook(st, &webhook_at);
            })
            .await?;
            return Ok(Action::requeue(ctx.fail_delay(&key, Some(interval))));
        }
    };
    info!(revision = %fetched.revision, shallow = fetched.shallow, "fetched");

    // Load and validate.
    let path = src.spec.path.clone();
    let load_opts = ctx.opts.load.clone();
    let root = fetched.checkout.clone();
    let manifests = tokio::task::spawn_blocking(move || Manifests::load(&root, &path, &load_opts))
        .await
        .map_err(|e| Error::Source {
            key: key.to_string(),
            message: format!("loader task: {e}"),
        })?;
    if !manifests.is_valid() {
        let msg = diagnostics_message(&fetched.revision, &manifests);
        warn!(revision = %fetched.revision, "revision rejected: {msg}");
        ctx.metrics.count(&key.to_string(), "invalid", 1);
        write_status(&ctx, &src, |st| {
            stalled(st, "ValidationFailed", &msg, generation);
            st.last_fetched_revision = Some(fetched.revision.clone());
            st.last_attempted_revision = Some(fetched.revision.clone());
            set_webhook(st, &webhook_at);
        })
        .await?;
        return Ok(Action::requeue(ctx.fail_delay(&key, Some(interval))));
    }
    for w in manifests.warnings() {
        info!(warning = %w, "manifest warning");
    }
    let manifests = Arc::new(manifests);
    let snapshot = |untouched| SourceSnapshot {
        key: key.clone(),
        url: src.spec.url.clone(),
        path: normalize_repo_path(&src.spec.path).unwrap_or_default(),
        mode: src.spec.mode,
        ignore_differences: src.spec.ignore_differences.clone(),
        revision: fetched.revision.clone(),
        sha: fetched.sha.clone(),
        checkout: fetched.checkout.clone(),
        manifests: manifests.clone(),
        untouched,
        fetched_at: SystemTime::now(),
    };

    if src.spec.mode == SourceMode::ReportOnly {
        ctx.store.publish(snapshot(Vec::new()));
        ctx.metrics
            .set_revision(&key.to_string(), &fetched.revision);
        let msg = format!(
            "Loaded revision {} ({} DPDKConfigs); mode ReportOnly applies nothing",
            fetched.revision,
            manifests.objects.len()
        );
        write_status(&ctx, &src, |st| {
            conditions::apply_health(
                &mut st.conditions,
                &Health::Ready {
                    reason: "ReportOnly".into(),
                    message: msg.clone(),
                },
                generation,
                &Time(Timestamp::now()),
            );
            st.observed_generation = generation;
            st.last_fetched_revision = Some(fetched.revision.clone());
            st.last_attempted_revision = Some(fetched.revision.clone());
            set_webhook(st, &webhook_at);
        })
        .await?;
        return Ok(Action::requeue(ctx.ok_delay(&key, interval)));
    }

    // Apply and prune.
    let outcome = apply_revision(&ctx, &src, &key, &fetched, &manifests).await?;
    ctx.store.publish(snapshot(outcome.untouched.clone()));
    let name = key.to_string();
    ctx.metrics
        .count(&name, "applied", outcome.applied.len() as u64);
    ctx.metrics
        .count(&name, "unchanged", outcome.unchanged as u64);
    ctx.metrics
        .count(&name, "pruned", outcome.pruned.len() as u64);
    ctx.metrics
        .count(&name, "skipped", outcome.untouched.len() as u64);
    ctx.metrics
        .count(&name, "failed", outcome.failures.len() as u64);
    let ok = outcome.failures.is_empty();
    if ok {
        ctx.metrics.set_revision(&name, &fetched.revision);
    }
    let mut message = if ok {
        format!(
            "Applied revision {}: {} DPDKConfigs ({} written, {} unchanged), {} pruned",
            fetched.revision,
            manifests.objects.len(),
            outcome.applied.len(),
            outcome.unchanged,
            outcome.pruned.len()
        )
    } else {
        format!(
            "Applying revision {} failed: {}",
            fetched.revision,
            outcome.failures.join("; ")
        )
    };
    if !outcome.untouched.is_empty() {
        let list: Vec<String> = outcome
            .untouched
            .iter()
            .map(|u| match u.owned_by {
                Some(by) => format!("{} (ownedBy: {})", u.name, by.as_str()),
                None => format!("{} ({})", u.name, u.reason),
            })
            .collect();
        message.push_str(&format!("; left alone: {}", list.join(", ")));
    }
    write_status(&ctx, &src, |st| {
        let now = Time(Timestamp::now());
        if ok {
            conditions::apply_health(
                &mut st.conditions,
                &Health::Ready {
                    reason: "Applied".into(),
                    message: message.clone(),
                },
                generation,
                &now,
            );
            st.last_applied_revision = Some(fetched.revision.clone());
        } else {
            conditions::apply_health(
                &mut st.conditions,
                &Health::Stalled {
                    reason: "ApplyFailed".into(),
                    message: message.clone(),
                },
                generation,
                &now,
            );
        }
        st.observed_generation = generation;
        st.last_fetched_revision = Some(fetched.revision.clone());
        st.last_attempted_revision = Some(fetched.revision.clone());
        st.inventory = outcome.inventory.clone();
        set_webhook(st, &webhook_at);
    })
    .await?;
    Ok(Action::requeue(if ok {
        ctx.ok_delay(&key, interval)
    } else {
        ctx.fail_delay(&key, Some(interval))
    }))
}

fn set_webhook(st: &mut DPDKConfigSourceStatus, at: &Option<Time>) {
    if let Some(t) = at {
        st.last_handled_webhook_at = Some(t.clone());
    }
}

fn stalled(st: &mut DPDKConfigSourceStatus, reason: &str, message: &str, generation: Option<i64>) {
    conditions::apply_health(
        &mut st.conditions,
        &Health::Stalled {
            reason: reason.into(),
            message: message.into(),
        },
        generation,
        &Time(Timestamp::now()),
    );
    st.observed_generation = generation;
}

/// `revision X rejected: file:line:col: msg; ...; and N more`.
fn diagnostics_message(revision: &str, m: &Manifests) -> String {
    let errors: Vec<String> = m.errors().map(|d| d.to_string()).collect();
    let mut msg = format!("revision {revision} rejected, nothing applied: ");
    msg.push_str(
        &errors
            .iter()
            .take(STATUS_DIAGNOSTICS)
            .cloned()
            .collect::<Vec<_>>()
            .join("; "),
    );
    if errors.len() > STATUS_DIAGNOSTICS {
        msg.push_str(&format!("; and {} more", errors.len() - STATUS_DIAGNOSTICS));
    }
    msg
}

/// Writes the status computed by `f` from the current one, unless nothing changed.
async fn write_status(
    ctx: &Ctx,
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
    let api: Api<DPDKConfigSource> = Api::namespaced(ctx.client.clone(), &key.namespace);
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

async fn read_credentials(client: &Client, src: &DPDKConfigSource) -> Result<Credentials, String> {
    let Some(r) = &src.spec.secret_ref else {
        return Ok(Credentials::default());
    };
    let ns = src.metadata.namespace.clone().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let secret = api
        .get(&r.name)
        .await
        .map_err(|e| format!("reading Secret {ns}/{}: {e}", r.name))?;
    Ok(Credentials::from_secret(&secret))
}

async fn fetch_blocking(
    url: &str,
    refspec: &RefSpec,
    creds: &Credentials,
    cache: &Path,
    timeout: Duration,
) -> Result<Fetched, String> {
    let (url, refspec, creds, cache) = (
        url.to_string(),
        refspec.clone(),
        creds.clone(),
        cache.to_path_buf(),
    );
    let task = tokio::task::spawn_blocking(move || git::fetch(&url, &refspec, &creds, &cache));
    match tokio::time::timeout(timeout, task).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(format!("fetch task: {e}")),
        Err(_) => Err(format!("fetch timed out after {}s", timeout.as_secs())),
    }
}

/// For file:// sources: fetch when a ref of the local repository changes.
fn ensure_watcher(ctx: &Arc<Ctx>, key: &SourceKey, url: &str) {
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

struct ApplyOutcome {
    applied: Vec<String>,
    unchanged: usize,
    pruned: Vec<String>,
    untouched: Vec<plan::Untouched>,
    failures: Vec<String>,
    inventory: Vec<InventoryEntry>,
}

fn dpdkconfig_api(client: &Client) -> Api<DynamicObject> {
    let ar = ApiResource::erase::<DPDKConfig>(&());
    Api::all_with(client.clone(), &ar)
}

async fn apply_revision(
    ctx: &Ctx,
    src: &DPDKConfigSource,
    key: &SourceKey,
    fetched: &Fetched,
    manifests: &Manifests,
) -> Result<ApplyOutcome, Error> {
    let api = dpdkconfig_api(&ctx.client);
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|source| Error::Kube {
            context: "listing DPDKConfigs".into(),
            source,
        })?;
    let mut live: BTreeMap<String, LiveObject> = BTreeMap::new();
    let mut versions: BTreeMap<String, (Option<String>, Option<String>)> = BTreeMap::new();
    for o in list.items {
        let name = o.metadata.name.clone().unwrap_or_default();
        versions.insert(
            name.clone(),
            (o.metadata.resource_version.clone(), o.metadata.uid.clone()),
        );
        let value = serde_json::to_value(&o).unwrap_or_default();
        live.insert(name, plan::live_from_value(value));
    }
    let old_inventory = src
        .status
        .as_ref()
        .map(|s| s.inventory.clone())
        .unwrap_or_default();
    let source_label = key.label_value();
    let p = plan::plan(&PlanInput {
        source_label: &source_label,
        revision: &fetched.revision,
        desired: &manifests.objects,
        live: &live,
        inventory: &old_inventory,
        prune: src.spec.prune,
    });
    for u in &p.untouched {
        info!(object = %u.name, owned_by = ?u.owned_by, "left alone: {}", u.reason);
    }

    let pp = PatchParams::apply(labels::RECONCILER_MANAGER).force();
    let results: Vec<(String, Result<(), String>)> = futures::stream::iter(p.apply.iter().cloned())
        .map(|(name, body)| {
            let api = api.clone();
            let pp = pp.clone();
            async move {
                let r = api
                    .patch(&name, &pp, &Patch::Apply(&body))
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("DPDKConfig {name}: {e}"));
                (name, r)
            }
        })
        .buffer_unordered(ctx.opts.apply_concurrency.max(1))
        .collect()
        .await;
    let mut applied = Vec::new();
    let mut failures = Vec::new();
    for (name, r) in results {
        match r {
            Ok(()) => applied.push(name),
            Err(e) => failures.push(e),
        }
    }
    let mut pruned = Vec::new();
    let mut prune_failed = Vec::new();
    for name in &p.prune {
        // Preconditions: if someone changed the object since we looked, don't delete it.
        let (rv, uid) = versions.get(name).cloned().unwrap_or_default();
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: rv,
                uid,
            }),
            ..Default::default()
        };
        match api.delete(name, &dp).await {
            Ok(_) => {
                info!(object = %name, "pruned");
                pruned.push(name.clone());
            }
            Err(kube::Error::Api(e)) if e.code == 404 => pruned.push(name.clone()),
            Err(e) => {
                failures.push(format!("pruning DPDKConfig {name}: {e}"));
                prune_failed.push(name.clone());
            }
        }
    }
    // The inventory: what this source now manages. Failed applies of objects we managed
    // before stay in it, so a later revision can still prune them.
    let mut inv: std::collections::BTreeSet<String> = applied.iter().cloned().collect();
    inv.extend(p.unchanged.iter().cloned());
    inv.extend(prune_failed);
    for e in &old_inventory {
        if !failures.is_empty() && p.apply.iter().any(|(n, _)| n == &e.name) {
            inv.insert(e.name.clone());
        }
    }
    Ok(ApplyOutcome {
        applied,
        unchanged: p.unchanged.len(),
        pruned,
        untouched: p.untouched,
        failures,
        inventory: inv.iter().map(|n| plan::inventory_entry(n)).collect(),
    })
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
    fn jitter_spreads_around_the_interval() {
        let i = Duration::from_secs(100);
        assert_eq!(jittered(i, 0.1, 0.0), Duration::from_secs(90));
        assert_eq!(jittered(i, 0.1, 1.0), Duration::from_secs(110));
        assert_eq!(jittered(i, 0.1, 0.5), i);
        assert_eq!(jittered(i, 0.0, 0.9), i);
    }
}
