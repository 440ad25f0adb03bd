//! dpdk-reconciler: the cluster side. The binary is a thin CLI over this crate.
//!
//! - [`controller`]: the DPDK controller (watches, the planner's writes, leader election).
//! - [`crdgen`]: `dpdk-reconciler crdgen`, the CRDs and their reference from the Rust types.
//! - [`drift`]: the Git ↔ cluster ↔ node report, its HTTP routes and the `diff` CLI.
//! - [`manifest`]: loading a config repository's YAML, positions, offline validation.
//! - [`metrics`]: the process's Prometheus registry and the controller's metrics.
//! - [`preview`]: `dpdk-reconciler plan`, a checkout's impact on the cluster before merging.
//! - [`server`]: the HTTP server (`/metrics`, `/healthz`, `/readyz`) and its probes.
//! - [`source`]: the Git source, the DPDKConfigSource controller (fetch, apply, prune).

pub mod controller;
pub mod crdgen;
pub mod drift;
pub mod manifest;
pub mod metrics;
pub mod preview;
pub mod server;
pub mod source;

/// Errors of the reconciler crate. Each has an [`ErrorKind`] that decides how a controller
/// retries it and labels it in metrics; the message says what happened.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Bridge(#[from] dpdk_bridge::Error),
    #[error("{context}: {source}")]
    Kube {
        context: String,
        #[source]
        source: kube::Error,
    },
    #[error("HTTP server on {addr}: {source}")]
    Http {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Flag(String),
    /// The DPDK controller's watches ended before they listed anything.
    #[error("DPDK controller: watch caches stopped before their first list")]
    CachesStopped,
    /// This replica lost the Lease in the middle of a pass.
    #[error("DPDK controller: lost leadership during a pass")]
    LostLeadership,
    /// Some writes of a DPDK controller pass failed (`summary`: the first few).
    #[error("DPDK controller: {count} write(s) failed: {summary}")]
    WritesFailed {
        count: usize,
        summary: String,
        kind: ErrorKind,
    },
    /// A DPDKConfigSource's spec cannot be used as written (`field`: e.g. `spec.ref`).
    #[error("{message}")]
    InvalidSpec {
        field: &'static str,
        message: String,
    },
    /// The Secret of `spec.secretRef` could not be read.
    #[error("reading Secret {namespace}/{name}: {source}")]
    Credentials {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    /// The Git fetch or checkout failed (the message never holds URL credentials).
    #[error("{0}")]
    Fetch(String),
    /// A revision failed to load or validate: nothing of it was applied.
    #[error("{message}")]
    InvalidRevision { revision: String, message: String },
    /// The API server refused applies or prunes of a revision (`failures`: one per object).
    #[error("Applying revision {revision} failed: {}", failures.join("; "))]
    ApplyFailed {
        revision: String,
        failures: Vec<String>,
        kind: ErrorKind,
    },
    /// `dpdk-reconciler diff` could not use a source (no revision yet, a failed fetch).
    #[error("DPDKConfigSource {key}: {message}")]
    Source { key: String, message: String },
    /// `dpdk-reconciler plan`: the checkout does not validate (`errors`: `file:line:col:
    /// message`, as `validate` prints them).
    #[error("checkout {checkout} does not validate ({} error(s)); nothing was planned:\n{}", errors.len(), errors.join("\n"))]
    InvalidCheckout {
        checkout: String,
        errors: Vec<String>,
    },
    /// A blocking task (git, loader) panicked or was cancelled.
    #[error("{task} task: {message}")]
    Task { task: &'static str, message: String },
}

/// What kind of failure an [`Error`] is: decides the retry policy and the metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Network, timeouts, 5xx, 429: retry with exponential backoff.
    Transient,
    /// Someone else changed the object first (409, a failed precondition): retry soon.
    Conflict,
    /// A referenced object (a Secret, a ref) does not exist yet: back off.
    NotFound,
    /// RBAC refused the request: back off (it needs an operator).
    Forbidden,
    /// An object's own spec is unusable: wait for it to change.
    InvalidSpec,
    /// The input (a Git revision) was refused by the validator or the API server: it will
    /// not get better by retrying; wait for the next revision.
    InvalidInput,
    /// A bug or a crashed task: back off.
    Internal,
}

impl ErrorKind {
    /// The `error` label of failure metrics.
    pub fn metric_label(self) -> &'static str {
        match self {
            ErrorKind::Transient => "transient",
            ErrorKind::Conflict => "conflict",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::InvalidSpec => "invalid_spec",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::Internal => "internal",
        }
    }

    /// The kind of a failed API request.
    pub fn of_kube(e: &kube::Error) -> ErrorKind {
        match e {
            kube::Error::Api(s) => match s.code {
                409 => ErrorKind::Conflict,
                404 => ErrorKind::NotFound,
                401 | 403 => ErrorKind::Forbidden,
                400 | 413 | 422 => ErrorKind::InvalidInput,
                _ => ErrorKind::Transient,
            },
            _ => ErrorKind::Transient,
        }
    }

    /// The kind of several failures at once: the one most worth retrying soon
    /// (transient before conflict before the rest), so one flaky request is not waited
    /// out like a rejected object.
    pub fn most_retryable(kinds: impl IntoIterator<Item = ErrorKind>) -> Option<ErrorKind> {
        kinds.into_iter().min_by_key(|k| match k {
            ErrorKind::Transient => 0,
            ErrorKind::Conflict => 1,
            ErrorKind::NotFound => 2,
            ErrorKind::Internal => 3,
            ErrorKind::Forbidden => 4,
            ErrorKind::InvalidInput => 5,
            ErrorKind::InvalidSpec => 6,
        })
    }
}

impl Error {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Kube { source, .. } | Error::Credentials { source, .. } => {
                ErrorKind::of_kube(source)
            }
            Error::Io { .. } | Error::Http { .. } | Error::Fetch(_) | Error::Source { .. } => {
                ErrorKind::Transient
            }
            Error::CachesStopped | Error::LostLeadership => ErrorKind::Transient,
            Error::WritesFailed { kind, .. } | Error::ApplyFailed { kind, .. } => *kind,
            Error::InvalidSpec { .. } => ErrorKind::InvalidSpec,
            Error::Flag(_)
            | Error::Bridge(_)
            | Error::InvalidRevision { .. }
            | Error::InvalidCheckout { .. } => ErrorKind::InvalidInput,
            Error::Task { .. } => ErrorKind::Internal,
        }
    }

    /// The `error` label of failure metrics (bounded: one value per kind), as
    /// controller-rs' `Error::metric_label`.
    pub fn metric_label(&self) -> &'static str {
        self.kind().metric_label()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            code,
            ..Default::default()
        }))
    }

    #[test]
    fn kinds_follow_the_api_status() {
        let kinds: Vec<ErrorKind> = [409, 404, 403, 422, 500, 429]
            .into_iter()
            .map(|c| ErrorKind::of_kube(&api(c)))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ErrorKind::Conflict,
                ErrorKind::NotFound,
                ErrorKind::Forbidden,
                ErrorKind::InvalidInput,
                ErrorKind::Transient,
                ErrorKind::Transient
            ]
        );
        let e = Error::Credentials {
            namespace: "ns".into(),
            name: "git".into(),
            source: api(404),
        };
        assert_eq!(
            (e.kind(), e.metric_label()),
            (ErrorKind::NotFound, "not_found")
        );
        assert_eq!(
            Error::InvalidSpec {
                field: "spec.ref",
                message: "x".into()
            }
            .metric_label(),
            "invalid_spec"
        );
    }

    #[test]
    fn the_most_retryable_kind_wins() {
        use ErrorKind::*;
        assert_eq!(
            ErrorKind::most_retryable([InvalidInput, Transient, Conflict]),
            Some(Transient)
        );
        assert_eq!(
            ErrorKind::most_retryable([InvalidInput, Conflict]),
            Some(Conflict)
        );
        assert_eq!(ErrorKind::most_retryable([]), None);
    }
}
