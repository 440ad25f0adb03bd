//! Prometheus metrics of the reconciler process, served at `/metrics`.
//!
//! One [`Registry`] per process; each component registers its own metrics into it
//! (`ControllerMetrics::register` here, the Git source and drift engines their own) before
//! the registry is frozen in an `Arc` and handed to the HTTP server.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
pub use prometheus_client::registry::Registry;

/// Labels of `dpdk_controller_reconciles_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `success` or `error`.
    pub result: String,
}

/// Labels of `dpdk_controller_writes_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// node, nodeeni, dpdknodestate, dpdkconfig.
    pub kind: String,
    /// apply, label, release, unlabel, delete, status, add_finalizer, remove_finalizer.
    pub op: String,
    /// success, conflict, error.
    pub result: String,
}

/// Labels of `dpdk_controller_objects`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectLabels {
    pub kind: String,
    pub state: String,
}

/// Labels of `dpdk_controller_conflicts`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

/// Labels of `dpdk_rollout_nodes`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RolloutLabels {
    pub config: String,
    /// updated, updating, pending, failed.
    pub state: String,
}

/// The DPDK controller's metrics.
pub struct ControllerMetrics {
    /// Reconcile passes, by result.
    pub reconciles: Family<ResultLabels, Counter>,
    /// Duration of a reconcile pass (planning and writes), seconds.
    pub reconcile_duration: Histogram,
    /// Writes sent to the API server, by kind, operation and result.
    pub writes: Family<WriteLabels, Counter>,
    /// Objects per state, from the last plan (configs ready/reconciling/stalled, nodes
    /// matched/ready/tearing_down, NodeENIs driven/conflicted/releasing).
    pub objects: Family<ObjectLabels, Gauge>,
    /// Conflicts listed in DPDKConfig statuses, by reason.
    pub conflicts: Family<ReasonLabels, Gauge>,
    /// Nodes of each live config's rollout, by state, from the last plan.
    pub rollout_nodes: Family<RolloutLabels, Gauge>,
    /// 1 while this replica holds the leader Lease (or runs without leader election).
    pub leader: Gauge,
    /// Watch stream errors (each is retried with backoff).
    pub watch_errors: Counter,
}

impl ControllerMetrics {
    /// Creates the metrics and registers them under `dpdk_controller_*`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = ControllerMetrics {
            reconciles: Family::default(),
            reconcile_duration: Histogram::new(exponential_buckets(0.001, 2.0, 18)),
            writes: Family::default(),
            objects: Family::default(),
            conflicts: Family::default(),
            rollout_nodes: Family::default(),
            leader: Gauge::default(),
            watch_errors: Counter::default(),
        };
        let r = registry.sub_registry_with_prefix("dpdk_controller");
        r.register(
            "reconciles",
            "Reconcile passes, by result",
            m.reconciles.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "Duration of a reconcile pass: planning and writes",
            m.reconcile_duration.clone(),
        );
        r.register(
            "writes",
            "Writes sent to the API server, by kind, operation and result",
            m.writes.clone(),
        );
        r.register(
            "objects",
            "Objects per state, from the last plan",
            m.objects.clone(),
        );
        r.register(
            "conflicts",
            "Conflicts listed in DPDKConfig statuses, by reason",
            m.conflicts.clone(),
        );
        r.register(
            "leader",
            "1 while this replica is the leader",
            m.leader.clone(),
        );
        r.register(
            "watch_errors",
            "Watch stream errors, retried with backoff",
            m.watch_errors.clone(),
        );
        registry.sub_registry_with_prefix("dpdk").register(
            "rollout_nodes",
            "Nodes of each DPDKConfig's rollout, by state (updated, updating, pending, failed)",
            m.rollout_nodes.clone(),
        );
        m
    }

    /// Replaces the rollout gauges with the last plan's (a deleted config's series go).
    pub fn set_rollouts(&self, rollouts: &[(String, [(&str, usize); 4])]) {
        self.rollout_nodes.clear();
        for (config, states) in rollouts {
            for (state, n) in states {
                self.rollout_nodes
                    .get_or_create(&RolloutLabels {
                        config: config.clone(),
                        state: state.to_string(),
                    })
                    .set(*n as i64);
            }
        }
    }

    /// A set registered into a throwaway registry (tests, embedding).
    pub fn unregistered() -> Self {
        Self::register(&mut Registry::default())
    }

    pub fn count_write(&self, kind: &str, op: &str, result: &str) {
        self.writes
            .get_or_create(&WriteLabels {
                kind: kind.into(),
                op: op.into(),
                result: result.into(),
            })
            .inc();
    }

    /// Sum of writes with this result, across kinds and operations.
    pub fn writes_total(&self, result: &str) -> u64 {
        let mut total = 0;
        for kind in ["node", "nodeeni", "dpdknodestate", "dpdkconfig"] {
            for op in [
                "apply",
                "label",
                "release",
                "unlabel",
                "delete",
                "status",
                "add_finalizer",
                "remove_finalizer",
            ] {
                let labels = WriteLabels {
                    kind: kind.into(),
                    op: op.into(),
                    result: result.into(),
                };
                total += self.writes.get_or_create(&labels).get();
            }
        }
        total
    }

    pub fn set_object(&self, kind: &str, state: &str, n: usize) {
        self.objects
            .get_or_create(&ObjectLabels {
                kind: kind.into(),
                state: state.into(),
            })
            .set(n as i64);
    }

    pub fn reconcile_count(&self, result: &str) -> u64 {
        self.reconciles
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .get()
    }
}

/// Renders a registry in the OpenMetrics text format.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_metrics_are_exported_with_their_names() {
        let mut registry = Registry::default();
        let m = ControllerMetrics::register(&mut registry);
        m.reconciles
            .get_or_create(&ResultLabels {
                result: "success".into(),
            })
            .inc();
        m.reconcile_duration.observe(0.02);
        m.count_write("nodeeni", "apply", "success");
        m.set_object("node", "matched", 3);
        m.leader.set(1);
        let text = encode(&registry);
        for needle in [
            "dpdk_controller_reconciles_total{result=\"success\"} 1",
            "dpdk_controller_reconcile_duration_seconds_bucket",
            "dpdk_controller_writes_total{kind=\"nodeeni\",op=\"apply\",result=\"success\"} 1",
            "dpdk_controller_objects{kind=\"node\",state=\"matched\"} 3",
            "dpdk_controller_leader 1",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        assert_eq!(m.writes_total("success"), 1);
    }

    #[test]
    fn rollout_nodes_follow_the_last_plan() {
        let mut registry = Registry::default();
        let m = ControllerMetrics::register(&mut registry);
        let states = |u, p| {
            [
                ("updated", u),
                ("updating", 1),
                ("pending", p),
                ("failed", 0),
            ]
        };
        m.set_rollouts(&[("old".into(), states(1, 2)), ("c".into(), states(3, 4))]);
        m.set_rollouts(&[("c".into(), states(7, 0))]);
        let text = encode(&registry);
        for needle in [
            "dpdk_rollout_nodes{config=\"c\",state=\"updated\"} 7",
            "dpdk_rollout_nodes{config=\"c\",state=\"pending\"} 0",
            "dpdk_rollout_nodes{config=\"c\",state=\"updating\"} 1",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        assert!(
            !text.contains("config=\"old\""),
            "a gone config's series go: {text}"
        );
    }
}
