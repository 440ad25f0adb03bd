//! Fetching with git2 (blocking: call [`fetch`] from `spawn_blocking`, or [`fetch_async`]).
//!
//! Each source has a bare repository cached on disk (`<cache>/repo.git`), so fetches are
//! incremental. Fetches are shallow (depth 1) where the transport allows: https and ssh,
//! not file:// (libgit2 cannot shallow-fetch over the local transport) and not for a pinned
//! commit (which is fetched with every branch and tag). Only `spec.path` of the revision's
//! tree is checked out, into `<cache>/checkouts/<sha>[-<path hash>]` (written to a temporary
//! directory and renamed, so a reader never sees half a tree), within the loader's limits
//! ([`checkout`]).
//!
//! A fetch stops at its deadline: the transfer-progress and sideband callbacks abort the
//! download once it passes (or once the server sent more than `max_fetch_bytes`), and
//! libgit2's connect and per-read timeouts ([`set_server_timeouts`], set by `run`) bound a
//! server that stops answering, and a [`watchdog`] shuts the fetch's connections down at
//! the deadline (a server trickling 1 byte/s calls none of our callbacks: libgit2 reports
//! progress every 100 KB). No two fetches of one cache (one source) run at once.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use git2::{
    CertificateCheckStatus, Cred, CredentialType, FetchOptions, RemoteCallbacks, Repository,
};

use super::auth::{self, Credentials};
use super::spec::{RefSpec, Transport, parse_url, redact, redact_url};
use crate::manifest::load::LoadOptions;

mod checkout;
mod watchdog;

/// A fetched and checked-out revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    /// 40-hex commit SHA.
    pub sha: String,
    /// `<ref>@sha1:<sha>`.
    pub revision: String,
    /// The checked-out tree (the repository root for the loader; only `spec.path` of it).
    pub checkout: PathBuf,
    /// Whether the fetch was shallow.
    pub shallow: bool,
}

/// What to fetch, and the limits of the fetch and of the checkout.
#[derive(Clone, Debug)]
pub struct FetchRequest {
    pub url: String,
    pub refspec: RefSpec,
    pub creds: Credentials,
    /// The source's cache directory.
    pub cache_dir: PathBuf,
    /// `spec.path`: the only part of the tree checked out.
    pub path: String,
    /// The loader's limits, enforced on the tree before any blob is read.
    pub limits: LoadOptions,
    /// The whole fetch (connect, negotiation, download, checkout) ends by then.
    pub timeout: Duration,
    /// Most bytes received from the server (`--source-max-fetch-bytes`).
    pub max_fetch_bytes: u64,
}

/// Flag of [`FetchRequest::max_fetch_bytes`].
pub const MAX_FETCH_BYTES_FLAG: &str = "--source-max-fetch-bytes";
/// Flag of [`FetchRequest::timeout`].
pub const FETCH_TIMEOUT_FLAG: &str = "--source-fetch-timeout";

/// Why a fetch gave no revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchError {
    pub message: String,
    /// The revision when it was fetched and then rejected (over a loader limit: the source
    /// reports `ValidationFailed`); `None` when the fetch itself failed (`FetchFailed`).
    pub revision: Option<String>,
}

impl FetchError {
    fn failed(message: impl Into<String>) -> FetchError {
        FetchError {
            message: message.into(),
            revision: None,
        }
    }
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<crate::Error> for FetchError {
    fn from(e: crate::Error) -> FetchError {
        FetchError::failed(e.to_string())
    }
}

impl From<String> for FetchError {
    fn from(message: String) -> FetchError {
        FetchError::failed(message)
    }
}

/// Sets libgit2's connect and per-read timeouts (process-wide C globals: call once, before
/// any thread is started, e.g. first thing in `main`).
///
/// # Safety
/// No other thread may use libgit2 while this runs (libgit2 writes the globals without
/// synchronization).
pub unsafe fn set_server_timeouts(connect: Duration, read: Duration) {
    let ms = |d: Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX).max(1);
    // SAFETY: the caller guarantees no concurrent libgit2 use.
    unsafe {
        let _ = git2::opts::set_server_connect_timeout_in_milliseconds(ms(connect));
        let _ = git2::opts::set_server_timeout_in_milliseconds(ms(read));
    }
}

/// Cache directories with a fetch running (in this process).
static IN_FLIGHT: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// Holds a cache directory's fetch slot; released when dropped.
struct Slot(PathBuf);

impl Slot {
    fn take(dir: &Path) -> Result<Slot, FetchError> {
        let mut busy = IN_FLIGHT
            .lock()
            .map_err(|_| FetchError::failed("fetch registry poisoned"))?;
        if !busy.insert(dir.to_path_buf()) {
            return Err(FetchError::failed(
                "a fetch of this source is still running; not starting a second one",
            ));
        }
        Ok(Slot(dir.to_path_buf()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut busy) = IN_FLIGHT.lock() {
            busy.remove(&self.0);
        }
    }
}

/// [`fetch`] on the blocking pool. The blocking fetch ends by its own deadline; this waits
/// for it (with a grace period for cleanup), so no fetch outlives its call.
pub async fn fetch_async(req: FetchRequest) -> Result<Fetched, FetchError> {
    let timeout = req.timeout;
    let task = tokio::task::spawn_blocking(move || fetch(&req));
    // The deadline is enforced inside; the margin only covers a checkout in progress.
    match tokio::time::timeout(timeout + Duration::from_secs(30), task).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(FetchError::failed(format!("fetch task: {e}"))),
        Err(_) => Err(FetchError::failed(format!(
            "fetch did not stop {}s after its deadline",
            timeout.as_secs() + 30
        ))),
    }
}

/// What aborted a fetch from inside a callback.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Abort {
    Deadline,
    TooLarge(u64),
}

/// Fetches `refspec` of `url` into the cache and checks `spec.path` of the commit out.
pub fn fetch(req: &FetchRequest) -> Result<Fetched, FetchError> {
    let deadline = Instant::now() + req.timeout;
    let _slot = Slot::take(&req.cache_dir)?;
    let (url, refspec, creds, cache_dir) = (&req.url, &req.refspec, &req.creds, &req.cache_dir);
    let remote_info = parse_url(url)?;
    // What messages show of the URL: never the credentials it may carry.
    let shown = redact_url(url);
    std::fs::create_dir_all(cache_dir)
        .map_err(|e| format!("cache {}: {e}", cache_dir.display()))?;
    let repo_dir = cache_dir.join("repo.git");
    let repo = match Repository::open_bare(&repo_dir) {
        Ok(r) => r,
        Err(_) => {
            // A missing or corrupt cache is rebuilt from scratch.
            let _ = std::fs::remove_dir_all(&repo_dir);
            Repository::init_bare(&repo_dir).map_err(|e| {
                format!("initializing cache {}: {}", repo_dir.display(), e.message())
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

    let abort: Arc<Mutex<Option<Abort>>> = Arc::default();
    let (a1, a2) = (abort.clone(), abort.clone());
    let max_bytes = req.max_fetch_bytes;
    callbacks.transfer_progress(move |p| {
        let why = if Instant::now() >= deadline {
            Some(Abort::Deadline)
        } else if p.received_bytes() as u64 > max_bytes {
            Some(Abort::TooLarge(p.received_bytes() as u64))
        } else {
            None
        };
        match why {
            Some(w) => {
                if let Ok(mut a) = a1.lock() {
                    *a = Some(w);
                }
                false
            }
            None => true,
        }
    });
    callbacks.sideband_progress(move |_| {
        if Instant::now() >= deadline {
            if let Ok(mut a) = a2.lock() {
                *a = Some(Abort::Deadline);
            }
            return false;
        }
        true
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
        .map_err(|e| format!("remote {shown}: {}", redact(e.message(), url)))?;
    let specs = refspec.refspecs();
    let spec_refs: Vec<&str> = specs.iter().map(String::as_str).collect();
    let dog = match transport {
        Transport::File => None,
        _ => Some(watchdog::Watchdog::start(
            &remote_info.host,
            remote_info.port.unwrap_or(match transport {
                Transport::Ssh => 22,
                _ => 443,
            }),
            deadline,
        )),
    };
    let fetched = remote.fetch(&spec_refs, Some(&mut fo), None);
    let cut = dog.is_some_and(watchdog::Watchdog::finish);
    fetched.map_err(|e| {
        let aborted = abort.lock().ok().and_then(|a| a.clone());
        let why = match aborted {
            Some(Abort::Deadline) => timed_out(req.timeout),
            Some(Abort::TooLarge(n)) => format!(
                "the server sent more than {max_bytes} bytes ({n} so far, {MAX_FETCH_BYTES_FLAG}); aborted"
            ),
            None if cut || Instant::now() >= deadline => timed_out(req.timeout),
            None => rejection
                .lock()
                .ok()
                .and_then(|r| r.clone())
                .unwrap_or_else(|| e.message().to_string()),
        };
        let why = redact(&why, url);
        format!("fetching {} from {shown}: {why}", describe(refspec))
    })?;

    let commit = match refspec {
        RefSpec::Commit(sha) => {
            let oid = git2::Oid::from_str(sha).map_err(|e| e.message().to_string())?;
            repo.find_commit(oid).map_err(|_| {
                format!("commit {sha} is not reachable from any branch or tag of {shown}")
            })?
        }
        _ => {
            let local = refspec.local_ref().unwrap_or_default();
            let r = repo
                .find_reference(&local)
                .map_err(|_| format!("{} not found in {shown}", describe(refspec)))?;
            r.peel_to_commit()
                .map_err(|e| format!("{}: {}", describe(refspec), e.message()))?
        }
    };
    let sha = commit.id().to_string();
    let revision = refspec.revision(&sha);
    let checkout =
        checkout_tree(&repo, &commit, cache_dir, &req.path, &req.limits).map_err(|e| match e {
            checkout::CheckoutError::Limit(d) => FetchError {
                message: format!("revision {revision} rejected, nothing applied: {d}"),
                revision: Some(revision.clone()),
            },
            checkout::CheckoutError::Io(m) => {
                FetchError::failed(format!("checking out {sha}: {m}"))
            }
        })?;
    Ok(Fetched {
        revision,
        sha,
        checkout,
        shallow,
    })
}

fn timed_out(timeout: Duration) -> String {
    format!(
        "fetch timed out after {}s ({FETCH_TIMEOUT_FLAG}); aborted",
        timeout.as_secs()
    )
}

fn describe(r: &RefSpec) -> String {
    match r {
        RefSpec::Branch(b) => format!("branch {b}"),
        RefSpec::Tag(t) => format!("tag {t}"),
        RefSpec::Commit(c) => format!("commit {c}"),
    }
}

/// Checks `path` of `commit`'s tree out into `<cache>/checkouts/<name>` unless it is
/// already there, and removes older checkouts (keeping the newest previous one for readers
/// still using it).
fn checkout_tree(
    repo: &Repository,
    commit: &git2::Commit<'_>,
    cache_dir: &Path,
    path: &str,
    limits: &LoadOptions,
) -> Result<PathBuf, checkout::CheckoutError> {
    use checkout::CheckoutError::Io;
    let sha = commit.id().to_string();
    let name = checkout::checkout_name(&sha, path);
    let dir = cache_dir.join("checkouts");
    let target = dir.join(&name);
    if target.is_dir() {
        return Ok(target);
    }
    std::fs::create_dir_all(&dir).map_err(|e| Io(format!("{}: {e}", dir.display())))?;
    let tmp = dir.join(format!(".tmp-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Io(format!("{}: {e}", tmp.display())))?;
    let tree = commit.tree().map_err(|e| Io(e.message().to_string()))?;
    if let Err(e) = checkout::write_path(repo, &tree, path, limits, &tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if let Err(e) = std::fs::rename(&tmp, &target) {
        let _ = std::fs::remove_dir_all(&tmp);
        if !target.is_dir() {
            return Err(Io(format!("{}: {e}", target.display())));
        }
    }
    prune_checkouts(&dir, &name);
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
