//! The DPDK controller: watches DPDKConfig, Node, NodeENI and DPDKNodeState, plans with
//! the pure planner in `dpdk_bridge::plan`, and writes by server-side apply with field
//! manager `dpdk-controller`.
//!
//! One reconcile pass plans the whole cluster from the caches (conflicts between configs
//! and shared NodeENIs are global), then executes the writes stage by stage. Passes are
//! event-driven (any watch event, debounced), plus a periodic resync and the planner's
//! wake-ups for teardown timeouts. A pass over a converged cluster writes nothing.
//! Only the leader of the `coordination.k8s.io` Lease runs passes; followers keep warm
//! caches.

pub mod cache;
pub mod leader;
pub mod writer;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dpdk_bridge::labels::CONTROLLER_MANAGER;
use dpdk_bridge::plan::{self, Kind, PlannedEvent, ServerConflict, Settings, Snapshot, Write};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};
use tokio::sync::{Mutex, Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::Error;
use crate::metrics::ControllerMetrics;
use crate::server::Probes;
use cache::{Caches, Expectations};
pub use leader::LeaderElectionConfig;
use writer::{Outcome, Writer, kind_name};

/// The readiness check this controller registers.
pub const HEALTH_CHECK: &str = "dpdk-controller";

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Apply over other field managers' values on NodeENIs and node labels.
    pub force_conflicts: bool,
    /// How long teardown waits for a node whose agent never reported.
    pub teardown_timeout: Duration,
    /// A full pass at least this often, even without watch events.
    pub resync_interval: Duration,
    /// Only DPDKConfigs matching this label selector (sharding); all when `None`.
    pub config_selector: Option<String>,
    /// Writes in flight at once.
    pub concurrency: usize,
    /// Quiet time after a watch event before a pass starts, so bursts coalesce.
    pub debounce: Duration,
    /// Longest wait between retries of a failed pass (it starts at 250 ms and doubles).
    pub max_backoff: Duration,
    /// `None`: this replica always leads (`--no-leader-election`).
    pub leader_election: Option<LeaderElectionConfig>,
    /// Write `enableDPDK` only after the agents bound the devices (`Settings::enable_after_bound`).
    /// `dpdk-reconciler run` sets it unless `--enable-dpdk-immediately`.
    pub enable_dpdk_after_bound: bool,
    /// Reporting instance on Events.
    pub identity: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            force_conflicts: false,
            teardown_timeout: Duration::from_secs(300),
            resync_interval: Duration::from_secs(600),
            config_selector: None,
            concurrency: 16,
            debounce: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            leader_election: None,
            enable_dpdk_after_bound: false,
            identity: default_identity(),
        }
    }
}

/// The pod name when run in a pod (`POD_NAME`), else the host name and pid.
pub fn default_identity() -> String {
    if let Ok(p) = std::env::var("POD_NAME")
        && !p.is_empty()
    {
        return p;
    }
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    format!(
        "{}-{}",
        if host.is_empty() {
            "dpdk-reconciler"
        } else {
            &host
        },
        std::process::id()
    )
}

/// Command-line flags of the controller (part of `dpdk-reconciler run`).
#[derive(clap::Args, Clone, Debug)]
pub struct ControllerArgs {
    /// Take over NodeENI DPDK fields and the node label when another field manager holds
    /// them with a different value (server-side apply force). Off: such conflicts are
    /// reported in the DPDKConfig status and a Warning event, and left alone.
    #[arg(long)]
    pub force_conflicts: bool,
    /// Write a NodeENI's enableDPDK as soon as a config claims it, before the node agents
    /// bound its devices (the old ordering). The AWS Multi-ENI Controller's ENI manager
    /// then binds them too; see docs/multi-eni-controller.md.
    #[arg(long)]
    pub enable_dpdk_immediately: bool,
    /// How long teardown waits for a node whose agent never reported before releasing the
    /// NodeENI fields and the node label anyway (a Go duration: 500ms, 30s, 5m, 1h30m).
    #[arg(long, default_value = "5m", value_parser = dpdk_bridge::duration::parse)]
    pub teardown_timeout: Duration,
    /// A full reconcile pass at least this often, even without changes (a Go duration).
    #[arg(long, default_value = "10m", value_parser = dpdk_bridge::duration::parse)]
    pub resync_interval: Duration,
    /// Only handle DPDKConfigs with these labels (e.g. `shard=a`), for sharding.
    #[arg(long)]
    pub config_selector: Option<String>,
    /// Writes in flight at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    /// Run without leader election (a single replica).
    #[arg(long)]
    pub no_leader_election: bool,
    /// Namespace of the leader-election Lease.
    #[arg(long, default_value = "dpdk-operator")]
    pub leader_election_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "dpdk-controller")]
    pub lease_name: String,
    /// This replica's identity in the Lease and on Events (default: $POD_NAME, else host-pid).
    #[arg(long)]
    pub identity: Option<String>,
    /// How long a leader's Lease is valid without renewal (a Go duration).
    #[arg(long, default_value = "15s", value_parser = dpdk_bridge::duration::parse)]
    pub lease_duration: Duration,
    /// A leader that cannot renew for this long stops writing (a Go duration, less than
    /// --lease-duration).
    #[arg(long, default_value = "10s", value_parser = dpdk_bridge::duration::parse)]
    pub renew_deadline: Duration,
    /// How often to try to acquire or renew the Lease (a Go duration, less than
    /// --renew-deadline).
    #[arg(long, default_value = "2s", value_parser = dpdk_bridge::duration::parse)]
    pub retry_period: Duration,
}

impl ControllerArgs {
    /// Checks the flags together and builds [`Options`]; errors name the flag.
    pub fn into_options(self) -> Result<Options, Error> {
        if self.renew_deadline >= self.lease_duration {
            return Err(Error::Flag(
                "--renew-deadline must be shorter than --lease-duration".into(),
            ));
        }
        if self.retry_period >= self.renew_deadline {
            return Err(Error::Flag(
                "--retry-period must be shorter than --renew-deadline".into(),
            ));
        }
        if let Some(sel) = &self.config_selector
            && sel.trim().is_empty()
        {
            return Err(Error::Flag("--config-selector must not be empty".into()));
        }
        let identity = self.identity.unwrap_or_else(default_identity);
        let leader_election = (!self.no_leader_election).then(|| LeaderElectionConfig {
            namespace: self.leader_election_namespace,
            lease_name: self.lease_name,
            identity: identity.clone(),
            lease_duration: self.lease_duration,
            renew_deadline: self.renew_deadline,
            retry_period: self.retry_period,
        });
        Ok(Options {
            force_conflicts: self.force_conflicts,
            teardown_timeout: self.teardown_timeout,
            resync_interval: self.resync_interval,
            config_selector: self.config_selector,
            concurrency: self.concurrency as usize,
            leader_election,
            enable_dpdk_after_bound: !self.enable_dpdk_immediately,
            identity,
            ..Options::default()
        })
    }
}

/// Metrics and health the controller reports into.
#[derive(Clone)]
pub struct Telemetry {
    pub metrics: Arc<ControllerMetrics>,
    pub health: Probes,
}

impl Telemetry {
    /// Metrics in a private registry (tests, embedding).
    pub fn standalone() -> Self {
        Telemetry {
            metrics: Arc::new(ControllerMetrics::unregistered()),
            health: Probes::new(),
        }
    }
}

/// Runs the controller until `shutdown` is cancelled.
pub async fn run(client: Client, opts: Options, shutdown: CancellationToken) -> Result<(), Error> {
    run_with(client, opts, Telemetry::standalone(), shutdown).await
}

/// Runs the controller with the given metrics and health checks until `shutdown`.
pub async fn run_with(
    client: Client,
    opts: Options,
    telemetry: Telemetry,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let watch_stop = shutdown.child_token();
    let watches = start_watches(&client, &opts, &telemetry, Vec::new(), watch_stop.clone());
    let result = run_on(client, opts, telemetry, watches, shutdown).await;
    watch_stop.cancel();
    result
}

/// The controller's caches and the signals its watches raise.
pub struct Watches {
    /// Shared: other readers (the drift runtime) may read the same caches.
    pub caches: Caches,
    expectations: Arc<Expectations>,
    trigger: Arc<Notify>,
}

/// Starts the controller's watches until `stop`. `also_notify` are other consumers of the
/// same caches (the drift runtime), each woken on every change.
pub fn start_watches(
    client: &Client,
    opts: &Options,
    telemetry: &Telemetry,
    also_notify: Vec<Arc<Notify>>,
    stop: CancellationToken,
) -> Watches {
    let trigger = Arc::new(Notify::new());
    let expectations = Arc::new(Expectations::default());
    let mut triggers = vec![trigger.clone()];
    triggers.extend(also_notify);
    let caches = cache::start(
        client,
        opts.config_selector.as_deref(),
        cache::Subscribers {
            expectations: Some(expectations.clone()),
            triggers,
            metrics: Some(telemetry.metrics.clone()),
        },
        stop,
    );
    Watches {
        caches,
        expectations,
        trigger,
    }
}

/// Runs the controller on watches started by [`start_watches`] until `shutdown`, with
/// its own election (`opts.leader_election`).
pub async fn run_on(
    client: Client,
    opts: Options,
    telemetry: Telemetry,
    watches: Watches,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    // Child token: stopping the controller stops its election too.
    let stop = shutdown.child_token();
    let election = leader::Election::start(&client, opts.leader_election.clone(), stop.clone());
    let leading = election.subscribe();
    let result = run_led(client, opts, telemetry, watches, leading, stop.clone()).await;
    stop.cancel();
    election.finish().await;
    result
}

/// Runs the controller on `watches` until `stop`, writing only while `leading` is true
/// (an [`leader::Election`] shared with the Git source, in `dpdk-reconciler run`).
pub async fn run_led(
    client: Client,
    opts: Options,
    telemetry: Telemetry,
    watches: Watches,
    mut leading: watch::Receiver<bool>,
    stop: CancellationToken,
) -> Result<(), Error> {
    let Telemetry { metrics, health } = telemetry;
    let Watches {
        caches,
        expectations,
        trigger,
    } = watches;
    health.register(HEALTH_CHECK);

    tokio::select! {
        ok = caches.wait_until_ready() => if !ok {
            return Err(Error::CachesStopped);
        },
        _ = stop.cancelled() => return Ok(()),
    }
    health.set_ready(HEALTH_CHECK, true, "caches synced");
    tracing::info!(identity = %opts.identity, "caches synced");

    let reconciler = Reconciler {
        writer: Writer::new(&client),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: CONTROLLER_MANAGER.into(),
                instance: Some(opts.identity.clone()),
            },
        ),
        caches,
        expectations,
        server_conflicts: Mutex::new(Vec::new()),
        metrics: metrics.clone(),
        leading: Arc::new(AtomicBool::new(false)),
        passes: AtomicU64::new(0),
        settings: Settings {
            force_conflicts: opts.force_conflicts,
            teardown_timeout: opts.teardown_timeout,
            cluster_scope: opts.config_selector.is_none(),
            enable_after_bound: opts.enable_dpdk_after_bound,
        },
        concurrency: opts.concurrency.max(1),
    };

    let mut backoff = Duration::from_millis(250);
    let mut next: Option<Instant> = Some(Instant::now());
    loop {
        let is_leader = *leading.borrow();
        reconciler.leading.store(is_leader, Ordering::SeqCst);
        metrics.leader.set(is_leader as i64);
        if !is_leader {
            tokio::select! {
                _ = stop.cancelled() => break,
                r = leading.changed() => {
                    if r.is_err() {
                        break;
                    }
                    if *leading.borrow() {
                        // A new term: what a previous leader expected is not ours to trust.
                        reconciler.expectations.clear();
                        next = Some(Instant::now());
                    }
                    continue;
                }
            }
        }
        let deadline = next.unwrap_or_else(|| Instant::now() + opts.resync_interval);
        tokio::select! {
            _ = stop.cancelled() => break,
            r = leading.changed() => {
                if r.is_err() {
                    // The election ended (it only does when stopping).
                    break;
                }
                continue;
            }
            _ = trigger.notified() => {
                // Let a burst of events settle into one pass.
                tokio::time::sleep(opts.debounce).await;
            }
            _ = tokio::time::sleep_until(deadline.into()) => {}
        }
        if !*leading.borrow() {
            continue;
        }
        let n = reconciler.passes.fetch_add(1, Ordering::Relaxed) + 1;
        let started = Instant::now();
        let span = tracing::info_span!("reconcile", pass = n);
        let result = reconciler.pass().instrument(span.clone()).await;
        metrics
            .reconcile_duration
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(outcome) => {
                metrics
                    .reconciles
                    .get_or_create(&crate::metrics::ResultLabels {
                        result: "success".into(),
                    })
                    .inc();
                backoff = Duration::from_millis(250);
                let mut wait = opts.resync_interval;
                if let Some(r) = outcome.requeue_after {
                    wait = wait.min(r);
                }
                if outcome.skipped > 0 {
                    // Waiting for our own writes to show up in the caches; the watch event
                    // normally triggers the next pass, this is the safety net.
                    wait = wait.min(Duration::from_secs(2));
                }
                next = Some(Instant::now() + wait);
                let _e = span.enter();
                tracing::debug!(
                    writes = outcome.writes,
                    skipped = outcome.skipped,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "pass done"
                );
            }
            Err(e) => {
                metrics
                    .reconciles
                    .get_or_create(&crate::metrics::ResultLabels {
                        result: "error".into(),
                    })
                    .inc();
                let _e = span.enter();
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "pass failed; retrying");
                next = Some(Instant::now() + backoff);
                backoff = (backoff * 2).min(opts.max_backoff);
            }
        }
    }
    metrics.leader.set(0);
    health.set_ready(HEALTH_CHECK, false, "stopped");
    Ok(())
}

struct PassOutcome {
    writes: usize,
    skipped: usize,
    requeue_after: Option<Duration>,
}

struct Reconciler {
    writer: Writer,
    recorder: Recorder,
    caches: Caches,
    expectations: Arc<Expectations>,
    server_conflicts: Mutex<Vec<ServerConflict>>,
    metrics: Arc<ControllerMetrics>,
    leading: Arc<AtomicBool>,
    passes: AtomicU64,
    settings: Settings,
    concurrency: usize,
}

impl Reconciler {
    async fn pass(&self) -> Result<PassOutcome, Error> {
        self.expectations.sweep();
        let configs = self.caches.configs.state();
        let nodes = self.caches.nodes.state();
        let node_enis = self.caches.node_enis.state();
        let node_states = self.caches.node_states.state();
        // Apply conflicts stay relevant only while the object is unchanged.
        let server_conflicts: Vec<ServerConflict> = {
            let mut sc = self.server_conflicts.lock().await;
            sc.retain(|c| {
                self.caches.resource_version(c.kind, &c.name).as_deref()
                    == Some(c.resource_version.as_str())
            });
            sc.clone()
        };
        let snapshot = Snapshot {
            configs: configs.iter().map(|c| c.as_ref()).collect(),
            nodes: nodes.iter().map(|n| &n.metadata).collect(),
            node_enis: node_enis.iter().map(|e| e.as_ref()).collect(),
            node_states: node_states.iter().map(|s| s.as_ref()).collect(),
            server_conflicts: server_conflicts.iter().collect(),
        };
        let planned = plan::plan(&snapshot, &self.settings, Timestamp::now());
        // The plan owns its data. Holding the snapshot through a long pass would keep the
        // old version of every object the pass rewrites alive next to the new one.
        drop(snapshot);
        drop((configs, nodes, node_enis, node_states, server_conflicts));
        self.record_stats(&planned.stats);
        self.record_rollouts(&planned.rollouts);

        // Skip writes whose object still shows an older version than one we wrote.
        let mut skipped_targets: HashSet<(Kind, String)> = HashSet::new();
        let mut writes: Vec<&Write> = Vec::with_capacity(planned.writes.len());
        for w in &planned.writes {
            let (kind, name) = w.target();
            let rv = self.caches.resource_version(kind, name);
            if self.expectations.pending(kind, name, rv.as_deref()) {
                skipped_targets.insert((kind, name.to_string()));
            } else {
                writes.push(w);
            }
        }
        let skipped = planned.writes.len() - writes.len();

        let mut succeeded: HashSet<(Kind, String)> = HashSet::new();
        let mut failures: Vec<String> = Vec::new();
        let mut failure_kinds: Vec<crate::ErrorKind> = Vec::new();
        let mut written = 0;
        let mut replan = false;
        let mut i = 0;
        while i < writes.len() {
            let stage = writes[i].stage();
            let end = writes[i..]
                .iter()
                .position(|w| w.stage() != stage)
                .map_or(writes.len(), |p| i + p);
            if !self.leading.load(Ordering::SeqCst) {
                return Err(Error::LostLeadership);
            }
            let batch = &writes[i..end];
            // At most `concurrency` write futures exist at once: built up front, a stage of
            // 4000 NodeENI writes held 4000 request futures (≈ 7 MB). A plain loop, not a
            // stream combinator with a closure, keeps the Send check simple.
            let mut in_flight = FuturesUnordered::new();
            let mut pending = batch.iter();
            let mut results: Vec<(&Write, Result<Outcome, kube::Error>)> =
                Vec::with_capacity(batch.len());
            loop {
                while in_flight.len() < self.concurrency {
                    match pending.next() {
                        Some(w) => in_flight.push(self.exec_one(w)),
                        None => break,
                    }
                }
                match in_flight.next().await {
                    Some(r) => results.push(r),
                    None => break,
                }
            }
            for (w, r) in results {
                let (kind, name) = w.target();
                let kind_s = kind_name(kind);
                match r {
                    Ok(Outcome::Written(rv)) => {
                        written += 1;
                        self.metrics.count_write(kind_s, w.op(), "success");
                        self.expectations.expect(kind, name, rv);
                        succeeded.insert((kind, name.to_string()));
                        tracing::debug!(kind = kind_s, name, op = w.op(), "written");
                    }
                    Ok(Outcome::Conflict(conflicts)) => {
                        self.metrics.count_write(kind_s, w.op(), "conflict");
                        let managers: Vec<String> =
                            conflicts.iter().map(|c| c.manager.clone()).collect();
                        tracing::warn!(
                            kind = kind_s,
                            name,
                            ?managers,
                            "apply conflict; reported, not forced"
                        );
                        if let Some(rv) = self.caches.resource_version(kind, name) {
                            self.server_conflicts.lock().await.push(ServerConflict {
                                kind,
                                name: name.to_string(),
                                resource_version: rv,
                                conflicts,
                            });
                        }
                        // Re-plan at once so the status and an event report it.
                        replan = true;
                    }
                    Err(e) => {
                        self.metrics.count_write(kind_s, w.op(), "error");
                        tracing::warn!(kind = kind_s, name, op = w.op(), error = %e, "write failed");
                        failure_kinds.push(crate::ErrorKind::of_kube(&e));
                        failures.push(format!("{kind_s} {name} ({}): {e}", w.op()));
                    }
                }
            }
            // Node writes assume the finalizer is in place.
            if stage == 0 && !failures.is_empty() {
                break;
            }
            i = end;
        }

        self.publish(&planned.events, &succeeded, &skipped_targets)
            .await;
        if !failures.is_empty() {
            let n = failures.len();
            let mut msg = failures.into_iter().take(3).collect::<Vec<_>>().join("; ");
            if n > 3 {
                msg.push_str(&format!("; and {} more", n - 3));
            }
            return Err(Error::WritesFailed {
                count: n,
                summary: msg,
                kind: crate::ErrorKind::most_retryable(failure_kinds)
                    .unwrap_or(crate::ErrorKind::Transient),
            });
        }
        let mut requeue_after = planned.requeue_after;
        if replan {
            requeue_after = Some(Duration::ZERO);
        }
        Ok(PassOutcome {
            writes: written,
            skipped,
            requeue_after,
        })
    }

    async fn exec_one<'w>(&self, w: &'w Write) -> (&'w Write, Result<Outcome, kube::Error>) {
        if !self.leading.load(Ordering::SeqCst) {
            return (
                w,
                Err(kube::Error::Service("not the leader any more".into())),
            );
        }
        let finalizers = match w {
            Write::RemoveFinalizer {
                config,
                owned: false,
                ..
            } => self
                .caches
                .configs
                .get(&ObjectRef::new(config))
                .map(|c| (c.finalizers().to_vec(), c.resource_version())),
            _ => None,
        };
        (w, self.writer.execute(w, finalizers).await)
    }

    async fn publish(
        &self,
        events: &[PlannedEvent],
        succeeded: &HashSet<(Kind, String)>,
        skipped: &HashSet<(Kind, String)>,
    ) {
        for ev in events {
            if let Some(after) = &ev.after
                && (!succeeded.contains(after) || skipped.contains(after))
            {
                continue;
            }
            let reference = ObjectReference {
                api_version: Some("networking.k8s.aws/v1alpha1".into()),
                kind: Some("DPDKConfig".into()),
                name: Some(ev.config.clone()),
                uid: ev.config_uid.clone(),
                ..Default::default()
            };
            let event = KubeEvent {
                type_: if ev.warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: ev.reason.clone(),
                note: Some(ev.note.clone()),
                action: "Reconcile".into(),
                secondary: None,
            };
            if let Err(e) = self.recorder.publish(&event, &reference).await {
                tracing::warn!(config = %ev.config, reason = %ev.reason, error = %e, "could not publish event");
            }
        }
    }

    fn record_rollouts(&self, rollouts: &[plan::ConfigRollout]) {
        use plan::rollout::NodeRollout;
        let per_config: Vec<(String, [(&str, usize); 4])> = rollouts
            .iter()
            .map(|r| {
                let n = |f: fn(&NodeRollout) -> bool| r.in_state(f).len();
                let states = [
                    ("updated", n(|s| *s == NodeRollout::Updated)),
                    ("updating", n(|s| *s == NodeRollout::Updating)),
                    ("pending", n(|s| *s == NodeRollout::Pending)),
                    ("failed", r.failed().len()),
                ];
                (r.config.clone(), states)
            })
            .collect();
        self.metrics.set_rollouts(&per_config);
    }

    fn record_stats(&self, s: &plan::Stats) {
        let m = &self.metrics;
        m.set_object("dpdkconfig", "ready", s.configs_ready);
        m.set_object("dpdkconfig", "reconciling", s.configs_reconciling);
        m.set_object("dpdkconfig", "stalled", s.configs_stalled);
        m.set_object("node", "matched", s.nodes_matched);
        m.set_object("node", "ready", s.nodes_ready);
        m.set_object("node", "tearing_down", s.nodes_tearing_down);
        m.set_object("nodeeni", "driven", s.node_enis_driven);
        m.set_object("nodeeni", "conflicted", s.node_enis_conflicted);
        m.set_object("nodeeni", "releasing", s.node_enis_releasing);
        for r in [
            plan::reason::OVERLAPPING_CONFIG,
            plan::reason::SELECTOR_REACHES_UNMATCHED_NODES,
            plan::reason::PARTIAL_MULTI_SUBNET,
            plan::reason::FIELD_MANAGER_CONFLICT,
        ] {
            let n = s.conflicts.get(r).copied().unwrap_or(0);
            m.conflicts
                .get_or_create(&crate::metrics::ReasonLabels { reason: r.into() })
                .set(n as i64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_waits_for_the_agents_before_enabling_unless_told_not_to() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            c: ControllerArgs,
        }
        let parse = |args: &[&str]| {
            Cli::try_parse_from(args)
                .expect("parses")
                .c
                .into_options()
                .expect("valid")
        };
        assert!(parse(&["x"]).enable_dpdk_after_bound);
        assert!(!parse(&["x", "--enable-dpdk-immediately"]).enable_dpdk_after_bound);
    }

    #[test]
    fn flags_are_checked_together() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            c: ControllerArgs,
        }
        let ok = Cli::try_parse_from(["x", "--identity", "a", "--teardown-timeout", "2s"])
            .expect("parses");
        let opts = ok.c.into_options().expect("valid");
        assert_eq!(opts.teardown_timeout, Duration::from_secs(2));
        assert_eq!(
            opts.leader_election.as_ref().map(|l| l.identity.as_str()),
            Some("a")
        );
        let bad = Cli::try_parse_from(["x", "--lease-duration", "5s", "--renew-deadline", "10s"])
            .expect("parses");
        let err = bad
            .c
            .into_options()
            .expect_err("renew deadline too long")
            .to_string();
        assert!(err.contains("--renew-deadline"), "{err}");
        let err = Cli::try_parse_from(["x", "--teardown-timeout", "soon"])
            .err()
            .expect("bad duration")
            .to_string();
        assert!(err.contains("--teardown-timeout"), "{err}");
        let no_le = Cli::try_parse_from(["x", "--no-leader-election"])
            .expect("parses")
            .c
            .into_options()
            .expect("valid");
        assert!(no_le.leader_election.is_none());
    }
}
