//! Go-style durations (`500ms`, `30s`, `1m30s`, `1.5h`): the one parser behind every
//! duration flag of every binary and every duration field of the API.
//!
//! A bare number is refused: `30` could mean seconds or milliseconds, and the binaries
//! once disagreed about which.

use std::time::Duration;

use crate::Error;

/// The forms `--help` and error messages show.
pub const ACCEPTED_FORMS: &str =
    "a number with a unit (ns, us, ms, s, m, h), e.g. 500ms, 30s, 1m30s or 1.5h";

/// The units Go's `time.ParseDuration` accepts, in nanoseconds.
const UNITS: &[(&str, f64)] = &[
    ("ns", 1.0),
    ("us", 1e3),
    ("µs", 1e3),
    ("ms", 1e6),
    ("s", 1e9),
    ("m", 60e9),
    ("h", 3600e9),
];

/// Parses a Go-style duration. Usable as a clap `value_parser`.
pub fn parse(input: &str) -> Result<Duration, Error> {
    let invalid = |reason: &'static str| Error::InvalidDuration {
        input: input.to_string(),
        reason,
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(invalid("it is empty"));
    }
    if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(invalid("a bare number has no unit"));
    }
    let mut nanos = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let (value, tail) = leading_number(rest).ok_or(invalid("expected a number"))?;
        let (scale, next) = leading_unit(tail).ok_or(invalid("every number needs a unit"))?;
        nanos += value * scale;
        rest = next;
    }
    let secs = nanos / 1e9;
    if !secs.is_finite() || secs > u64::MAX as f64 {
        return Err(invalid("it is too long"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Splits `1.5h…` into `1.5` and `h…`.
fn leading_number(s: &str) -> Option<(f64, &str)> {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let value = s[..end].parse::<f64>().ok()?;
    Some((value, &s[end..]))
}

/// Splits `ms30s` into the scale of `ms` and `30s`.
fn leading_unit(s: &str) -> Option<(f64, &str)> {
    let end = s
        .find(|c: char| c.is_ascii_digit() || c == '.')
        .unwrap_or(s.len());
    let unit = &s[..end];
    let (_, scale) = UNITS.iter().find(|(name, _)| *name == unit)?;
    Some((*scale, &s[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_forms_parse() {
        assert_eq!(parse("30s").ok(), Some(Duration::from_secs(30)));
        assert_eq!(parse("1m30s").ok(), Some(Duration::from_secs(90)));
        assert_eq!(parse("1h30m").ok(), Some(Duration::from_secs(5400)));
        assert_eq!(parse("1.5h").ok(), Some(Duration::from_secs(5400)));
        assert_eq!(parse("500ms").ok(), Some(Duration::from_millis(500)));
        assert_eq!(parse("1.5s").ok(), Some(Duration::from_millis(1500)));
        assert_eq!(parse("250us").ok(), Some(Duration::from_micros(250)));
        assert_eq!(parse("10ns").ok(), Some(Duration::from_nanos(10)));
        assert_eq!(parse(" 2s ").ok(), Some(Duration::from_secs(2)));
    }

    #[test]
    fn a_bare_number_is_refused_with_the_forms() {
        for bare in ["30", "0", "1.5"] {
            let e = parse(bare).expect_err(bare).to_string();
            assert!(e.contains("bare number has no unit"), "{e}");
            assert!(e.contains("500ms, 30s, 1m30s"), "{e}");
            assert!(e.contains(&format!("{bare:?}")), "{e}");
        }
    }

    #[test]
    fn malformed_input_is_refused() {
        for bad in ["", "m", "5d", "5 minutes", "s30", "1.2.3s", "-5s", "30sec"] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
        assert!(parse("99999999999999999999h").is_err());
    }
}
