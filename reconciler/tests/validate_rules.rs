//! Offline validation of config-repo files: the CRD's rules and the semantic ones, each
//! reported as `file:line:col: message`. Pure: no server, no Git.

use dpdk_reconciler::manifest::load::RawFile;
use dpdk_reconciler::manifest::{Code, Manifests};

use std::sync::LazyLock;

/// The seed's DPDKConfig as the guide prints it: examples-repo's file without its comment
/// lines, so the positions below are the guide's.
static SEED: LazyLock<String> =
    LazyLock::new(dpdk_testenv::fixtures::seed_dpdkconfig_as_in_the_guide);

fn check(files: &[(&str, &str)]) -> Manifests {
    Manifests::from_files(
        files
            .iter()
            .map(|(p, t)| RawFile {
                path: p.to_string(),
                bytes: t.as_bytes().to_vec(),
            })
            .collect(),
    )
}

fn errors(m: &Manifests) -> Vec<String> {
    m.errors().map(|d| d.to_string()).collect()
}

fn only_error(m: &Manifests) -> (Code, String) {
    let errs: Vec<_> = m.errors().collect();
    assert_eq!(
        errs.len(),
        1,
        "expected exactly one error, got {:#?}",
        errors(m)
    );
    (errs[0].code, errs[0].to_string())
}

#[test]
fn the_seed_config_is_valid_with_a_writecombing_warning() {
    let m = check(&[("clusters/prod/seed.yaml", SEED.as_str())]);
    assert!(m.is_valid(), "{:?}", errors(&m));
    assert_eq!(m.objects.len(), 1);
    let o = &m.objects[0];
    assert_eq!(
        (o.name.as_str(), o.file.as_str(), o.line),
        ("default-dpdk-config", "clusters/prod/seed.yaml", 1)
    );
    assert!(o.config.spec.driver_options.effective_write_combining());
    // The body is what Git declares: writeCombing kept as written, no defaults added.
    assert_eq!(
        o.body["spec"]["driverOptions"]["writeCombing"],
        serde_json::json!(true)
    );
    assert!(
        o.body["spec"]["driverOptions"]
            .get("writeCombining")
            .is_none()
    );
    let warnings: Vec<String> = m.warnings().map(|d| d.to_string()).collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("clusters/prod/seed.yaml:10:5: warning: spec.driverOptions.writeCombing: writeCombing is the seed guide's misspelling of writeCombining"),
        "{}",
        warnings[0]
    );
}

#[test]
fn device_index_zero_names_the_primary_eni() {
    let m = check(&[("a.yaml", &SEED.replace("deviceIndex: 2", "deviceIndex: 0"))]);
    let (code, msg) = only_error(&m);
    assert_eq!(code, Code::PrimaryEni);
    assert_eq!(
        msg,
        "a.yaml:12:18: deviceIndex must be >= 1: index 0 is the node's primary ENI, and binding it to a DPDK driver would cut the node off the network"
    );
    assert!(
        m.objects.is_empty(),
        "an invalid object is not returned for applying"
    );
}

#[test]
fn resource_name_must_be_domain_slash_name() {
    let m = check(&[(
        "a.yaml",
        &SEED.replace(
            "intel.com/intel_sriov_netdevice_2",
            "intel_sriov_netdevice_2",
        ),
    )]);
    let (code, msg) = only_error(&m);
    assert_eq!(code, Code::RuleViolation);
    assert_eq!(
        msg,
        "a.yaml:13:19: resourceName must be an extended resource name of the form <domain>/<name>, e.g. intel.com/intel_sriov_netdevice_2"
    );
}

#[test]
fn driver_must_be_one_of_the_enum() {
    let m = check(&[(
        "a.yaml",
        &SEED.replace("driver: vfio-pci", "driver: \"mlx5_core\""),
    )]);
    let (code, msg) = only_error(&m);
    assert_eq!(code, Code::SchemaViolation);
    assert_eq!(
        msg,
        "a.yaml:14:13: spec.resourceMapping[0].driver: unsupported value \"mlx5_core\": supported values: \"vfio-pci\", \"igb_uio\", \"uio_pci_generic\""
    );
}

#[test]
fn node_selector_must_not_be_empty_or_missing() {
    let empty = SEED.replace(
        "  nodeSelector:\n    ng: multi-eni\n",
        "  nodeSelector: {}\n",
    );
    let (code, msg) = only_error(&check(&[("a.yaml", &empty)]));
    assert_eq!(code, Code::RuleViolation);
    assert_eq!(
        msg,
        "a.yaml:6:17: spec.nodeSelector must not be empty: an empty selector would select every node in the cluster"
    );

    let missing = SEED.replace("  nodeSelector:\n    ng: multi-eni\n", "");
    let (code, msg) = only_error(&check(&[("a.yaml", &missing)]));
    assert_eq!(code, Code::SchemaViolation);
    assert_eq!(msg, "a.yaml:5:1: spec.nodeSelector is required");
}

#[test]
fn duplicate_device_index_is_an_error_naming_the_first() {
    let dup = SEED.replace(
        "    driver: vfio-pci\n",
        "    driver: vfio-pci\n  - deviceIndex: 2\n    resourceName: example.com/other\n",
    );
    let (code, msg) = only_error(&check(&[("a.yaml", &dup)]));
    assert_eq!(code, Code::DuplicateKey);
    assert_eq!(
        msg,
        "a.yaml:15:18: spec.resourceMapping[1].deviceIndex: duplicate deviceIndex 2: already mapped at line 12; spec.resourceMapping is keyed by deviceIndex"
    );
}

#[test]
fn unknown_fields_are_errors_with_a_hint() {
    let typo = SEED.replace(
        "    enableUnsafeNoIOMMU: true\n",
        "    enableUnsafeNoIOMMU: true\n    writeCombinig: true\n",
    );
    let (code, msg) = only_error(&check(&[("a.yaml", &typo)]));
    assert_eq!(code, Code::UnknownField);
    assert_eq!(
        msg,
        "a.yaml:10:5: unknown field \"writeCombinig\" in spec.driverOptions (did you mean \"writeCombining\"?)"
    );

    let top = format!("{}extra: 1\n", *SEED);
    let (code, msg) = only_error(&check(&[("a.yaml", &top)]));
    assert_eq!(code, Code::UnknownField);
    assert_eq!(msg, "a.yaml:15:1: unknown field \"extra\" in the object");

    let meta = SEED.replace(
        "  name: default-dpdk-config\n",
        "  name: default-dpdk-config\n  lables: {a: b}\n",
    );
    let (code, msg) = only_error(&check(&[("a.yaml", &meta)]));
    assert_eq!(code, Code::UnknownField);
    assert_eq!(
        msg,
        "a.yaml:5:3: unknown field \"lables\" in metadata (did you mean \"labels\"?)"
    );
}

#[test]
fn type_errors_point_at_the_value() {
    let m = check(&[(
        "a.yaml",
        &SEED.replace("deviceIndex: 2", "deviceIndex: \"2\""),
    )]);
    let (code, msg) = only_error(&m);
    assert_eq!(code, Code::SchemaViolation);
    assert_eq!(
        msg,
        "a.yaml:12:18: spec.resourceMapping[0].deviceIndex: must be of type integer, found a string"
    );
    let m = check(&[("a.yaml", &SEED.replace("ng: multi-eni", "ng: 1"))]);
    assert_eq!(
        only_error(&m).1,
        "a.yaml:7:9: spec.nodeSelector[ng]: must be of type string, found an integer"
    );
}

#[test]
fn duplicate_names_across_files() {
    let m = check(&[
        ("a/one.yaml", SEED.as_str()),
        ("b/two.yaml", &format!("# another\n{}", *SEED)),
    ]);
    let (code, msg) = only_error(&m);
    assert_eq!(code, Code::DuplicateName);
    assert_eq!(
        msg,
        "b/two.yaml:5:9: duplicate DPDKConfig name \"default-dpdk-config\": already declared at a/one.yaml:4:9"
    );
}

#[test]
fn invalid_yaml_reports_the_file_line() {
    let text = format!(
        "{}---\napiVersion: networking.k8s.aws/v1alpha1\nkind: DPDKConfig\nmetadata:\n  name: x\n   bad: [\n",
        *SEED
    );
    let m = check(&[("a.yaml", &text)]);
    let (code, msg) = only_error(&m);
    assert_eq!(code, Code::InvalidYaml);
    assert!(
        msg.starts_with("a.yaml:20:"),
        "the line is absolute in the file: {msg}"
    );
    assert!(msg.contains("invalid YAML"), "{msg}");
    // The valid first document is still parsed (but the revision as a whole is invalid).
    assert_eq!(m.objects.len(), 1);
    assert!(!m.is_valid());
}

#[test]
fn other_kinds_are_skipped_and_reported() {
    let text = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\n---\n{}---\n# just a comment\n---\napiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [seed.yaml]\n",
        *SEED
    );
    let m = check(&[("k.yaml", &text)]);
    assert!(m.is_valid(), "{:?}", errors(&m));
    assert_eq!(m.objects.len(), 1);
    let skipped: Vec<(String, usize, Option<String>)> = m
        .skipped
        .iter()
        .map(|s| (s.kind.clone(), s.line, s.name.clone()))
        .collect();
    assert_eq!(
        skipped,
        vec![
            ("ConfigMap".to_string(), 1, Some("cm".to_string())),
            ("Kustomization".to_string(), 23, None)
        ]
    );
    assert!(
        m.skipped[0]
            .reason
            .contains("not applied by dpdk-reconciler")
    );
}

#[test]
fn unsupported_version_and_missing_kind() {
    let m = check(&[("a.yaml", &SEED.replace("v1alpha1", "v1beta1"))]);
    let (code, msg) = only_error(&m);
    assert_eq!(code, Code::UnsupportedVersion);
    assert_eq!(
        msg,
        "a.yaml:1:13: apiVersion networking.k8s.aws/v1beta1 is not served; use networking.k8s.aws/v1alpha1"
    );
    let m = check(&[("a.yaml", &SEED.replace("kind: DPDKConfig\n", ""))]);
    assert_eq!(only_error(&m).0, Code::NotAnObject);
    let m = check(&[("a.yaml", "- just\n- a list\n")]);
    assert_eq!(
        only_error(&m).1,
        "a.yaml:1:1: a document must be a Kubernetes object (a mapping), found a list"
    );
}

#[test]
fn metadata_rules() {
    let m = check(&[(
        "a.yaml",
        &SEED.replace("name: default-dpdk-config", "name: Default_Config"),
    )]);
    let (code, msg) = only_error(&m);
    assert_eq!(code, Code::InvalidMetadata);
    assert!(
        msg.starts_with("a.yaml:4:9: metadata.name: \"Default_Config\" is not a valid name"),
        "{msg}"
    );
    let m = check(&[(
        "a.yaml",
        &SEED.replace("  name: default-dpdk-config\n", "  generateName: dpdk-\n"),
    )]);
    let errs = errors(&m);
    assert!(
        errs.iter().any(|e| e.starts_with(
            "a.yaml:4:3: metadata.generateName: objects applied from Git need a fixed metadata.name"
        )),
        "{errs:?}"
    );
    assert!(
        errs.iter().any(|e| e.contains("metadata.name is required")),
        "{errs:?}"
    );
    let m = check(&[(
        "a.yaml",
        &SEED.replace(
            "  name: default-dpdk-config\n",
            "  name: x\n  namespace: dpdk-operator\n",
        ),
    )]);
    assert!(m.is_valid());
    assert!(m.warnings().any(|w| w.to_string() == "a.yaml:5:3: warning: metadata.namespace: DPDKConfig is cluster-scoped; metadata.namespace is ignored"));
    assert!(
        m.objects[0].body["metadata"].get("namespace").is_none(),
        "namespace is not applied"
    );
}

#[test]
fn write_combining_spellings_must_agree() {
    let m = check(&[(
        "a.yaml",
        &SEED.replace(
            "    writeCombing: true\n",
            "    writeCombing: true\n    writeCombining: false\n",
        ),
    )]);
    let (code, msg) = only_error(&m);
    assert_eq!(code, Code::RuleViolation);
    assert_eq!(
        msg,
        "a.yaml:9:5: spec.driverOptions.writeCombing is a misspelling of writeCombining; when both are set they must agree"
    );
}

#[test]
fn non_utf8_and_duplicate_keys() {
    let m = Manifests::from_files(vec![RawFile {
        path: "bin.yaml".into(),
        bytes: b"a: 1\nb: \xff\xfe\n".to_vec(),
    }]);
    assert_eq!(only_error(&m).1.split(": ").next(), Some("bin.yaml:2:1"));
    let m = check(&[(
        "a.yaml",
        &SEED.replace("    ng: multi-eni\n", "    ng: multi-eni\n    ng: other\n"),
    )]);
    let (code, msg) = only_error(&m);
    assert_eq!(code, Code::InvalidYaml);
    assert!(
        msg.starts_with("a.yaml:8:5: invalid YAML: "),
        "the second key is named: {msg}"
    );
    assert!(msg.contains("duplicate entry with key \"ng\""), "{msg}");
}

/// `spec.rollout` (docs/controller.md, Rollouts): maxUnavailable is a count >= 1 or a
/// percentage, checked offline as the API server's CEL rule does.
#[test]
fn rollout_max_unavailable_is_a_count_or_a_percentage() {
    let with = |v: &str| {
        format!(
            "{}  rollout:\n    maxUnavailable: {v}\n    paused: false\n",
            *SEED
        )
    };
    for ok in ["25%", "0%", "100%", "3"] {
        let m = check(&[("a.yaml", &with(ok))]);
        assert!(errors(&m).is_empty(), "{ok}: {:#?}", errors(&m));
    }
    for bad in ["\"110%\"", "\"25\"", "0"] {
        let m = check(&[("a.yaml", &with(bad))]);
        let (code, msg) = only_error(&m);
        assert_eq!(code, Code::RuleViolation, "{bad}: {msg}");
        assert!(
            msg.contains("maxUnavailable must be an integer >= 1"),
            "{bad}: {msg}"
        );
    }
    let m = check(&[("a.yaml", &with("true"))]);
    let (code, msg) = only_error(&m);
    assert_eq!(code, Code::SchemaViolation, "{msg}");
    assert!(msg.contains("must be an integer or a string"), "{msg}");
}
