//! One version: the workspace version (Cargo.toml `[workspace.package]`) is the tag of every
//! image deploy/ names, the chart's version and appVersion, and what `--version` of both
//! binaries prints.

use std::path::Path;

use dpdk_testenv::control_plane::workspace_root;
use dpdk_testenv::demo::sibling_binary;

/// `version = "..."` of `[workspace.package]` in the root Cargo.toml.
fn workspace_version(cargo_toml: &str) -> Option<String> {
    cargo_toml
        .lines()
        .skip_while(|l| l.trim() != "[workspace.package]")
        .skip(1)
        .take_while(|l| !l.trim_start().starts_with('['))
        .find_map(|l| {
            let (key, value) = l.split_once('=')?;
            (key.trim() == "version").then(|| value.trim().trim_matches('"').to_string())
        })
}

/// Every `ghcr.io/dpdk-gitops/<image>:<tag>` reference in a text.
fn image_refs(text: &str) -> Vec<String> {
    text.split(|c: char| c.is_whitespace() || c == '"' || c == '\'')
        .filter(|w| w.starts_with("ghcr.io/dpdk-gitops/"))
        .map(str::to_string)
        .collect()
}

/// A top-level `key: value` of a YAML file, unquoted.
fn yaml_field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        Some(rest.trim().trim_matches('"').to_string())
    })
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn workspace_version_is_the_image_tags_the_chart_and_version_output() {
    let root = workspace_root();
    let version = workspace_version(&read(&root.join("Cargo.toml"))).expect("workspace version");

    // Image tags in deploy/ (manifests and the Dockerfiles' comments).
    let mut refs = Vec::new();
    for dir in ["deploy", "deploy/docker"] {
        for e in std::fs::read_dir(root.join(dir)).expect(dir).flatten() {
            if e.path().is_file() {
                refs.extend(image_refs(&read(&e.path())));
            }
        }
    }
    assert!(
        refs.iter()
            .any(|r| r.starts_with("ghcr.io/dpdk-gitops/dpdk-reconciler:"))
            && refs
                .iter()
                .any(|r| r.starts_with("ghcr.io/dpdk-gitops/dpdk-node-agent:")),
        "deploy/ must name both images: {refs:?}"
    );
    for r in &refs {
        assert!(
            r.ends_with(&format!(":{version}")),
            "{r} is not tagged with the workspace version {version}"
        );
    }

    // The chart.
    let chart = read(&root.join("deploy/chart/dpdk-gitops/Chart.yaml"));
    assert_eq!(yaml_field(&chart, "version"), Some(version.clone()));
    assert_eq!(yaml_field(&chart, "appVersion"), Some(version.clone()));

    // --version of both binaries.
    for bin in ["dpdk-reconciler", "dpdk-node-agent"] {
        let exe = sibling_binary(bin).expect(bin);
        let out = std::process::Command::new(&exe)
            .arg("--version")
            .output()
            .expect("runs");
        assert!(out.status.success(), "{bin} --version");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("{bin} {version}")
        );
    }
}

#[test]
fn the_version_readers_read_what_they_name() {
    let toml = "[workspace]\nmembers = []\n\n[workspace.package]\nedition = \"2024\"\nversion = \"1.2.3\"\n\n[workspace.dependencies]\nversion = \"9\"\n";
    assert_eq!(workspace_version(toml).as_deref(), Some("1.2.3"));
    assert_eq!(workspace_version("[package]\nversion = \"1\"\n"), None);
    assert_eq!(
        image_refs(
            "image: ghcr.io/dpdk-gitops/dpdk-node-agent:0.1.0\n-t \"ghcr.io/dpdk-gitops/x:2\""
        ),
        [
            "ghcr.io/dpdk-gitops/dpdk-node-agent:0.1.0",
            "ghcr.io/dpdk-gitops/x:2"
        ]
    );
    assert_eq!(
        yaml_field(
            "apiVersion: v2\nversion: 0.1.0\nappVersion: \"0.1.0\"\n",
            "appVersion"
        )
        .as_deref(),
        Some("0.1.0")
    );
}
