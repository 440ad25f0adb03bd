//! `dpdk-reconciler`: the GitOps engine and DPDK controller of dpdk-gitops.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dpdk_bridge::logging::{self, LogFormat};

#[derive(Parser)]
#[command(
    name = "dpdk-reconciler",
    version,
    about = "GitOps reconciler and DPDK controller: applies DPDKConfigs from Git, drives NodeENIs and node labels, reports drift"
)]
struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write the CRDs generated from the Rust types (deploy/dpdk-crd.yaml, deploy/testing/nodeeni-crd.yaml) and docs/crd-reference.md.
    Crdgen {
        /// Workspace root to write under.
        #[arg(long, default_value = ".")]
        root: PathBuf,
        /// Do not write; exit 1 when a committed file differs from the generated one.
        #[arg(long)]
        check: bool,
    },
    /// Validate the DPDKConfig YAML under a directory offline, with the source controller's
    /// loader and rules (for config-repo CI and pre-commit). Exit 0: valid (warnings printed);
    /// 1: invalid, one `file:line:col: message` line per error; 2: usage error.
    Validate {
        /// Directory (or single file) to check, recursively; it is treated as the repository
        /// root, so symlinks leaving it are refused.
        dir: PathBuf,
        #[command(flatten)]
        limits: dpdk_reconciler::manifest::load::LimitArgs,
    },
    /// Run the cluster side: the DPDK controller (DPDKConfig -> node labels, NodeENI DPDK
    /// fields, DPDKNodeStates) with leader election, the Git sources, the HTTP server
    /// (/metrics, /healthz, /readyz, /drift*) and, on its own listener, the webhook
    /// receiver (POST /hook/<namespace>/<name>). Connects in-cluster, or with $KUBECONFIG.
    Run(Box<RunArgs>),
    /// Preview what a config-repository checkout would do to the cluster before it is
    /// merged, like `terraform plan` (docs/plan.md): per changed DPDKConfig, the nodes to
    /// enable, reconfigure and tear down, the NodeENI fields that change (old → new) and the
    /// conflicts it would create, from the controller's own planner run on the live cluster
    /// ($KUBECONFIG) with and without the checkout. Read-only. Exit 0: no change; 1: changes;
    /// 2: error (an invalid checkout names each file:line:col).
    Plan(Box<dpdk_reconciler::preview::cli::PlanArgs>),
    /// Show drift between Git, the cluster and the nodes (docs/drift.md), like `kubectl diff`:
    /// exit 0 no drift, 1 drift, above 1 an error.
    Diff(dpdk_reconciler::drift::cli::DiffArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Listen address of the HTTP server.
    #[arg(long, default_value = "0.0.0.0:8080")]
    http_addr: String,
    #[command(flatten)]
    controller: dpdk_reconciler::controller::ControllerArgs,
    #[command(flatten)]
    sources: dpdk_reconciler::source::SourceArgs,
    #[command(flatten)]
    webhook: dpdk_reconciler::source::webhook::WebhookArgs,
    /// Do not compute drift or serve /drift*: saves the drift runtime's own caches of
    /// DPDKConfigs, Nodes, NodeENIs and DPDKNodeStates (more than half the peak memory of a
    /// 1000-node rollout, BENCHMARKS.md); `dpdk-reconciler diff` still works from outside.
    #[arg(long)]
    no_drift: bool,
}

/// `run`: the HTTP server and the controller until SIGTERM or SIGINT.
async fn run(args: RunArgs) -> Result<(), dpdk_reconciler::Error> {
    use dpdk_reconciler::{Error, controller, metrics, server};
    use std::sync::Arc;
    let opts = args.controller.into_options()?;
    let client = kube::Client::try_default()
        .await
        .map_err(|source| Error::Kube {
            context: "connecting to the API server (in-cluster service account or $KUBECONFIG)"
                .into(),
            source,
        })?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        dpdk_bridge::signals::shutdown().await;
        on_signal.cancel();
    });
    let mut registry = metrics::Registry::default();
    let controller_metrics = Arc::new(metrics::ControllerMetrics::register(&mut registry));
    // One Lease election for every writer: the DPDK controller and the Git source work
    // only on the leader.
    let election_stop = shutdown.child_token();
    let election = controller::leader::Election::start(
        &client,
        opts.leader_election.clone(),
        election_stop.clone(),
    );
    // The Git source (DPDKConfigSource) and its webhook receiver, on a listener of its own.
    let sources = dpdk_reconciler::source::SourceController::new(
        client.clone(),
        args.sources.into_options(),
        &mut registry,
    )
    .gated_by(election.subscribe());
    let receiver = match &args.webhook.webhook_addr {
        Some(addr) => Some((
            sources.webhook_receiver(args.webhook.options(), &mut registry),
            server::bind(addr).await?,
        )),
        None => None,
    };
    // Drift (read-only): recomputed on watch events and new source revisions; /drift* routes.
    let drift = dpdk_reconciler::drift::runtime::DriftState::new();
    let drift_routes = if args.no_drift {
        axum::Router::new()
    } else {
        drift.metrics.register(&mut registry);
        dpdk_reconciler::drift::http::routes(drift.clone())
    };
    let drift_git = Arc::new(sources.store());
    let health = server::Probes::new();
    let listener = server::bind(&args.http_addr).await?;
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
    let app = server::router(
        server::AppState {
            registry: Arc::new(registry),
            health: health.clone(),
        },
        vec![drift_routes],
    );
    let http = tokio::spawn(server::serve(listener, app, shutdown.clone()));
    let hook = match receiver {
        Some((receiver, listener)) => {
            let addr = listener
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default();
            tracing::info!(%addr, "serving the webhook receiver, POST /hook/<namespace>/<name>");
            tokio::spawn(receiver.serve(listener, shutdown.clone()))
        }
        None => {
            tracing::info!("no --webhook-addr: no webhook receiver");
            tokio::spawn(async { Ok(()) })
        }
    };
    let source_task = tokio::spawn(sources.run(shutdown.clone().cancelled_owned()));
    let telemetry = controller::Telemetry {
        metrics: controller_metrics,
        health,
    };
    // One set of watches for the controller and the drift runtime. A sharded controller
    // (--config-selector) sees only its shard's DPDKConfigs, while drift compares every
    // config with Git: then drift keeps watches of its own.
    let drift_changed = Arc::new(tokio::sync::Notify::new());
    let share = !args.no_drift && opts.config_selector.is_none();
    let also_notify = if share {
        vec![drift_changed.clone()]
    } else {
        Vec::new()
    };
    let watches =
        controller::start_watches(&client, &opts, &telemetry, also_notify, shutdown.clone());
    let drift_task = if args.no_drift {
        tokio::spawn(async {})
    } else if share {
        let caches = watches.caches.clone();
        tokio::spawn(dpdk_reconciler::drift::runtime::run_on(
            caches,
            drift_changed,
            drift_git,
            Default::default(),
            drift,
            shutdown.clone(),
        ))
    } else {
        tokio::spawn(dpdk_reconciler::drift::runtime::run(
            client.clone(),
            drift_git,
            Default::default(),
            drift,
            shutdown.clone(),
        ))
    };
    let result = controller::run_led(
        client,
        opts,
        telemetry,
        watches,
        election.subscribe(),
        shutdown.clone(),
    )
    .await;
    shutdown.cancel();
    let _ = source_task.await;
    let _ = drift_task.await;
    // Both writers stopped: release the Lease so a successor can start at once.
    election_stop.cancel();
    election.finish().await;
    for (what, task) in [("HTTP server", http), ("webhook receiver", hook)] {
        match task.await {
            Ok(Err(e)) => tracing::warn!(error = %e, "{what}"),
            Err(e) => tracing::warn!(error = %e, "{what} task"),
            Ok(Ok(())) => {}
        }
    }
    result
}

/// `plan`: exit 0 no change, 1 changes, 2 errors.
fn plan(args: dpdk_reconciler::preview::cli::PlanArgs) -> ExitCode {
    use dpdk_reconciler::preview::{EXIT_CHANGES, EXIT_ERROR, EXIT_NO_CHANGES};
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dpdk-reconciler plan: starting the runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    match rt.block_on(dpdk_reconciler::preview::cli::run(
        args,
        &mut std::io::stdout().lock(),
    )) {
        Ok(false) => ExitCode::from(EXIT_NO_CHANGES),
        Ok(true) => ExitCode::from(EXIT_CHANGES),
        Err(e) => {
            eprintln!("dpdk-reconciler plan: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    match cli.command {
        Cmd::Crdgen { root, check } => match dpdk_reconciler::crdgen::run(&root, check) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => {
                eprintln!("dpdk-reconciler crdgen: {e}");
                ExitCode::from(2)
            }
        },
        Cmd::Validate { dir, limits } => {
            let opts = limits.into_options();
            ExitCode::from(dpdk_reconciler::manifest::report::validate_dir(
                &dir,
                &opts,
                &mut std::io::stdout().lock(),
                &mut std::io::stderr().lock(),
            ))
        }
        Cmd::Run(args) => {
            let fetch_timeout = args
                .sources
                .source_fetch_timeout
                .max(std::time::Duration::from_secs(1));
            // SAFETY: no thread has started yet (the runtime is built below).
            unsafe {
                dpdk_reconciler::source::git::set_server_timeouts(
                    fetch_timeout.min(std::time::Duration::from_secs(30)),
                    fetch_timeout,
                );
            }
            // The work is I/O-bound: two workers, not one per core of a big node (each
            // worker thread costs memory, glibc arenas included).
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("dpdk-reconciler run: starting the runtime: {e}");
                    return ExitCode::from(2);
                }
            };
            match rt.block_on(run(*args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("dpdk-reconciler run: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Cmd::Plan(args) => plan(*args),
        Cmd::Diff(args) => {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("dpdk-reconciler diff: starting the runtime: {e}");
                    return ExitCode::from(2);
                }
            };
            match rt.block_on(dpdk_reconciler::drift::cli::run(
                &args,
                &mut std::io::stdout().lock(),
            )) {
                Ok(false) => ExitCode::SUCCESS,
                Ok(true) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("dpdk-reconciler diff: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}
