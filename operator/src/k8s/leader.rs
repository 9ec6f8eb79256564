//! Leader election through a `coordination.k8s.io/v1` Lease
//! (`kube-lease-manager`): of several operator processes only the holder
//! runs the pipeline and writes to the API server.
//!
//! The behaviour, as controller-runtime's leader election has it:
//! - A process that does not hold the Lease waits (standby): it serves
//!   `/healthz` (alive) and answers `/readyz` with 503, so a Service sends
//!   agents only to the leader; it loads nothing and writes nothing.
//! - On taking the Lease it loads the profiles and alerts the previous
//!   leader wrote, opens the gRPC port and runs; agents reconnect and
//!   resend what they buffered.
//! - A leader that loses the Lease (it could not renew it in time, and
//!   another process took it) stops writing at once ([`KubeStore`] checks
//!   [`Leadership::gate`] before every round) and exits with an error, so
//!   its restart comes back as a standby. Writes are server-side applies of
//!   whole documents, so the short window in which both may write is
//!   harmless.
//! - A leader stopping cleanly (SIGTERM) writes what it holds, then releases
//!   the Lease, so the standby takes over at once instead of after the
//!   Lease's duration.
//!
//! [`KubeStore`]: super::KubeStore

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};

/// Where the Lease is and how long it lasts.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This process's identity in `spec.holderIdentity`.
    pub identity: String,
    /// Seconds a holder's claim lasts without renewal (a killed leader is
    /// replaced after at most this long).
    pub duration_secs: u64,
    /// Seconds before expiry at which the holder renews.
    pub grace_secs: u64,
}

impl LeaseSettings {
    /// `hostname-pid`: unique per process, readable in `kubectl get lease`.
    pub fn default_identity() -> String {
        format!("{}-{}", crate::clock::hostname(), std::process::id())
    }
}

/// This process's part in the election; see the module docs.
pub struct Leadership {
    leading: watch::Receiver<bool>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Leadership {
    /// Joins the election (the Lease is created when missing). Must be
    /// called inside a tokio runtime.
    pub async fn join(client: Client, settings: LeaseSettings) -> anyhow::Result<Self> {
        let grace = settings.grace_secs.max(1);
        let duration = settings.duration_secs.max(grace + 1);
        let manager = LeaseManagerBuilder::new(client, &settings.name)
            .with_namespace(&settings.namespace)
            .with_identity(&settings.identity)
            .with_duration(duration)
            .with_grace(grace)
            .build()
            .await
            .map_err(|e| anyhow::anyhow!("lease {}/{}: {e}", settings.namespace, settings.name))?;
        let (tx, leading) = watch::channel(false);
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(campaign(manager, tx, stopped));
        Ok(Leadership {
            leading,
            stop: Some(stop),
            task,
        })
    }

    /// A receiver that reads `true` while this process holds the Lease.
    pub fn gate(&self) -> watch::Receiver<bool> {
        self.leading.clone()
    }

    /// Holds the Lease now.
    pub fn is_leader(&self) -> bool {
        *self.leading.borrow()
    }

    /// Gives the Lease up (if held) so a standby takes over at once;
    /// bounded by `limit`.
    pub async fn release(mut self, limit: Duration) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if tokio::time::timeout(limit, &mut self.task).await.is_err() {
            tracing::warn!("the lease was not released in time; it expires on its own");
            self.task.abort();
        }
    }
}

/// Keeps trying to take the Lease and renewing it while held; publishes
/// each change; releases it when told to stop.
async fn campaign(
    manager: LeaseManager,
    tx: watch::Sender<bool>,
    mut stopped: oneshot::Receiver<()>,
) {
    let manager = Arc::new(manager);
    loop {
        tokio::select! {
            biased;
            _ = &mut stopped => {
                if let Err(e) = manager.release().await {
                    tracing::warn!(error = %e, "lease not released");
                }
                tx.send_replace(false);
                return;
            }
            changed = manager.changed() => match changed {
                Ok(leading) => {
                    if leading {
                        tracing::info!("took the lease: this operator leads");
                    } else {
                        tracing::warn!("lost the lease");
                    }
                    tx.send_replace(leading);
                }
                Err(e) => {
                    // the API server unreachable: the state stands (a
                    // holder renews when it is back, unless another took
                    // the Lease after it expired)
                    tracing::warn!(error = %e, "lease not renewed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
        }
    }
}
