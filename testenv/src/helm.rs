//! Running the helm CLI (built from `testenv/go/helm`) with its config, cache and data in
//! a scratch directory, so tests never read or write the user's Helm setup.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::binaries::HELM;
use crate::control_plane::workspace_root;
use crate::{Result, io_err};

/// The chart's directory in the workspace.
pub fn chart_dir() -> PathBuf {
    workspace_root().join("deploy/chart/dpdk-gitops")
}

/// A helm CLI with a private home.
pub struct Helm {
    exe: PathBuf,
    home: tempfile::TempDir,
}

impl Helm {
    /// Builds helm first if the cache lacks it.
    pub fn new() -> Result<Self> {
        let exe = HELM.ensure()?;
        let home = tempfile::tempdir().map_err(io_err("helm home"))?;
        Ok(Self { exe, home })
    }

    /// `helm` with HELM_CONFIG_HOME/CACHE_HOME/DATA_HOME in the private home and, when
    /// given, the kubeconfig of a control plane.
    pub fn command(&self, kubeconfig: Option<&Path>) -> Command {
        let mut cmd = Command::new(&self.exe);
        for (var, dir) in [
            ("HELM_CONFIG_HOME", "config"),
            ("HELM_CACHE_HOME", "cache"),
            ("HELM_DATA_HOME", "data"),
        ] {
            cmd.env(var, self.home.path().join(dir));
        }
        if let Some(k) = kubeconfig {
            cmd.env("KUBECONFIG", k);
        }
        cmd
    }
}
