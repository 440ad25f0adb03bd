//! Normalization and a field-level comparison of JSON values.
//!
//! Git and the cluster spell the same intent differently: the API server fills defaults
//! (`driver: vfio-pci`, `enableUnsafeNoIOMMU: true`), the seed spells `writeCombing`, and
//! list-maps may come back in another order. Both sides go through the same
//! normalization before they are compared, so only real differences remain.

use dpdk_bridge::json_pointer::escape_token;
use serde_json::{Map, Value};

/// A DPDKConfig spec with every default applied and the seed's `writeCombing` folded
/// into `writeCombining`, as the API server and the controller understand it.
pub fn normalize_config_spec(spec: &Value) -> Value {
    let Some(obj) = spec.as_object() else {
        return spec.clone();
    };
    let mut out = obj.clone();
    let mut opts = match out.remove("driverOptions") {
        Some(Value::Object(o)) => o,
        _ => Map::new(),
    };
    opts.entry("enableUnsafeNoIOMMU")
        .or_insert(Value::Bool(true));
    let spelled = opts.remove("writeCombining");
    let misspelt = opts.remove("writeCombing");
    let wc = spelled
        .filter(|v| !v.is_null())
        .or(misspelt.filter(|v| !v.is_null()))
        .unwrap_or(Value::Bool(false));
    opts.insert("writeCombining".into(), wc);
    out.insert("driverOptions".into(), Value::Object(opts));

    let mappings = match out.remove("resourceMapping") {
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                Value::Object(mut m) => {
                    if m.get("driver").is_none_or(Value::is_null) {
                        m.insert("driver".into(), Value::String("vfio-pci".into()));
                    }
                    Value::Object(m)
                }
                other => other,
            })
            .collect(),
        _ => Vec::new(),
    };
    out.insert("resourceMapping".into(), Value::Array(mappings));
    if out.get("nodeSelector").is_none_or(Value::is_null) {
        out.insert("nodeSelector".into(), Value::Object(Map::new()));
    }
    Value::Object(out)
}

/// One differing field. `pointer` addresses the Git side; entries Git lacks get the
/// index they would have once appended.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldDiff {
    pub pointer: String,
    pub git: Option<Value>,
    pub live: Option<Value>,
}

/// List-maps of the DPDKConfig spec, by pointer, with their key field.
pub fn config_list_key(pointer: &str) -> Option<&'static str> {
    (pointer == "/spec/resourceMapping").then_some("deviceIndex")
}

/// Compares `git` with `live` at `pointer`, descending into objects and keyed lists,
/// and appends every differing leaf (or whole entry on one side only).
pub fn diff_values(
    git: &Value,
    live: &Value,
    pointer: &str,
    list_key: &dyn Fn(&str) -> Option<&'static str>,
    out: &mut Vec<FieldDiff>,
) {
    match (git, live) {
        (Value::Object(g), Value::Object(l)) => {
            for (k, gv) in g {
                let p = format!("{pointer}/{}", escape_token(k));
                match l.get(k) {
                    Some(lv) => diff_values(gv, lv, &p, list_key, out),
                    None => out.push(FieldDiff {
                        pointer: p,
                        git: Some(gv.clone()),
                        live: None,
                    }),
                }
            }
            for (k, lv) in l {
                if !g.contains_key(k) {
                    out.push(FieldDiff {
                        pointer: format!("{pointer}/{}", escape_token(k)),
                        git: None,
                        live: Some(lv.clone()),
                    });
                }
            }
        }
        (Value::Array(g), Value::Array(l)) => match list_key(pointer) {
            Some(key) => {
                let mut matched = vec![false; l.len()];
                for (i, gv) in g.iter().enumerate() {
                    let p = format!("{pointer}/{i}");
                    let gk = gv.get(key);
                    let found = l
                        .iter()
                        .enumerate()
                        .find(|(j, lv)| !matched[*j] && gk.is_some() && lv.get(key) == gk);
                    match found {
                        Some((j, lv)) => {
                            matched[j] = true;
                            diff_values(gv, lv, &p, list_key, out);
                        }
                        None => out.push(FieldDiff {
                            pointer: p,
                            git: Some(gv.clone()),
                            live: None,
                        }),
                    }
                }
                let mut next = g.len();
                for (j, lv) in l.iter().enumerate() {
                    if !matched[j] {
                        out.push(FieldDiff {
                            pointer: format!("{pointer}/{next}"),
                            git: None,
                            live: Some(lv.clone()),
                        });
                        next += 1;
                    }
                }
            }
            None => {
                if g != l {
                    out.push(FieldDiff {
                        pointer: pointer.to_string(),
                        git: Some(git.clone()),
                        live: Some(live.clone()),
                    });
                }
            }
        },
        _ => {
            if !values_equal(git, live) {
                out.push(FieldDiff {
                    pointer: pointer.to_string(),
                    git: Some(git.clone()),
                    live: Some(live.clone()),
                });
            }
        }
    }
}

/// Equality that treats 2 and 2.0 as the same number (YAML and JSON disagree on it).
fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dpdk_bridge::json_pointer::pointer_tokens;
    use serde_json::json;

    #[test]
    fn defaults_and_the_seed_spelling_normalize_away() {
        let git = json!({"nodeSelector": {"ng": "multi-eni"}, "driverOptions": {"writeCombing": true},
            "resourceMapping": [{"deviceIndex": 2, "resourceName": "intel.com/x"}]});
        let live = json!({"nodeSelector": {"ng": "multi-eni"}, "driverOptions": {"enableUnsafeNoIOMMU": true, "writeCombing": true},
            "resourceMapping": [{"deviceIndex": 2, "resourceName": "intel.com/x", "driver": "vfio-pci"}]});
        let mut out = Vec::new();
        diff_values(
            &normalize_config_spec(&git),
            &normalize_config_spec(&live),
            "/spec",
            &config_list_key,
            &mut out,
        );
        assert_eq!(out, vec![]);
    }

    #[test]
    fn list_maps_match_by_key_and_extras_get_appended_indices() {
        let git = json!({"resourceMapping": [{"deviceIndex": 2, "resourceName": "a/b"}, {"deviceIndex": 3, "resourceName": "a/c"}]});
        let live = json!({"resourceMapping": [{"deviceIndex": 4, "resourceName": "a/d"}, {"deviceIndex": 2, "resourceName": "a/z"}]});
        let mut out = Vec::new();
        diff_values(
            &normalize_config_spec(&git),
            &normalize_config_spec(&live),
            "/spec",
            &config_list_key,
            &mut out,
        );
        let pointers: Vec<_> = out.iter().map(|d| d.pointer.as_str()).collect();
        assert_eq!(
            pointers,
            vec![
                "/spec/resourceMapping/0/resourceName",
                "/spec/resourceMapping/1",
                "/spec/resourceMapping/2"
            ]
        );
        assert_eq!(out[1].live, None);
        assert_eq!(out[2].git, None);
    }

    #[test]
    fn pointer_tokens_round_trip() {
        assert_eq!(
            escape_token("app.kubernetes.io/name"),
            "app.kubernetes.io~1name"
        );
        assert_eq!(
            pointer_tokens("/metadata/labels/a~1b~0c"),
            vec!["metadata", "labels", "a/b~c"]
        );
    }
}
