//! Read-only HTTP endpoints over the latest drift snapshot: `GET /drift` (JSON),
//! `GET /drift.diff` (unified diff of all layers) and `GET /drift.patch?source=ns/name`
//! (layer 1 as a patch for `git apply`). They serve what the runtime last computed, with
//! its time in `X-Drift-Generated-At`; a request never triggers a computation.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::model::SourceKey;
use super::runtime::{DriftState, Snapshot};

/// The drift routes, with their state applied (merge into the server's router).
pub fn routes(state: DriftState) -> Router {
    Router::new()
        .route("/drift", get(drift_json))
        .route("/drift.diff", get(drift_diff))
        .route("/drift.patch", get(drift_patch))
        .with_state(state)
}

fn text(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
    snap: Option<&Snapshot>,
) -> Response {
    let body: Bytes = body.into();
    let mut resp = (
        status,
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response();
    if let Some(s) = snap
        && let Ok(v) = HeaderValue::from_str(&s.report.generated_at)
    {
        resp.headers_mut().insert("x-drift-generated-at", v);
    }
    resp
}

fn not_ready() -> Response {
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        "text/plain; charset=utf-8",
        "drift has not been computed yet; retry shortly\n",
        None,
    )
}

async fn drift_json(State(state): State<DriftState>) -> Response {
    match state.latest() {
        Some(s) => text(StatusCode::OK, "application/json", s.json(), Some(&s)),
        None => not_ready(),
    }
}

async fn drift_diff(State(state): State<DriftState>) -> Response {
    match state.latest() {
        Some(s) => text(
            StatusCode::OK,
            "text/x-diff; charset=utf-8",
            s.diff(),
            Some(&s),
        ),
        None => not_ready(),
    }
}

async fn drift_patch(State(state): State<DriftState>, RawQuery(query): RawQuery) -> Response {
    let Some(snap) = state.latest() else {
        return not_ready();
    };
    let bad = |msg: String| {
        text(
            StatusCode::BAD_REQUEST,
            "text/plain; charset=utf-8",
            msg,
            Some(&snap),
        )
    };
    let wanted = query.as_deref().and_then(|q| query_param(q, "source"));
    let known = snap.patch_sources();
    let key = match wanted {
        Some(v) => match SourceKey::parse(&v) {
            Some(k) => k.to_string(),
            None => return bad(format!("source={v:?}: expected <namespace>/<name>\n")),
        },
        // With a single source the parameter may be left out.
        None if known.len() == 1 => known[0].clone(),
        None => {
            return bad(format!(
                "missing ?source=<namespace>/<name>; sources: {}\n",
                known.join(", ")
            ));
        }
    };
    match snap.patch(&key) {
        Some(p) => {
            let mut resp = text(
                StatusCode::OK,
                "text/x-patch; charset=utf-8",
                p.text.clone(),
                Some(&snap),
            );
            if let Some(rev) = p.revision.as_deref()
                && let Ok(v) = HeaderValue::from_str(rev)
            {
                resp.headers_mut().insert("x-drift-revision", v);
            }
            resp
        }
        None => text(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            format!("no drift data for source {key}\n"),
            Some(&snap),
        ),
    }
}

/// The first value of `name` in a query string, percent-decoded.
fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(b) = hex {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(
            query_param("source=dpdk-operator%2Fprod", "source").as_deref(),
            Some("dpdk-operator/prod")
        );
        assert_eq!(
            query_param("a=1&source=ns/n", "source").as_deref(),
            Some("ns/n")
        );
        assert_eq!(query_param("a=1", "source"), None);
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
