//! The I/O of `plan`: reads the checkout (the `validate` loader and rules), the
//! DPDKConfigSource when given, and the cluster once (trimmed as the controller's caches
//! are); then runs the pure steps and prints. Never writes to the cluster.

use std::path::PathBuf;

use dpdk_bridge::api::DPDKConfigSource;
use dpdk_bridge::plan;
use k8s_openapi::jiff::Timestamp;
use kube::{Api, Client};

use super::desired::{self, Checkout, Scope};
use super::impact::{self, Impact};
use super::render::{self, Format};
use crate::Error;
use crate::controller::PlannerArgs;
use crate::controller::cache::CachedObjects;
use crate::manifest::Manifests;
use crate::manifest::load::{LimitArgs, normalize_repo_path};
use crate::source::SourceKey;

/// Arguments of `dpdk-reconciler plan`.
#[derive(Clone, Debug, clap::Args)]
pub struct PlanArgs {
    /// A checkout of the config repository (its root), e.g. the pull request's head.
    #[arg(long)]
    pub checkout: PathBuf,
    /// The DPDKConfigSource <namespace>/<name> that applies this repository: its
    /// spec.path, its inventory and spec.prune decide which live DPDKConfigs the checkout
    /// replaces and removes. Without it, each checkout config replaces the live one of its
    /// name and nothing is removed.
    #[arg(long)]
    pub source: Option<String>,
    /// Directory inside the checkout (default: the source's spec.path, else the root).
    #[arg(long)]
    pub path: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then in-cluster).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context (default: the current one).
    #[arg(long)]
    pub context: Option<String>,
    /// The controller's flags that change its decisions: pass the ones it runs with.
    #[command(flatten)]
    pub planner: PlannerArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// Runs `plan`, printing to `out`. Ok(true) when the checkout changes something.
pub async fn run(args: PlanArgs, out: &mut dyn std::io::Write) -> Result<bool, Error> {
    let key =
        match args.source.as_deref() {
            Some(s) => Some(SourceKey::parse(s).ok_or_else(|| {
                Error::Flag(format!("--source {s:?}: expected <namespace>/<name>"))
            })?),
            None => None,
        };
    let client =
        crate::drift::cli::kube_client(args.kubeconfig.as_deref(), args.context.as_deref()).await?;
    let source = match &key {
        Some(k) => Some(read_source(&client, k).await?),
        None => None,
    };
    let path = match (&args.path, &source) {
        (Some(p), _) => p.clone(),
        (None, Some(s)) => s.spec.path.clone(),
        (None, None) => ".".to_string(),
    };
    let path =
        normalize_repo_path(&path).map_err(|e| Error::Flag(format!("--path {path:?}: {e}")))?;
    let manifests = load(&args, &path).await?;
    let live = CachedObjects::list(&client, None).await?;
    let scope = match (&key, &source) {
        (Some(k), Some(s)) => Scope::Source {
            label: k.label_value(),
            inventory: s.status.clone().unwrap_or_default().inventory,
            prune: s.spec.prune,
        },
        _ => Scope::Checkout,
    };
    let revision = crate::drift::cli::checkout_revision(&args.checkout);
    let settings = args.planner.clone().into_options().planner_settings();
    let impact = preview(&live, &manifests, &scope, revision.as_deref(), &settings);
    out.write_all(render::render(&impact, args.format).as_bytes())
        .map_err(|e| Error::Io {
            path: "stdout".into(),
            source: e,
        })?;
    Ok(impact.changed())
}

/// The pure middle: the checkout in place of the live configs, both outcomes, compared.
pub fn preview(
    live: &CachedObjects,
    manifests: &Manifests,
    scope: &Scope,
    revision: Option<&str>,
    settings: &plan::Settings,
) -> Impact {
    let now = Timestamp::now();
    let desired = desired::substitute(
        &live.configs,
        &Checkout {
            declared: &manifests.objects,
            revision,
            now,
        },
        scope,
    );
    let with_checkout = CachedObjects {
        configs: desired.configs,
        ..live.clone()
    };
    let snapshot = with_checkout.snapshot(&[]);
    let before = plan::outcome(&live.snapshot(&[]), settings, now);
    let after = plan::outcome(&snapshot, settings, now);
    let mut impact = impact::impact(&before, &after, &desired.changes);
    // The first pass with the checkout: its rollouts predict the waves.
    impact::add_waves(&mut impact, &plan::plan(&snapshot, settings, now).rollouts);
    impact
}

async fn read_source(client: &Client, key: &SourceKey) -> Result<DPDKConfigSource, Error> {
    Api::<DPDKConfigSource>::namespaced(client.clone(), &key.namespace)
        .get(&key.name)
        .await
        .map_err(|source| Error::Kube {
            context: format!("reading DPDKConfigSource {key}"),
            source,
        })
}

/// Loads and validates the checkout as `validate` does; any error fails the plan.
async fn load(args: &PlanArgs, path: &str) -> Result<Manifests, Error> {
    let (root, path_, opts) = (
        args.checkout.clone(),
        path.to_string(),
        args.limits.clone().into_options(),
    );
    let manifests = tokio::task::spawn_blocking(move || Manifests::load(&root, &path_, &opts))
        .await
        .map_err(|e| Error::Task {
            task: "loading the checkout",
            message: e.to_string(),
        })?;
    if manifests.is_valid() {
        return Ok(manifests);
    }
    Err(Error::InvalidCheckout {
        checkout: args.checkout.display().to_string(),
        errors: manifests.errors().map(ToString::to_string).collect(),
    })
}
