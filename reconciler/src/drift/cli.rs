//! `dpdk-reconciler diff`: the drift report on the command line, with `kubectl diff` exit
//! codes (0 no drift, 1 drift, above 1 an error).
//!
//! The Git side is a local checkout (`--checkout`), or the repository of a
//! DPDKConfigSource fetched at the revision it last applied. The cluster side is read
//! once, through the kubeconfig.

use std::path::{Path, PathBuf};

use dpdk_bridge::api::{DPDKConfig, DPDKConfigSource, DPDKNodeState, NodeENI};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use super::engine::compute;
use super::model::{GitSource, Layer, LiveObjects, SourceKey};
use super::render::{render_diff, render_json, render_source_patch};
use crate::Error;
use crate::manifest::Manifests;
use crate::manifest::load::{LoadOptions, normalize_repo_path};

/// Output format of `diff`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The report: summary and findings.
    Json,
    /// A unified diff of all three layers.
    Diff,
    /// Layer 1 as a patch for `git apply` on the checkout.
    Patch,
}

/// Arguments of `dpdk-reconciler diff`.
#[derive(Clone, Debug, clap::Args)]
pub struct DiffArgs {
    /// Kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then in-cluster).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context (default: the current one).
    #[arg(long)]
    pub context: Option<String>,
    /// The DPDKConfigSource, <namespace>/<name>: its path and ignore rules are used, and
    /// without --checkout its repository is fetched at the revision it last applied.
    #[arg(long)]
    pub source: Option<String>,
    /// A local checkout of the config repository (its root) to compare with the cluster.
    #[arg(long)]
    pub checkout: Option<PathBuf>,
    /// Directory inside the repository (default: the source's spec.path, else the root).
    #[arg(long)]
    pub path: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Diff)]
    pub format: Format,
    /// Compare only objects whose name starts with this prefix.
    #[arg(long)]
    pub name_prefix: Option<String>,
}

/// Runs `diff`, printing to `out`. Ok(true) when the printed format shows drift.
pub async fn run(args: &DiffArgs, out: &mut dyn std::io::Write) -> Result<bool, Error> {
    let key =
        match args.source.as_deref() {
            Some(s) => Some(SourceKey::parse(s).ok_or_else(|| {
                Error::Flag(format!("--source {s:?}: expected <namespace>/<name>"))
            })?),
            None => None,
        };
    if key.is_none() && args.checkout.is_none() {
        return Err(Error::Flag(
            "diff needs --checkout <dir>, --source <namespace>/<name>, or both".into(),
        ));
    }
    let client = kube_client(args.kubeconfig.as_deref(), args.context.as_deref()).await?;
    let source = match &key {
        Some(k) => Some(
            Api::<DPDKConfigSource>::namespaced(client.clone(), &k.namespace)
                .get(&k.name)
                .await
                .map_err(|e| Error::Kube {
                    context: format!("reading DPDKConfigSource {k}"),
                    source: e,
                })?,
        ),
        None => None,
    };
    let path = match (&args.path, &source) {
        (Some(p), _) => p.clone(),
        (None, Some(s)) => s.spec.path.clone(),
        (None, None) => ".".to_string(),
    };
    let path =
        normalize_repo_path(&path).map_err(|e| Error::Flag(format!("--path {path:?}: {e}")))?;

    let (root, revision, _tmp) = match (&args.checkout, &source, &key) {
        (Some(dir), _, _) => (dir.clone(), checkout_revision(dir), None),
        (None, Some(src), Some(k)) => {
            let (dir, rev, tmp) = fetch_source(&client, k, src).await?;
            (dir, Some(rev), Some(tmp))
        }
        _ => {
            return Err(Error::Flag(
                "diff needs --checkout <dir> or --source".into(),
            ));
        }
    };
    let manifests = {
        let (root, path) = (root.clone(), path.clone());
        tokio::task::spawn_blocking(move || Manifests::load(&root, &path, &LoadOptions::default()))
            .await
            .map_err(|e| Error::Flag(format!("loading manifests: {e}")))?
    };
    if !manifests.is_valid() {
        let errors: Vec<String> = manifests.errors().map(ToString::to_string).collect();
        return Err(Error::Source {
            key: key
                .as_ref()
                .map_or_else(|| root.display().to_string(), ToString::to_string),
            message: format!(
                "the repository does not validate; drift is computed against valid revisions only:\n{}",
                errors.join("\n")
            ),
        });
    }
    let mut git = GitSource::from_manifests(key.clone(), revision, &path, &manifests);
    git.ignore = source
        .as_ref()
        .map(|s| s.spec.ignore_differences.clone())
        .unwrap_or_default();
    git.adopt_orphans = true;

    let live = read_live(&client, args.name_prefix.as_deref()).await?;
    let report = compute(std::slice::from_ref(&git), &live, Timestamp::now(), None);
    let (text, drift) = match args.format {
        Format::Json => (render_json(&report), !report.findings.is_empty()),
        Format::Diff => (
            render_diff(&report, std::slice::from_ref(&git), &live),
            !report.findings.is_empty(),
        ),
        Format::Patch => (
            render_source_patch(&report, &git, &live),
            report.findings.iter().any(|f| f.layer == Layer::GitCluster),
        ),
    };
    out.write_all(text.as_bytes()).map_err(|e| Error::Io {
        path: "stdout".into(),
        source: e,
    })?;
    Ok(drift)
}

/// A client from `--kubeconfig`/`--context`, else $KUBECONFIG, ~/.kube/config or the
/// in-cluster config (`diff` and `plan`).
pub(crate) async fn kube_client(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> Result<Client, Error> {
    let opts = KubeConfigOptions {
        context: context.map(str::to_string),
        ..Default::default()
    };
    let config = match kubeconfig {
        Some(p) => {
            let kc = Kubeconfig::read_from(p)
                .map_err(|e| Error::Flag(format!("--kubeconfig {}: {e}", p.display())))?;
            Config::from_custom_kubeconfig(kc, &opts)
                .await
                .map_err(|e| Error::Flag(format!("--kubeconfig {}: {e}", p.display())))?
        }
        None if context.is_some() => Config::from_kubeconfig(&opts)
            .await
            .map_err(|e| Error::Flag(format!("kubeconfig: {e}")))?,
        None => Config::infer()
            .await
            .map_err(|e| Error::Flag(format!("no kubeconfig or in-cluster config: {e}")))?,
    };
    Client::try_from(config).map_err(|e| Error::Kube {
        context: "creating the Kubernetes client".into(),
        source: e,
    })
}

/// `<branch>@sha1:<sha>` of a checkout's HEAD, when it is a Git repository.
pub(crate) fn checkout_revision(dir: &Path) -> Option<String> {
    let repo = git2::Repository::open(dir).ok()?;
    let head = repo.head().ok()?;
    let sha = head.peel_to_commit().ok()?.id().to_string();
    let name = if head.is_branch() {
        head.shorthand().unwrap_or("HEAD").to_string()
    } else {
        "HEAD".to_string()
    };
    Some(format!("{name}@sha1:{sha}"))
}

/// Fetches the source's repository at the revision it last applied (or last fetched),
/// with its Secret's credentials, into a temporary directory.
async fn fetch_source(
    client: &Client,
    key: &SourceKey,
    src: &DPDKConfigSource,
) -> Result<(PathBuf, String, tempfile::TempDir), Error> {
    use crate::source::auth::Credentials;
    use crate::source::spec::RefSpec;
    let err = |message: String| Error::Source {
        key: key.to_string(),
        message,
    };
    let status = src.status.clone().unwrap_or_default();
    let revision = status
        .last_applied_revision
        .or(status.last_fetched_revision)
        .ok_or_else(|| err("has no applied or fetched revision yet; pass --checkout".into()))?;
    let sha = revision
        .rsplit_once("sha1:")
        .map(|(_, s)| s.to_string())
        .ok_or_else(|| err(format!("revision {revision:?} has no sha1")))?;
    let creds = match &src.spec.secret_ref {
        Some(r) => {
            let secret = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(
                client.clone(),
                &key.namespace,
            )
            .get(&r.name)
            .await
            .map_err(|e| Error::Kube {
                context: format!(
                    "reading Secret {}/{} of DPDKConfigSource {key}",
                    key.namespace, r.name
                ),
                source: e,
            })?;
            Credentials::from_secret(&secret)
        }
        None => Credentials::default(),
    };
    let tmp = tempfile::tempdir().map_err(|e| Error::Io {
        path: "temporary directory".into(),
        source: e,
    })?;
    let cache = tmp.path().to_path_buf();
    let url = src.spec.url.clone();
    let refspec = RefSpec::Commit(sha);
    let opts = crate::source::SourceOptions::default();
    let req = crate::source::git::FetchRequest {
        url,
        refspec,
        creds,
        cache_dir: cache,
        path: src.spec.path.clone(),
        limits: opts.load,
        timeout: opts.fetch_timeout,
        max_fetch_bytes: opts.max_fetch_bytes,
    };
    let fetched = crate::source::git::fetch_async(req).await.map_err(|e| {
        err(format!(
            "fetching {}: {e}",
            crate::source::spec::redact_url(&src.spec.url)
        ))
    })?;
    Ok((fetched.checkout, revision, tmp))
}

/// Reads the live objects once.
pub async fn read_live(client: &Client, name_prefix: Option<&str>) -> Result<LiveObjects, Error> {
    let lp = ListParams::default();
    let kube_err = |what: &str| {
        let what = what.to_string();
        move |e| Error::Kube {
            context: format!("listing {what}"),
            source: e,
        }
    };
    let keep = |name: &Option<String>| {
        name_prefix.is_none_or(|p| name.as_deref().is_some_and(|n| n.starts_with(p)))
    };
    let configs = Api::<DPDKConfig>::all(client.clone())
        .list(&lp)
        .await
        .map_err(kube_err("DPDKConfigs"))?;
    let enis = Api::<NodeENI>::all(client.clone())
        .list(&lp)
        .await
        .map_err(kube_err("NodeENIs"))?;
    let states = Api::<DPDKNodeState>::all(client.clone())
        .list(&lp)
        .await
        .map_err(kube_err("DPDKNodeStates"))?;
    let nodes = Api::<Node>::all(client.clone())
        .list_metadata(&lp)
        .await
        .map_err(kube_err("Nodes"))?;
    Ok(LiveObjects {
        configs: configs
            .items
            .into_iter()
            .filter(|o| keep(&o.metadata.name))
            .collect(),
        node_enis: enis
            .items
            .into_iter()
            .filter(|o| keep(&o.metadata.name))
            .collect(),
        node_states: states
            .items
            .into_iter()
            .filter(|o| keep(&o.metadata.name))
            .collect(),
        nodes: nodes
            .items
            .into_iter()
            .filter(|o| keep(&o.metadata.name))
            .map(|o| o.metadata)
            .collect(),
        complete: name_prefix.is_none(),
    })
}
