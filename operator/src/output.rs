//! What the operator and standalone mode print: one JSON object per line
//! (the stable output contract in `README.md`).

use std::io::Write;

/// One line of output (standalone and operator): one JSON object per line
/// on stdout.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Line {
    /// A phase change.
    Phase {
        /// Workload.
        workload: String,
        /// From.
        from: String,
        /// To.
        to: String,
        /// Why.
        reason: String,
    },
    /// Learning progress.
    Progress(Vec<crate::engine::WorkloadStatus>),
    /// An alert (created or updated).
    Alert(Box<kestrel_scoring::SecurityAlert>),
    /// A workload looks released anew: relearning its profile is suggested.
    Relearn {
        /// Workload.
        workload: String,
        /// Why.
        reason: String,
    },
    /// A person's false-positive verdict was learned into a profile.
    Taught {
        /// Workload.
        workload: String,
        /// The alert id.
        alert: String,
        /// Activities new to the profile.
        learned: usize,
        /// Activities replayed in all.
        activities: usize,
    },
    /// Something failed (the run goes on): stored state that could not be
    /// read or written, an engine or embedding failure.
    Error {
        /// A stable label (`store_io`, `store_format`, `profile`,
        /// `embedding`, …), as in metrics.
        kind: String,
        /// What happened, naming the file, object or workload.
        message: String,
    },
}

/// Writes one line to stdout as JSON, flushed at once.
pub fn print_line(line: &Line) {
    let mut out = std::io::stdout().lock();
    if serde_json::to_writer(&mut out, line).is_ok() {
        let _ = out.write_all(b"\n");
        let _ = out.flush();
    }
}

impl Line {
    /// The line of an error.
    pub fn error(e: &crate::error::Error) -> Self {
        Line::Error {
            kind: e.label().to_string(),
            message: e.to_string(),
        }
    }
}
