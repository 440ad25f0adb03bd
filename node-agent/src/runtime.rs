//! The async runtimes the subcommands run on.

use tokio::runtime::{Builder, Runtime};
use tracing::error;

/// The one-shot commands (`load`, `bind`) need no worker threads; the long-running
/// ones do. `workers: None` is tokio's default (one per core).
pub enum Flavor {
    CurrentThread,
    MultiThread { workers: Option<usize> },
}

/// Builds the runtime, or logs why it could not start.
pub fn build(flavor: Flavor) -> Option<Runtime> {
    let mut builder = match flavor {
        Flavor::CurrentThread => Builder::new_current_thread(),
        Flavor::MultiThread { workers } => {
            let mut b = Builder::new_multi_thread();
            if let Some(n) = workers {
                b.worker_threads(n);
            }
            b
        }
    };
    match builder.enable_all().build() {
        Ok(rt) => Some(rt),
        Err(e) => {
            error!(error = %e, "cannot start the async runtime");
            None
        }
    }
}
