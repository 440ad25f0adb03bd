//! `dpdk-reconciler validate <dir>`: exit codes and messages on a directory of good and
//! bad files, run as the real binary.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_dpdk-reconciler");

fn config(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: networking.k8s.aws/v1alpha1\nkind: DPDKConfig\nmetadata:\n  name: {name}\nspec:\n  nodeSelector:\n    ng: multi-eni\n{extra}  resourceMapping:\n  - deviceIndex: 2\n    resourceName: intel.com/intel_sriov_netdevice_2\n"
    )
}

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    fs::write(p, text).expect("write");
}

fn run(args: &[&str], cwd: &Path) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn good_directory_exits_zero_and_prints_the_writecombing_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "repo/prod/seed.yaml",
        &config("seed", "  driverOptions:\n    writeCombing: true\n"),
    );
    write(
        dir.path(),
        "repo/prod/other.yaml",
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\n---\n{}",
            config("two", "")
        ),
    );
    let (code, out, err) = run(&["validate", "repo"], dir.path());
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert_eq!(
        out,
        "repo/prod/seed.yaml:9:5: warning: spec.driverOptions.writeCombing: writeCombing is the seed guide's misspelling of writeCombining; it is honoured as writeCombining, but rename it\n"
    );
    assert!(
        err.contains("repo/prod/other.yaml:1: skipped ConfigMap cm:"),
        "{err}"
    );
    assert!(
        err.contains("2 DPDKConfig(s), 1 skipped, 0 error(s), 1 warning(s)"),
        "{err}"
    );
}

#[test]
fn bad_directory_exits_one_with_one_line_per_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    write(&repo, "a-good.yaml", &config("good", ""));
    write(
        &repo,
        "b-index0.yaml",
        &config("zero", "").replace("deviceIndex: 2", "deviceIndex: 0"),
    );
    write(&repo, "c-dup.yaml", &config("good", ""));
    write(
        &repo,
        "d-broken.yaml",
        "apiVersion: networking.k8s.aws/v1alpha1\nkind: DPDKConfig\nmetadata: [\n",
    );
    write(
        &repo,
        "e-unknown.yaml",
        &config("unknown", "  nodeSelecter:\n    a: b\n"),
    );
    symlink("/etc/passwd", repo.join("f-passwd.yaml")).expect("symlink");
    let (code, out, err) = run(&["validate", "repo"], dir.path());
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "one line per error:\n{out}");
    assert_eq!(
        lines[0],
        "repo/f-passwd.yaml: symlink to /etc/passwd leaves the repository; refused"
    );
    assert_eq!(
        lines[1],
        "repo/b-index0.yaml:9:18: deviceIndex must be >= 1: index 0 is the node's primary ENI, and binding it to a DPDK driver would cut the node off the network"
    );
    assert!(
        lines[2].starts_with("repo/d-broken.yaml:4:1: invalid YAML: "),
        "{}",
        lines[2]
    );
    assert_eq!(
        lines[3],
        "repo/e-unknown.yaml:8:3: unknown field \"nodeSelecter\" in spec (did you mean \"nodeSelector\"?)"
    );
    assert_eq!(
        lines[4],
        "repo/c-dup.yaml:4:9: duplicate DPDKConfig name \"good\": already declared at repo/a-good.yaml:4:9"
    );
    assert!(err.contains("5 error(s)"), "{err}");
}

#[test]
fn from_inside_the_directory_paths_are_plain() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "x.yaml",
        &config("x", "").replace("intel.com/intel_sriov_netdevice_2", "bad"),
    );
    let (code, out, _) = run(&["validate", "."], dir.path());
    assert_eq!(code, 1);
    assert!(
        out.starts_with("x.yaml:10:19: resourceName must be an extended resource name"),
        "{out}"
    );
}

#[test]
fn usage_errors_exit_two() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, _, err) = run(&["validate", "does-not-exist"], dir.path());
    assert_eq!(code, 2);
    assert!(
        err.contains("does-not-exist: no such file or directory"),
        "{err}"
    );
    let (code, _, err) = run(&["validate"], dir.path());
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run(&["validate", ".", "--max-file-bytez", "3"], dir.path());
    assert_eq!(code, 2);
    assert!(
        err.contains("--max-file-bytez"),
        "a bad flag names itself: {err}"
    );
}
