//! `dpdk-reconciler validate` (the real binary) on the hostile repositories of issue 12:
//! each gives a clear `file[:line:col]` error naming the limit's flag, and the process's
//! peak RSS (wait4's ru_maxrss) stays at or under 64 MiB. The figures are printed for
//! BENCHMARKS.md (`cargo test -p dpdk-reconciler --test hostile_validate -- --nocapture`).

mod hostile_support;

use std::process::{Command, Stdio};
use std::time::Instant;

use hostile_support::{ALL, Hostile};

const RSS_TARGET_KIB: i64 = 64 * 1024;

/// Runs the binary in `dir`; returns (exit code, stdout, peak RSS KiB, seconds).
// The child is reaped by wait4 (for its rusage), not by `Child::wait`.
#[allow(clippy::zombie_processes)]
fn validate(dir: &std::path::Path, target: &str) -> (i32, String, i64, f64) {
    let out = tempfile::NamedTempFile::new().expect("stdout file");
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_dpdk-reconciler"))
        .args(["validate", target])
        .current_dir(dir)
        .stdout(out.reopen().expect("reopen"))
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn validate");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 reaps our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4");
    let secs = started.elapsed().as_secs_f64();
    let code = libc::WEXITSTATUS(status);
    let text = std::fs::read_to_string(out.path()).expect("read stdout");
    (code, text, usage.ru_maxrss, secs)
}

fn check(case: Hostile) {
    let dir = tempfile::tempdir().expect("tempdir");
    case.write(dir.path(), "prod");
    let (code, out, rss, secs) = validate(dir.path(), "prod");
    println!(
        "hostile validate {:<13} exit {code} peak RSS {:.1} MiB {:.2} s",
        case.label(),
        rss as f64 / 1024.0,
        secs
    );
    let want = case.expected("prod");
    if want.is_empty() {
        assert_eq!(code, 0, "{}: {out}", case.label());
    } else {
        assert_eq!(code, 1, "{}: a clear error: {out}", case.label());
        for w in &want {
            assert!(
                out.contains(w.as_str()),
                "{}: {out:?} lacks {w:?}",
                case.label()
            );
        }
    }
    assert!(
        rss <= RSS_TARGET_KIB,
        "{}: peak RSS {rss} KiB over 64 MiB",
        case.label()
    );
}

#[test]
fn alias_bomb() {
    check(Hostile::AliasBomb);
}

#[test]
fn a_2gb_blob_inside_the_path() {
    check(Hostile::BigBlobInside);
}

#[test]
fn a_2gb_blob_outside_the_path_is_not_read() {
    check(Hostile::BigBlobOutside);
}

#[test]
fn a_hundred_thousand_files() {
    check(Hostile::ManyFiles);
}

#[test]
fn nesting_10000_deep() {
    check(Hostile::DeepNesting);
}

#[test]
fn symlink_loops() {
    check(Hostile::SymlinkLoop);
}

#[test]
fn every_case_is_tested() {
    assert_eq!(ALL.len(), 6);
}
