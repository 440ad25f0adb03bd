//! Prometheus metrics of the device plugin, and the optional `/metrics` endpoint.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use super::inventory::Snapshot;
use crate::error::Error;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    pub resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Outcome {
    Ok,
    Unknown,
    Unhealthy,
    Invalid,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AllocationLabels {
    pub resource: String,
    pub outcome: Outcome,
}

/// The plugin's metrics; cheap to clone (shared counters).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub advertised: Family<ResourceLabels, Gauge>,
    pub healthy: Family<ResourceLabels, Gauge>,
    pub allocations: Family<AllocationLabels, Counter>,
    pub allocated_devices: Family<ResourceLabels, Counter>,
    pub registrations: Family<ResourceLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("dpdk_device_plugin");
        let advertised = Family::<ResourceLabels, Gauge>::default();
        let healthy = Family::<ResourceLabels, Gauge>::default();
        let allocations = Family::<AllocationLabels, Counter>::default();
        let allocated_devices = Family::<ResourceLabels, Counter>::default();
        let registrations = Family::<ResourceLabels, Counter>::default();
        registry.register(
            "advertised_devices",
            "Devices advertised to the kubelet, per resource",
            advertised.clone(),
        );
        registry.register(
            "healthy_devices",
            "Advertised devices that are Healthy, per resource",
            healthy.clone(),
        );
        registry.register(
            "allocations",
            "Allocate calls per resource and outcome",
            allocations.clone(),
        );
        registry.register(
            "allocated_devices",
            "Devices handed out by successful Allocate calls",
            allocated_devices.clone(),
        );
        registry.register(
            "registrations",
            "Successful registrations with the kubelet",
            registrations.clone(),
        );
        Self {
            registry: Arc::new(registry),
            advertised,
            healthy,
            allocations,
            allocated_devices,
            registrations,
        }
    }

    /// Sets the per-resource gauges from a snapshot, dropping resources that went away.
    pub fn observe(&self, previous: &Snapshot, snapshot: &Snapshot) {
        for resource in previous
            .resources
            .keys()
            .filter(|r| !snapshot.resources.contains_key(*r))
        {
            let labels = ResourceLabels {
                resource: resource.clone(),
            };
            self.advertised.remove(&labels);
            self.healthy.remove(&labels);
        }
        for (resource, devices) in &snapshot.resources {
            let labels = ResourceLabels {
                resource: resource.clone(),
            };
            self.advertised
                .get_or_create(&labels)
                .set(devices.len() as i64);
            self.healthy
                .get_or_create(&labels)
                .set(devices.iter().filter(|d| d.healthy()).count() as i64);
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Serves `GET /metrics` on `addr` until `stop` is cancelled.
    pub async fn serve(self, addr: SocketAddr, stop: CancellationToken) -> Result<(), Error> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| crate::error::io_error(format!("metrics address {addr}"), e))?;
        self.serve_on(listener, stop).await
    }

    /// Serves `GET /metrics` on a bound listener until `stop` is cancelled.
    pub async fn serve_on(
        self,
        listener: tokio::net::TcpListener,
        stop: CancellationToken,
    ) -> Result<(), Error> {
        let local = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let m = self.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        m.encode(),
                    )
                }
            }),
        );
        tracing::info!(addr = %local, "serving metrics");
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
            .map_err(|e| crate::error::io_error(format!("metrics server on {local}"), e))
    }
}
