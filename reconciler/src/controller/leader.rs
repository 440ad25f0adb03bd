//! Leader election on a `coordination.k8s.io/v1` Lease, the way client-go's
//! leaderelection does it: optimistic concurrency on the Lease, expiry judged by the
//! local clock from when the holder's record was last seen to change (no clock-skew
//! trust), a renew deadline shorter than the lease so a leader that cannot renew stops
//! writing before anyone else may take over, and release on graceful shutdown.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Lease settings (`--leader-election-namespace`, `--lease-name`, `--identity`, ...).
#[derive(Clone, Debug)]
pub struct LeaderElectionConfig {
    pub namespace: String,
    pub lease_name: String,
    /// This replica's name in `spec.holderIdentity` (the pod name).
    pub identity: String,
    /// How long a holder's record stays valid without renewal.
    pub lease_duration: Duration,
    /// A leader that could not renew for this long steps down (< lease_duration).
    pub renew_deadline: Duration,
    /// How often to try to acquire or renew.
    pub retry_period: Duration,
}

impl LeaderElectionConfig {
    /// client-go's defaults: 15 s lease, 10 s renew deadline, 2 s retry.
    pub fn new(namespace: &str, lease_name: &str, identity: &str) -> Self {
        Self {
            namespace: namespace.into(),
            lease_name: lease_name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// The holder record as last seen, and when (by our clock) it last changed.
struct Observed {
    holder: Option<String>,
    renew: Option<MicroTime>,
    at: Instant,
}

/// Outcome of one attempt.
enum Attempt {
    Leading,
    Following(Option<String>),
}

fn now_micro() -> MicroTime {
    MicroTime(Timestamp::now())
}

async fn try_acquire_or_renew(
    api: &Api<Lease>,
    cfg: &LeaderElectionConfig,
    observed: &mut Option<Observed>,
) -> Result<Attempt, kube::Error> {
    let duration_secs = cfg.lease_duration.as_secs().max(1) as i32;
    let Some(lease) = api.get_opt(&cfg.lease_name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(cfg.lease_name.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(cfg.identity.clone()),
                lease_duration_seconds: Some(duration_secs),
                acquire_time: Some(now_micro()),
                renew_time: Some(now_micro()),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(Attempt::Leading),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Following(None)),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
    let changed = match observed {
        Some(o) => o.holder != holder || o.renew != spec.renew_time,
        None => true,
    };
    if changed {
        *observed = Some(Observed {
            holder: holder.clone(),
            renew: spec.renew_time.clone(),
            at: Instant::now(),
        });
    }
    let held_by_other = holder.as_deref().is_some_and(|h| h != cfg.identity);
    if held_by_other {
        let their_duration =
            Duration::from_secs(spec.lease_duration_seconds.unwrap_or(duration_secs).max(1) as u64);
        let seen_at = observed.as_ref().map(|o| o.at).unwrap_or_else(Instant::now);
        if seen_at.elapsed() < their_duration {
            return Ok(Attempt::Following(holder));
        }
    }
    let ours = holder.as_deref() == Some(cfg.identity.as_str());
    let mut updated = lease.clone();
    updated.spec = Some(LeaseSpec {
        holder_identity: Some(cfg.identity.clone()),
        lease_duration_seconds: Some(duration_secs),
        acquire_time: if ours {
            spec.acquire_time.clone()
        } else {
            Some(now_micro())
        },
        renew_time: Some(now_micro()),
        lease_transitions: Some(spec.lease_transitions.unwrap_or(0) + if ours { 0 } else { 1 }),
        ..spec
    });
    // The resourceVersion in `updated` makes this a compare-and-swap.
    match api
        .replace(&cfg.lease_name, &PostParams::default(), &updated)
        .await
    {
        Ok(_) => Ok(Attempt::Leading),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Following(holder)),
        Err(e) => Err(e),
    }
}

/// Gives the Lease up so another replica takes over without waiting for expiry.
async fn release(api: &Api<Lease>, cfg: &LeaderElectionConfig) -> Result<(), kube::Error> {
    let Some(mut lease) = api.get_opt(&cfg.lease_name).await? else {
        return Ok(());
    };
    let Some(spec) = lease.spec.as_mut() else {
        return Ok(());
    };
    if spec.holder_identity.as_deref() != Some(cfg.identity.as_str()) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.renew_time = Some(now_micro());
    api.replace(&cfg.lease_name, &PostParams::default(), &lease)
        .await
        .map(|_| ())
}

/// Runs the election until `stop`; the receiver says whether this replica leads.
pub fn spawn(
    client: Client,
    cfg: LeaderElectionConfig,
    stop: CancellationToken,
) -> (watch::Receiver<bool>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
        let mut observed = None;
        let mut last_renewed: Option<Instant> = None;
        loop {
            let leading = *tx.borrow();
            let attempt = tokio::time::timeout(
                cfg.renew_deadline,
                try_acquire_or_renew(&api, &cfg, &mut observed),
            )
            .await;
            let attempt = attempt
                .unwrap_or_else(|_| Err(kube::Error::Service("lease request timed out".into())));
            match attempt {
                Ok(Attempt::Leading) => {
                    last_renewed = Some(Instant::now());
                    if !leading {
                        tracing::info!(identity = %cfg.identity, lease = %cfg.lease_name, "became the leader");
                        let _ = tx.send(true);
                    }
                }
                Ok(Attempt::Following(holder)) => {
                    if leading {
                        tracing::warn!(identity = %cfg.identity, holder = ?holder, "lost the lease");
                        let _ = tx.send(false);
                    }
                }
                Err(e) => {
                    tracing::warn!(identity = %cfg.identity, error = %e, "leader election: lease request failed");
                    if leading && last_renewed.is_none_or(|t| t.elapsed() >= cfg.renew_deadline) {
                        tracing::warn!(identity = %cfg.identity, "could not renew within the renew deadline; stepping down");
                        let _ = tx.send(false);
                    }
                }
            }
            // A leader that keeps failing must step down even while requests hang.
            let wait = if *tx.borrow() {
                let left = last_renewed
                    .map(|t| cfg.renew_deadline.saturating_sub(t.elapsed()))
                    .unwrap_or_default();
                cfg.retry_period.min(left.max(Duration::from_millis(10)))
            } else {
                cfg.retry_period
            };
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
            if *tx.borrow() && last_renewed.is_some_and(|t| t.elapsed() >= cfg.renew_deadline) {
                tracing::warn!(identity = %cfg.identity, "renew deadline passed; stepping down");
                let _ = tx.send(false);
            }
        }
        if *tx.borrow() {
            let _ = tx.send(false);
            if let Err(e) = release(&api, &cfg).await {
                tracing::warn!(identity = %cfg.identity, error = %e, "could not release the lease");
            } else {
                tracing::info!(identity = %cfg.identity, "released the lease");
            }
        }
    });
    (rx, task)
}

/// Whether this replica leads, for every part that may write only on the leader (the DPDK
/// controller and the Git source): the Lease election, or always without one
/// (`--no-leader-election`).
pub struct Election {
    leading: watch::Receiver<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
    // Without an election the sender must outlive the receivers: a dropped sender makes
    // `changed()` return at once, and a loop waiting on it would spin.
    _always: Option<watch::Sender<bool>>,
}

impl Election {
    /// Starts the election of `cfg` until `stop`; `None`: this replica always leads.
    pub fn start(
        client: &Client,
        cfg: Option<LeaderElectionConfig>,
        stop: CancellationToken,
    ) -> Election {
        match cfg {
            Some(cfg) => {
                let (leading, task) = spawn(client.clone(), cfg, stop);
                Election {
                    leading,
                    task: Some(task),
                    _always: None,
                }
            }
            None => {
                let (tx, leading) = watch::channel(true);
                Election {
                    leading,
                    task: None,
                    _always: Some(tx),
                }
            }
        }
    }

    /// True while this replica leads; changes when it gains or loses the Lease.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.leading.clone()
    }

    /// After `stop`: waits for the Lease release so a successor can start at once.
    pub async fn finish(self) {
        if let Some(task) = self.task {
            let _ = task.await;
        }
    }
}
