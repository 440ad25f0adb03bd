//! The images, built here from deploy/docker/*.Dockerfile (static binaries, buildah, nothing
//! pulled), are what they claim (scratch, OCI labels, static binaries, no leftovers) and
//! the reconciler image really runs under runc with the Deployment's security settings
//! (uid 65532, read-only root, no capabilities) and the host network: `validate` on
//! examples-repo/, then `run` against the local control plane until a DPDKConfig from a
//! Git source (HTTPS on loopback) is applied.
//!
//! The binaries are built with the dev profile (DPDK_IMAGES_PROFILE=release for the
//! release profile): the same code, a fraction of the build time in the test command.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use dpdk_testenv::control_plane::workspace_root;
use dpdk_testenv::demo::copy_tree;
use dpdk_testenv::git_server::{HttpAuth, HttpsGitServer, WorkRepo};
use dpdk_testenv::images::{BuiltImage, IMAGES, Profile, VERSION, build_images};
use dpdk_testenv::runc::{BindMount, Bundle, Security, pod_spec};
use dpdk_testenv::{ControlPlane, Reaper, StartOptions, unique_name};
use serde_json::Value;

fn images() -> &'static [BuiltImage] {
    static IMAGES: OnceLock<Vec<BuiltImage>> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let profile = match std::env::var("DPDK_IMAGES_PROFILE").as_deref() {
            Ok("release") => Profile::Release,
            _ => Profile::Dev,
        };
        build_images(profile).expect("the images build")
    })
}

fn image(name: &str) -> &'static BuiltImage {
    images()
        .iter()
        .find(|i| i.name == name)
        .unwrap_or_else(|| panic!("no image {name}"))
}

fn blob(image: &BuiltImage, digest: &str) -> Value {
    let p = image
        .layout
        .join("blobs")
        .join(digest.replacen(':', "/", 1));
    serde_json::from_str(&std::fs::read_to_string(&p).expect("blob")).expect("JSON blob")
}

/// Every file and directory of a tree, relative, sorted.
fn tree(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).expect("dir").flatten() {
            let rel = e
                .path()
                .strip_prefix(root)
                .expect("under root")
                .display()
                .to_string();
            out.push(rel);
            if e.file_type().expect("type").is_dir() {
                walk(root, &e.path(), out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

#[test]
fn both_images_are_scratch_with_labels_and_one_static_binary() {
    for (name, _) in IMAGES {
        let img = image(name);
        assert!(img.digest.starts_with("sha256:"), "{img:?}");
        let manifest = blob(img, &img.digest);
        let config = blob(img, manifest["config"]["digest"].as_str().expect("config"));
        let labels = &config["config"]["Labels"];
        assert_eq!(labels["org.opencontainers.image.version"], VERSION);
        assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
        assert_eq!(
            labels["org.opencontainers.image.source"],
            "https://github.com/dpdk-gitops/dpdk-gitops"
        );
        assert!(
            labels["org.opencontainers.image.revision"]
                .as_str()
                .is_some_and(|r| !r.is_empty()),
            "{labels}"
        );
        let bundle = Bundle::unpack(img).expect("umoci unpacks");
        // FROM scratch: the root files and the binary, nothing else (no shell, no kmod).
        let bin = format!("usr/local/bin/{name}");
        assert_eq!(
            tree(&bundle.rootfs()),
            [
                "etc",
                "etc/group",
                "etc/nsswitch.conf",
                "etc/passwd",
                "etc/ssl",
                "etc/ssl/certs",
                "etc/ssl/certs/ca-certificates.crt",
                "usr",
                "usr/local",
                "usr/local/bin",
                bin.as_str(),
            ]
        );
        let passwd = std::fs::read_to_string(bundle.rootfs().join("etc/passwd")).expect("passwd");
        assert!(
            passwd
                .lines()
                .any(|l| l.starts_with("nonroot:x:65532:65532:")),
            "{passwd}"
        );
        let ldd = std::process::Command::new("ldd")
            .arg(bundle.rootfs().join(&bin))
            .output()
            .expect("ldd runs");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&ldd.stdout),
            String::from_utf8_lossy(&ldd.stderr)
        );
        assert!(
            said.contains("not a dynamic executable") || said.contains("statically linked"),
            "{name} is not static: {said}"
        );
    }
}

/// The admin kubeconfig as the controller's ServiceAccount, with the certificates inline
/// and readable by uid 65532 (the container cannot read the control plane's key files).
fn controller_kubeconfig(cp: &ControlPlane, dir: &Path) -> PathBuf {
    let sa = dir.join("sa.kubeconfig");
    cp.write_service_account_kubeconfig("dpdk-operator", "dpdk-controller", &sa)
        .expect("kubeconfig");
    let out = cp
        .kubectl()
        .env("KUBECONFIG", &sa)
        .args(["config", "view", "--flatten", "--raw"])
        .output()
        .expect("kubectl config view");
    assert!(out.status.success());
    let flat = dir.join("controller.kubeconfig");
    std::fs::write(&flat, &out.stdout).expect("write kubeconfig");
    make_readable(&flat, 0o644);
    flat
}

fn make_readable(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn kubectl(cp: &ControlPlane, args: &[&str]) -> String {
    let out = cp.kubectl().args(args).output().expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// `Uid:` and `CapEff:` of a process, from /proc.
fn uid_and_caps(pid: u32) -> (String, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.split_whitespace().next().unwrap_or_default().to_string())
            .unwrap_or_default()
    };
    (field("Uid:"), field("CapEff:"))
}

/// The pid of a running container's init, from `runc state`.
fn container_pid(bundle: &Bundle, id: &str) -> Option<u32> {
    let out = std::process::Command::new("runc")
        .arg("--root")
        .arg(bundle.state_root())
        .args(["state", id])
        .output()
        .ok()?;
    let state: Value = serde_json::from_slice(&out.stdout).ok()?;
    (state["status"] == "running")
        .then(|| state["pid"].as_u64())
        .flatten()
        .map(|p| p as u32)
}

#[tokio::test]
async fn the_reconciler_image_validates_and_applies_a_git_source_under_runc() {
    let root = workspace_root();
    let controller_yaml = root.join("deploy/dpdk-controller.yaml");
    let spec = pod_spec(&controller_yaml, "Deployment", "dpdk-controller").expect("Deployment");
    let security = Security::of_container(&spec, "controller").expect("container");
    assert_eq!(security.user, Some((65532, 65532)));
    assert!(security.read_only_root && security.capabilities.is_empty());
    let bundle = Bundle::unpack(image("dpdk-reconciler")).expect("umoci unpacks");
    let repo_mount = |source: &Path| BindMount {
        source: source.to_path_buf(),
        destination: "/repo".into(),
        read_only: true,
    };

    // validate: examples-repo passes; a broken config fails with its file and line.
    let id = unique_name("validate");
    let out = bundle
        .run(
            &id,
            &["validate", "/repo/clusters"],
            &security,
            &[],
            &[repo_mount(&root.join("examples-repo"))],
        )
        .expect("runc runs");
    bundle.delete(&id);
    let said =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "validate examples-repo in the image: {said}"
    );
    assert!(
        said.contains("DPDKConfig(s), 0 skipped, 0 error(s)"),
        "{said}"
    );
    let bad = tempfile::tempdir().expect("tempdir");
    make_readable(bad.path(), 0o755);
    let bad_file = bad.path().join("broken.yaml");
    std::fs::write(
        &bad_file,
        "apiVersion: networking.k8s.aws/v1alpha1\nkind: DPDKConfig\nmetadata: {name: broken}\nspec:\n  resourceMapping:\n  - deviceIndex: 0\n    resourceName: intel.com/x\n",
    )
    .expect("write");
    make_readable(&bad_file, 0o644);
    let id = unique_name("validate-bad");
    let out = bundle
        .run(
            &id,
            &["validate", "/repo"],
            &security,
            &[],
            &[repo_mount(bad.path())],
        )
        .expect("runc runs");
    bundle.delete(&id);
    let said =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("/repo/broken.yaml:6:18: deviceIndex must be >= 1"),
        "{said}"
    );

    // run: deploy/ on a fresh control plane, examples-repo served over HTTPS Git, a
    // DPDKConfigSource, and the image as the controller's ServiceAccount.
    let cp = ControlPlane::start(StartOptions::default())
        .await
        .expect("control plane");
    let path = |rel: &str| root.join(rel).display().to_string();
    kubectl(
        &cp,
        &["apply", "-f", &path("deploy/testing/nodeeni-crd.yaml")],
    );
    for f in [
        "deploy/dpdk-crd.yaml",
        "deploy/dpdk-operator.yaml",
        "deploy/dpdk-controller.yaml",
    ] {
        kubectl(&cp, &["apply", "-f", &path(f)]);
    }
    kubectl(
        &cp,
        &[
            "wait",
            "--for=condition=Established",
            "crd",
            "--all",
            "--timeout=60s",
        ],
    );
    let scratch = tempfile::tempdir().expect("tempdir");
    let repo = WorkRepo::init(&scratch.path().join("git/platform/dpdk-config")).expect("repo");
    copy_tree(&root.join("examples-repo"), &repo.dir).expect("copy examples-repo");
    repo.commit("examples-repo").expect("commit");
    let auth = HttpAuth::Basic {
        username: "runc".into(),
        password: "runc-password".into(),
    };
    let server = HttpsGitServer::start(&scratch.path().join("git"), auth)
        .await
        .expect("git server");
    let ca: Vec<String> = server.ca_pem.lines().map(|l| format!("    {l}")).collect();
    let source = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: runc-git, namespace: dpdk-operator}}\nstringData:\n  username: runc\n  password: runc-password\n  ca.crt: |\n{}\n---\napiVersion: networking.k8s.aws/v1alpha1\nkind: DPDKConfigSource\nmetadata: {{name: runc-source, namespace: dpdk-operator}}\nspec:\n  url: {}\n  ref: {{branch: main}}\n  path: clusters/production\n  interval: 30s\n  secretRef: {{name: runc-git}}\n",
        ca.join("\n"),
        server.url("platform/dpdk-config")
    );
    let source_file = scratch.path().join("source.yaml");
    std::fs::write(&source_file, source).expect("write source");
    kubectl(&cp, &["apply", "-f", &source_file.display().to_string()]);

    let kubeconfig = controller_kubeconfig(&cp, scratch.path());
    // The Deployment's own arguments, on a free port of the host network.
    let http_addr = format!("--http-addr=127.0.0.1:{}", free_port());
    let args: Vec<String> = spec["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .map(|a| {
            if a.starts_with("--http-addr=") {
                http_addr.clone()
            } else {
                a.to_string()
            }
        })
        .collect();
    assert_eq!(args.first().map(String::as_str), Some("run"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let id = unique_name("reconciler");
    let log_path = scratch.path().join("reconciler.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let mut cmd = bundle
        .command(
            &id,
            &args,
            &security,
            &[
                ("KUBECONFIG", "/etc/dpdk-gitops/kubeconfig"),
                ("POD_NAME", "dpdk-controller-runc"),
            ],
            &[BindMount {
                source: kubeconfig,
                destination: "/etc/dpdk-gitops/kubeconfig".into(),
                read_only: true,
            }],
        )
        .expect("runc command");
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log);
    let child = Reaper::spawn(cmd, Duration::from_secs(5)).expect("runc starts");

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut checked_process = false;
    let applied = loop {
        if !checked_process && let Some(pid) = container_pid(&bundle, &id) {
            let (uid, caps) = uid_and_caps(pid);
            assert_eq!(uid, "65532", "the reconciler's uid in the container");
            assert_eq!(
                caps, "0000000000000000",
                "the reconciler's effective capabilities"
            );
            checked_process = true;
        }
        let out = cp
            .kubectl()
            .args([
                "get",
                "dpdkconfig",
                "default-dpdk-config",
                "-o",
                "jsonpath={.metadata.managedFields[*].manager}",
            ])
            .output()
            .expect("kubectl");
        let managers = String::from_utf8_lossy(&out.stdout).to_string();
        if out.status.success() && managers.contains("dpdk-reconciler") {
            break managers;
        }
        assert!(
            Instant::now() < deadline,
            "no DPDKConfig from the Git source within 120s; the container's log:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(checked_process, "the container never ran");
    assert!(applied.contains("dpdk-reconciler"), "{applied}");
    assert!(
        server.requests() > 0,
        "the reconciler fetched from the Git server"
    );
    drop(child);
    bundle.delete(&id);
}
