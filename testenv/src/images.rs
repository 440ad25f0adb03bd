//! The two images, built here from the project's own Dockerfiles (`deploy/docker/`): the
//! static binaries (`deploy/docker/static-build.sh`), the build context the Dockerfiles
//! describe, then `buildah` (vfs storage, chroot isolation, nothing pulled: both start
//! `FROM scratch`) into one OCI layout under the cache.
//!
//! Tests unpack the layout with umoci and run it under runc; `dpdk-testenv images` prints
//! each image's digest and size.

use std::path::{Path, PathBuf};
use std::process::Command;

use fs4::fs_std::FileExt;
use serde_json::Value;

use crate::binaries::cache_root;
use crate::control_plane::workspace_root;
use crate::{Error, Result, io_err};

/// The images: name (also the binary's), and Dockerfile under deploy/docker/.
pub const IMAGES: [(&str, &str); 2] = [
    ("dpdk-reconciler", "reconciler.Dockerfile"),
    ("dpdk-node-agent", "node-agent.Dockerfile"),
];

/// The workspace version: the images' tag and their version label.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Which cargo profile the static binaries are built with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// `[profile.release]` (LTO, one codegen unit, stripped): what the release ships.
    Release,
    /// `[profile.dev]`: the same code, built in a fraction of the time (the test command).
    Dev,
}

impl Profile {
    fn cargo_name(self) -> &'static str {
        match self {
            Profile::Release => "release",
            Profile::Dev => "dev",
        }
    }
}

/// One image in the OCI layout.
#[derive(Clone, Debug)]
pub struct BuiltImage {
    pub name: String,
    /// The OCI layout directory.
    pub layout: PathBuf,
    /// Its reference name in the layout (`<name>-<version>`).
    pub tag: String,
    /// Manifest digest (`sha256:...`).
    pub digest: String,
    /// Config and layers, compressed, in bytes.
    pub size: u64,
}

impl BuiltImage {
    /// `layout:tag`, as umoci and the `oci:` transport take it.
    pub fn oci_ref(&self) -> String {
        format!("{}:{}", self.layout.display(), self.tag)
    }
}

/// Where the images and their build state live.
fn images_root() -> PathBuf {
    cache_root().join("images")
}

/// The host's architecture in OCI's spelling.
pub fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Builds both images, one build at a time (a file lock: test binaries run in parallel).
pub fn build_images(profile: Profile) -> Result<Vec<BuiltImage>> {
    let root = images_root();
    std::fs::create_dir_all(&root).map_err(io_err(&root))?;
    let lock_path = root.join(".lock");
    let lock = std::fs::File::create(&lock_path).map_err(io_err(&lock_path))?;
    lock.lock_exclusive().map_err(io_err(&lock_path))?;
    let context = root.join("context");
    static_binaries(profile, &context.join("bin").join(oci_arch()))?;
    assemble_rootfs(&context.join("rootfs"))?;
    // A fresh layout each time: every build has new timestamps, so new blobs, and the oci
    // transport keeps the manifests it untags.
    let layout = root.join("oci");
    if layout.exists() {
        std::fs::remove_dir_all(&layout).map_err(io_err(&layout))?;
    }
    let revision = git_revision();
    let mut built = Vec::new();
    for (name, dockerfile) in IMAGES {
        built.push(buildah_build(
            name, dockerfile, &context, &layout, &revision,
        )?);
    }
    drop(lock);
    Ok(built)
}

/// The static binaries, in their own target directory (other RUSTFLAGS than the tests').
fn static_binaries(profile: Profile, out: &Path) -> Result<()> {
    let target_dir = cache_root()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(cache_root)
        .join("static-target");
    eprintln!(
        "[testenv] building static dpdk-reconciler and dpdk-node-agent (profile {}, {}); the first build compiles every dependency",
        profile.cargo_name(),
        target_dir.display()
    );
    let started = std::time::Instant::now();
    let status = Command::new("bash")
        .arg(workspace_root().join("deploy/docker/static-build.sh"))
        .arg(profile.cargo_name())
        .arg(out)
        .env("CARGO_TARGET_DIR", &target_dir)
        .status()
        .map_err(io_err("deploy/docker/static-build.sh"))?;
    if !status.success() {
        return Err(Error::Other(format!(
            "deploy/docker/static-build.sh {} failed ({status})",
            profile.cargo_name()
        )));
    }
    eprintln!(
        "[testenv] static binaries in {}s",
        started.elapsed().as_secs()
    );
    Ok(())
}

/// The image's root files: deploy/docker/rootfs (passwd, group, nsswitch.conf) and the
/// build host's CA bundle.
fn assemble_rootfs(rootfs: &Path) -> Result<()> {
    let etc = rootfs.join("etc");
    let certs = etc.join("ssl/certs");
    std::fs::create_dir_all(&certs).map_err(io_err(&certs))?;
    let src = workspace_root().join("deploy/docker/rootfs/etc");
    for e in std::fs::read_dir(&src).map_err(io_err(&src))?.flatten() {
        std::fs::copy(e.path(), etc.join(e.file_name())).map_err(io_err(e.path()))?;
    }
    let bundle = Path::new("/etc/ssl/certs/ca-certificates.crt");
    std::fs::copy(bundle, certs.join("ca-certificates.crt")).map_err(io_err(bundle))?;
    Ok(())
}

fn git_revision() -> String {
    Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(workspace_root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// `buildah` with this cache's vfs storage.
fn buildah() -> Command {
    let root = images_root();
    let mut cmd = Command::new("buildah");
    cmd.arg("--storage-driver=vfs")
        .arg(format!("--root={}", root.join("storage").display()))
        .arg(format!("--runroot={}", root.join("run").display()));
    cmd
}

fn run(mut cmd: Command, what: &str) -> Result<String> {
    let out = cmd.output().map_err(io_err(what))?;
    if !out.status.success() {
        return Err(Error::Other(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Builds one image and pushes it into the OCI layout; the local copy is removed again so
/// the vfs storage does not grow with every run.
fn buildah_build(
    name: &str,
    dockerfile: &str,
    context: &Path,
    layout: &Path,
    revision: &str,
) -> Result<BuiltImage> {
    let local = format!("localhost/dpdk-gitops/{name}:{VERSION}");
    let mut build = buildah();
    build
        .args(["build", "--isolation=chroot", "--pull=never", "--quiet"])
        .arg(format!(
            "--file={}",
            workspace_root()
                .join("deploy/docker")
                .join(dockerfile)
                .display()
        ))
        .arg(format!("--build-arg=TARGETARCH={}", oci_arch()))
        .arg(format!("--build-arg=VERSION={VERSION}"))
        .arg(format!("--build-arg=REVISION={revision}"))
        .arg(format!("--tag={local}"))
        .arg(context);
    run(build, &format!("buildah build {dockerfile}"))?;
    let tag = format!("{name}-{VERSION}");
    let mut push = buildah();
    push.args(["push", "--quiet", &local])
        .arg(format!("oci:{}:{tag}", layout.display()));
    run(push, &format!("buildah push {name}"))?;
    let mut rmi = buildah();
    rmi.args(["rmi", "--force", &local]);
    run(rmi, &format!("buildah rmi {name}"))?;
    let (digest, size) = manifest_digest_and_size(layout, &tag)?;
    Ok(BuiltImage {
        name: name.to_string(),
        layout: layout.to_path_buf(),
        tag,
        digest,
        size,
    })
}

/// The digest of the manifest named `tag` in an OCI layout's index, and the size of its
/// config and layers.
pub fn manifest_digest_and_size(layout: &Path, tag: &str) -> Result<(String, u64)> {
    let read_json = |p: &Path| -> Result<Value> {
        let text = std::fs::read_to_string(p).map_err(io_err(p))?;
        serde_json::from_str(&text).map_err(|e| Error::Other(format!("{}: {e}", p.display())))
    };
    let index = read_json(&layout.join("index.json"))?;
    let digest = index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .and_then(|m| m["digest"].as_str())
        .ok_or_else(|| Error::Other(format!("{}: no image {tag}", layout.display())))?
        .to_string();
    let blob = layout.join("blobs").join(digest.replacen(':', "/", 1));
    let manifest = read_json(&blob)?;
    let size = std::iter::once(&manifest["config"])
        .chain(manifest["layers"].as_array().into_iter().flatten())
        .filter_map(|d| d["size"].as_u64())
        .sum();
    Ok((digest, size))
}
