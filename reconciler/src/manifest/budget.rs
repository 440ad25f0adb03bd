//! The YAML budget: a document's nodes (aliases at their expanded size) and nesting are
//! counted on serde_yaml's event stream, before any value is built, and the count stops at
//! the first node over a limit. Nothing is allocated per node, so an alias bomb (one
//! anchor of 2,500 items used 1,700 times) costs a few thousand events, not 4 million values.
//!
//! It never parses for meaning: a document it cannot read is left to the real parse,
//! which reports the YAML error.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};

use super::load::{YamlLimits, flags};

/// A document over a YAML limit: where (1-based, in the text given) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Breach {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// Checks every document of `text` against `limits`. `Ok` also when the text is not valid
/// YAML (the real parse reports that).
pub fn check(text: &str, limits: &YamlLimits) -> Result<(), Breach> {
    for doc in serde_yaml::Deserializer::from_str(text) {
        let nodes = Cell::new(0u64);
        let counter = Counter {
            nodes: &nodes,
            depth: 0,
            limits,
        };
        if let Err(e) = counter.deserialize(doc) {
            let msg = e.to_string();
            // serde_yaml may put the node's path before the message.
            let Some(message) = msg.find(MARK).map(|i| &msg[i + MARK.len()..]) else {
                // A YAML error, not ours: the real parse reports it.
                return Ok(());
            };
            let message = match message.rfind(" at line ") {
                Some(i) => message[..i].to_string(),
                None => message.to_string(),
            };
            let (line, col) = e
                .location()
                .map(|l| (l.line(), l.column().max(1)))
                .unwrap_or((1, 1));
            return Err(Breach { line, col, message });
        }
    }
    Ok(())
}

/// Prefix of our own errors, to tell them from serde_yaml's.
const MARK: &str = "\u{1}budget:";

#[derive(Clone, Copy)]
struct Counter<'a> {
    nodes: &'a Cell<u64>,
    depth: usize,
    limits: &'a YamlLimits,
}

impl Counter<'_> {
    fn count<E: de::Error>(&self) -> Result<(), E> {
        let n = self.nodes.get() + 1;
        self.nodes.set(n);
        if n > self.limits.max_nodes {
            return Err(E::custom(format_args!(
                "{MARK}the document has more than {} YAML nodes, aliases counted at their expanded size ({}); refused before it is built",
                self.limits.max_nodes,
                flags::MAX_YAML_NODES
            )));
        }
        Ok(())
    }

    fn child<E: de::Error>(&self) -> Result<Self, E> {
        let depth = self.depth + 1;
        if depth > self.limits.max_depth {
            return Err(E::custom(format_args!(
                "{MARK}YAML nested deeper than {} levels ({}); refused before it is built",
                self.limits.max_depth,
                flags::MAX_YAML_DEPTH
            )));
        }
        Ok(Counter { depth, ..*self })
    }
}

impl<'de> DeserializeSeed<'de> for Counter<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

macro_rules! leaf {
    ($($name:ident: $ty:ty),*) => {
        $(fn $name<E: de::Error>(self, _: $ty) -> Result<(), E> { self.count() })*
    };
}

impl<'de> Visitor<'de> for Counter<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML node")
    }

    leaf!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_i128: i128,
          visit_u128: u128, visit_f64: f64, visit_str: &str, visit_bytes: &[u8]);

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.count()
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.count()
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.deserialize(d)
    }

    fn visit_newtype_struct<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.count()?;
        let child = self.child()?;
        while seq.next_element_seed(child)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.count()?;
        let child = self.child()?;
        while map.next_key_seed(child)?.is_some() {
            map.next_value_seed(child)?;
        }
        Ok(())
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        // A tagged node (`!tag value`): the value is what counts.
        let (_, variant) = data.variant::<de::IgnoredAny>()?;
        variant.newtype_variant_seed(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_nodes: u64, max_depth: usize) -> YamlLimits {
        YamlLimits {
            max_nodes,
            max_depth,
        }
    }

    /// `a: &a [x, x, ...]` (`items` items) then `refs` keys each using `*a`.
    fn bomb(items: usize, refs: usize) -> String {
        let mut s = format!("a: &a [{}]\n", vec!["x"; items].join(","));
        for i in 0..refs {
            s.push_str(&format!("r{i}: *a\n"));
        }
        s
    }

    #[test]
    fn aliases_count_at_their_expanded_size() {
        // 1 map + key a + seq + 10 items = 13; each ref: key + seq + 10 items = 12.
        assert_eq!(check(&bomb(10, 2), &limits(13 + 24, 64)), Ok(()));
        let e = check(&bomb(10, 3), &limits(13 + 24, 64)).expect_err("over");
        assert!(e.message.contains("more than 37 YAML nodes"), "{e:?}");
        assert!(e.message.contains("--max-yaml-nodes"), "{e:?}");
        assert_eq!(e.line, 4, "{e:?}");
    }

    #[test]
    fn nesting_is_bounded_at_the_node_that_breaks_it() {
        let deep = format!("x: {}{}\n", "[".repeat(10), "]".repeat(10));
        assert_eq!(check(&deep, &limits(1000, 11)), Ok(()));
        let e = check(&deep, &limits(1000, 5)).expect_err("too deep");
        assert!(
            e.message
                .contains("deeper than 5 levels (--max-yaml-depth)"),
            "{e:?}"
        );
        assert_eq!((e.line, e.col), (1, 8), "{e:?}");
    }

    #[test]
    fn tags_and_plain_documents_pass_and_yaml_errors_are_left_to_the_parser() {
        assert_eq!(
            check("a: !custom {b: 1}\n---\nc: [1, 2]\n", &limits(100, 8)),
            Ok(())
        );
        assert_eq!(check("a: [\n", &limits(100, 8)), Ok(()));
        assert_eq!(check("", &limits(100, 8)), Ok(()));
    }
}
