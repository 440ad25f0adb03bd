//! Every duration flag of `dpdk-reconciler` takes a Go duration and refuses a bare number
//! (these flags once read `300` as seconds). Runs the real binary; clap refuses before
//! anything connects.

use std::process::Command;

/// The flags that once took a bare number, and a Go duration each accepts.
const FLAGS: &[(&str, &str)] = &[
    ("--teardown-timeout", "5m"),
    ("--resync-interval", "10m"),
    ("--lease-duration", "15s"),
    ("--renew-deadline", "10s"),
    ("--retry-period", "2s"),
    ("--source-fetch-timeout", "2m"),
];

fn run_with(flag: &str, value: &str) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dpdk-reconciler"))
        .args(["run", flag, value, "--help"])
        .output()
        .expect("run dpdk-reconciler");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn a_bare_number_is_refused_with_the_accepted_forms() {
    for (flag, _) in FLAGS {
        let (code, stderr) = run_with(flag, "30");
        assert_eq!(code, Some(2), "{flag} 30 accepted: {stderr}");
        assert!(
            stderr.contains(flag) && stderr.contains("bare number has no unit"),
            "{flag}: {stderr}"
        );
        assert!(stderr.contains("500ms, 30s, 1m30s"), "{flag}: {stderr}");
    }
}

#[test]
fn go_durations_are_accepted() {
    for (flag, value) in FLAGS {
        // `--help` after a valid value prints help and exits 0 without running.
        let (code, stderr) = run_with(flag, value);
        assert_eq!(code, Some(0), "{flag} {value}: {stderr}");
    }
}

#[test]
fn help_shows_the_accepted_forms() {
    let out = Command::new(env!("CARGO_BIN_EXE_dpdk-reconciler"))
        .args(["run", "--help"])
        .output()
        .expect("run dpdk-reconciler");
    let help = String::from_utf8_lossy(&out.stdout);
    for (flag, _) in FLAGS {
        let line = help
            .lines()
            .skip_while(|l| !l.contains(flag))
            .take(4)
            .collect::<Vec<_>>()
            .join(" ");
        assert!(line.contains("Go duration"), "{flag} help: {line}");
    }
}
