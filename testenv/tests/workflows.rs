//! The GitHub workflows (.github/workflows/ci.yml and release.yml, and examples-repo's
//! dpdk-plan.yml) pass actionlint (built from Go modules like the control plane), the
//! checker really checks (a broken copy fails), CI runs the README's test command, and
//! examples-repo's pull-request jobs (GitHub and GitLab) run `validate`, then `plan`.

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

/// examples-repo's pull-request job (.github/workflows/dpdk-plan.yml) passes actionlint,
/// and both it and the GitLab job (.gitlab-ci.yml) run `validate` before `plan` and let
/// only plan's "changes" exit code (1) through.
#[test]
fn the_example_plan_jobs_validate_then_plan() {
    let root = workspace_root().join("examples-repo");
    let github = root.join(".github/workflows/dpdk-plan.yml");
    let out = actionlint(&[&github]);
    assert!(
        out.status.success(),
        "actionlint: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&github).expect("dpdk-plan.yml");
    let (validate, plan) = (
        text.find("dpdk-reconciler validate clusters/")
            .expect("validate step"),
        text.find("dpdk-reconciler plan --checkout .")
            .expect("plan step"),
    );
    assert!(validate < plan, "validate runs first");
    assert!(
        text.contains("if [ \"$code\" -ge 2 ]; then exit \"$code\"; fi"),
        "{text}"
    );

    let gitlab: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(root.join(".gitlab-ci.yml")).expect(".gitlab-ci.yml"),
    )
    .expect(".gitlab-ci.yml is YAML");
    let stages: Vec<&str> = gitlab["stages"]
        .as_sequence()
        .expect("stages")
        .iter()
        .filter_map(|s| s.as_str())
        .collect();
    assert_eq!(stages, vec!["validate", "plan"]);
    let script = |job: &str| -> Vec<String> {
        gitlab[job]["script"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{job} has a script"))
            .iter()
            .filter_map(|l| l.as_str().map(str::to_string))
            .collect()
    };
    for (job, stage, command) in [
        (
            "dpdk-validate",
            "validate",
            "dpdk-reconciler validate clusters/",
        ),
        (
            "dpdk-plan",
            "plan",
            "dpdk-reconciler plan --checkout . --source",
        ),
    ] {
        assert_eq!(gitlab[job]["stage"].as_str(), Some(stage), "{job}");
        assert_eq!(
            gitlab[job]["extends"].as_str(),
            Some(".dpdk-reconciler"),
            "{job}"
        );
        assert!(
            script(job).iter().any(|l| l.starts_with(command)),
            "{job}: {:?}",
            script(job)
        );
    }
    let exit_codes: Vec<u64> = gitlab["dpdk-plan"]["allow_failure"]["exit_codes"]
        .as_sequence()
        .expect("allow_failure.exit_codes")
        .iter()
        .filter_map(|c| c.as_u64())
        .collect();
    assert_eq!(
        exit_codes,
        vec![1],
        "changes pass with a warning; errors fail"
    );
    assert_eq!(
        script("dpdk-plan").last().map(String::as_str),
        Some("exit $code")
    );
}
