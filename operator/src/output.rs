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
    /// Stored state that could not be loaded (the rest still loads).
    StoreError(String),
}

/// Writes one line to stdout as JSON, flushed at once.
pub fn print_line(line: &Line) {
    let mut out = std::io::stdout().lock();
    if serde_json::to_writer(&mut out, line).is_ok() {
        let _ = out.write_all(b"\n");
        let _ = out.flush();
    }
}
