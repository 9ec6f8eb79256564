//! Time and place, passed into the pipeline instead of read inside it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Wall-clock time as the engine sees it: a duration since the Unix epoch.
pub trait Clock: Send {
    /// Now.
    fn now(&self) -> Duration;
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        wall_now()
    }
}

/// The system's wall-clock time since the epoch (zero before 1970).
pub fn wall_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// This host's name (the node name of standalone alerts).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}
