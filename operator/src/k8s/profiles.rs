//! What people and Git change in `BehaviorProfile` specs, into the engine.
//!
//! A watch on every `BehaviorProfile` turns a changed spec (a new
//! `metadata.generation`; the operator's own status writes do not change it)
//! into an engine command for the pipeline thread:
//!
//! - a **promoted** profile (`spec.source: Promoted`, authored in Git) is
//!   applied as it is: its `spec.baseline` replaces what the engine held for
//!   the workload, and its `spec.mode` decides the phase (`Detect`: detecting
//!   at once). Promoted wins over learned; the two are never merged. From
//!   then on the operator writes only its status.
//! - a **learned** profile whose `spec.mode` someone changed gets that mode
//!   (`Detect` freezes it: the lock without Git; `Learn` holds it in
//!   learning; `Auto` lets convergence decide).
//!
//! A spec the engine cannot use (a baseline that does not load, `Enforce`,
//! a workload that is not `Kind/name`) is reported by the pipeline as an
//! error line and in the log, and the object is left alone: the operator
//! never deletes or rewrites what a person wrote.
//!
//! `spec.source` is immutable. Kubernetes 1.20 has no CEL transition rules
//! and Kestrel runs no admission webhook, so the operator checks it: it
//! remembers each object's source (by uid) from its first sighting, and a
//! later generation with another source is refused (reported as above,
//! naming the field and what to do) and not applied; the object keeps
//! working as what it was until the source is put back. Changing a learned
//! profile into a promoted one is "export, delete, apply" (a new uid).

use crate::engine::Command;
use futures::TryStreamExt;
use kestrel_api::{BehaviorProfile, ProfileMode, ProfileSource, WorkloadKind, WorkloadRef};
use kestrel_profile::Mode;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use std::collections::HashMap;

/// A spec change for the pipeline thread.
#[derive(Debug)]
pub enum SpecChange {
    /// An engine command (apply a promoted profile, set a mode).
    Command(Command),
    /// A spec that cannot be used, and why (logged and reported).
    Invalid {
        /// `namespace/name` of the object.
        object: String,
        /// What is wrong.
        reason: String,
    },
}

/// What the operator remembers of an object it has seen, by uid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    /// The last generation handled.
    pub generation: i64,
    /// Its source when first seen (immutable).
    pub source: ProfileSource,
}

impl Seen {
    /// What an object shows now.
    pub fn of(bp: &BehaviorProfile) -> Self {
        Seen {
            generation: bp.metadata.generation.unwrap_or(0),
            source: bp.spec.source,
        }
    }
}

/// What the engine should do about one object's spec, if anything.
/// `seen` remembers the generation handled and the first source per uid.
pub fn spec_change(bp: &BehaviorProfile, seen: &mut HashMap<String, Seen>) -> Option<SpecChange> {
    let uid = bp.metadata.uid.clone()?;
    let now = Seen::of(bp);
    let first_source = match seen.get(&uid) {
        Some(s) if s.generation == now.generation => return None,
        Some(s) => s.source,
        None => now.source,
    };
    seen.insert(
        uid,
        Seen {
            source: first_source,
            ..now
        },
    );
    let ns = bp.metadata.namespace.clone()?;
    let name = bp.metadata.name.clone().unwrap_or_default();
    let object = format!("{ns}/{name}");
    if now.source != first_source {
        return Some(SpecChange::Invalid {
            object,
            reason: format!(
                "spec.source is immutable: it was {first_source:?} and is now {:?}; the change is \
                 not applied. Put it back, or export the profile, delete it and apply it again \
                 with the new source",
                now.source
            ),
        });
    }
    let workload = bp.workload_name().unwrap_or_default();
    let wref = WorkloadRef::parse(&workload);
    if wref.kind == WorkloadKind::Container {
        return Some(SpecChange::Invalid {
            object,
            reason: format!("spec.workload {workload:?} is not Kind/name of a Kubernetes workload"),
        });
    }
    let key = kestrel_api::cluster_key(&ns, &wref);
    match bp.spec.source {
        ProfileSource::Promoted => Some(SpecChange::Command(Command::Apply {
            workload: key,
            document: Box::new(bp.clone()),
        })),
        ProfileSource::Learned => {
            let mode = match bp.spec.mode {
                ProfileMode::Auto => Mode::Auto,
                ProfileMode::Learn => Mode::Learn,
                ProfileMode::Detect => Mode::Detect,
                ProfileMode::Enforce => {
                    return Some(SpecChange::Invalid {
                        object,
                        reason: "spec.mode: Enforce is reserved and not supported yet (use Detect)"
                            .into(),
                    })
                }
            };
            Some(SpecChange::Command(Command::SetMode {
                workload: key,
                mode,
            }))
        }
    }
}

/// Starts the watch on the current tokio runtime; spec changes arrive on
/// the returned channel. The objects of the first listing were loaded by
/// the pipeline at start (`Store::load_profiles`): they are only noted, so
/// a restart neither re-applies promoted profiles nor resets modes.
pub fn start(client: Client) -> crossbeam_channel::Receiver<SpecChange> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let api: Api<BehaviorProfile> = Api::all(client);
    tokio::spawn(async move {
        let mut seen: HashMap<String, Seen> = HashMap::new();
        let mut first_listing = true;
        let mut stream = Box::pin(watcher(api, watcher::Config::default()).default_backoff());
        loop {
            let ev = match stream.try_next().await {
                Ok(Some(ev)) => ev,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "BehaviorProfile watch failed; retrying with backoff");
                    continue;
                }
            };
            let bp = match ev {
                watcher::Event::InitApply(bp) if first_listing => {
                    if let Some(uid) = bp.metadata.uid.clone() {
                        seen.insert(uid, Seen::of(&bp));
                    }
                    continue;
                }
                watcher::Event::Apply(bp) | watcher::Event::InitApply(bp) => bp,
                watcher::Event::Delete(bp) => {
                    if let Some(uid) = &bp.metadata.uid {
                        seen.remove(uid);
                    }
                    continue;
                }
                watcher::Event::InitDone => {
                    first_listing = false;
                    continue;
                }
                watcher::Event::Init => continue,
            };
            if let Some(change) = spec_change(&bp, &mut seen) {
                if tx.send(change).is_err() {
                    break;
                }
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bp(source: &str, mode: &str, generation: i64) -> BehaviorProfile {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "kestrel.dev/v1alpha1", "kind": "BehaviorProfile",
            "metadata": {"name": "deployment-web", "namespace": "shop", "uid": "u-1", "generation": generation},
            "spec": {"source": source, "mode": mode, "workload": {"kind": "Deployment", "name": "web"}}
        }))
        .unwrap()
    }

    #[test]
    fn a_persons_mode_on_a_learned_profile_becomes_set_mode_once_per_generation() {
        let mut seen = HashMap::new();
        let Some(SpecChange::Command(Command::SetMode { workload, mode })) =
            spec_change(&bp("Learned", "Detect", 2), &mut seen)
        else {
            panic!("no SetMode")
        };
        assert_eq!(
            (workload.as_str(), mode),
            ("shop/Deployment/web", Mode::Detect)
        );
        // the operator's own status writes keep the generation: nothing
        assert!(spec_change(&bp("Learned", "Detect", 2), &mut seen).is_none());
        assert!(spec_change(&bp("Learned", "Learn", 3), &mut seen).is_some());
    }

    #[test]
    fn a_promoted_profile_is_applied_and_enforce_is_refused() {
        let mut seen = HashMap::new();
        let Some(SpecChange::Command(Command::Apply { workload, document })) =
            spec_change(&bp("Promoted", "Detect", 1), &mut seen)
        else {
            panic!("no Apply")
        };
        assert_eq!(workload, "shop/Deployment/web");
        assert_eq!(document.spec.source, ProfileSource::Promoted);
        let mut seen = HashMap::new();
        let Some(SpecChange::Invalid { object, reason }) =
            spec_change(&bp("Learned", "Enforce", 1), &mut seen)
        else {
            panic!("Enforce accepted")
        };
        assert_eq!(object, "shop/deployment-web");
        assert!(reason.contains("Enforce is reserved"), "{reason}");
    }

    #[test]
    fn changing_the_source_of_an_existing_object_is_refused_until_it_is_put_back() {
        let mut seen = HashMap::new();
        assert!(matches!(
            spec_change(&bp("Learned", "Auto", 1), &mut seen),
            Some(SpecChange::Command(Command::SetMode { .. }))
        ));
        // someone edits the learned object into a promoted one in place
        let Some(SpecChange::Invalid { object, reason }) =
            spec_change(&bp("Promoted", "Detect", 2), &mut seen)
        else {
            panic!("a changed source was accepted")
        };
        assert_eq!(object, "shop/deployment-web");
        assert!(
            reason.starts_with("spec.source is immutable: it was Learned and is now Promoted"),
            "{reason}"
        );
        // still refused on a later edit that keeps the wrong source
        assert!(matches!(
            spec_change(&bp("Promoted", "Learn", 3), &mut seen),
            Some(SpecChange::Invalid { .. })
        ));
        // put back: a mode change on the learned profile again
        let Some(SpecChange::Command(Command::SetMode { mode, .. })) =
            spec_change(&bp("Learned", "Detect", 4), &mut seen)
        else {
            panic!("the restored source was refused")
        };
        assert_eq!(mode, Mode::Detect);
        // the first listing's objects are remembered with their source too
        let mut listed = HashMap::new();
        listed.insert("u-1".to_string(), Seen::of(&bp("Promoted", "Detect", 1)));
        assert!(matches!(
            spec_change(&bp("Learned", "Detect", 2), &mut listed),
            Some(SpecChange::Invalid { .. })
        ));
    }
}
