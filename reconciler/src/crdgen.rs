//! `dpdk-reconciler crdgen`: writes the CRDs generated from the Rust types.

use std::path::Path;

use dpdk_bridge::{crd, crd_docs};

use crate::Error;

/// Writes (or, with `check`, compares) the generated CRD files under `root`.
/// Returns false when `check` finds a stale file.
pub fn run(root: &Path, check: bool) -> Result<bool, Error> {
    let mut fresh = true;
    let files = [
        (crd::DPDK_CRD_PATH, crd::render_dpdk_crds()?),
        (crd::NODEENI_CRD_PATH, crd::render_nodeeni_crd()?),
        (
            crd_docs::CRD_REFERENCE_PATH,
            crd_docs::render(&crd::dpdk_crds()),
        ),
    ];
    for (rel, text) in files {
        let path = root.join(rel);
        let io = |source| Error::Io {
            path: path.display().to_string(),
            source,
        };
        if check {
            let have = std::fs::read_to_string(&path).unwrap_or_default();
            if have != text {
                eprintln!("{rel} is stale; run `dpdk-reconciler crdgen`");
                fresh = false;
            }
        } else {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
            std::fs::write(&path, text).map_err(|source| Error::Io {
                path: path.display().to_string(),
                source,
            })?;
            println!("wrote {rel}");
        }
    }
    Ok(fresh)
}
