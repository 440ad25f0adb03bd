//! Fetching with git2 (blocking: call it from `spawn_blocking`).
//!
//! Each source has a bare repository cached on disk (`<cache>/repo.git`), so fetches are
//! incremental. Fetches are shallow (depth 1) where the transport allows: https and ssh,
//! not file:// (libgit2 cannot shallow-fetch over the local transport) and not for a pinned
//! commit (which is fetched with every branch and tag). The revision's tree is checked out
//! into `<cache>/checkouts/<sha>` (written to a temporary directory and renamed, so a
//! reader never sees half a tree) for the loader.

use std::path::{Path, PathBuf};

use git2::{
    CertificateCheckStatus, Cred, CredentialType, FetchOptions, RemoteCallbacks, Repository,
};

use super::auth::{self, Credentials};
use super::spec::{RefSpec, Transport, parse_url, redact, redact_url};
use crate::Error;

fn io_error(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A fetched and checked-out revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    /// 40-hex commit SHA.
    pub sha: String,
    /// `<ref>@sha1:<sha>`.
    pub revision: String,
    /// The checked-out tree (the repository root for the loader).
    pub checkout: PathBuf,
    /// Whether the fetch was shallow.
    pub shallow: bool,
}

/// Fetches `refspec` of `url` into the cache at `cache_dir` and checks the commit out.
pub fn fetch(
    url: &str,
    refspec: &RefSpec,
    creds: &Credentials,
    cache_dir: &Path,
) -> Result<Fetched, Error> {
    let remote_info = parse_url(url)?;
    // What messages show of the URL: never the credentials it may carry.
    let shown = redact_url(url);
    std::fs::create_dir_all(cache_dir).map_err(|e| io_error(cache_dir, e))?;
    let repo_dir = cache_dir.join("repo.git");
    let repo = match Repository::open_bare(&repo_dir) {
        Ok(r) => r,
        Err(_) => {
            // A missing or corrupt cache is rebuilt from scratch.
            let _ = std::fs::remove_dir_all(&repo_dir);
            Repository::init_bare(&repo_dir).map_err(|e| {
                Error::Fetch(format!(
                    "initializing cache {}: {}",
                    repo_dir.display(),
                    e.message()
                ))
            })?
        }
    };
    let shallow =
        remote_info.transport != Transport::File && !matches!(refspec, RefSpec::Commit(_));

    let mut callbacks = RemoteCallbacks::new();
    let mut attempts = 0u32;
    let cred_creds = creds.clone();
    callbacks.credentials(move |_url, username_from_url, allowed| {
        attempts += 1;
        if attempts > 3 {
            return Err(git2::Error::from_str("authentication failed: the server rejected the Secret's credentials"));
        }
        let user = username_from_url.or(cred_creds.username.as_deref()).unwrap_or("git");
        if allowed.contains(CredentialType::SSH_KEY) {
            let Some(key) = cred_creds.identity.as_deref() else {
                return Err(git2::Error::from_str("ssh: the Secret has no `identity` private key"));
            };
            return Cred::ssh_key_from_memory(user, None, key, None);
        }
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT)
            && let (Some(u), Some(p)) = (cred_creds.username.as_deref(), cred_creds.password.as_deref())
        {
            return Cred::userpass_plaintext(u, p);
        }
        if allowed.contains(CredentialType::USERNAME) {
            return Cred::username(user);
        }
        Err(git2::Error::from_str("the server asks for credentials the Secret does not hold (username/password, bearerToken or identity)"))
    });
    // libgit2 replaces a rejecting callback's message with a generic one ("invalid or
    // unknown remote ssh hostkey"); keep ours to report the real reason.
    let rejection: std::sync::Arc<std::sync::Mutex<Option<String>>> = Default::default();
    let rejected = rejection.clone();
    let reject = move |msg: String| -> git2::Error {
        if let Ok(mut r) = rejected.lock() {
            *r = Some(msg.clone());
        }
        git2::Error::from_str(&msg)
    };
    let known_hosts = creds.known_hosts.clone();
    let ca = creds.ca_crt.clone();
    let host = remote_info.host.clone();
    let port = remote_info.port;
    let transport = remote_info.transport;
    callbacks.certificate_check(move |cert, _hostname| match transport {
        Transport::Ssh => {
            let Some(kh) = known_hosts.as_deref() else {
                return Err(reject(
                    "ssh: the Secret has no known_hosts; it is required (no trust on first use)"
                        .to_string(),
                ));
            };
            let name = auth::known_hosts_name(&host, port);
            let hk = cert
                .as_hostkey()
                .ok_or_else(|| reject("ssh: no host key presented".to_string()))?;
            let result = match (hk.hostkey(), hk.hash_sha256()) {
                (Some(raw), _) => auth::check_host_key(kh, &name, raw),
                (None, Some(h)) => auth::check_host_key_sha256(kh, &name, h),
                (None, None) => Err("ssh: the host key cannot be read".to_string()),
            };
            result
                .map(|()| CertificateCheckStatus::CertificateOk)
                .map_err(|e| reject(format!("ssh: {e}")))
        }
        Transport::Https => match (&ca, cert.as_x509()) {
            (Some(ca), Some(x509)) => auth::verify_server_cert(ca, &host, x509.data())
                .map(|()| CertificateCheckStatus::CertificateOk)
                .map_err(&reject),
            // No private CA: the system trust store decides.
            _ => Ok(CertificateCheckStatus::CertificatePassthrough),
        },
        Transport::File => Ok(CertificateCheckStatus::CertificatePassthrough),
    });

    let mut fo = FetchOptions::new();
    fo.remote_callbacks(callbacks);
    fo.download_tags(git2::AutotagOption::None);
    fo.update_fetchhead(false);
    if shallow {
        fo.depth(1);
    }
    let bearer = creds
        .bearer_token
        .as_ref()
        .map(|t| format!("Authorization: Bearer {t}"));
    let headers: Vec<&str> = bearer.iter().map(String::as_str).collect();
    if transport == Transport::Https && !headers.is_empty() {
        fo.custom_headers(&headers);
    }
    let mut remote = repo
        .remote_anonymous(url)
        .map_err(|e| Error::Fetch(format!("remote {shown}: {}", redact(e.message(), url))))?;
    let specs = refspec.refspecs();
    let spec_refs: Vec<&str> = specs.iter().map(String::as_str).collect();
    remote.fetch(&spec_refs, Some(&mut fo), None).map_err(|e| {
        let why = rejection
            .lock()
            .ok()
            .and_then(|r| r.clone())
            .unwrap_or_else(|| e.message().to_string());
        let why = redact(&why, url);
        Error::Fetch(format!(
            "fetching {} from {shown}: {why}",
            describe(refspec)
        ))
    })?;

    let commit = match refspec {
        RefSpec::Commit(sha) => {
            let oid = git2::Oid::from_str(sha).map_err(|e| Error::Fetch(e.message().into()))?;
            repo.find_commit(oid).map_err(|_| {
                Error::Fetch(format!(
                    "commit {sha} is not reachable from any branch or tag of {shown}"
                ))
            })?
        }
        _ => {
            let local = refspec.local_ref().unwrap_or_default();
            let r = repo
                .find_reference(&local)
                .map_err(|_| Error::Fetch(format!("{} not found in {shown}", describe(refspec))))?;
            r.peel_to_commit()
                .map_err(|e| Error::Fetch(format!("{}: {}", describe(refspec), e.message())))?
        }
    };
    let sha = commit.id().to_string();
    let checkout = checkout_tree(&repo, &commit, cache_dir)?;
    Ok(Fetched {
        revision: refspec.revision(&sha),
        sha,
        checkout,
        shallow,
    })
}

fn describe(r: &RefSpec) -> String {
    match r {
        RefSpec::Branch(b) => format!("branch {b}"),
        RefSpec::Tag(t) => format!("tag {t}"),
        RefSpec::Commit(c) => format!("commit {c}"),
    }
}

/// Checks `commit`'s tree out into `<cache>/checkouts/<sha>` unless it is already there,
/// and removes older checkouts (keeping the newest two for readers still using them).
fn checkout_tree(
    repo: &Repository,
    commit: &git2::Commit<'_>,
    cache_dir: &Path,
) -> Result<PathBuf, Error> {
    let sha = commit.id().to_string();
    let dir = cache_dir.join("checkouts");
    let target = dir.join(&sha);
    if target.is_dir() {
        return Ok(target);
    }
    std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
    let tmp = dir.join(format!(".tmp-{sha}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| io_error(&tmp, e))?;
    let tree = commit
        .tree()
        .map_err(|e| Error::Fetch(e.message().into()))?;
    let mut cb = git2::build::CheckoutBuilder::new();
    cb.target_dir(&tmp).force().recreate_missing(true);
    repo.checkout_tree(tree.as_object(), Some(&mut cb))
        .map_err(|e| Error::Fetch(format!("checking out {sha}: {}", e.message())))?;
    if let Err(e) = std::fs::rename(&tmp, &target) {
        let _ = std::fs::remove_dir_all(&tmp);
        if !target.is_dir() {
            return Err(io_error(&target, e));
        }
    }
    prune_checkouts(&dir, &sha);
    Ok(target)
}

fn prune_checkouts(dir: &Path, keep: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut olds: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name().to_string_lossy() != keep
                && !e.file_name().to_string_lossy().starts_with('.')
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    olds.sort();
    // Keep the newest previous checkout (the last good revision may still be read).
    olds.pop();
    for (_, p) in olds {
        let _ = std::fs::remove_dir_all(p);
    }
}
