//! Every duration flag of `dpdk-node-agent` takes a Go duration and refuses a bare number
//! (`run` once read `30` as seconds, `device-plugin` and `simulate` as milliseconds).
//! Runs the real binary; clap refuses before anything starts.

use std::process::Command;

/// Subcommand, the flag that once took a bare number, a Go duration it accepts, and the
/// other arguments the subcommand requires.
const FLAGS: &[(&str, &str, &str, &[&str])] = &[
    ("run", "--resync", "30s", &["--node-name", "n"]),
    ("run", "--retry", "5s", &["--node-name", "n"]),
    (
        "device-plugin",
        "--health-interval",
        "50ms",
        &["--node-name", "n"],
    ),
    (
        "simulate",
        "--retry",
        "1s",
        &["--node", "n", "--work-dir", "/tmp/x"],
    ),
    (
        "simulate",
        "--resync",
        "30s",
        &["--node", "n", "--work-dir", "/tmp/x"],
    ),
];

fn agent(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dpdk-node-agent"))
        .args(args)
        .output()
        .expect("run dpdk-node-agent");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn a_bare_number_is_refused_with_the_accepted_forms() {
    for (cmd, flag, _, required) in FLAGS {
        let mut args = vec![*cmd, *flag, "30"];
        args.extend_from_slice(required);
        let (code, _, stderr) = agent(&args);
        assert_eq!(code, Some(2), "{cmd} {flag} 30 accepted: {stderr}");
        assert!(
            stderr.contains(flag) && stderr.contains("bare number has no unit"),
            "{cmd} {flag}: {stderr}"
        );
        assert!(
            stderr.contains("500ms, 30s, 1m30s"),
            "{cmd} {flag}: {stderr}"
        );
    }
}

#[test]
fn go_durations_are_accepted() {
    for (cmd, flag, value, required) in FLAGS {
        let mut args = vec![*cmd, *flag, *value];
        args.extend_from_slice(required);
        args.push("--help");
        let (code, _, stderr) = agent(&args);
        assert_eq!(code, Some(0), "{cmd} {flag} {value}: {stderr}");
    }
}

#[test]
fn help_shows_the_accepted_forms() {
    for (cmd, flag, _, _) in FLAGS {
        let (_, help, _) = agent(&[cmd, "--help"]);
        let text = help
            .lines()
            .skip_while(|l| !l.contains(flag))
            .take(4)
            .collect::<Vec<_>>()
            .join(" ");
        assert!(text.contains("Go duration"), "{cmd} {flag} help: {text}");
    }
}
