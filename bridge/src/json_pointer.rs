//! JSON pointers (RFC 6901): the one escaping used by validation, drift and the
//! controller's JSON patches.

/// Escapes one reference token: `~` → `~0`, `/` → `~1`.
pub fn escape_token(token: &str) -> String {
    if token.contains(['~', '/']) {
        token.replace('~', "~0").replace('/', "~1")
    } else {
        token.to_string()
    }
}

/// Unescapes one reference token: `~1` → `/`, `~0` → `~`.
pub fn unescape_token(token: &str) -> String {
    if token.contains('~') {
        token.replace("~1", "/").replace("~0", "~")
    } else {
        token.to_string()
    }
}

/// Splits a pointer into unescaped tokens (`""` → no tokens).
pub fn pointer_tokens(pointer: &str) -> Vec<String> {
    if pointer.is_empty() {
        return Vec::new();
    }
    pointer
        .trim_start_matches('/')
        .split('/')
        .map(unescape_token)
        .collect()
}

/// Builds a pointer from unescaped tokens.
pub fn pointer_of<I, S>(tokens: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut out = String::new();
    for t in tokens {
        out.push('/');
        out.push_str(&escape_token(t.as_ref()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_through_escaping() {
        let tokens = ["metadata", "labels", "app.kubernetes.io/name", "a~b", ""];
        let p = pointer_of(tokens);
        assert_eq!(p, "/metadata/labels/app.kubernetes.io~1name/a~0b/");
        assert_eq!(pointer_tokens(&p), tokens);
        assert_eq!(escape_token("~/"), "~0~1");
        assert_eq!(unescape_token("~01"), "~1");
        assert!(pointer_tokens("").is_empty());
    }
}
