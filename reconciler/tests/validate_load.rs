//! The loader on a real directory tree: deterministic order, recursion, hidden entries,
//! symlinks that stay inside or leave the repository, spec.path escapes, size limits.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use dpdk_reconciler::manifest::load::LoadOptions;
use dpdk_reconciler::manifest::{Code, Manifests};

fn config(name: &str, index: u32) -> String {
    format!(
        "apiVersion: networking.k8s.aws/v1alpha1\nkind: DPDKConfig\nmetadata:\n  name: {name}\nspec:\n  nodeSelector:\n    ng: multi-eni\n  resourceMapping:\n  - deviceIndex: {index}\n    resourceName: intel.com/dpdk_{index}\n"
    )
}

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    fs::write(p, text).expect("write");
}

fn errors(m: &Manifests) -> Vec<String> {
    m.errors().map(|d| d.to_string()).collect()
}

#[test]
fn every_yaml_file_recursively_in_a_stable_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(root, "clusters/prod/b.yaml", &config("b", 1));
    write(root, "clusters/prod/a.yml", &config("a", 1));
    write(root, "clusters/prod/Z.YAML", &config("z", 1));
    write(
        root,
        "clusters/prod/nested/deeper/c.yaml",
        &format!("{}---\n{}", config("c1", 1), config("c2", 2)),
    );
    write(root, "clusters/prod/readme.md", "not yaml");
    write(root, "clusters/prod/.hidden/h.yaml", &config("hidden", 1));
    write(root, "clusters/prod/.h.yaml", &config("hidden2", 1));
    write(root, "clusters/staging/s.yaml", &config("s", 1));
    let m = Manifests::load(root, "clusters/prod", &LoadOptions::default());
    assert!(m.is_valid(), "{:?}", errors(&m));
    let files: Vec<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        files,
        vec![
            "clusters/prod/Z.YAML",
            "clusters/prod/a.yml",
            "clusters/prod/b.yaml",
            "clusters/prod/nested/deeper/c.yaml"
        ]
    );
    let names: Vec<&str> = m.objects.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, vec!["z", "a", "b", "c1", "c2"]);
    let c2 = m.object("c2").expect("c2");
    assert_eq!(
        (c2.file.as_str(), c2.line, c2.document),
        ("clusters/prod/nested/deeper/c.yaml", 12, 1)
    );
    assert_eq!(
        m.document(c2)
            .expect("doc")
            .index
            .locate("/metadata/name")
            .line,
        15
    );
    // "." and "./" and "" are the whole repository.
    for p in [".", "", "./"] {
        assert_eq!(
            Manifests::load(root, p, &LoadOptions::default())
                .objects
                .len(),
            6
        );
    }
}

#[test]
fn a_symlink_to_etc_passwd_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(root, "prod/a.yaml", &config("a", 1));
    symlink("/etc/passwd", root.join("prod/passwd.yaml")).expect("symlink");
    let m = Manifests::load(root, "prod", &LoadOptions::default());
    let errs: Vec<_> = m.errors().collect();
    assert_eq!(errs.len(), 1, "{:?}", errors(&m));
    assert_eq!(errs[0].code, Code::SymlinkEscapes);
    assert_eq!(
        errs[0].to_string(),
        "prod/passwd.yaml: symlink to /etc/passwd leaves the repository; refused"
    );
    assert!(
        m.files.iter().all(|f| !f.text.contains("root:")),
        "the target was never read"
    );
}

#[test]
fn symlinks_leaving_the_repo_are_refused_whatever_they_point_at() {
    let outside = tempfile::tempdir().expect("outside");
    write(outside.path(), "evil.yaml", &config("evil", 1));
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(root, "prod/a.yaml", &config("a", 1));
    symlink(outside.path(), root.join("prod/dir-link")).expect("dir symlink");
    symlink(
        "../../../../../../../../etc/hostname",
        root.join("prod/rel.yaml"),
    )
    .expect("relative symlink");
    symlink("/nonexistent/x.yaml", root.join("prod/dangling.yaml")).expect("dangling");
    let m = Manifests::load(root, "prod", &LoadOptions::default());
    let codes: Vec<(Code, &str)> = m.errors().map(|d| (d.code, d.file.as_str())).collect();
    assert_eq!(
        codes,
        vec![
            (Code::SymlinkEscapes, "prod/dangling.yaml"),
            (Code::SymlinkEscapes, "prod/dir-link"),
            (Code::SymlinkEscapes, "prod/rel.yaml")
        ]
    );
    assert!(m.object("evil").is_none());
}

#[test]
fn symlinks_inside_the_repo_are_followed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(root, "shared/common.yaml", &config("common", 3));
    write(root, "prod/a.yaml", &config("a", 1));
    symlink("../shared/common.yaml", root.join("prod/common.yaml")).expect("symlink");
    symlink("../shared", root.join("prod/shared-dir")).expect("dir symlink");
    // A cycle inside the repo ends instead of looping.
    symlink("..", root.join("prod/loop")).expect("loop");
    let m = Manifests::load(root, "prod", &LoadOptions::default());
    let names: Vec<(&str, &str)> = m
        .objects
        .iter()
        .map(|o| (o.name.as_str(), o.file.as_str()))
        .collect();
    // The same object reached twice is a duplicate name, reported with both paths.
    assert!(names.contains(&("common", "prod/common.yaml")), "{names:?}");
    assert!(
        m.errors()
            .any(|d| d.code == Code::DuplicateName && d.message.contains("prod/common.yaml")),
        "{:?}",
        errors(&m)
    );
}

#[test]
fn spec_path_may_not_escape() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(root, "prod/a.yaml", &config("a", 1));
    symlink("/etc", root.join("etc-link")).expect("symlink");
    for (path, expect) in [
        ("../../", "spec.path \"../../\" escapes the repository"),
        (
            "prod/../../x",
            "spec.path \"prod/../../x\" escapes the repository",
        ),
        (
            "/etc",
            "spec.path \"/etc\" is absolute; it must be relative to the repository root",
        ),
        (
            "nope",
            "spec.path \"nope\" does not exist in the repository",
        ),
    ] {
        let m = Manifests::load(root, path, &LoadOptions::default());
        let errs: Vec<_> = m.errors().collect();
        assert_eq!(errs.len(), 1, "{path}: {:?}", errors(&m));
        assert_eq!(errs[0].code, Code::PathEscapes);
        assert_eq!(errs[0].to_string(), format!("{path}: {expect}"));
    }
    let m = Manifests::load(root, "etc-link", &LoadOptions::default());
    let errs: Vec<_> = m.errors().collect();
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].to_string().starts_with(
            "etc-link: spec.path \"etc-link\" resolves to /etc outside the repository"
        )
    );
    assert!(m.files.is_empty());
}

#[test]
fn file_size_and_count_limits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(root, "a.yaml", &config("a", 1));
    write(
        root,
        "big.yaml",
        &format!("{}# {}\n", config("big", 1), "x".repeat(5000)),
    );
    let opts = LoadOptions {
        max_file_bytes: 4096,
        ..Default::default()
    };
    let m = Manifests::load(root, ".", &opts);
    let errs: Vec<_> = m.errors().collect();
    assert_eq!(errs.len(), 1, "{:?}", errors(&m));
    assert_eq!(errs[0].code, Code::TooLarge);
    assert!(
        errs[0].to_string().starts_with("big.yaml: file is 5"),
        "{}",
        errs[0]
    );
    assert!(
        errs[0]
            .to_string()
            .ends_with("bytes, over the 4096-byte limit"),
        "{}",
        errs[0]
    );

    let opts = LoadOptions {
        max_files: 1,
        ..Default::default()
    };
    let m = Manifests::load(root, ".", &opts);
    assert!(
        m.errors()
            .any(|d| d.code == Code::TooLarge && d.message.contains("more than 1 YAML files")),
        "{:?}",
        errors(&m)
    );
}

#[test]
fn a_single_file_path_is_allowed() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "prod/a.yaml", &config("a", 1));
    let m = Manifests::load(dir.path(), "prod/a.yaml", &LoadOptions::default());
    assert!(m.is_valid());
    assert_eq!(m.objects[0].file, "prod/a.yaml");
}
