//! The reconciler's HTTP server: `/metrics` (Prometheus, OpenMetrics text), `/healthz`
//! (liveness) and `/readyz` (readiness). Other components add their own routes by passing
//! routers to [`router`]; e.g. the drift engine adds `/drift*`. The webhook receiver is
//! not here: it has a listener of its own ([`crate::source::webhook`]).
//!
//! ```ignore
//! let app = server::router(state, vec![drift::http::routes(drift_state)]);
//! server::serve(server::bind("0.0.0.0:8080").await?, app, shutdown).await?;
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Error;

#[derive(Clone, Debug)]
struct Check {
    ready: bool,
    failed: Option<String>,
    detail: String,
}

/// Named health checks. A component registers itself, reports readiness as it warms
/// up, and reports a failure that should restart the process (liveness).
#[derive(Clone, Default, Debug)]
pub struct Probes {
    checks: Arc<Mutex<BTreeMap<String, Check>>>,
}

impl Probes {
    pub fn new() -> Self {
        Self::default()
    }

    fn update(&self, name: &str, f: impl FnOnce(&mut Check)) {
        if let Ok(mut checks) = self.checks.lock() {
            let c = checks.entry(name.to_string()).or_insert(Check {
                ready: false,
                failed: None,
                detail: "starting".into(),
            });
            f(c);
        }
    }

    /// Adds a check that is not ready until [`Probes::set_ready`].
    pub fn register(&self, name: &str) {
        self.update(name, |_| {});
    }

    pub fn set_ready(&self, name: &str, ready: bool, detail: impl Into<String>) {
        let detail = detail.into();
        self.update(name, |c| {
            c.ready = ready;
            c.detail = detail;
        });
    }

    /// Marks the component broken: `/healthz` turns 503 so the kubelet restarts the pod.
    pub fn set_failed(&self, name: &str, why: impl Into<String>) {
        let why = why.into();
        self.update(name, |c| {
            c.ready = false;
            c.failed = Some(why);
        });
    }

    fn report(&self, pick: impl Fn(&Check) -> (bool, String)) -> (bool, String) {
        let Ok(checks) = self.checks.lock() else {
            return (false, "health state poisoned\n".into());
        };
        let mut ok = true;
        let mut body = String::new();
        for (name, c) in checks.iter() {
            let (good, detail) = pick(c);
            ok &= good;
            body.push_str(&format!(
                "[{}] {name}: {detail}\n",
                if good { "+" } else { "-" }
            ));
        }
        (ok, body)
    }

    /// All checks ready, with one line per check.
    pub fn readiness(&self) -> (bool, String) {
        self.report(|c| (c.ready, c.detail.clone()))
    }

    /// No check failed.
    pub fn liveness(&self) -> (bool, String) {
        self.report(|c| match &c.failed {
            Some(why) => (false, why.clone()),
            None => (true, "ok".into()),
        })
    }
}

/// What the built-in routes serve.
#[derive(Clone)]
pub struct AppState {
    pub registry: Arc<Registry>,
    pub health: Probes,
}

/// The built-in routes merged with `extra` (each a `Router` with its state applied).
pub fn router(state: AppState, extra: Vec<Router>) -> Router {
    let mut app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state);
    for r in extra {
        app = app.merge(r);
    }
    app
}

async fn metrics(State(state): State<AppState>) -> Response {
    let body = crate::metrics::encode(&state.registry);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn healthz(State(state): State<AppState>) -> Response {
    let (ok, body) = state.health.liveness();
    (
        if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        body,
    )
        .into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    let (ok, body) = state.health.readiness();
    (
        if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        body,
    )
        .into_response()
}

/// Binds a listen address (`--http-addr`, `--webhook-addr`).
pub async fn bind(addr: &str) -> Result<TcpListener, Error> {
    TcpListener::bind(addr).await.map_err(|source| Error::Http {
        addr: addr.to_string(),
        source,
    })
}

/// Serves `app` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .map_err(|source| Error::Http { addr, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get_raw(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("write");
        let mut buf = String::new();
        s.read_to_string(&mut buf).await.expect("read");
        let code = buf
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (code, buf)
    }

    #[tokio::test]
    async fn health_metrics_and_merged_routes() {
        let mut registry = Registry::default();
        let m = crate::metrics::ControllerMetrics::register(&mut registry);
        m.leader.set(1);
        let health = Probes::new();
        health.register("controller");
        let extra = Router::new().route("/drift", get(|| async { "{}" }));
        let app = router(
            AppState {
                registry: Arc::new(registry),
                health: health.clone(),
            },
            vec![extra],
        );
        let listener = bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(listener, app, stop.clone()));

        let (code, body) = get_raw(addr, "/readyz").await;
        assert_eq!(code, 503, "{body}");
        assert!(body.contains("[-] controller: starting"), "{body}");
        health.set_ready("controller", true, "caches synced");
        let (code, body) = get_raw(addr, "/readyz").await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(get_raw(addr, "/healthz").await.0, 200);
        let (code, body) = get_raw(addr, "/metrics").await;
        assert_eq!(code, 200);
        assert!(body.contains("application/openmetrics-text"), "{body}");
        assert!(body.contains("dpdk_controller_leader 1"), "{body}");
        assert_eq!(
            get_raw(addr, "/drift").await.0,
            200,
            "merged routes are served"
        );
        health.set_failed("controller", "reconcile loop exited");
        let (code, body) = get_raw(addr, "/healthz").await;
        assert_eq!(code, 503);
        assert!(body.contains("reconcile loop exited"), "{body}");
        stop.cancel();
        task.await.expect("join").expect("server stops cleanly");
    }
}
