//! Behaviour profiles: per-class tries, argument exemplars, compaction and
//! convergence.
//!
//! A [`Profile`] is one workload's memory of "normal". It holds three prefix
//! trees with interned keys:
//!
//! | class   | path (root → leaf)                                         | leaf holds |
//! |---------|------------------------------------------------------------|------------|
//! | process | image → parent → exe                                       | argument exemplars |
//! | file    | image → process → access kind → path segments              | —          |
//! | network | image → process → direction → peer → protocol → port       | —          |
//!
//! Matching ([`Profile::match_event`]) answers [`MatchOutcome::Known`],
//! [`MatchOutcome::NewBranch`] (which class, which [`Level`]) or
//! [`MatchOutcome::UnusualArguments`] (best similarity, nearest exemplar).
//! Arguments are compared by meaning through an [`kestrel_embed::Embedder`];
//! matching a known path, and known arguments, never allocates.
//!
//! Learning ([`Profile::learn`], or the mode-aware [`Profile::observe`])
//! extends the tries; compaction keeps a profile small without ever turning
//! something known into unknown: busy nodes collapse into `*` (per-prefix
//! thresholds; sensitive prefixes such as `/etc/shadow` or `/usr/bin` never
//! collapse and a wildcard never matches them), addresses collapse into
//! networks, exemplar sets merge their closest pair (the kept ball grows to
//! cover the other). The convergence state machine ([`Phase`], [`Mode`]) says
//! when learning is done; each change comes back as a [`Transition`] with a
//! reason.
//!
//! Profiles convert to and from the `BehaviorProfile` custom resource of
//! `kestrel-api` ([`Profile::to_object`], [`Profile::from_object`]) and its
//! readable YAML ([`Profile::to_yaml`], [`Profile::from_yaml`], which also
//! reads earlier releases' files; no vectors, they are recomputed), merge
//! across pods ([`Profile::merge`], commutative and idempotent) and produce
//! a [`Digest`] for the agent's edge filter. The document types
//! ([`ProcessEntry`], [`ProfileBody`], ...) are `kestrel-api`'s, re-exported.
//!
//! The crate is a functional core: no I/O, no clock (time is passed in as a
//! [`std::time::Duration`] since the Unix epoch), no panics on bad input.
//!
//! ```
//! use std::time::Duration;
//! use kestrel_embed::normalize;
//! use kestrel_profile::testing::{TestEmbedder, TEST_MODEL_ID};
//! use kestrel_profile::{Event, MatchOutcome, Mode, ProcessEvent, Profile, ProfileConfig};
//!
//! fn exec<'a>(exe: &'a [u8], args: &'a str) -> Event<'a> {
//!     Event::Process(ProcessEvent { image: b"webapp:v1", parent: b"bash", exe, args })
//! }
//!
//! # fn main() -> kestrel_profile::Result<()> {
//! let embedder = TestEmbedder::new(); // any kestrel_embed::Embedder
//! let mut profile = Profile::new(ProfileConfig::default(), TEST_MODEL_ID, Duration::ZERO)?;
//! let learned = normalize("java -jar app.jar --timestamp=12345");
//! profile.learn(&exec(b"java", &learned), &embedder)?;
//! profile.set_mode(Mode::Detect, Duration::from_secs(60));
//!
//! let later = normalize("java -jar app.jar --timestamp=99999");
//! assert_eq!(profile.match_event(&exec(b"java", &later), &embedder)?, MatchOutcome::Known);
//!
//! let miner = exec(b"xmrig", "-o stratum+tcp://pool:<num>");
//! let outcome = profile.match_event(&miner, &embedder)?;
//! assert_eq!(outcome.signal(), Some("unknown-process"));
//!
//! let yaml = profile.to_yaml(Default::default())?;
//! let again = Profile::from_yaml(&yaml, &embedder, Duration::from_secs(61))?;
//! assert_eq!(again.match_event(&miner, &embedder)?, outcome);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod activity;
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
mod shapes;
mod spec;
pub mod testing;
mod trie;
mod words;

pub use activity::{activity_of, normalized_args, process_name, process_path, profile_event};
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
pub use ipnet::IpNet;
pub use kestrel_api::{
    ArgumentSpec, BehaviorProfile, BehaviorProfileSpec, BehaviorProfileStatus, CompactionSpec,
    FileEntry, LearningSpec, NetworkEntry, PrefixLimitSpec, ProcessEntry, ProfileBody,
    ProfileSource, StoredFormat, StoredProfile, API_VERSION, BEHAVIOR_PROFILE_KIND as KIND,
};
pub use profile::{Observation, Profile, ProfileStats};
pub use shapes::{AnomalyBuckets, EXACT_PER_KEY, KEYS_CAP, LEADERS_PER_KEY};
pub use spec::{parse_yaml, Metadata};
