//! `spec.ignoreDifferences`: JSON-pointer rules that leave findings out of the report.

use dpdk_bridge::api::IgnoreRule;

use super::model::Finding;
use dpdk_bridge::json_pointer::pointer_tokens;

/// True when `rule` covers `finding`: the kind and name match (or are unset) and one of
/// its pointers is the finding's field path or an ancestor of it. `writeCombing` and
/// `writeCombining` are the same field.
pub fn rule_matches(rule: &IgnoreRule, finding: &Finding) -> bool {
    if rule
        .kind
        .as_deref()
        .is_some_and(|k| !k.eq_ignore_ascii_case(&finding.object.kind))
    {
        return false;
    }
    if rule
        .name
        .as_deref()
        .is_some_and(|n| n != finding.object.name)
    {
        return false;
    }
    let path = canonical_tokens(&finding.field_path);
    rule.json_pointers.iter().any(|p| {
        let prefix = canonical_tokens(p);
        prefix.len() <= path.len() && prefix.iter().zip(&path).all(|(a, b)| a == b)
    })
}

fn canonical_tokens(pointer: &str) -> Vec<String> {
    pointer_tokens(pointer)
        .into_iter()
        .map(|t| {
            if t == "writeCombing" {
                "writeCombining".to_string()
            } else {
                t
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::model::{FindingKind, Layer, ObjectRef};
    use serde_json::Value;

    fn finding(kind: &str, name: &str, path: &str) -> Finding {
        Finding {
            layer: Layer::GitCluster,
            kind: FindingKind::Modified,
            object: ObjectRef::cluster(kind, name),
            node: None,
            source: None,
            file: None,
            line: None,
            field_path: path.into(),
            git: Value::Null,
            live: Value::Null,
            owned_by: None,
            since: std::sync::Arc::from(""),
            message: String::new(),
        }
    }

    fn rule(kind: Option<&str>, name: Option<&str>, pointers: &[&str]) -> IgnoreRule {
        IgnoreRule {
            kind: kind.map(Into::into),
            name: name.map(Into::into),
            json_pointers: pointers.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn pointer_prefixes_kind_and_name_select_findings() {
        let f = finding("DPDKConfig", "a", "/spec/resourceMapping/0/driver");
        assert!(rule_matches(
            &rule(None, None, &["/spec/resourceMapping"]),
            &f
        ));
        assert!(rule_matches(
            &rule(
                Some("DPDKConfig"),
                Some("a"),
                &["/spec/resourceMapping/0/driver"]
            ),
            &f
        ));
        assert!(!rule_matches(&rule(Some("NodeENI"), None, &["/spec"]), &f));
        assert!(!rule_matches(&rule(None, Some("b"), &["/spec"]), &f));
        assert!(
            !rule_matches(&rule(None, None, &["/spec/resource"]), &f),
            "a pointer prefix is by whole tokens"
        );
        assert!(!rule_matches(
            &rule(None, None, &["/spec/resourceMapping/1"]),
            &f
        ));
    }

    #[test]
    fn the_seed_spelling_is_the_same_field() {
        let f = finding("DPDKConfig", "a", "/spec/driverOptions/writeCombing");
        assert!(rule_matches(
            &rule(None, None, &["/spec/driverOptions/writeCombining"]),
            &f
        ));
    }
}
