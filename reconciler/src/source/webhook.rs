//! `POST /hook/{namespace}/{name}`: fetch a source at once when its Git host says so.
//!
//! Accepted proofs, both checked against the Secret's `webhookSecret` in constant time:
//! - GitHub (and Gitea/Forgejo): `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`;
//! - GitLab: `X-Gitlab-Token: <secret>`.
//!
//! A missing or forged proof gets 401 and nothing is fetched. A source without a
//! webhookSecret never accepts webhooks.

use std::collections::BTreeMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use dpdk_bridge::api::DPDKConfigSource;
use hmac::{Hmac, Mac};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use subtle::ConstantTimeEq;

use super::auth::keys;
use super::{SourceKey, TriggerReason, Triggers};

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

#[derive(Clone)]
struct HookState {
    client: Client,
    triggers: Triggers,
}

/// The webhook route, with its state applied (merge it into the server's router).
pub fn routes(client: Client, triggers: Triggers) -> Router {
    Router::new()
        .route("/hook/{namespace}/{name}", post(hook))
        .with_state(HookState { client, triggers })
}

async fn hook(
    State(state): State<HookState>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let key = SourceKey::new(&namespace, &name);
    let secret = match webhook_secret(&state.client, &key).await {
        Ok(s) => s,
        Err((status, msg)) => {
            tracing::info!(source = %key, %msg, "webhook refused");
            return (status, format!("{msg}\n")).into_response();
        }
    };
    match verify(&headers, &body, &secret) {
        Ok(proof) => {
            tracing::info!(source = %key, ?proof, "webhook verified; fetching now");
            state.triggers.fire(&key, TriggerReason::Webhook);
            (StatusCode::ACCEPTED, "fetch triggered\n").into_response()
        }
        Err(why) => {
            tracing::warn!(source = %key, why, "webhook rejected");
            (StatusCode::UNAUTHORIZED, format!("{why}\n")).into_response()
        }
    }
}

async fn webhook_secret(client: &Client, key: &SourceKey) -> Result<Vec<u8>, (StatusCode, String)> {
    let sources: Api<DPDKConfigSource> = Api::namespaced(client.clone(), &key.namespace);
    let src = match sources.get_opt(&key.name).await {
        Ok(Some(s)) => s,
        Ok(None) => return Err((StatusCode::NOT_FOUND, format!("no DPDKConfigSource {key}"))),
        Err(e) => {
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                format!("reading DPDKConfigSource {key}: {e}"),
            ));
        }
    };
    let Some(secret_ref) = src.spec.secret_ref else {
        return Err((
            StatusCode::UNAUTHORIZED,
            format!("DPDKConfigSource {key} has no secretRef with a webhookSecret"),
        ));
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &key.namespace);
    let secret = match secrets.get_opt(&secret_ref.name).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return Err((
                StatusCode::UNAUTHORIZED,
                format!("Secret {}/{} not found", key.namespace, secret_ref.name),
            ));
        }
        Err(e) => {
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                format!("reading Secret: {e}"),
            ));
        }
    };
    let data: BTreeMap<String, Vec<u8>> = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    match super::auth::Credentials::from_secret_data(&data).webhook_secret {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err((
            StatusCode::UNAUTHORIZED,
            format!(
                "Secret {}/{} has no {}",
                key.namespace,
                secret_ref.name,
                keys::WEBHOOK_SECRET
            ),
        )),
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
