//! Manifests from a config repository: the YAML position index, the loader and the
//! offline validator. All serde_yaml use of the crate lives in this module.
//!
//! - [`position`]: splits multi-document files and maps JSON pointers to `line:col`
//!   (used for `file:line:col` errors and by the drift engine for line-level patches).

pub mod position;
