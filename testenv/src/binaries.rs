//! Building kube-apiserver, kubectl and etcd (and the helm and actionlint CLIs the chart and
//! workflow tests use, and Flux's source-controller and kustomize-controller for the
//! coexistence tests) from the Go tools modules in `testenv/go/`, cached outside the
//! repository and keyed by version.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use fs4::fs_std::FileExt;

use crate::{Error, Result, io_err};

const KUBE_GO_MOD: &str = include_str!("../go/kube/go.mod");
const KUBE_GO_SUM: &str = include_str!("../go/kube/go.sum");
const ETCD_GO_MOD: &str = include_str!("../go/etcd/go.mod");
const ETCD_GO_SUM: &str = include_str!("../go/etcd/go.sum");
const ARGO_LUA_GO_MOD: &str = include_str!("../go/argo-lua/go.mod");
const ARGO_LUA_GO_SUM: &str = include_str!("../go/argo-lua/go.sum");
const ARGO_LUA_MAIN: &str = include_str!("../go/argo-lua/main.go");
const FLUX_GO_MOD: &str = include_str!("../go/flux/go.mod");
const FLUX_GO_SUM: &str = include_str!("../go/flux/go.sum");

/// The Flux modules whose CRDs (`config/crd/bases/*.yaml`) testenv installs.
const FLUX_CRD_MODULES: [&str; 2] = [
    "github.com/fluxcd/source-controller",
    "github.com/fluxcd/kustomize-controller",
];

/// A CLI built from its own tools module in `testenv/go/<name>/`, cached in
/// `<cache>/<name>-<version>/<name>`.
#[derive(Clone, Copy, Debug)]
pub struct GoTool {
    pub name: &'static str,
    /// The main package.
    pkg: &'static str,
    /// The module whose required version names the cache directory.
    module: &'static str,
    /// The `-X` variable that `--version` prints.
    version_var: &'static str,
    go_mod: &'static str,
    go_sum: &'static str,
}

/// helm (v3), for the chart tests.
pub const HELM: GoTool = GoTool {
    name: "helm",
    pkg: "helm.sh/helm/v3/cmd/helm",
    module: "helm.sh/helm/v3",
    version_var: "helm.sh/helm/v3/internal/version.version",
    go_mod: include_str!("../go/helm/go.mod"),
    go_sum: include_str!("../go/helm/go.sum"),
};

/// actionlint, for the workflow check.
pub const ACTIONLINT: GoTool = GoTool {
    name: "actionlint",
    pkg: "github.com/rhysd/actionlint/cmd/actionlint",
    module: "github.com/rhysd/actionlint",
    version_var: "github.com/rhysd/actionlint.version",
    go_mod: include_str!("../go/actionlint/go.mod"),
    go_sum: include_str!("../go/actionlint/go.sum"),
};

/// The tools `dpdk-testenv build` builds besides the control plane.
pub const TOOLS: [GoTool; 2] = [HELM, ACTIONLINT];

impl GoTool {
    /// The version its tools module requires.
    pub fn version(&self) -> Result<String> {
        required_version(self.go_mod, self.module).ok_or_else(|| {
            Error::Other(format!(
                "testenv/go/{}/go.mod does not require {}",
                self.name, self.module
            ))
        })
    }

    /// The tool's path, building it first when the cache lacks it. Concurrent callers wait
    /// on the same file lock as [`ensure_binaries`].
    pub fn ensure(&self) -> Result<PathBuf> {
        let version = self.version()?;
        let root = cache_root();
        let dir = root.join(format!("{}-{version}", self.name));
        let exe = dir.join(self.name);
        if exe.exists() {
            return Ok(exe);
        }
        std::fs::create_dir_all(&root).map_err(io_err(&root))?;
        let lock_path = root.join(".build.lock");
        let lock = std::fs::File::create(&lock_path).map_err(io_err(&lock_path))?;
        lock.lock_exclusive().map_err(io_err(&lock_path))?;
        if !exe.exists() {
            let ldflags = format!("-s -w -X {}={version}", self.version_var);
            go_build(
                &dir,
                self.go_mod,
                self.go_sum,
                self.pkg,
                &exe,
                &ldflags,
                &version,
            )?;
        }
        drop(lock);
        Ok(exe)
    }
}

/// Paths of the three control-plane binaries.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub kube_apiserver: PathBuf,
    pub kubectl: PathBuf,
    pub etcd: PathBuf,
    pub kubernetes_version: String,
    pub etcd_version: String,
}

/// The version a tools go.mod requires for `module`.
fn required_version(go_mod: &str, module: &str) -> Option<String> {
    go_mod.lines().find_map(|l| {
        let l = l.trim().trim_start_matches("require").trim();
        let mut parts = l.split_whitespace();
        (parts.next() == Some(module))
            .then(|| parts.next().map(str::to_string))
            .flatten()
    })
}

/// The cache root: `$DPDK_TESTENV_CACHE`, else `$XDG_CACHE_HOME/dpdk-gitops/testenv`,
/// else `~/.cache/dpdk-gitops/testenv`.
pub fn cache_root() -> PathBuf {
    if let Some(p) = std::env::var_os("DPDK_TESTENV_CACHE") {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("dpdk-gitops").join("testenv")
}

/// Returns the binaries, building whatever is missing first. Concurrent callers (test
/// binaries run in parallel) wait on a file lock instead of building twice.
pub fn ensure_binaries() -> Result<Binaries> {
    let kubernetes_version =
        required_version(KUBE_GO_MOD, "k8s.io/kubernetes").ok_or_else(|| {
            Error::Other("testenv/go/kube/go.mod does not require k8s.io/kubernetes".into())
        })?;
    let etcd_version =
        required_version(ETCD_GO_MOD, "go.etcd.io/etcd/server/v3").ok_or_else(|| {
            Error::Other("testenv/go/etcd/go.mod does not require go.etcd.io/etcd/server/v3".into())
        })?;
    let root = cache_root();
    let kube_dir = root.join(format!("kubernetes-{kubernetes_version}"));
    let etcd_dir = root.join(format!("etcd-{etcd_version}"));
    let bins = Binaries {
        kube_apiserver: kube_dir.join("kube-apiserver"),
        kubectl: kube_dir.join("kubectl"),
        etcd: etcd_dir.join("etcd"),
        kubernetes_version: kubernetes_version.clone(),
        etcd_version: etcd_version.clone(),
    };
    if bins.kube_apiserver.exists() && bins.kubectl.exists() && bins.etcd.exists() {
        return Ok(bins);
    }
    std::fs::create_dir_all(&root).map_err(io_err(&root))?;
    let lock_path = root.join(".build.lock");
    let lock = std::fs::File::create(&lock_path).map_err(io_err(&lock_path))?;
    lock.lock_exclusive().map_err(io_err(&lock_path))?;
    let major_minor: Vec<&str> = kubernetes_version
        .trim_start_matches('v')
        .split('.')
        .collect();
    let ldflags = format!(
        "-s -w -X k8s.io/component-base/version.gitVersion={kubernetes_version} \
         -X k8s.io/component-base/version.gitMajor={} -X k8s.io/component-base/version.gitMinor={} \
         -X k8s.io/component-base/version.gitTreeState=clean",
        major_minor.first().unwrap_or(&"1"),
        major_minor.get(1).unwrap_or(&"0"),
    );
    for (exe, pkg) in [
        (&bins.kube_apiserver, "k8s.io/kubernetes/cmd/kube-apiserver"),
        (&bins.kubectl, "k8s.io/kubernetes/cmd/kubectl"),
    ] {
        if !exe.exists() {
            go_build(
                &kube_dir,
                KUBE_GO_MOD,
                KUBE_GO_SUM,
                pkg,
                exe,
                &ldflags,
                &kubernetes_version,
            )?;
        }
    }
    if !bins.etcd.exists() {
        go_build(
            &etcd_dir,
            ETCD_GO_MOD,
            ETCD_GO_SUM,
            "go.etcd.io/etcd/server/v3",
            &bins.etcd,
            "-s -w",
            &etcd_version,
        )?;
    }
    // Dropping `lock` releases it.
    drop(lock);
    Ok(bins)
}

/// Returns the `argo-lua` helper (Argo CD's Lua health-script evaluation with gopher-lua),
/// building it on first use. Cached under `argo-lua-<gopher-lua version>-<hash of main.go>`,
/// so an edit of the helper rebuilds it.
pub fn ensure_argo_lua() -> Result<PathBuf> {
    let version =
        required_version(ARGO_LUA_GO_MOD, "github.com/yuin/gopher-lua").ok_or_else(|| {
            Error::Other("testenv/go/argo-lua/go.mod does not require gopher-lua".into())
        })?;
    let root = cache_root();
    let dir = root.join(format!("argo-lua-{version}-{:016x}", fnv1a(ARGO_LUA_MAIN)));
    let exe = dir.join("argo-lua");
    if exe.exists() {
        return Ok(exe);
    }
    std::fs::create_dir_all(dir.join("module")).map_err(io_err(&dir))?;
    let lock_path = root.join(".build.lock");
    let lock = std::fs::File::create(&lock_path).map_err(io_err(&lock_path))?;
    lock.lock_exclusive().map_err(io_err(&lock_path))?;
    if !exe.exists() {
        let main = dir.join("module").join("main.go");
        std::fs::write(&main, ARGO_LUA_MAIN).map_err(io_err(&main))?;
        go_build(
            &dir,
            ARGO_LUA_GO_MOD,
            ARGO_LUA_GO_SUM,
            ".",
            &exe,
            "-s -w",
            &version,
        )?;
    }
    drop(lock);
    Ok(exe)
}

/// Flux's two controllers and the CRDs of the same release, in `<cache>/flux-<version>/`.
#[derive(Clone, Debug)]
pub struct FluxBinaries {
    pub source_controller: PathBuf,
    pub kustomize_controller: PathBuf,
    /// `crds/`: every CRD of both modules' `config/crd/bases/`, copied at build time.
    pub crd_dir: PathBuf,
    pub version: String,
}

impl FluxBinaries {
    /// The CRD files, sorted.
    pub fn crd_files(&self) -> Result<Vec<PathBuf>> {
        let dir = &self.crd_dir;
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io_err(dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        files.sort();
        Ok(files)
    }
}

/// The Flux release `testenv/go/flux/go.mod` requires (both controllers are pinned to it).
pub fn flux_version() -> Result<String> {
    let source = required_version(FLUX_GO_MOD, FLUX_CRD_MODULES[0]);
    let kustomize = required_version(FLUX_GO_MOD, FLUX_CRD_MODULES[1]);
    match (source, kustomize) {
        (Some(s), Some(k)) if s == k => Ok(s),
        (s, k) => Err(Error::Other(format!(
            "testenv/go/flux/go.mod must require source-controller and kustomize-controller at one release, got {s:?} and {k:?}"
        ))),
    }
}

/// Returns Flux's source-controller and kustomize-controller, building them (and copying
/// their CRDs out of the module cache) first when the cache lacks them. Same file lock as
/// [`ensure_binaries`].
pub fn ensure_flux() -> Result<FluxBinaries> {
    let version = flux_version()?;
    let root = cache_root();
    let dir = root.join(format!("flux-{version}"));
    let bins = FluxBinaries {
        source_controller: dir.join("source-controller"),
        kustomize_controller: dir.join("kustomize-controller"),
        crd_dir: dir.join("crds"),
        version: version.clone(),
    };
    let complete = |b: &FluxBinaries| {
        b.source_controller.exists() && b.kustomize_controller.exists() && b.crd_dir.exists()
    };
    if complete(&bins) {
        return Ok(bins);
    }
    std::fs::create_dir_all(&root).map_err(io_err(&root))?;
    let lock_path = root.join(".build.lock");
    let lock = std::fs::File::create(&lock_path).map_err(io_err(&lock_path))?;
    lock.lock_exclusive().map_err(io_err(&lock_path))?;
    for (exe, module) in [
        (&bins.source_controller, FLUX_CRD_MODULES[0]),
        (&bins.kustomize_controller, FLUX_CRD_MODULES[1]),
    ] {
        if !exe.exists() {
            go_build(
                &dir,
                FLUX_GO_MOD,
                FLUX_GO_SUM,
                module,
                exe,
                "-s -w",
                &version,
            )?;
        }
    }
    if !bins.crd_dir.exists() {
        copy_flux_crds(&dir.join("module"), &bins.crd_dir)?;
    }
    drop(lock);
    Ok(bins)
}

/// Copies `config/crd/bases/*.yaml` of each Flux module (as the tools module resolved it)
/// into `out`, through a scratch directory so a half copy is never taken for a whole one.
fn copy_flux_crds(module_dir: &Path, out: &Path) -> Result<()> {
    let partial = out.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial).map_err(io_err(&partial))?;
    for module in FLUX_CRD_MODULES {
        let bases = go_module_dir(module_dir, module)?.join("config/crd/bases");
        for entry in std::fs::read_dir(&bases).map_err(io_err(&bases))? {
            let from = entry.map_err(io_err(&bases))?.path();
            if let Some(name) = from
                .file_name()
                .filter(|_| from.extension().is_some_and(|x| x == "yaml"))
            {
                let to = partial.join(name);
                std::fs::copy(&from, &to).map_err(io_err(&to))?;
            }
        }
    }
    std::fs::rename(&partial, out).map_err(io_err(out))
}

/// Where the go command keeps `module` at the version the tools module in `module_dir` requires.
fn go_module_dir(module_dir: &Path, module: &str) -> Result<PathBuf> {
    let out = Command::new("go")
        .args(["list", "-m", "-f", "{{.Dir}}", module])
        .current_dir(module_dir)
        .env("GOFLAGS", "-mod=mod -buildvcs=false")
        .output()
        .map_err(Error::GoMissing)?;
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || dir.is_empty() {
        return Err(Error::GoBuild {
            what: format!("go list -m {module}"),
            code: out.status.code(),
            tail: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(PathBuf::from(dir))
}

/// FNV-1a, 64 bits: a stable content key for a cache directory name.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Builds one main package in a scratch copy of its tools module, printing progress.
fn go_build(
    dir: &Path,
    go_mod: &str,
    go_sum: &str,
    pkg: &str,
    out: &Path,
    ldflags: &str,
    version: &str,
) -> Result<()> {
    let module_dir = dir.join("module");
    std::fs::create_dir_all(&module_dir).map_err(io_err(&module_dir))?;
    std::fs::write(module_dir.join("go.mod"), go_mod).map_err(io_err(module_dir.join("go.mod")))?;
    std::fs::write(module_dir.join("go.sum"), go_sum).map_err(io_err(module_dir.join("go.sum")))?;
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    eprintln!(
        "[testenv] building {name} {version} from Go modules ({pkg}); first time only, this takes several minutes on 2 cores"
    );
    let tmp_out = out.with_extension("partial");
    let started = std::time::Instant::now();
    let mut child = Command::new("go")
        .args(["build", "-v", "-ldflags", ldflags, "-o"])
        .arg(&tmp_out)
        .arg(pkg)
        .current_dir(&module_dir)
        .env("GOFLAGS", "-mod=mod -buildvcs=false")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(Error::GoMissing)?;
    let mut tail: Vec<String> = Vec::new();
    let mut packages = 0usize;
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
            // `go build -v` prints one package path per compiled package: count them as progress.
            if !line.contains(' ') {
                packages += 1;
                if packages.is_multiple_of(200) {
                    eprintln!(
                        "[testenv]   {name}: {packages} packages compiled ({}s)",
                        started.elapsed().as_secs()
                    );
                }
            } else {
                eprintln!("[testenv]   {name}: {line}");
            }
            tail.push(line);
            if tail.len() > 40 {
                tail.remove(0);
            }
        }
    }
    let status = child.wait().map_err(io_err(&module_dir))?;
    if !status.success() {
        return Err(Error::GoBuild {
            what: format!("{name} ({pkg} {version})"),
            code: status.code(),
            tail: tail.join("\n"),
        });
    }
    std::fs::rename(&tmp_out, out).map_err(io_err(out))?;
    eprintln!(
        "[testenv] built {name} in {}s -> {}",
        started.elapsed().as_secs(),
        out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_come_from_the_tools_modules() {
        assert_eq!(
            required_version(KUBE_GO_MOD, "k8s.io/kubernetes").as_deref(),
            Some("v1.37.2")
        );
        assert!(
            required_version(ETCD_GO_MOD, "go.etcd.io/etcd/server/v3")
                .is_some_and(|v| v.starts_with("v3.6."))
        );
        assert_eq!(
            required_version(ARGO_LUA_GO_MOD, "github.com/yuin/gopher-lua").as_deref(),
            Some("v1.1.2")
        );
    }

    #[test]
    fn the_argo_lua_cache_key_follows_the_helper_source() {
        assert_eq!(fnv1a(ARGO_LUA_MAIN), fnv1a(ARGO_LUA_MAIN));
        assert_ne!(fnv1a(ARGO_LUA_MAIN), fnv1a(&format!("{ARGO_LUA_MAIN}\n")));
    }

    #[test]
    fn both_flux_controllers_come_from_one_release() {
        assert_eq!(flux_version().ok().as_deref(), Some("v1.9.6"));
    }

    #[test]
    fn tool_versions_come_from_their_tools_modules() {
        assert!(HELM.version().is_ok_and(|v| v.starts_with("v3.22.")));
        assert!(ACTIONLINT.version().is_ok_and(|v| v.starts_with("v1.7.")));
    }

    #[test]
    fn every_staging_module_is_replaced_at_the_matching_version() {
        let replaced: Vec<&str> = KUBE_GO_MOD
            .lines()
            .filter(|l| l.contains("=> k8s.io/"))
            .collect();
        assert!(
            replaced.len() >= 30,
            "expected a replace line for every staging module, got {}",
            replaced.len()
        );
        assert!(replaced.iter().all(|l| l.trim_end().ends_with("v0.37.2")));
    }
}
