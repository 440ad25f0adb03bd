//! Kubernetes manifests as objects keyed by apiVersion/kind/namespace/name, for comparing
//! two renderings of the same install (deploy/ and the Helm chart) as JSON values.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::{Error, Result};

/// The objects of one or more multi-document YAML streams, keyed by
/// `apiVersion/kind/namespace/name` (namespace empty for cluster-scoped objects).
pub type Objects = BTreeMap<String, Value>;

/// The key an object is known by.
pub fn object_key(obj: &Value) -> String {
    let field = |p: &str| obj.pointer(p).and_then(Value::as_str).unwrap_or_default();
    format!(
        "{}/{}/{}/{}",
        field("/apiVersion"),
        field("/kind"),
        field("/metadata/namespace"),
        field("/metadata/name")
    )
}

/// Parses a multi-document YAML stream into `into`; empty documents are skipped, and two
/// objects with the same key are an error (one would hide the other).
pub fn add_objects(into: &mut Objects, yaml: &str, origin: &str) -> Result<()> {
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let value = Value::deserialize(doc)
            .map_err(|e| Error::Other(format!("{origin}: not YAML: {e}")))?;
        if value.is_null() {
            continue;
        }
        let key = object_key(&value);
        if into.insert(key.clone(), value).is_some() {
            return Err(Error::Other(format!("{origin}: {key} appears twice")));
        }
    }
    Ok(())
}

/// What differs between two sets of objects, one line per key: missing on either side, or
/// present on both with different values.
pub fn differences(
    left_name: &str,
    left: &Objects,
    right_name: &str,
    right: &Objects,
) -> Vec<String> {
    let mut out = Vec::new();
    for (key, l) in left {
        match right.get(key) {
            None => out.push(format!("{key}: in {left_name}, not in {right_name}")),
            Some(r) if r != l => out.push(format!(
                "{key}: differs\n  {left_name}: {l}\n  {right_name}: {r}"
            )),
            Some(_) => {}
        }
    }
    for key in right.keys().filter(|k| !left.contains_key(*k)) {
        out.push(format!("{key}: in {right_name}, not in {left_name}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: a, namespace: n}\n---\n\
                       # only a comment\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: n}\n";

    #[test]
    fn objects_are_keyed_by_api_version_kind_namespace_and_name() {
        let mut objs = Objects::new();
        add_objects(&mut objs, TWO, "two").expect("parses");
        let keys: Vec<&str> = objs.keys().map(String::as_str).collect();
        assert_eq!(keys, ["v1/Namespace//n", "v1/ServiceAccount/n/a"]);
    }

    #[test]
    fn a_duplicate_key_is_an_error() {
        let mut objs = Objects::new();
        add_objects(&mut objs, TWO, "first").expect("parses");
        assert!(add_objects(&mut objs, TWO, "second").is_err());
    }

    #[test]
    fn differences_name_missing_and_changed_objects_on_either_side() {
        let mut left = Objects::new();
        add_objects(&mut left, TWO, "left").expect("parses");
        let mut right = left.clone();
        assert!(differences("l", &left, "r", &right).is_empty());
        right.insert(
            "v1/ServiceAccount/n/a".into(),
            serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "a", "namespace": "n", "labels": {"x": "y"}}}),
        );
        right.remove("v1/Namespace//n");
        let d = differences("l", &left, "r", &right);
        assert_eq!(d.len(), 2, "{d:#?}");
        assert!(
            d[0].starts_with("v1/Namespace//n: in l, not in r"),
            "{d:#?}"
        );
        assert!(d[1].starts_with("v1/ServiceAccount/n/a: differs"), "{d:#?}");
    }
}
