//! The CRD YAML under deploy/ is generated from the Rust types. This fails when the
//! committed files are stale; `cargo run -p dpdk-reconciler -- crdgen` rewrites them.

use std::path::Path;

fn check(rel: &str, want: String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
    let have = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        have == want,
        "{rel} is stale: it differs from what the Rust types in bridge/src/api generate.\n\
         Run `cargo run -p dpdk-reconciler -- crdgen` and commit the result."
    );
}

#[test]
fn dpdk_crd_yaml_is_fresh() {
    check(
        dpdk_bridge::crd::DPDK_CRD_PATH,
        dpdk_bridge::crd::render_dpdk_crds().expect("render"),
    );
}

#[test]
fn nodeeni_crd_yaml_is_fresh() {
    check(
        dpdk_bridge::crd::NODEENI_CRD_PATH,
        dpdk_bridge::crd::render_nodeeni_crd().expect("render"),
    );
}

#[test]
fn crd_reference_doc_is_fresh() {
    check(
        dpdk_bridge::crd_docs::CRD_REFERENCE_PATH,
        dpdk_bridge::crd_docs::render(&dpdk_bridge::crd::dpdk_crds()),
    );
}
