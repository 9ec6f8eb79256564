//! Behaviour profiles: per-class tries, argument exemplars, compaction and
//! convergence.
#![deny(missing_docs)]

mod cidr;
mod config;
mod convergence;
mod digest;
mod error;
mod escape;
mod event;
mod exemplar;
mod intern;
mod policy;
mod profile;
mod segment;
mod spec;
pub mod testing;
mod trie;

pub use cidr::Cidr;
pub use config::{
    format_duration, parse_duration, CompactionConfig, LearningConfig, Mode, PrefixLimit,
    ProfileConfig, ProfileConfigBuilder,
};
pub use convergence::{ConvergenceStatus, Phase, Transition, TransitionReason};
pub use digest::{Digest, DigestHasher};
pub use error::{Error, Result};
pub use escape::{escape_bytes, unescape_bytes};
pub use event::{
    Access, ActivityClass, Change, Direction, Event, FileEvent, Learned, Level, MatchOutcome,
    NetworkEvent, Peer, ProcessEvent, Protocol, ProtocolKey,
};
pub use profile::{Observation, Profile, ProfileStats};
pub use spec::{
    ArgumentSpec, BehaviorProfileSpec, CompactionSpec, FileEntry, LearningSpec, Metadata,
    NetworkEntry, PrefixLimitSpec, ProcessEntry, ProfileDocument, API_VERSION, KIND,
};
