//! The drift engine: pure functions from (Git documents, live objects, ignore rules) to
//! findings in three layers. No I/O; the runtime and the CLI feed it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use dpdk_bridge::api::{ConfigConflict, DPDKConfig, DpdkDriver, NodeENI, WriteCombiningState};
use dpdk_bridge::labels;
use dpdk_bridge::plan;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::ignore::rule_matches;
use super::model::{
    DriftReport, Finding, FindingKind, GitDocument, GitSource, Layer, LiveView, ObjectRef,
    SourceInfo, Summary,
};
use super::normalize::{FieldDiff, config_list_key, diff_values, normalize_config_spec};

/// Computes the drift report. `previous` carries `since` forward for findings that were
/// already there; new findings get `now`.
pub fn compute<'a>(
    sources: &[GitSource],
    live: impl Into<LiveView<'a>>,
    now: Timestamp,
    previous: Option<&DriftReport>,
) -> DriftReport {
    let live = &live.into();
    let now_s: Arc<str> = Arc::from(
        Timestamp::from_second(now.as_second())
            .unwrap_or(now)
            .to_string(),
    );
    let origins = Origins::new(sources);
    let mut findings = Vec::new();
    let live_by_name: HashMap<&str, &DPDKConfig> = live
        .configs
        .iter()
        .filter_map(|c| Some((c.metadata.name.as_deref()?, *c)))
        .collect();
    for src in sources {
        git_cluster(src, live, &live_by_name, &mut findings);
    }
    cluster_nodeeni(live, &origins, now, &mut findings);
    desired_node(live, &live_by_name, &origins, &mut findings);

    // Ignore rules are per source; a finding is judged by the rules of the source that
    // declares its intent.
    let rules: HashMap<Option<String>, &[dpdk_bridge::api::IgnoreRule]> = sources
        .iter()
        .map(|s| (s.key.as_ref().map(ToString::to_string), s.ignore.as_slice()))
        .collect();
    let before = findings.len();
    findings.retain(|f| {
        !rules
            .get(&f.source)
            .is_some_and(|rs| rs.iter().any(|r| rule_matches(r, f)))
    });
    let ignored = before - findings.len();

    // Borrowed keys: during a rollout the previous report has a finding per NodeENI.
    let since: HashMap<(Layer, FindingKind, &ObjectRef, &str), &Arc<str>> = previous
        .map(|p| {
            p.findings
                .iter()
                .map(|f| {
                    (
                        (f.layer, f.kind, &f.object, f.field_path.as_str()),
                        &f.since,
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    for f in &mut findings {
        f.since = since
            .get(&(f.layer, f.kind, &f.object, f.field_path.as_str()))
            .map_or_else(|| now_s.clone(), |s| Arc::clone(s));
    }
    // Unstable sort: a stable one allocates a scratch copy of the findings (4 MB in the
    // middle of a 1000-node rollout). The key goes down to the kind and the message, so
    // the order is still fully determined.
    findings.sort_unstable_by(|a, b| {
        (
            a.layer,
            &a.source,
            &a.node,
            &a.file,
            a.line,
            &a.object,
            &a.field_path,
            a.kind,
            &a.message,
        )
            .cmp(&(
                b.layer,
                &b.source,
                &b.node,
                &b.file,
                b.line,
                &b.object,
                &b.field_path,
                b.kind,
                &b.message,
            ))
    });

    DriftReport {
        generated_at: now_s.to_string(),
        sources: sources
            .iter()
            .map(|s| SourceInfo {
                source: s.key.as_ref().map(ToString::to_string),
                revision: s.revision.clone(),
                path: s.path.clone(),
            })
            .collect(),
        summary: summarize(&findings, ignored),
        findings,
    }
}

/// Counts per layer (every layer) and per kind (kinds that occur).
pub fn summarize(findings: &[Finding], ignored: usize) -> Summary {
    let mut by_layer: BTreeMap<String, usize> = Layer::ALL
        .iter()
        .map(|l| (l.as_str().to_string(), 0))
        .collect();
    let mut by_kind = BTreeMap::new();
    for f in findings {
        *by_layer.entry(f.layer.as_str().to_string()).or_default() += 1;
        *by_kind.entry(f.kind.as_str().to_string()).or_default() += 1;
    }
    Summary {
        total: findings.len(),
        by_layer,
        by_kind,
        ignored,
    }
}

/// `argocd` or `flux` when the object carries another GitOps tool's ownership marker
/// (the same rule the Git source applies before applying or pruning).
pub fn owned_by(meta: &ObjectMeta) -> Option<&'static str> {
    let empty = BTreeMap::new();
    crate::source::plan::owned_by(
        meta.labels.as_ref().unwrap_or(&empty),
        meta.annotations.as_ref().unwrap_or(&empty),
    )
    .map(|o| o.as_str())
}

/// The repo-relative file an extra object becomes: `<path>/<name>.yaml`, avoiding files
/// that exist.
pub fn new_file_path(src: &GitSource, name: &str) -> String {
    let dir = src.path.trim_matches('/');
    let dir = if dir.is_empty() || dir == "." {
        String::new()
    } else {
        format!("{}/", dir.trim_start_matches("./"))
    };
    let mut candidate = format!("{dir}{name}.yaml");
    let mut n = 2;
    while src.files.contains_key(&candidate) {
        candidate = format!("{dir}{name}-{n}.yaml");
        n += 1;
    }
    candidate
}

/// Where each DPDKConfig name is declared in Git (first source wins).
struct Origins<'a> {
    by_name: HashMap<&'a str, (&'a GitSource, &'a GitDocument)>,
}

impl<'a> Origins<'a> {
    fn new(sources: &'a [GitSource]) -> Self {
        let mut by_name = HashMap::new();
        for src in sources {
            for doc in src.documents.iter().filter(|d| d.is_dpdk_config()) {
                if let Some(name) = doc.name() {
                    by_name.entry(name).or_insert((src, doc));
                }
            }
        }
        Self { by_name }
    }

    /// The source, file and line that declare `pointer` of the config `name` (or the
    /// nearest declared ancestor).
    fn locate(&self, name: &str, pointer: &str) -> (Option<String>, Option<String>, Option<usize>) {
        match self.by_name.get(name) {
            Some((src, doc)) => (
                src.key.as_ref().map(ToString::to_string),
                Some(doc.file.clone()),
                Some(doc.line_of(pointer)),
            ),
            None => (None, None, None),
        }
    }

    /// The Git pointer of the mapping for `device_index` in config `name`, plus `field`.
    fn mapping_pointer(&self, name: &str, device_index: i32, field: &str) -> String {
        let idx = self.by_name.get(name).and_then(|(_, doc)| {
            doc.value
                .pointer("/spec/resourceMapping")
                .and_then(Value::as_array)
                .and_then(|items| {
                    items.iter().position(|m| {
                        m.get("deviceIndex").and_then(Value::as_i64) == Some(device_index as i64)
                    })
                })
        });
        match idx {
            Some(i) if field.is_empty() => format!("/spec/resourceMapping/{i}"),
            Some(i) => format!("/spec/resourceMapping/{i}/{field}"),
            None => "/spec/resourceMapping".to_string(),
        }
    }

    /// The Git pointer of writeCombining in config `name`, in the spelling Git uses.
    fn write_combining_pointer(&self, name: &str) -> &'static str {
        let misspelt = self.by_name.get(name).is_some_and(|(_, doc)| {
            doc.value
                .pointer("/spec/driverOptions/writeCombining")
                .is_none()
                && doc
                    .value
                    .pointer("/spec/driverOptions/writeCombing")
                    .is_some()
        });
        if misspelt {
            "/spec/driverOptions/writeCombing"
        } else {
            "/spec/driverOptions/writeCombining"
        }
    }
}

fn name_of(meta: &ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or_default()
}

fn opt_json(v: Option<Value>) -> Value {
    v.unwrap_or(Value::Null)
}

/// Renders a JSON pointer as `a.b[0].c` for messages.
fn dotted(pointer: &str) -> String {
    let mut out = String::new();
    for tok in dpdk_bridge::json_pointer::pointer_tokens(pointer) {
        if tok.chars().all(|c| c.is_ascii_digit()) && !tok.is_empty() {
            out.push_str(&format!("[{tok}]"));
        } else if tok.contains(['.', '/']) {
            out.push_str(&format!("[{tok:?}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&tok);
        }
    }
    out
}

fn show(v: &Value) -> String {
    match v {
        Value::Null => "absent".to_string(),
        other => other.to_string(),
    }
}

#[allow(clippy::too_many_arguments)]
fn finding(
    layer: Layer,
    kind: FindingKind,
    object: ObjectRef,
    node: Option<String>,
    (source, file, line): (Option<String>, Option<String>, Option<usize>),
    field_path: String,
    git: Value,
    live: Value,
    owned_by: Option<&str>,
    message: String,
) -> Finding {
    Finding {
        layer,
        kind,
        object,
        node,
        source,
        file,
        line,
        field_path,
        git,
        live,
        owned_by: owned_by.map(str::to_string),
        since: Arc::from(""),
        message,
    }
}

// ---------------------------------------------------------------------------------------
// Layer 1: Git ↔ cluster.

fn git_cluster(
    src: &GitSource,
    live: &LiveView,
    live_by_name: &HashMap<&str, &DPDKConfig>,
    out: &mut Vec<Finding>,
) {
    let source = src.key.as_ref().map(ToString::to_string);
    let mut declared = HashSet::new();
    for doc in src.documents.iter().filter(|d| d.is_dpdk_config()) {
        let Some(name) = doc.name() else { continue };
        if !declared.insert(name) {
            continue; // duplicates are the validator's error, not drift
        }
        let object = ObjectRef::cluster("DPDKConfig", name);
        match live_by_name.get(name) {
            None => out.push(finding(
                Layer::GitCluster,
                FindingKind::Missing,
                object,
                None,
                (
                    source.clone(),
                    Some(doc.file.clone()),
                    Some(doc.first_line()),
                ),
                String::new(),
                doc.value.get("spec").cloned().unwrap_or(Value::Null),
                Value::Null,
                None,
                format!(
                    "DPDKConfig {name} is declared in {}:{} but not in the cluster",
                    doc.file,
                    doc.first_line()
                ),
            )),
            Some(cfg) => {
                let owner = owned_by(&cfg.metadata);
                for d in compare_config(doc, cfg) {
                    let line = doc.line_of(&d.pointer);
                    let (git, live) = (opt_json(d.git), opt_json(d.live));
                    let message = format!(
                        "DPDKConfig {name}: {} is {} in Git ({}:{line}), {} in the cluster",
                        dotted(&d.pointer),
                        show(&git),
                        doc.file,
                        show(&live)
                    );
                    out.push(finding(
                        Layer::GitCluster,
                        FindingKind::Modified,
                        object.clone(),
                        None,
                        (source.clone(), Some(doc.file.clone()), Some(line)),
                        d.pointer,
                        git,
                        live,
                        owner,
                        message,
                    ));
                }
            }
        }
    }

    let ours = src.key.as_ref().map(|k| k.label_value());
    let mut extras: Vec<&DPDKConfig> = live
        .configs
        .iter()
        .copied()
        .filter(|c| !declared.contains(name_of(&c.metadata)) && owned_by(&c.metadata).is_none())
        .filter(|c| {
            match c
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(labels::SOURCE_LABEL))
            {
                Some(label) => Some(label) == ours.as_ref(),
                None => src.adopt_orphans,
            }
        })
        .collect();
    extras.sort_by(|a, b| name_of(&a.metadata).cmp(name_of(&b.metadata)));
    let mut planned: BTreeSet<String> = BTreeSet::new();
    for cfg in extras {
        let name = name_of(&cfg.metadata);
        let mut file = new_file_path(src, name);
        let mut n = 2;
        while !planned.insert(file.clone()) {
            file = format!("{}-{n}.yaml", file.trim_end_matches(".yaml"));
            n += 1;
        }
        out.push(finding(
            Layer::GitCluster,
            FindingKind::Extra,
            ObjectRef::cluster("DPDKConfig", name),
            None,
            (source.clone(), Some(file.clone()), None),
            String::new(),
            Value::Null,
            serde_json::to_value(&cfg.spec).unwrap_or(Value::Null),
            None,
            format!(
                "DPDKConfig {name} is in the cluster but not in Git (the patch adds it as {file})"
            ),
        ));
    }
}

/// Field differences between a Git document and its live DPDKConfig: the labels and
/// annotations Git declares, and the normalized spec. Pointers address the Git document.
pub fn compare_config(doc: &GitDocument, cfg: &DPDKConfig) -> Vec<FieldDiff> {
    let mut diffs = Vec::new();
    for (field, live_map) in [
        ("labels", &cfg.metadata.labels),
        ("annotations", &cfg.metadata.annotations),
    ] {
        let Some(git_map) = doc
            .value
            .pointer(&format!("/metadata/{field}"))
            .and_then(Value::as_object)
        else {
            continue;
        };
        for (k, gv) in git_map {
            let lv = live_map
                .as_ref()
                .and_then(|m| m.get(k))
                .map(|s| Value::String(s.clone()));
            // Label values are strings; YAML may have typed them (`tier: 1`).
            let gs = match gv {
                Value::String(s) => Value::String(s.clone()),
                other => Value::String(other.to_string()),
            };
            if lv.as_ref() != Some(&gs) {
                diffs.push(FieldDiff {
                    pointer: format!(
                        "/metadata/{field}/{}",
                        dpdk_bridge::json_pointer::escape_token(k)
                    ),
                    git: Some(gv.clone()),
                    live: lv,
                });
            }
        }
    }
    let live_spec = normalize_config_spec(&serde_json::to_value(&cfg.spec).unwrap_or(Value::Null));
    let mut spec_diffs = Vec::new();
    diff_values(
        &doc.normalized_spec,
        &live_spec,
        "/spec",
        &config_list_key,
        &mut spec_diffs,
    );
    for mut d in spec_diffs {
        // Address the key Git spells (the seed's writeCombing).
        if d.pointer == "/spec/driverOptions/writeCombining"
            && doc
                .value
                .pointer("/spec/driverOptions/writeCombining")
                .is_none()
            && doc
                .value
                .pointer("/spec/driverOptions/writeCombing")
                .is_some()
        {
            d.pointer = "/spec/driverOptions/writeCombing".into();
        }
        diffs.push(d);
    }
    diffs
}

// ---------------------------------------------------------------------------------------
// Layer 2: cluster ↔ NodeENI.
//
// What the configs imply is what the controller would write: its pure planner runs on the
// same objects, so drift and the controller never disagree on targets, overlaps or
// conflicts. A planned NodeENI apply whose fields differ from the live ones is drift; a
// planned release is a NodeENI still carrying DPDK fields no config asks for; conflicts
// are those the controller reports (or would report, when it has not written them yet).

fn cluster_nodeeni(live: &LiveView, origins: &Origins, now: Timestamp, out: &mut Vec<Finding>) {
    let snap = plan::Snapshot {
        configs: live.configs.clone(),
        nodes: live.nodes.clone(),
        node_enis: live.node_enis.clone(),
        node_states: live.node_states.clone(),
        server_conflicts: Vec::new(),
    };
    let settings = plan::Settings {
        cluster_scope: live.complete,
        ..Default::default()
    };
    let planned = plan::plan(&snap, &settings, now);
    let enis: HashMap<&str, &NodeENI> = live
        .node_enis
        .iter()
        .map(|e| (name_of(&e.metadata), *e))
        .collect();
    let mut configs: Vec<&DPDKConfig> = live.configs.clone();
    configs.sort_by(|a, b| plan::age_key(a).cmp(&plan::age_key(b)));
    // (driver, resourceName) → the oldest config and device index asking for it.
    let mut askers: HashMap<(DpdkDriver, &str), (&str, i32)> = HashMap::new();
    for c in &configs {
        for m in &c.spec.resource_mapping {
            askers
                .entry((m.driver, m.resource_name.as_str()))
                .or_insert((name_of(&c.metadata), m.device_index));
        }
    }
    let mut planned_conflicts: HashMap<&str, &[ConfigConflict]> = HashMap::new();

    for w in &planned.writes {
        match w {
            plan::Write::ApplyNodeEni { name, fields, .. } => {
                let Some(eni) = enis.get(name.as_str()) else {
                    continue;
                };
                // The oldest config asking for these fields is the one that implies them.
                let asker = askers
                    .get(&(fields.driver, fields.resource_name.as_str()))
                    .copied();
                let object = ObjectRef::cluster("NodeENI", name);
                let checks: [(&str, &str, Value, Value); 3] = [
                    (
                        "/spec/enableDPDK",
                        "",
                        json!(true),
                        opt_json(eni.spec.enable_dpdk.map(Value::Bool)),
                    ),
                    (
                        "/spec/dpdkDriver",
                        "driver",
                        json!(fields.driver.as_str()),
                        opt_json(eni.spec.dpdk_driver.clone().map(Value::String)),
                    ),
                    (
                        "/spec/dpdkResourceName",
                        "resourceName",
                        json!(fields.resource_name),
                        opt_json(eni.spec.dpdk_resource_name.clone().map(Value::String)),
                    ),
                ];
                for (path, cfg_field, git, live_v) in checks {
                    if git == live_v {
                        continue;
                    }
                    let (loc, by) = match asker {
                        Some((c, d)) => {
                            let loc = origins.locate(c, &origins.mapping_pointer(c, d, cfg_field));
                            let at = loc
                                .1
                                .as_ref()
                                .map(|f| format!(" ({f}:{})", loc.2.unwrap_or(1)))
                                .unwrap_or_default();
                            (
                                loc,
                                format!(
                                    "DPDKConfig {c}{at} implies {} for deviceIndex {d}",
                                    show(&git)
                                ),
                            )
                        }
                        None => (
                            (None, None, None),
                            format!("the DPDKConfigs imply {}", show(&git)),
                        ),
                    };
                    out.push(finding(
                        Layer::ClusterNodeEni,
                        FindingKind::Modified,
                        object.clone(),
                        None,
                        loc,
                        path.to_string(),
                        git,
                        live_v.clone(),
                        None,
                        format!(
                            "NodeENI {name}: {} is {} but {by}",
                            dotted(path),
                            show(&live_v)
                        ),
                    ));
                }
            }
            plan::Write::ReleaseNodeEni { name, .. } => {
                let Some(eni) = enis.get(name.as_str()) else {
                    continue;
                };
                out.push(finding(
                    Layer::ClusterNodeEni,
                    FindingKind::Extra,
                    ObjectRef::cluster("NodeENI", name),
                    None,
                    (None, None, None),
                    "/spec/enableDPDK".into(),
                    Value::Null,
                    opt_json(eni.spec.enable_dpdk.map(Value::Bool)),
                    None,
                    format!("NodeENI {name}: carries DPDK fields set by {} that no DPDKConfig asks for any more", labels::CONTROLLER_MANAGER),
                ));
            }
            plan::Write::ConfigStatus { config, status } => {
                planned_conflicts.insert(config.as_str(), status.conflicts.as_slice());
            }
            _ => {}
        }
    }

    // Conflicts: what the controller reported, or what it is about to report.
    for cfg in &live.configs {
        let name = name_of(&cfg.metadata);
        let conflicts = planned_conflicts.get(name).copied().unwrap_or_else(|| {
            cfg.status
                .as_ref()
                .map(|s| s.conflicts.as_slice())
                .unwrap_or_default()
        });
        for (i, c) in conflicts.iter().enumerate() {
            let ptr = match (c.device_index, c.reason.as_str()) {
                (_, plan::reason::SELECTOR_REACHES_UNMATCHED_NODES) => {
                    "/spec/nodeSelector".to_string()
                }
                (Some(d), _) => origins.mapping_pointer(name, d, ""),
                (None, _) => "/spec".to_string(),
            };
            out.push(finding(
                Layer::ClusterNodeEni,
                FindingKind::Conflict,
                ObjectRef::cluster("DPDKConfig", name),
                c.node.clone(),
                origins.locate(name, &ptr),
                format!("/status/conflicts/{i}"),
                Value::Null,
                serde_json::to_value(c).unwrap_or(Value::Null),
                owned_by(&cfg.metadata),
                format!("DPDKConfig {name}: {}: {}", c.reason, c.message),
            ));
        }
    }
    rollout_pending(&planned.rollouts, origins, out);
}

// ---------------------------------------------------------------------------------------
// Layer 3: desired ↔ node.

/// A node waiting its turn in a rollout: its DPDKNodeState still has the old spec on
/// purpose. Reported with its place in the remaining waves, not as a driver mismatch.
fn rollout_pending(rollouts: &[plan::ConfigRollout], origins: &Origins, out: &mut Vec<Finding>) {
    for r in rollouts {
        for node in r.in_state(|s| *s == plan::rollout::NodeRollout::Pending) {
            let Some(pos) = r.position(node) else {
                continue;
            };
            let phase = r.phase.as_str();
            out.push(finding(
                Layer::DesiredNode,
                FindingKind::RolloutPending,
                ObjectRef::cluster("DPDKNodeState", node),
                Some(node.to_string()),
                origins.locate(&r.config, "/spec"),
                "/spec".into(),
                json!({"config": r.config, "wave": pos.wave, "waves": pos.waves, "position": pos.position, "of": pos.of}),
                json!(phase),
                None,
                format!(
                    "node {node}: waiting its turn in the rollout of DPDKConfig {} ({pos}; rollout {phase})",
                    r.config
                ),
            ));
        }
    }
}

fn desired_node(
    live: &LiveView,
    live_by_name: &HashMap<&str, &DPDKConfig>,
    origins: &Origins,
    out: &mut Vec<Finding>,
) {
    for ns in &live.node_states {
        let node = name_of(&ns.metadata).to_string();
        let object = ObjectRef::cluster("DPDKNodeState", &node);
        let spec = &ns.spec;
        if spec.devices.is_empty() {
            continue; // teardown or nothing asked: the node owes nothing
        }
        // The config that asked for device `d`: the oldest one in spec.configs mapping it.
        let config_for = |d: i32| -> Option<&str> {
            spec.configs.iter().map(String::as_str).find(|c| {
                live_by_name.get(c).is_some_and(|cfg| {
                    cfg.spec
                        .resource_mapping
                        .iter()
                        .any(|m| m.device_index == d)
                })
            })
        };
        let locate_mapping = |d: i32, field: &str| match config_for(d) {
            Some(c) => origins.locate(c, &origins.mapping_pointer(c, d, field)),
            None => (None, None, None),
        };
        let first_config = spec.configs.first().map(String::as_str);
        let locate_cfg =
            |ptr: &str| first_config.map_or((None, None, None), |c| origins.locate(c, ptr));
        let at = |loc: &(Option<String>, Option<String>, Option<usize>)| match (&loc.1, loc.2) {
            (Some(f), Some(l)) => format!(" (asked for in {f}:{l})"),
            _ => String::new(),
        };
        let mut push = |kind, loc, path: String, git: Value, live_v: Value, message: String| {
            out.push(finding(
                Layer::DesiredNode,
                kind,
                object.clone(),
                Some(node.clone()),
                loc,
                path,
                git,
                live_v,
                None,
                message,
            ));
        };

        let Some(status) = &ns.status else {
            let d0 = spec.devices[0].device_index;
            let loc = locate_mapping(d0, "");
            let message = format!(
                "node {node}: the node agent has not reported any status{}",
                at(&loc)
            );
            push(
                FindingKind::NotReported,
                loc,
                "/status".into(),
                json!({"devices": spec.devices.len()}),
                Value::Null,
                message,
            );
            continue;
        };

        for want in &spec.devices {
            let d = want.device_index;
            let found = status
                .devices
                .iter()
                .enumerate()
                .find(|(_, s)| s.device_index == d);
            match found {
                None => {
                    let loc = locate_mapping(d, "");
                    let message = format!(
                        "node {node}: device {d} ({}) is not reported by the node agent{}",
                        want.node_eni,
                        at(&loc)
                    );
                    push(
                        FindingKind::DeviceMissing,
                        loc,
                        format!("/status/devices/{d}"),
                        serde_json::to_value(want).unwrap_or(Value::Null),
                        Value::Null,
                        message,
                    );
                }
                Some((j, have)) => {
                    if have.bound && have.driver.as_deref() == Some(want.driver.as_str()) {
                        continue;
                    }
                    let loc = locate_mapping(d, "driver");
                    let now_on = have.driver.as_deref().unwrap_or("no driver");
                    let what = [have.pci_address.as_deref(), have.interface_name.as_deref()]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join(", ");
                    let why = match (&have.health, &have.message) {
                        (Some(h), Some(m)) => format!(" [{h}: {m}]"),
                        (Some(h), None) => format!(" [{h}]"),
                        (None, Some(m)) => format!(" [{m}]"),
                        (None, None) => String::new(),
                    };
                    let message = format!(
                        "node {node}: device {d}{} is on {now_on}, not {}{why}{}",
                        if what.is_empty() {
                            String::new()
                        } else {
                            format!(" ({what})")
                        },
                        want.driver,
                        at(&loc)
                    );
                    push(
                        FindingKind::DeviceDriver,
                        loc,
                        format!("/status/devices/{j}/driver"),
                        json!(want.driver.as_str()),
                        opt_json(have.driver.clone().map(Value::String)),
                        message,
                    );
                }
            }
        }

        let Some(modules) = &status.modules else {
            let loc = locate_mapping(spec.devices[0].device_index, "driver");
            let message = format!(
                "node {node}: the node agent reports no kernel module state{}",
                at(&loc)
            );
            push(
                FindingKind::NotReported,
                loc,
                "/status/modules".into(),
                json!("reported"),
                Value::Null,
                message,
            );
            continue;
        };
        let vfio_device = spec
            .devices
            .iter()
            .find(|d| d.driver == DpdkDriver::VfioPci);
        if let Some(dev) = vfio_device {
            for (field, module, loaded) in [
                ("vfio", "vfio", modules.vfio),
                ("vfioPci", "vfio-pci", modules.vfio_pci),
            ] {
                if !loaded {
                    let loc = locate_mapping(dev.device_index, "driver");
                    let message = format!(
                        "node {node}: kernel module {module} is not loaded; device {} needs vfio-pci{}",
                        dev.device_index,
                        at(&loc)
                    );
                    push(
                        FindingKind::ModuleUnloaded,
                        loc,
                        format!("/status/modules/{field}"),
                        json!(true),
                        json!(false),
                        message,
                    );
                }
            }
            let want = spec.driver_options.enable_unsafe_no_iommu;
            if modules.vfio && modules.noiommu != want {
                let loc = locate_cfg("/spec/driverOptions/enableUnsafeNoIOMMU");
                let message = format!(
                    "node {node}: vfio enable_unsafe_noiommu_mode is {}, enableUnsafeNoIOMMU asks for {}{}",
                    if modules.noiommu { "on" } else { "off" },
                    if want { "on" } else { "off" },
                    at(&loc)
                );
                push(
                    FindingKind::NoIommu,
                    loc,
                    "/status/modules/noiommu".into(),
                    json!(want),
                    json!(modules.noiommu),
                    message,
                );
            }
        }
        let mut other_drivers: Vec<(&str, i32)> = spec
            .devices
            .iter()
            .filter(|d| d.driver != DpdkDriver::VfioPci)
            .map(|d| (d.driver.as_str(), d.device_index))
            .collect();
        other_drivers.sort();
        other_drivers.dedup_by_key(|(m, _)| *m);
        for (module, d) in other_drivers {
            if !modules.others.iter().any(|o| o == module) {
                let loc = locate_mapping(d, "driver");
                let message = format!(
                    "node {node}: kernel module {module} is not loaded; device {d} needs it{}",
                    at(&loc)
                );
                push(
                    FindingKind::ModuleUnloaded,
                    loc,
                    "/status/modules/others".into(),
                    json!(module),
                    serde_json::to_value(&modules.others).unwrap_or(Value::Null),
                    message,
                );
            }
        }
        if spec.driver_options.write_combining
            && modules.write_combining.state != WriteCombiningState::Enabled
        {
            // The config that asked for write-combining.
            let asker = spec
                .configs
                .iter()
                .map(String::as_str)
                .find(|c| {
                    live_by_name
                        .get(c)
                        .is_some_and(|cfg| cfg.spec.driver_options.effective_write_combining())
                })
                .or(first_config);
            let loc = asker.map_or((None, None, None), |c| {
                origins.locate(c, origins.write_combining_pointer(c))
            });
            let state = match modules.write_combining.state {
                WriteCombiningState::Enabled => "Enabled",
                WriteCombiningState::Unavailable => "Unavailable",
                WriteCombiningState::Disabled => "Disabled",
            };
            let reason = modules
                .write_combining
                .reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default();
            let message = format!(
                "node {node}: write-combining was asked for and is {state}{reason}{}",
                at(&loc)
            );
            push(
                FindingKind::WriteCombining,
                loc,
                "/status/modules/writeCombining/state".into(),
                json!("Enabled"),
                json!(state),
                message,
            );
        }
    }
}
