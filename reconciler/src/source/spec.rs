//! Pure helpers over a DPDKConfigSource's spec: intervals, refs, revisions, URLs.

use std::time::Duration;

use dpdk_bridge::api::GitRef;

use crate::Error;

fn invalid_ref(message: &str) -> Error {
    Error::InvalidSpec {
        field: "spec.ref",
        message: message.to_string(),
    }
}

fn invalid_url(message: String) -> Error {
    Error::InvalidSpec {
        field: "spec.url",
        message,
    }
}

/// The longest `spec.interval` accepted.
const MAX_INTERVAL: Duration = Duration::from_secs(366 * 86400);

/// Parses `spec.interval`: a Go duration (`30s`, `5m`, `1h30m`, `1.5h`, `500ms`) of at most
/// 366 days.
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = dpdk_bridge::duration::parse(s).map_err(|e| format!("spec.interval: {e}"))?;
    if d > MAX_INTERVAL {
        return Err(format!(
            "spec.interval: invalid duration {s:?}: longer than 366 days"
        ));
    }
    Ok(d)
}

/// The shortest `spec.interval` accepted: polling faster only loads the Git server (use a
/// webhook to fetch at once).
pub const MIN_INTERVAL: Duration = Duration::from_secs(10);

/// `spec.interval`, parsed and at least [`MIN_INTERVAL`].
pub fn check_interval(s: &str) -> Result<Duration, Error> {
    let invalid = |message: String| Error::InvalidSpec {
        field: "spec.interval",
        message,
    };
    let d = parse_interval(s).map_err(invalid)?;
    if d < MIN_INTERVAL {
        return Err(invalid(format!(
            "spec.interval {s} is below the minimum of {}s; use a webhook to fetch at once",
            MIN_INTERVAL.as_secs()
        )));
    }
    Ok(d)
}

/// The user-info of `url` that must never be shown: any for https (a token may be the
/// user name), a `user:password` for other transports (`ssh://git@host` shows `git`).
fn url_secret(url: &str) -> Option<&str> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split('/').next().unwrap_or("");
    let (userinfo, _) = authority.rsplit_once('@')?;
    (!userinfo.is_empty() && (scheme == "https" || userinfo.contains(':'))).then_some(userinfo)
}

/// `url` as messages and logs show it: `https://user:pass@host/r` → `https://***@host/r`.
pub fn redact_url(url: &str) -> String {
    match url_secret(url) {
        Some(secret) => url.replacen(&format!("{secret}@"), "***@", 1),
        None => url.to_string(),
    }
}

/// `text` (an error from libgit2, say) without the credentials of `url`: the user-info,
/// and its user and password alone, become `***`.
pub fn redact(text: &str, url: &str) -> String {
    let Some(secret) = url_secret(url) else {
        return text.to_string();
    };
    let mut out = text.replace(url, &redact_url(url));
    let mut parts: Vec<&str> = vec![secret];
    parts.extend(secret.split(':').filter(|p| p.len() >= 3));
    for p in parts {
        out = out.replace(p, "***");
    }
    out
}

/// A branch, tag or commit to fetch.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RefSpec {
    Branch(String),
    Tag(String),
    Commit(String),
}

impl RefSpec {
    /// Exactly one of branch, tag or commit (the CRD enforces this too).
    pub fn from_git_ref(r: &GitRef) -> Result<RefSpec, Error> {
        let valid_name = |n: &str| {
            !n.is_empty()
                && !n.starts_with('-')
                && !n.contains("..")
                && !n.contains(|c: char| {
                    c.is_whitespace() || c.is_control() || "~^:?*[\\".contains(c)
                })
        };
        match (&r.branch, &r.tag, &r.commit) {
            (Some(b), None, None) if valid_name(b) => Ok(RefSpec::Branch(b.clone())),
            (None, Some(t), None) if valid_name(t) => Ok(RefSpec::Tag(t.clone())),
            (None, None, Some(c)) if c.len() == 40 && c.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Ok(RefSpec::Commit(c.to_ascii_lowercase()))
            }
            (None, None, None) => Err(invalid_ref(
                "spec.ref must set one of branch, tag or commit",
            )),
            _ => Err(invalid_ref(
                "spec.ref must set exactly one valid branch, tag or 40-hex commit",
            )),
        }
    }

    /// The refspecs to fetch. A commit is fetched with every branch and tag (servers do not
    /// generally allow fetching an arbitrary SHA).
    pub fn refspecs(&self) -> Vec<String> {
        match self {
            RefSpec::Branch(b) => vec![format!("+refs/heads/{b}:refs/remotes/origin/{b}")],
            RefSpec::Tag(t) => vec![format!("+refs/tags/{t}:refs/tags/{t}")],
            RefSpec::Commit(_) => vec![
                "+refs/heads/*:refs/remotes/origin/*".to_string(),
                "+refs/tags/*:refs/tags/*".to_string(),
            ],
        }
    }

    /// The local reference the fetched ref lands in (None for a commit).
    pub fn local_ref(&self) -> Option<String> {
        match self {
            RefSpec::Branch(b) => Some(format!("refs/remotes/origin/{b}")),
            RefSpec::Tag(t) => Some(format!("refs/tags/{t}")),
            RefSpec::Commit(_) => None,
        }
    }

    /// The revision string recorded in annotations and status: `main@sha1:<sha>`,
    /// `v1.2@sha1:<sha>`, or `sha1:<sha>` for a pinned commit (Flux's format).
    pub fn revision(&self, sha: &str) -> String {
        match self {
            RefSpec::Branch(n) | RefSpec::Tag(n) => format!("{n}@sha1:{sha}"),
            RefSpec::Commit(_) => format!("sha1:{sha}"),
        }
    }
}

/// The transport of a source URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Https,
    Ssh,
    File,
}

/// Host and port of an `ssh://` or `https://` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Remote {
    pub transport: Transport,
    pub host: String,
    pub port: Option<u16>,
    /// For file://: the local path of the repository.
    pub path: String,
}

/// Parses `spec.url`: https://, ssh:// or file:// (the CRD admits only these).
pub fn parse_url(url: &str) -> Result<Remote, Error> {
    let (transport, rest) = if let Some(r) = url.strip_prefix("https://") {
        (Transport::Https, r)
    } else if let Some(r) = url.strip_prefix("ssh://") {
        (Transport::Ssh, r)
    } else if let Some(r) = url.strip_prefix("file://") {
        return Ok(Remote {
            transport: Transport::File,
            host: String::new(),
            port: None,
            path: r.to_string(),
        });
    } else {
        return Err(invalid_url(format!(
            "unsupported URL {url:?}: use https://, ssh:// or file://"
        )));
    };
    let authority = rest.split('/').next().unwrap_or("");
    let hostport = authority
        .rsplit_once('@')
        .map(|(_, h)| h)
        .unwrap_or(authority);
    let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
        // [ipv6]:port
        let (h, p) = h
            .split_once(']')
            .ok_or_else(|| invalid_url(format!("invalid host in {url:?}")))?;
        (
            h.to_string(),
            p.strip_prefix(':')
                .map(str::parse::<u16>)
                .transpose()
                .map_err(|_| invalid_url(format!("invalid port in {url:?}")))?,
        )
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                Some(
                    p.parse::<u16>()
                        .map_err(|_| invalid_url(format!("invalid port in {url:?}")))?,
                ),
            ),
            None => (hostport.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err(invalid_url(format!("no host in {url:?}")));
    }
    let path = rest.get(authority.len()..).unwrap_or("").to_string();
    Ok(Remote {
        transport,
        host,
        port,
        path,
    })
}

/// `spec.url`, parsed; `file://` only when `allow_file` (`--allow-file-urls`): a local
/// path can read another source's cache or any file the reconciler can.
pub fn check_url(url: &str, allow_file: bool) -> Result<Remote, Error> {
    let remote = parse_url(url)?;
    if remote.transport == Transport::File && !allow_file {
        return Err(invalid_url(format!(
            "spec.url {url}: file:// URLs are refused; start dpdk-reconciler run with --allow-file-urls to allow them"
        )));
    }
    Ok(remote)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_interval("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_interval("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_interval("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_interval("5").is_err());
        assert!(parse_interval("m").is_err());
        assert!(parse_interval("5d").is_err());
        assert!(parse_interval("").is_err());
    }

    #[test]
    fn refs_and_revisions() {
        let b = RefSpec::from_git_ref(&GitRef {
            branch: Some("main".into()),
            tag: None,
            commit: None,
        })
        .expect("branch");
        assert_eq!(b.revision("abc"), "main@sha1:abc");
        assert_eq!(
            b.refspecs(),
            vec!["+refs/heads/main:refs/remotes/origin/main"]
        );
        let c = "0123456789abcdef0123456789abcdef01234567";
        let c = RefSpec::from_git_ref(&GitRef {
            branch: None,
            tag: None,
            commit: Some(c.into()),
        })
        .expect("commit");
        assert_eq!(c.revision("x"), "sha1:x");
        assert!(
            RefSpec::from_git_ref(&GitRef {
                branch: Some("a".into()),
                tag: Some("b".into()),
                commit: None
            })
            .is_err()
        );
        assert!(
            RefSpec::from_git_ref(&GitRef {
                branch: Some("--upload-pack=x".into()),
                tag: None,
                commit: None
            })
            .is_err()
        );
    }

    #[test]
    fn urls() {
        let r = parse_url("ssh://git@127.0.0.1:2222/srv/repo.git").expect("ssh");
        assert_eq!(
            (r.transport, r.host.as_str(), r.port, r.path.as_str()),
            (Transport::Ssh, "127.0.0.1", Some(2222), "/srv/repo.git")
        );
        let r = parse_url("https://user@example.com/org/repo").expect("https");
        assert_eq!((r.host.as_str(), r.port), ("example.com", None));
        let r = parse_url("file:///tmp/repo").expect("file");
        assert_eq!(
            (r.transport, r.path.as_str()),
            (Transport::File, "/tmp/repo")
        );
        assert!(parse_url("git@github.com:org/repo").is_err());
    }

    #[test]
    fn intervals_have_a_minimum() {
        assert_eq!(check_interval("10s").ok(), Some(Duration::from_secs(10)));
        let e = check_interval("500ms").expect_err("below the minimum");
        assert_eq!(e.kind(), crate::ErrorKind::InvalidSpec);
        assert_eq!(
            e.to_string(),
            "spec.interval 500ms is below the minimum of 10s; use a webhook to fetch at once"
        );
        let e = check_interval("5").expect_err("bare number");
        assert!(e.to_string().starts_with("spec.interval: "), "{e}");
    }

    #[test]
    fn credentials_in_urls_are_redacted() {
        let url = "https://deploy:s3cret@git.example.com:8443/org/repo";
        assert_eq!(redact_url(url), "https://***@git.example.com:8443/org/repo");
        assert_eq!(
            redact_url("https://ghp_token@github.com/o/r"),
            "https://***@github.com/o/r"
        );
        assert_eq!(
            redact_url("ssh://git@127.0.0.1:2222/r"),
            "ssh://git@127.0.0.1:2222/r"
        );
        assert_eq!(redact_url("ssh://u:pw@h/r"), "ssh://***@h/r");
        assert_eq!(redact_url("file:///tmp/r"), "file:///tmp/r");
        let msg = format!("remote {url}: unexpected status for user deploy with s3cret");
        assert_eq!(
            redact(&msg, url),
            "remote https://***@git.example.com:8443/org/repo: unexpected status for user *** with ***"
        );
    }

    #[test]
    fn file_urls_need_the_flag() {
        let e = check_url("file:///srv/repo", false).expect_err("refused");
        assert_eq!(e.kind(), crate::ErrorKind::InvalidSpec);
        assert!(e.to_string().contains("--allow-file-urls"), "{e}");
        assert!(check_url("file:///srv/repo", true).is_ok());
        assert!(check_url("https://h/r", false).is_ok());
    }
}
