//! The operator's watches: pods and their owners, read from the API
//! server's watch streams (never polled), fed into [`Identity`], whose
//! changes (replica counts, rollouts, pods gone) go to the pipeline thread.
//!
//! Each kind has one watcher (kube-runtime, with its default backoff, so an
//! API server that goes away is retried and a `410 Gone` re-lists). After a
//! re-list, objects that vanished while the watch was down are removed as if
//! deleted. Namespaces in `excluded` are not watched for pods.

use super::identity::{Changes, Identity};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

/// The shared view and the channel its changes arrive on.
pub struct ClusterView {
    /// Who each container belongs to.
    pub identity: Arc<Mutex<Identity>>,
    /// Changes for the engine (facts, pods gone), in order.
    pub changes: crossbeam_channel::Receiver<Changes>,
    /// Set once every watch listed its kind for the first time.
    pub synced: Arc<std::sync::atomic::AtomicUsize>,
}

/// Kinds watched (the view is synced when this many listed once).
pub const KINDS: usize = 6;

type ApplyFn<K> = fn(&mut Identity, &K) -> Changes;
type DeleteFn = fn(&mut Identity, &str, &str) -> Changes;

/// Starts the watches on the current tokio runtime.
pub fn start(client: Client, excluded: Vec<String>) -> ClusterView {
    let identity = Arc::new(Mutex::new(Identity::new()));
    let (tx, rx) = crossbeam_channel::unbounded();
    let synced = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let excluded = Arc::new(excluded);
    macro_rules! spawn {
        ($k:ty, $apply:expr, $delete:expr) => {
            tokio::spawn(watch_kind::<$k>(
                Api::all(client.clone()),
                Arc::clone(&identity),
                tx.clone(),
                Arc::clone(&synced),
                Arc::clone(&excluded),
                $apply,
                $delete,
            ));
        };
    }
    // owners first, so that most pods resolve on their first sight
    spawn!(
        ReplicaSet,
        Identity::apply_replicaset,
        Identity::delete_replicaset
    );
    spawn!(Job, Identity::apply_job, Identity::delete_job);
    spawn!(Deployment, Identity::apply_deployment, |i, ns, n| i
        .delete_desired("Deployment", ns, n));
    spawn!(StatefulSet, Identity::apply_statefulset, |i, ns, n| i
        .delete_desired("StatefulSet", ns, n));
    spawn!(DaemonSet, Identity::apply_daemonset, |i, ns, n| i
        .delete_desired("DaemonSet", ns, n));
    spawn!(Pod, Identity::apply_pod, Identity::delete_pod);
    ClusterView {
        identity,
        changes: rx,
        synced,
    }
}

async fn watch_kind<K>(
    api: Api<K>,
    identity: Arc<Mutex<Identity>>,
    tx: crossbeam_channel::Sender<Changes>,
    synced: Arc<std::sync::atomic::AtomicUsize>,
    excluded: Arc<Vec<String>>,
    apply: ApplyFn<K>,
    delete: DeleteFn,
) where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let kind = std::any::type_name::<K>()
        .rsplit("::")
        .next()
        .unwrap_or("?");
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut live: BTreeSet<(String, String)> = BTreeSet::new();
    let mut listing: Option<BTreeSet<(String, String)>> = None;
    let mut first = true;
    loop {
        let ev = match stream.try_next().await {
            Ok(Some(ev)) => ev,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(kind, error = %e, "watch failed; retrying with backoff");
                continue;
            }
        };
        let changes = {
            let mut id = identity.lock().expect("identity lock");
            let key_of = |o: &K| {
                let m = o.meta();
                Some((m.namespace.clone()?, m.name.clone()?))
            };
            match ev {
                watcher::Event::Init => {
                    listing = Some(BTreeSet::new());
                    Changes::default()
                }
                watcher::Event::InitApply(o) | watcher::Event::Apply(o) => {
                    let Some(k) = key_of(&o) else { continue };
                    if excluded.contains(&k.0) {
                        continue;
                    }
                    if let Some(l) = listing.as_mut() {
                        l.insert(k.clone());
                    }
                    live.insert(k);
                    apply(&mut id, &o)
                }
                watcher::Event::Delete(o) => {
                    let Some(k) = key_of(&o) else { continue };
                    live.remove(&k);
                    delete(&mut id, &k.0, &k.1)
                }
                watcher::Event::InitDone => {
                    let mut changes = Changes::default();
                    if let Some(seen) = listing.take() {
                        for (ns, name) in live.difference(&seen).cloned().collect::<Vec<_>>() {
                            live.remove(&(ns.clone(), name.clone()));
                            changes.merge(delete(&mut id, &ns, &name));
                        }
                    }
                    if first {
                        first = false;
                        synced.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::info!(kind, objects = live.len(), "watch synced");
                    }
                    changes
                }
            }
        };
        if (!changes.facts.is_empty() || !changes.pods_gone.is_empty()) && tx.send(changes).is_err()
        {
            break;
        }
    }
}
