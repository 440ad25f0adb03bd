//! The webhook receiver, in the style of Flux's notification receiver: `POST
//! /hook/<namespace>/<name>` fetches that source at once when its Git host proves it
//! knows the source's `webhookSecret`. It has its own listener (`--webhook-addr`, plain
//! HTTP behind an Ingress that terminates TLS), apart from `/metrics` and `/drift*`.
//!
//! Accepted proofs, both checked against the Secret's `webhookSecret` in constant time:
//! - GitHub (and Gitea/Forgejo): `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`;
//! - GitLab: `X-Gitlab-Token: <secret>`.
//!
//! A request, in order: rate limit per client ([`rate`]) → path segments must be DNS-1123
//! names (the raw segments: a `%` is refused, nothing is decoded) → body, at most
//! `max_body_bytes`, within `request_timeout` → the source and its Secret from the watch
//! caches ([`cache`]), never from the API server → signature or token. Every refusal (bad
//! path, unknown source, no Secret or `webhookSecret`, missing or forged proof, wrong
//! method) gets the same answer, [`REFUSED`], so answers reveal neither which sources
//! exist nor why; the reason is logged at debug level only.

pub mod cache;
pub mod listen;
pub mod rate;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use kube::Client;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{SourceKey, TriggerReason, Triggers};
use crate::Error;
use crate::manifest::validate::check_dns_subdomain;
use cache::Caches;
use listen::{ConnLimits, Peer};
use rate::{RateLimit, RateLimiter};

pub const GITHUB_SIGNATURE_HEADER: &str = "x-hub-signature-256";
pub const GITLAB_TOKEN_HEADER: &str = "x-gitlab-token";

/// How a request proved it knows the secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proof {
    GitHub,
    GitLab,
}

/// Checks the request's signature or token against `secret`. Pure.
pub fn verify(headers: &HeaderMap, body: &[u8], secret: &[u8]) -> Result<Proof, &'static str> {
    if secret.is_empty() {
        return Err("the source's webhookSecret is empty");
    }
    if let Some(sig) = headers.get(GITHUB_SIGNATURE_HEADER) {
        let sig = sig.to_str().map_err(|_| "malformed X-Hub-Signature-256")?;
        let hex_sig = sig
            .strip_prefix("sha256=")
            .ok_or("X-Hub-Signature-256 must start with sha256=")?;
        let given = hex::decode(hex_sig.trim()).map_err(|_| "X-Hub-Signature-256 is not hex")?;
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).map_err(|_| "bad secret")?;
        mac.update(body);
        // verify_slice compares in constant time.
        return mac
            .verify_slice(&given)
            .map(|()| Proof::GitHub)
            .map_err(|_| "X-Hub-Signature-256 does not match");
    }
    if let Some(token) = headers.get(GITLAB_TOKEN_HEADER) {
        let ok: bool = token.as_bytes().ct_eq(secret).into();
        return if ok {
            Ok(Proof::GitLab)
        } else {
            Err("X-Gitlab-Token does not match")
        };
    }
    Err("no X-Hub-Signature-256 or X-Gitlab-Token header")
}

/// Status and body of every refusal.
pub const REFUSED: (StatusCode, &str) = (StatusCode::UNAUTHORIZED, "webhook refused\n");

/// Clients with a rate-limit bucket of their own (see [`rate`]).
pub const MAX_CLIENTS: usize = 4096;

/// Connections open at once on the receiver's listener.
pub const MAX_CONNECTIONS: usize = 256;

/// Settings of the webhook receiver.
#[derive(Clone, Copy, Debug)]
pub struct ReceiverOptions {
    /// Per client (peer IP; IPv6 per /64).
    pub rate: RateLimit,
    /// The request, headers and body, must arrive within this; else 408 (or, for slow
    /// headers, the connection is closed).
    pub request_timeout: Duration,
    /// Larger bodies get 413 and are not read further.
    pub max_body_bytes: usize,
}

impl Default for ReceiverOptions {
    fn default() -> Self {
        ReceiverOptions {
            rate: RateLimit {
                per_second: 10.0,
                burst: 50,
            },
            request_timeout: Duration::from_secs(10),
            max_body_bytes: 1024 * 1024,
        }
    }
}

/// `dpdk-reconciler run` flags of the webhook receiver.
#[derive(clap::Args, Clone, Debug)]
pub struct WebhookArgs {
    /// Listen address of the webhook receiver (POST /hook/<namespace>/<name>), plain
    /// HTTP: expose it through an Ingress that terminates TLS (docs/git-sources.md). Unset
    /// (the default): no receiver runs; the shipped Deployment sets 0.0.0.0:9292.
    #[arg(long)]
    pub webhook_addr: Option<String>,
    /// Webhook requests per second per client (peer IP, IPv6 per /64); 0 turns the limit off.
    #[arg(long, default_value_t = 10.0)]
    pub webhook_rate_limit: f64,
    /// Webhook requests a client may send at once before --webhook-rate-limit applies.
    #[arg(long, default_value_t = 50)]
    pub webhook_rate_burst: u32,
    /// A webhook request (headers and body) taking longer fails: 408, or the connection is
    /// closed (a Go duration).
    #[arg(long, default_value = "10s", value_parser = dpdk_bridge::duration::parse)]
    pub webhook_request_timeout: Duration,
    /// Largest webhook request body, in bytes; larger gets 413.
    #[arg(long, default_value_t = 1024 * 1024)]
    pub webhook_max_body_bytes: usize,
}

impl WebhookArgs {
    pub fn options(&self) -> ReceiverOptions {
        ReceiverOptions {
            rate: RateLimit {
                per_second: self.webhook_rate_limit,
                burst: self.webhook_rate_burst,
            },
            request_timeout: self.webhook_request_timeout,
            max_body_bytes: self.webhook_max_body_bytes,
        }
    }
}

/// Labels of `dpdk_webhook_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `accepted`, `refused`, `rate_limited`, `too_large` or `timeout`.
    pub result: String,
}

/// `dpdk_webhook_requests_total{result}`.
#[derive(Clone)]
pub struct WebhookMetrics {
    pub requests: Family<ResultLabels, Counter>,
}

impl WebhookMetrics {
    pub fn register(registry: &mut Registry) -> WebhookMetrics {
        let m = WebhookMetrics {
            requests: Family::default(),
        };
        registry.sub_registry_with_prefix("dpdk_webhook").register(
            "requests",
            "Webhook requests by result",
            m.requests.clone(),
        );
        m
    }

    fn count(&self, result: &str) {
        self.requests
            .get_or_create(&ResultLabels {
                result: result.to_string(),
            })
            .inc();
    }
}

/// The webhook receiver, built by [`super::SourceController::webhook_receiver`]; it
/// fires the controller's [`Triggers`].
pub struct Receiver {
    client: Client,
    namespace: Option<String>,
    triggers: Triggers,
    opts: ReceiverOptions,
    metrics: WebhookMetrics,
}

impl Receiver {
    pub(crate) fn new(
        client: Client,
        namespace: Option<String>,
        triggers: Triggers,
        opts: ReceiverOptions,
        metrics: WebhookMetrics,
    ) -> Receiver {
        Receiver {
            client,
            namespace,
            triggers,
            opts,
            metrics,
        }
    }

    /// Fills the watch caches and serves `listener` until `shutdown` is cancelled.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), Error> {
        let (caches, fill) = cache::start(self.client, self.namespace, shutdown.clone());
        let filling = tokio::spawn(fill);
        let state = HookState {
            caches,
            triggers: self.triggers,
            limiter: Arc::new(Mutex::new(RateLimiter::new(
                self.opts.rate,
                MAX_CLIENTS,
                Instant::now(),
            ))),
            opts: self.opts,
            metrics: self.metrics,
        };
        let limits = ConnLimits {
            header_timeout: self.opts.request_timeout,
            max_connections: MAX_CONNECTIONS,
        };
        let served = listen::serve(listener, app(state), limits, shutdown).await;
        let _ = filling.await;
        served
    }
}

#[derive(Clone)]
struct HookState {
    caches: Caches,
    triggers: Triggers,
    limiter: Arc<Mutex<RateLimiter>>,
    opts: ReceiverOptions,
    metrics: WebhookMetrics,
}

/// Every path and method goes to [`receive`], so nothing else answers differently.
fn app(state: HookState) -> Router {
    Router::new().fallback(receive).with_state(state)
}

/// Why a request was not accepted: the answer and the metric label.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Accepted,
    Refused(&'static str),
    RateLimited,
    TooLarge,
    Timeout,
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Refused(_) => "refused",
            Outcome::RateLimited => "rate_limited",
            Outcome::TooLarge => "too_large",
            Outcome::Timeout => "timeout",
        }
    }

    fn into_response(self) -> Response {
        match self {
            Outcome::Accepted => (StatusCode::ACCEPTED, "fetch triggered\n").into_response(),
            Outcome::Refused(_) => REFUSED.into_response(),
            Outcome::RateLimited => {
                (StatusCode::TOO_MANY_REQUESTS, "too many requests\n").into_response()
            }
            Outcome::TooLarge => {
                (StatusCode::PAYLOAD_TOO_LARGE, "body too large\n").into_response()
            }
            Outcome::Timeout => (StatusCode::REQUEST_TIMEOUT, "request timeout\n").into_response(),
        }
    }
}

async fn receive(State(state): State<HookState>, req: Request) -> Response {
    let peer = req.extensions().get::<Peer>().map(|p| p.0);
    let outcome = if !allowed(&state, peer) {
        Outcome::RateLimited
    } else {
        match tokio::time::timeout(state.opts.request_timeout, handle(&state, req)).await {
            Ok(o) => o,
            Err(_) => Outcome::Timeout,
        }
    };
    state.metrics.count(outcome.label());
    if outcome == Outcome::RateLimited {
        tracing::debug!(?peer, "webhook rate-limited");
    }
    outcome.into_response()
}

fn allowed(state: &HookState, peer: Option<IpAddr>) -> bool {
    let Some(ip) = peer else { return true };
    state
        .limiter
        .lock()
        .map(|mut l| l.allow(ip, Instant::now()))
        .unwrap_or(false)
}

/// Path → body → caches → proof.
async fn handle(state: &HookState, req: Request) -> Outcome {
    let Some(key) = hook_path(req.uri().path()) else {
        return Outcome::Refused("the path is not /hook/<namespace>/<name> with DNS-1123 names");
    };
    if req.method() != Method::POST {
        return Outcome::Refused("not a POST");
    }
    let (parts, body) = req.into_parts();
    let body = match read_body(&parts.headers, body, state.opts.max_body_bytes).await {
        Ok(b) => b,
        Err(o) => return o,
    };
    let outcome = check_and_fire(state, &key, &parts.headers, &body);
    if let Outcome::Refused(why) = &outcome {
        tracing::debug!(source = %key, why, "webhook refused");
    }
    outcome
}

/// The proof against the cached `webhookSecret`; fires the trigger when it holds.
fn check_and_fire(state: &HookState, key: &SourceKey, headers: &HeaderMap, body: &[u8]) -> Outcome {
    let Some(secret) = state.caches.webhook_secret(key) else {
        return Outcome::Refused("unknown source, or no Secret with a webhookSecret");
    };
    match verify(headers, body, &secret) {
        Ok(proof) => {
            tracing::info!(source = %key, ?proof, "webhook verified; fetching now");
            state.triggers.fire(key, TriggerReason::Webhook);
            Outcome::Accepted
        }
        Err(why) => Outcome::Refused(why),
    }
}

/// `/hook/<namespace>/<name>` with a DNS-1123 label and a DNS-1123 subdomain, taken from
/// the raw (undecoded) path. Pure.
pub fn hook_path(path: &str) -> Option<SourceKey> {
    let rest = path.strip_prefix("/hook/")?;
    let (namespace, name) = rest.split_once('/')?;
    let label = namespace.len() <= 63 && !namespace.contains('.');
    (label && check_dns_subdomain(namespace).is_ok() && check_dns_subdomain(name).is_ok())
        .then(|| SourceKey::new(namespace, name))
}

/// The body, refused as too large from its Content-Length or once the limit is read.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, Outcome> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(Outcome::TooLarge);
    }
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(Outcome::TooLarge),
        Err(_) => Err(Outcome::Refused("the body could not be read")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &[u8], body: &[u8]) -> String {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("mac");
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn github_signatures() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let mut h = HeaderMap::new();
        h.insert(
            GITHUB_SIGNATURE_HEADER,
            sign(b"s3cret", body).parse().expect("header"),
        );
        assert_eq!(verify(&h, body, b"s3cret"), Ok(Proof::GitHub));
        assert!(verify(&h, b"tampered", b"s3cret").is_err());
        assert!(verify(&h, body, b"other").is_err());
        h.insert(
            GITHUB_SIGNATURE_HEADER,
            "sha1=abcd".parse().expect("header"),
        );
        assert!(verify(&h, body, b"s3cret").is_err());
    }

    #[test]
    fn hook_paths_are_dns_1123_names_taken_raw() {
        assert_eq!(
            hook_path("/hook/dpdk-operator/platform-dpdk"),
            Some(SourceKey::new("dpdk-operator", "platform-dpdk"))
        );
        assert_eq!(
            hook_path("/hook/ns/a.b-c"),
            Some(SourceKey::new("ns", "a.b-c")),
            "a name may be a subdomain"
        );
        for bad in [
            "/hook/dpdk-operator/%3Fwatch%3Dtrue",
            "/hook/dpdk-operator/..",
            "/hook/dpdk-operator/a/b",
            "/hook/dpdk-operator/",
            "/hook/dpdk.operator/a",
            "/hook/Upper/a",
            "/hook/ns/-a",
            "/hook/ns",
            "/hook//a",
            "/metrics",
            "/",
        ] {
            assert_eq!(hook_path(bad), None, "{bad}");
        }
        let long = "a".repeat(64);
        assert_eq!(hook_path(&format!("/hook/{long}/a")), None);
        assert!(hook_path(&format!("/hook/ns/{long}")).is_some());
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_too_large() {
        let mut h = HeaderMap::new();
        assert_eq!(
            read_body(&h, Body::from(vec![b'x'; 10]), 10).await,
            Ok(Bytes::from(vec![b'x'; 10]))
        );
        assert_eq!(
            read_body(&h, Body::from(vec![b'x'; 11]), 10).await,
            Err(Outcome::TooLarge),
            "a body without Content-Length is cut at the limit"
        );
        h.insert(header::CONTENT_LENGTH, "11".parse().expect("header"));
        assert_eq!(
            read_body(&h, Body::empty(), 10).await,
            Err(Outcome::TooLarge),
            "a declared length over the limit is refused before reading"
        );
    }

    #[test]
    fn gitlab_tokens_and_missing_proofs() {
        let mut h = HeaderMap::new();
        assert_eq!(
            verify(&h, b"", b"s3cret"),
            Err("no X-Hub-Signature-256 or X-Gitlab-Token header")
        );
        h.insert(GITLAB_TOKEN_HEADER, "s3cret".parse().expect("header"));
        assert_eq!(verify(&h, b"", b"s3cret"), Ok(Proof::GitLab));
        assert!(verify(&h, b"", b"s3cre").is_err());
        assert!(
            verify(&h, b"", b"").is_err(),
            "an empty secret accepts nothing"
        );
    }
}
