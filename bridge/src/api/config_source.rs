use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// A Git repository path whose DPDKConfigs are applied to the cluster: Flux's
/// GitRepository and Kustomization in one small object.
// kube's `printcolumn(name = .., type_ = ..)` repeats `type_` once per column.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "networking.k8s.aws",
    version = "v1alpha1",
    kind = "DPDKConfigSource",
    plural = "dpdkconfigsources",
    singular = "dpdkconfigsource",
    shortname = "dpdksrc",
    namespaced,
    status = "DPDKConfigSourceStatus",
    derive = "PartialEq",
    doc = "DPDKConfigSource pulls DPDKConfig manifests from a Git repository and applies them by server-side apply, pruning what it applied before.",
    printcolumn(name = "URL", type_ = "string", json_path = ".spec.url"),
    printcolumn(
        name = "Revision",
        type_ = "string",
        json_path = ".status.lastAppliedRevision"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DPDKConfigSourceSpec {
    /// Repository URL: https://, ssh:// or file://.
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('ssh://') || self.startsWith('file://')").message("spec.url must start with https://, ssh:// or file:// (write scp-style git@host:repo as ssh://git@host/repo)"))]
    #[schemars(length(min = 8, max = 2048))]
    pub url: String,

    /// Exactly one of branch, tag or commit.
    #[serde(rename = "ref")]
    pub git_ref: GitRef,

    /// Directory inside the repository to load, recursively. It must stay inside the repository.
    #[serde(default = "default_path")]
    #[x_kube(validation = Rule::new("!self.startsWith('/') && self != '..' && !self.startsWith('../') && !self.contains('/../') && !self.endsWith('/..')").message("spec.path must be a relative path inside the repository, without '..' segments"))]
    #[schemars(length(max = 1024))]
    pub path: String,

    /// How often to poll, as a Go-style duration (30s, 5m, 1h). Webhooks and, for file://,
    /// local commits trigger a fetch at once.
    #[serde(default = "default_interval")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"), length(max = 32))]
    pub interval: String,

    /// Secret in the same namespace with username/password, bearerToken, identity +
    /// known_hosts, and/or webhookSecret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretReference>,

    /// Stop fetching and applying until set back to false.
    #[serde(default)]
    pub suspend: bool,

    /// Delete objects this source applied before and no longer declares.
    #[serde(default = "default_true")]
    pub prune: bool,

    /// Apply (default) writes to the cluster; ReportOnly only fetches and feeds drift,
    /// for clusters where Argo CD or Flux does the applying.
    #[serde(default)]
    pub mode: SourceMode,

    /// Differences to leave out of the drift report, by JSON pointer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore_differences: Vec<IgnoreRule>,
}

fn default_path() -> String {
    ".".to_string()
}

fn default_interval() -> String {
    "1m".to_string()
}

fn default_true() -> bool {
    true
}

/// A Git reference: exactly one of branch, tag or commit.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("(has(self.branch) ? 1 : 0) + (has(self.tag) ? 1 : 0) + (has(self.commit) ? 1 : 0) == 1").message("spec.ref must set exactly one of branch, tag or commit"))]
pub struct GitRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub tag: Option<String>,
    /// A full 40-hex-digit commit SHA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^[0-9a-f]{40}$"))]
    pub commit: Option<String>,
}

/// A reference to a Secret in the source's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub struct SecretReference {
    pub name: String,
}

#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum SourceMode {
    #[default]
    Apply,
    ReportOnly,
}

/// Leave these JSON pointers out of the drift report for the matching objects.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IgnoreRule {
    /// Kind to match (DPDKConfig, NodeENI, DPDKNodeState); all kinds when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Object name to match; all names when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// RFC 6901 JSON pointers, e.g. /spec/driverOptions/writeCombining.
    pub json_pointers: Vec<String>,
}

/// kstatus-compatible status, written by the source controller.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DPDKConfigSourceStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, plus Reconciling and Stalled only while True. Reasons include FetchFailed,
    /// ValidationFailed (naming file:line) and Applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fetched_revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempted_revision: Option<String>,
    /// What this source applied, for pruning.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inventory: Vec<InventoryEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_webhook_at: Option<Time>,
}

/// One object this source applied.
#[derive(
    Deserialize, Serialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct InventoryEntry {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}
