//! Retention on the hub's side: `hub --retain-tasks` and `--retain-output` applied at start and every
//! hour, and `prune --tasks` applied now. The store decides what goes (`store::retention`).

use std::sync::Arc;
use std::time::Duration;

use crate::core::Core;
use crate::error::{HubError, Result};
use crate::store::{Pruned, Retention};

/// How often the hub applies its retention.
const EVERY: Duration = Duration::from_secs(3600);

impl Core {
    /// Deletes the ended tasks `retention` does not keep (only counts them with `dry_run`).
    pub async fn prune_tasks(&self, retention: Retention, dry_run: bool) -> Result<Pruned> {
        let store = self.store.clone();
        let pruned = tokio::task::spawn_blocking(move || store.prune_tasks(retention, dry_run))
            .await
            .map_err(|e| HubError::Internal(format!("pruning tasks: {e}")))??;
        if !dry_run && pruned.tasks > 0 {
            tracing::info!(
                tasks = pruned.tasks,
                output_bytes = pruned.output_bytes,
                "deleted ended tasks and their output"
            );
        }
        Ok(pruned)
    }

    /// Applies the hub's retention now and then every hour, for the hub's life. Nothing to do when
    /// both bounds are off.
    pub async fn retain_tasks(self: Arc<Self>) {
        let retention = self.settings.retention;
        if retention == Retention::default() {
            return;
        }
        let mut every = tokio::time::interval(EVERY);
        loop {
            every.tick().await;
            if let Err(e) = self.prune_tasks(retention, false).await {
                tracing::error!(error = %e, "failed to apply task retention");
            }
        }
    }
}
