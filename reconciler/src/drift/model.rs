//! The drift engine's inputs and outputs, as plain data.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use dpdk_bridge::api::{DPDKConfig, DPDKNodeState, IgnoreRule, NodeENI};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::normalize::normalize_config_spec;
use crate::manifest::Manifests;
use crate::manifest::load::RawFile;
use crate::manifest::position::{PositionIndex, RawDocument};

pub use crate::source::SourceKey;

/// One YAML document from Git, with the positions of its nodes.
#[derive(Clone, Debug)]
pub struct GitDocument {
    /// Repo-relative path of the file, `/`-separated.
    pub file: String,
    /// The document's text and line range in its file.
    pub raw: RawDocument,
    /// JSON pointer → key/value spans, lines absolute in the file.
    pub positions: PositionIndex,
    /// The document as JSON.
    pub value: Value,
    /// Its spec normalized for comparison (made once per revision, not per comparison).
    pub normalized_spec: Value,
}

impl GitDocument {
    /// The valid DPDKConfig documents of loaded manifests.
    pub fn from_manifests(m: &Manifests) -> Vec<GitDocument> {
        m.objects
            .iter()
            .filter_map(|o| {
                let doc = m.document(o)?;
                Some(GitDocument {
                    file: o.file.clone(),
                    raw: doc.raw.clone(),
                    positions: doc.index.clone(),
                    normalized_spec: normalize_config_spec(
                        o.body.get("spec").unwrap_or(&Value::Null),
                    ),
                    value: o.body.clone(),
                })
            })
            .collect()
    }

    /// Loads one file's text through the manifest loader and validator: its valid
    /// DPDKConfig documents.
    pub fn from_text(file: &str, text: &str) -> Vec<GitDocument> {
        GitDocument::from_manifests(&Manifests::from_files(vec![RawFile {
            path: file.to_string(),
            bytes: text.as_bytes().to_vec(),
        }]))
    }

    /// First line of the document's content (1-based, in the file).
    pub fn first_line(&self) -> usize {
        self.positions
            .get("")
            .map_or(self.raw.start_line, |n| n.first_line)
    }

    pub fn kind(&self) -> Option<&str> {
        self.value.get("kind").and_then(Value::as_str)
    }

    pub fn api_version(&self) -> Option<&str> {
        self.value.get("apiVersion").and_then(Value::as_str)
    }

    pub fn name(&self) -> Option<&str> {
        self.value.pointer("/metadata/name").and_then(Value::as_str)
    }

    /// True for a DPDKConfig of our API group.
    pub fn is_dpdk_config(&self) -> bool {
        self.kind() == Some("DPDKConfig")
            && self
                .api_version()
                .and_then(|v| v.split_once('/'))
                .is_some_and(|(g, _)| g == dpdk_bridge::api::GROUP)
    }

    /// The line that declares `pointer`, or its nearest declared ancestor.
    pub fn line_of(&self, pointer: &str) -> usize {
        match self.positions.nearest(pointer) {
            Some(n) => n.key_or_value().line,
            None => self.first_line(),
        }
    }
}

/// What one DPDKConfigSource declares at one revision.
#[derive(Clone, Debug)]
pub struct GitSource {
    /// None for a local checkout compared without a DPDKConfigSource.
    pub key: Option<SourceKey>,
    /// `<ref>@sha1:<sha>` of the documents, when known.
    pub revision: Option<String>,
    /// The source's `spec.path`, repo-relative ("." for the root).
    pub path: String,
    /// Full text of every file that holds a document, by repo-relative path. Shared:
    /// cloning a source is cheap.
    pub files: Arc<BTreeMap<String, String>>,
    /// Every DPDKConfig document loaded from `path`, in the loader's stable order.
    pub documents: Arc<Vec<GitDocument>>,
    /// The source's `spec.ignoreDifferences`.
    pub ignore: Vec<IgnoreRule>,
    /// Live DPDKConfigs that carry no source label and no Argo CD / Flux marker count as
    /// extra objects of this source. The runtime sets it when this is the only source in
    /// scope, so an object created by hand is attributed to exactly one repository.
    pub adopt_orphans: bool,
}

impl GitSource {
    /// A source from manifests loaded at `revision`: every file's text (for the patch)
    /// and every valid DPDKConfig document.
    pub fn from_manifests(
        key: Option<SourceKey>,
        revision: Option<String>,
        path: &str,
        m: &Manifests,
    ) -> GitSource {
        GitSource {
            key,
            revision,
            path: path.to_string(),
            files: Arc::new(
                m.files
                    .iter()
                    .map(|f| (f.path.clone(), f.text.clone()))
                    .collect(),
            ),
            documents: Arc::new(GitDocument::from_manifests(m)),
            ignore: Vec::new(),
            adopt_orphans: false,
        }
    }
}

/// The live cluster objects the engine compares against.
#[derive(Clone, Debug, Default)]
pub struct LiveObjects {
    pub configs: Vec<DPDKConfig>,
    pub node_enis: Vec<NodeENI>,
    pub node_states: Vec<DPDKNodeState>,
    /// Node metadata (labels are what matters).
    pub nodes: Vec<ObjectMeta>,
    /// True when these are every such object in the cluster (not a scoped subset): then
    /// NodeENI DPDK fields no config explains count as drift.
    pub complete: bool,
}

impl LiveObjects {
    /// A borrowed view, what the engine reads.
    pub fn view(&self) -> LiveView<'_> {
        LiveView {
            configs: self.configs.iter().collect(),
            node_enis: self.node_enis.iter().collect(),
            node_states: self.node_states.iter().collect(),
            nodes: self.nodes.iter().collect(),
            complete: self.complete,
        }
    }
}

/// The live objects the engine reads, borrowed: the runtime builds it over its caches'
/// shared objects, so a recompute copies none of them (at 1000 nodes × 4 NodeENIs a copy
/// was ~14 MB per recompute).
#[derive(Clone, Debug, Default)]
pub struct LiveView<'a> {
    pub configs: Vec<&'a DPDKConfig>,
    pub node_enis: Vec<&'a NodeENI>,
    pub node_states: Vec<&'a DPDKNodeState>,
    pub nodes: Vec<&'a ObjectMeta>,
    pub complete: bool,
}

impl<'a> From<&'a LiveObjects> for LiveView<'a> {
    fn from(live: &'a LiveObjects) -> Self {
        live.view()
    }
}

/// The three layers of drift.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Layer {
    /// Git ↔ cluster: a DPDKConfig edited live, missing, or extra.
    #[serde(rename = "git-cluster")]
    GitCluster,
    /// Cluster ↔ NodeENI: DPDK fields differ from what the DPDKConfigs imply.
    #[serde(rename = "cluster-nodeeni")]
    ClusterNodeEni,
    /// Desired ↔ node: DPDKNodeState spec vs status.
    #[serde(rename = "desired-node")]
    DesiredNode,
}

impl Layer {
    pub const ALL: [Layer; 3] = [Layer::GitCluster, Layer::ClusterNodeEni, Layer::DesiredNode];

    /// The kinds of finding this layer can have.
    pub fn kinds(self) -> &'static [FindingKind] {
        match self {
            Layer::GitCluster => &[
                FindingKind::Modified,
                FindingKind::Missing,
                FindingKind::Extra,
            ],
            Layer::ClusterNodeEni => &[
                FindingKind::Modified,
                FindingKind::Extra,
                FindingKind::Conflict,
            ],
            Layer::DesiredNode => &[
                FindingKind::DeviceDriver,
                FindingKind::DeviceMissing,
                FindingKind::ModuleUnloaded,
                FindingKind::NoIommu,
                FindingKind::WriteCombining,
                FindingKind::NotReported,
            ],
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Layer::GitCluster => "git-cluster",
            Layer::ClusterNodeEni => "cluster-nodeeni",
            Layer::DesiredNode => "desired-node",
        }
    }
}

/// What kind of difference a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FindingKind {
    /// A field's live value differs from Git's (or from what the configs imply).
    Modified,
    /// Git declares the object; the cluster does not have it.
    Missing,
    /// The cluster has the object; Git does not declare it.
    Extra,
    /// The controller found a conflict and left the other party's data alone.
    Conflict,
    /// A device is not on the driver its DPDKNodeState asks for (e.g. left on ena).
    DeviceDriver,
    /// The node agent does not report a device the spec asks for.
    DeviceMissing,
    /// A kernel module the devices need is not loaded.
    ModuleUnloaded,
    /// vfio's no-IOMMU mode differs from enableUnsafeNoIOMMU.
    NoIommu,
    /// writeCombining was asked for and is not enabled on the node.
    WriteCombining,
    /// The node agent has not reported status for a spec that asks for devices.
    NotReported,
    /// The node waits its turn in a staged rollout; its spec changes in a later wave.
    RolloutPending,
}

impl FindingKind {
    pub const ALL: [FindingKind; 11] = [
        FindingKind::Modified,
        FindingKind::Missing,
        FindingKind::Extra,
        FindingKind::Conflict,
        FindingKind::DeviceDriver,
        FindingKind::DeviceMissing,
        FindingKind::ModuleUnloaded,
        FindingKind::NoIommu,
        FindingKind::WriteCombining,
        FindingKind::NotReported,
        FindingKind::RolloutPending,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::Modified => "modified",
            FindingKind::Missing => "missing",
            FindingKind::Extra => "extra",
            FindingKind::Conflict => "conflict",
            FindingKind::DeviceDriver => "deviceDriver",
            FindingKind::DeviceMissing => "deviceMissing",
            FindingKind::ModuleUnloaded => "moduleUnloaded",
            FindingKind::NoIommu => "noIommu",
            FindingKind::WriteCombining => "writeCombining",
            FindingKind::NotReported => "notReported",
            FindingKind::RolloutPending => "rolloutPending",
        }
    }
}

/// The object a finding is about.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectRef {
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl ObjectRef {
    pub fn cluster(kind: &str, name: &str) -> Self {
        Self {
            kind: kind.to_string(),
            name: name.to_string(),
            namespace: None,
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}/{}/{}", self.kind, ns, self.name),
            None => write!(f, "{}/{}", self.kind, self.name),
        }
    }
}

/// One difference, with the Git file and line that declares the intent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub layer: Layer,
    pub kind: FindingKind,
    pub object: ObjectRef,
    /// The node, for desired ↔ node findings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The DPDKConfigSource (`ns/name`) whose Git declares the intent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Repo-relative file that declares the intent (for an extra object: the file the
    /// patch creates).
    pub file: Option<String>,
    /// 1-based line in `file`.
    pub line: Option<usize>,
    /// RFC 6901 pointer into the object ("" for the whole object). For DPDKConfigs it
    /// addresses the Git document.
    pub field_path: String,
    /// What Git (or the spec) asks for; null when it declares nothing.
    pub git: Value,
    /// What the cluster (or the node) has; null when absent.
    pub live: Value,
    /// `argocd` or `flux` when another GitOps tool owns the live object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owned_by: Option<String>,
    /// When this finding was first seen (RFC 3339). Shared by the findings first seen in
    /// the same computation.
    pub since: Arc<str>,
    /// One line for humans.
    pub message: String,
}

impl Finding {
    /// Identity across recomputations, for `since`.
    pub fn key(&self) -> FindingKey {
        FindingKey {
            layer: self.layer,
            kind: self.kind,
            object: self.object.clone(),
            field_path: self.field_path.clone(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FindingKey {
    pub layer: Layer,
    pub kind: FindingKind,
    pub object: ObjectRef,
    pub field_path: String,
}

/// Counts for the report header.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub total: usize,
    /// Findings per layer, every layer present.
    pub by_layer: BTreeMap<String, usize>,
    /// Findings per kind, only kinds that occur.
    pub by_kind: BTreeMap<String, usize>,
    /// Findings left out by ignore rules.
    pub ignored: usize,
}

/// A source as the report names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    pub path: String,
}

/// The whole report: what `/drift` serves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DriftReport {
    /// When the report was computed (RFC 3339).
    pub generated_at: String,
    pub sources: Vec<SourceInfo>,
    pub summary: Summary,
    pub findings: Vec<Finding>,
}

impl DriftReport {
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }
}
