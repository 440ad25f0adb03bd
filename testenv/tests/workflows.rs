//! The GitHub workflows (.github/workflows/ci.yml and release.yml) pass actionlint (built
//! from Go modules like the control plane), the checker really checks (a broken copy
//! fails), and CI runs the README's test command.

use std::path::Path;
use std::process::Output;

use dpdk_testenv::binaries::ACTIONLINT;
use dpdk_testenv::control_plane::workspace_root;

fn actionlint(files: &[&Path]) -> Output {
    let exe = ACTIONLINT.ensure().expect("actionlint builds");
    std::process::Command::new(exe)
        .arg("-no-color")
        .args(files)
        .current_dir(workspace_root())
        .output()
        .expect("actionlint runs")
}

#[test]
fn both_workflows_pass_actionlint() {
    let dir = workspace_root().join(".github/workflows");
    let (ci, release) = (dir.join("ci.yml"), dir.join("release.yml"));
    let out = actionlint(&[&ci, &release]);
    assert!(
        out.status.success(),
        "actionlint: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // A release workflow whose job needs a job that does not exist is refused.
    let broken = tempfile::tempdir().expect("tempdir");
    let text = std::fs::read_to_string(&release).expect("release.yml");
    let edited = text.replacen(
        "needs: [version, binaries]",
        "needs: [version, no-such-job]",
        1,
    );
    assert_ne!(edited, text, "release.yml changed shape; update this test");
    let copy = broken.path().join("release.yml");
    std::fs::write(&copy, edited).expect("write");
    let out = actionlint(&[&copy]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no-such-job"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn ci_runs_the_readme_test_command_and_release_builds_what_it_ships() {
    let root = workspace_root();
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
    let command = "bash testenv/run-tests.sh";
    assert!(
        readme.contains(command),
        "the README's test command changed"
    );
    let ci = std::fs::read_to_string(root.join(".github/workflows/ci.yml")).expect("ci.yml");
    assert!(
        ci.lines().any(|l| l.trim() == format!("run: {command}")),
        "{ci}"
    );
    let release =
        std::fs::read_to_string(root.join(".github/workflows/release.yml")).expect("release.yml");
    for needle in [
        "tags: [\"v*\"]",
        "aarch64-unknown-linux-gnu",
        "deploy/docker/static-build.sh release",
        "file: deploy/docker/",
        "platforms: linux/amd64,linux/arm64",
        "sbom: true",
        "provenance: mode=max",
        "cosign sign --yes",
        "helm push",
        "sha256sum",
        "gh release create",
    ] {
        assert!(release.contains(needle), "release.yml lacks {needle:?}");
    }
}
