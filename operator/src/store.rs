//! Where profiles and alerts live: the [`Store`] seam. Two implementations
//! share the CR schema: Kubernetes custom resources (operator mode, next) and
//! a directory of YAML files ([`DirStore`], standalone and the operator
//! without an API server): `DIR/profiles/<file>.yaml` (`BehaviorProfile`)
//! and `DIR/alerts/<name>.yaml` (`SecurityAlert`).
//!
//! The store moves typed documents, never YAML strings, and names a profile
//! by its exact workload name, which round-trips (`Deployment/webapp` is
//! `Deployment/webapp` again after a restart): the name is kept inside the
//! document; the file name is only a safe spelling of it.
//!
//! Who owns what: a document's `spec` is owned by whoever authored it (a
//! person or Git for promoted profiles, the operator once when it creates a
//! learned profile); its learned content and status are written only by the
//! engine through the pipeline. Writes are whole documents; the store does
//! not merge.

use kestrel_api::{BehaviorProfile, StoredFormat};
use kestrel_scoring::SecurityAlert;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A store failure, naming the file or object.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A document could not be written or read back.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The API server refused a call or could not be reached.
    #[error("{object}: {message}")]
    Api {
        /// The object or collection.
        object: String,
        /// What went wrong.
        message: String,
    },
    /// A stored file could not be used and was moved aside, never to be
    /// overwritten; its workload starts afresh.
    #[error("{path}: {reason}; moved aside to {moved_to} (kept, never overwritten)")]
    Quarantined {
        /// Where the file was.
        path: PathBuf,
        /// Where it is now.
        moved_to: PathBuf,
        /// Why it could not be used.
        reason: String,
    },
    /// No such document.
    #[error("{what} {name:?} not found")]
    NotFound {
        /// `profile` or `alert`.
        what: &'static str,
        /// Its name.
        name: String,
    },
}

impl StoreError {
    /// A short stable label for metrics and output lines.
    pub fn label(&self) -> &'static str {
        match self {
            StoreError::Io { .. } => "store_io",
            StoreError::Format { .. } => "store_format",
            StoreError::Api { .. } => "store_api",
            StoreError::NotFound { .. } => "store_not_found",
            StoreError::Quarantined { .. } => "store_quarantined",
        }
    }
}

/// API group/version of Kestrel's resources (defined in `kestrel-api`).
pub use kestrel_api::API_VERSION;

/// A `SecurityAlert` document as stored: the custom resource itself
/// (`apiVersion`, `kind`, `metadata`, `spec`, `status`).
pub type AlertDocument = kestrel_api::SecurityAlert;

/// A stored profile: the exact workload name and its `BehaviorProfile`.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredProfile {
    /// The workload (exactly as the engine names it).
    pub workload: String,
    /// The object, in today's shape whatever the file's.
    pub object: BehaviorProfile,
    /// The shape it was read in ([`StoredFormat::V0`]: a file of the release
    /// before the custom resources; it is rewritten in today's shape on the
    /// next save).
    pub format: StoredFormat,
}

impl StoredProfile {
    /// A profile object for `workload` (its metadata as the object has it).
    pub fn new(workload: &str, object: BehaviorProfile) -> Self {
        StoredProfile {
            workload: workload.to_string(),
            object,
            format: StoredFormat::V1alpha1,
        }
    }

    /// Where the behaviour was in the file, for error messages.
    pub fn body_path(&self) -> &'static str {
        match self.format {
            StoredFormat::V0 => "spec",
            StoredFormat::V1alpha1 => self.object.body_path(),
        }
    }
}

/// The object name of an alert: `<workload>-<id>`, lower-case, DNS-safe
/// (see [`kestrel_api::alert_object_name`]).
pub fn alert_name(alert: &SecurityAlert) -> String {
    alert.object_name()
}

/// A file name for a workload: DNS-label characters only, so any name is
/// safe; a name that had to be changed gets a short hash of the exact name,
/// so `Deployment/web` and `Deployment-web` never share a file.
pub fn file_stem(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let s = if s.is_empty() || s.starts_with('.') {
        format!("w{s}")
    } else {
        s
    };
    if s == name {
        s
    } else {
        format!(
            "{s}-{:08x}",
            kestrel_events::stable_hash(name.as_bytes()) as u32
        )
    }
}

/// One item of a listing: the document, or why that one could not be read
/// (the others still load).
pub type Listed<T> = Result<T, StoreError>;

/// Persistence for profiles and alerts, as typed documents.
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// Every stored profile, each one or why it could not be read.
    async fn load_profiles(&self) -> Result<Vec<Listed<StoredProfile>>, StoreError>;
    /// Writes a profile (replacing the previous one of its workload).
    async fn save_profile(&self, profile: &StoredProfile) -> Result<(), StoreError>;
    /// Deletes a workload's profile.
    async fn delete_profile(&self, workload: &str) -> Result<(), StoreError>;
    /// Every stored alert, each one or why it could not be read.
    async fn load_alerts(&self) -> Result<Vec<Listed<AlertDocument>>, StoreError>;
    /// Writes an alert (replacing the previous version of the same incident).
    async fn save_alert(&self, alert: &AlertDocument) -> Result<(), StoreError>;
    /// Deletes an alert by object name.
    async fn delete_alert(&self, name: &str) -> Result<(), StoreError>;
    /// Whether profiles can be read back one at a time
    /// ([`load_profile`](Self::load_profile)), so that idle workloads may
    /// leave memory.
    fn reloads(&self) -> bool {
        false
    }
    /// The stored profile of `workload`, if there is one.
    async fn load_profile(&self, _workload: &str) -> Result<Option<StoredProfile>, StoreError> {
        Ok(None)
    }
    /// Sets aside the stored profile of `workload`, which the engine could
    /// not use, so that the fresh profile that replaces it never overwrites
    /// it. Returns where it was and where it went (None: this store keeps
    /// nothing aside).
    async fn quarantine_profile(
        &self,
        _workload: &str,
        _reason: &str,
    ) -> Result<Option<(PathBuf, PathBuf)>, StoreError> {
        Ok(None)
    }
    /// Writes whatever the store holds back (a write-behind store); the
    /// pipeline calls it at shutdown.
    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Tells people that relearning `workload`'s profile is suggested (a
    /// new release), where they look: in a cluster an Event on its
    /// BehaviorProfile; standalone the operator's output line is the
    /// notice, so the default does nothing.
    async fn note_relearn(&self, _workload: &str, _reason: &str) {}
}

/// Where the pipeline's status goes (`status.json` next to the state, or
/// metrics, or a CR status).
pub trait StatusSink: Send {
    /// Publishes the current status.
    fn publish(&mut self, status: &serde_json::Value);
}

/// Writes the status to a JSON file through a rename.
#[derive(Debug, Clone)]
pub struct StatusFile {
    path: PathBuf,
}

impl StatusFile {
    /// `DIR/status.json`.
    pub fn in_dir(dir: &Path) -> Self {
        StatusFile {
            path: dir.join("status.json"),
        }
    }
}

impl StatusSink for StatusFile {
    fn publish(&mut self, status: &serde_json::Value) {
        let tmp = self.path.with_extension("json.tmp");
        let written = std::fs::write(&tmp, status.to_string())
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = written {
            tracing::warn!(path = %self.path.display(), error = %e, "status not written");
        }
    }
}

/// The object name of a stored alert (its `metadata.name`, else derived
/// from the spec).
pub fn alert_doc_name(alert: &AlertDocument) -> String {
    alert
        .metadata
        .name
        .clone()
        .unwrap_or_else(|| alert.spec.object_name())
}

/// A directory of YAML files.
#[derive(Debug)]
pub struct DirStore {
    root: PathBuf,
    /// The file each loaded or saved workload's profile lives in (a file
    /// written by an older release keeps its name).
    files: Mutex<HashMap<String, PathBuf>>,
    /// Opened for reading: unusable files are reported, not moved.
    read_only: bool,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn format_error<E: std::fmt::Display>(path: &Path) -> impl FnOnce(E) -> StoreError + '_ {
    move |e| StoreError::Format {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Largest state file read (16 MiB); a larger one is set aside.
pub const MAX_STATE_FILE: u64 = 16 << 20;

/// Writes `data` durably and atomically: a temporary file (mode 0600) in
/// the same directory, written and synced, renamed over `path`, then the
/// directory synced. A reader, or a process killed at any moment, finds the
/// old file or the new one, never half of one; a failed write leaves no
/// temporary file behind.
pub fn write_atomic(path: &Path, data: &str) -> Result<(), StoreError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Not `.yaml`: a leftover is never listed as a document.
    let tmp = path.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(data.as_bytes())?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(path)(e)
    })
}

/// Reads a state file of at most [`MAX_STATE_FILE`] bytes.
fn read_state_file(path: &Path) -> Result<String, StoreError> {
    use std::io::Read as _;
    let f = std::fs::File::open(path).map_err(io(path))?;
    let mut text = String::new();
    let n = f
        .take(MAX_STATE_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData => StoreError::Format {
                path: path.to_path_buf(),
                message: "not UTF-8 text".into(),
            },
            _ => io(path)(e),
        })?;
    if n as u64 > MAX_STATE_FILE {
        return Err(StoreError::Format {
            path: path.to_path_buf(),
            message: format!("larger than {} MiB", MAX_STATE_FILE >> 20),
        });
    }
    Ok(text)
}

/// Moves `path` aside as `<name>.corrupt-<UTC time>` (not `.yaml`, so it is
/// never listed or overwritten again) and says so.
fn quarantine(path: &Path, reason: String) -> StoreError {
    let stamp = time_stamp();
    let name = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut moved_to = path.with_file_name(format!("{name}.corrupt-{stamp}"));
    let mut k = 1;
    while moved_to.exists() {
        moved_to = path.with_file_name(format!("{name}.corrupt-{stamp}-{k}"));
        k += 1;
    }
    match std::fs::rename(path, &moved_to) {
        Ok(()) => {
            tracing::error!(file = %path.display(), moved_to = %moved_to.display(), %reason, "unreadable state file set aside");
            StoreError::Quarantined {
                path: path.to_path_buf(),
                moved_to,
                reason,
            }
        }
        Err(e) => StoreError::Format {
            path: path.to_path_buf(),
            message: format!("{reason} (and it could not be moved aside: {e})"),
        },
    }
}

/// `YYYYMMDDTHHMMSSZ` now, UTC.
fn time_stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // civil date from days since 1970-01-01 (Howard Hinnant's algorithm)
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

fn remove(path: &Path, what: &'static str, name: &str) -> Result<(), StoreError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StoreError::NotFound {
            what,
            name: name.to_string(),
        }),
        Err(e) => Err(io(path)(e)),
    }
}

impl DirStore {
    /// A store under `root` (created if missing). `profiles/` and
    /// `alerts/` are made mode 0700 (they hold full command lines); a
    /// directory that cannot be written is an error now, not at the first
    /// save.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
        let root = root.into();
        if !root.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&root)
                .map_err(io(&root))?;
        }
        for sub in ["profiles", "alerts"] {
            let d = root.join(sub);
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&d)
                .map_err(io(&d))?;
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).map_err(io(&d))?;
            // temporary files of a process killed while writing
            for e in std::fs::read_dir(&d).map_err(io(&d))?.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if name.starts_with('.') && name.ends_with(".tmp") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
            let probe = d.join(format!(".probe.{}", std::process::id()));
            std::fs::write(&probe, b"")
                .and_then(|()| std::fs::remove_file(&probe))
                .map_err(|e| StoreError::Io {
                    path: d.clone(),
                    source: std::io::Error::new(
                        e.kind(),
                        format!("the state directory cannot be written: {e}"),
                    ),
                })?;
        }
        Ok(DirStore {
            root,
            files: Mutex::new(HashMap::new()),
            read_only: false,
        })
    }

    /// A store under an existing `root`, for reading (`kestrel status`,
    /// `kestrel profile`): creates, probes and cleans nothing.
    pub fn open_read_only(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        for sub in ["profiles", "alerts"] {
            let d = root.join(sub);
            if !d.is_dir() {
                return Err(StoreError::Io {
                    path: d,
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "not a Kestrel state directory (no such directory)",
                    ),
                });
            }
        }
        Ok(DirStore {
            root,
            files: Mutex::new(HashMap::new()),
            read_only: true,
        })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn yaml_files(&self, sub: &str) -> Result<Vec<PathBuf>, StoreError> {
        let dir = self.root.join(sub);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(io(&dir))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        files.sort();
        Ok(files)
    }

    fn profile_path(&self, workload: &str) -> PathBuf {
        if let Some(p) = self
            .files
            .lock()
            .ok()
            .and_then(|f| f.get(workload).cloned())
        {
            return p;
        }
        self.root
            .join("profiles")
            .join(format!("{}.yaml", file_stem(workload)))
    }

    fn remember(&self, workload: &str, path: &Path) {
        if let Ok(mut f) = self.files.lock() {
            f.insert(workload.to_string(), path.to_path_buf());
        }
    }

    /// Sets a file that cannot be used aside (read-only: only says why).
    fn set_aside(&self, path: &Path, reason: String) -> StoreError {
        if self.read_only {
            StoreError::Format {
                path: path.to_path_buf(),
                message: reason,
            }
        } else {
            quarantine(path, reason)
        }
    }

    /// A file that was read but cannot be used (not UTF-8, too large) is
    /// set aside; one that could not be read at all (permissions, I/O)
    /// stays where it is and the error says why.
    fn unusable(&self, path: &Path, e: StoreError) -> StoreError {
        match e {
            StoreError::Format { message, .. } => self.set_aside(path, message),
            other => other,
        }
    }

    fn read_profile(&self, path: &Path) -> Result<StoredProfile, StoreError> {
        let text = read_state_file(path).map_err(|e| self.unusable(path, e))?;
        let stored = kestrel_api::profile_from_yaml(&text)
            .map_err(|e| self.set_aside(path, e.to_string()))?;
        // the exact name is inside (annotation, spec.workload or
        // metadata.name); files without one (hand-written) are named by
        // their file stem
        let workload = stored.object.workload_name().unwrap_or_else(|| {
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
        self.remember(&workload, path);
        Ok(StoredProfile {
            workload,
            object: stored.object,
            format: stored.format,
        })
    }
}

#[async_trait::async_trait]
impl Store for DirStore {
    async fn load_profiles(&self) -> Result<Vec<Listed<StoredProfile>>, StoreError> {
        Ok(self
            .yaml_files("profiles")?
            .into_iter()
            .map(|p| self.read_profile(&p))
            .collect())
    }

    async fn save_profile(&self, profile: &StoredProfile) -> Result<(), StoreError> {
        let path = self.profile_path(&profile.workload);
        let yaml = kestrel_api::to_yaml(&profile.object).map_err(format_error(&path))?;
        write_atomic(&path, &yaml)?;
        self.remember(&profile.workload, &path);
        Ok(())
    }

    async fn delete_profile(&self, workload: &str) -> Result<(), StoreError> {
        let path = self.profile_path(workload);
        remove(&path, "profile", workload)?;
        if let Ok(mut f) = self.files.lock() {
            f.remove(workload);
        }
        Ok(())
    }

    async fn load_alerts(&self) -> Result<Vec<Listed<AlertDocument>>, StoreError> {
        Ok(self
            .yaml_files("alerts")?
            .into_iter()
            .map(|p| {
                let text = read_state_file(&p).map_err(|e| self.unusable(&p, e))?;
                kestrel_api::alert_from_yaml(&text).map_err(|e| self.set_aside(&p, e.to_string()))
            })
            .collect())
    }

    fn reloads(&self) -> bool {
        !self.read_only
    }

    async fn load_profile(&self, workload: &str) -> Result<Option<StoredProfile>, StoreError> {
        let path = self.profile_path(workload);
        if !path.is_file() {
            return Ok(None);
        }
        self.read_profile(&path).map(Some)
    }

    async fn quarantine_profile(
        &self,
        workload: &str,
        reason: &str,
    ) -> Result<Option<(PathBuf, PathBuf)>, StoreError> {
        let path = self.profile_path(workload);
        if self.read_only || !path.is_file() {
            return Ok(None);
        }
        match quarantine(&path, reason.to_string()) {
            StoreError::Quarantined { path, moved_to, .. } => Ok(Some((path, moved_to))),
            other => Err(other),
        }
    }

    async fn save_alert(&self, alert: &AlertDocument) -> Result<(), StoreError> {
        let path = self
            .root
            .join("alerts")
            .join(format!("{}.yaml", file_stem(&alert_doc_name(alert))));
        let yaml = kestrel_api::to_yaml(alert).map_err(format_error(&path))?;
        write_atomic(&path, &yaml)
    }

    async fn delete_alert(&self, name: &str) -> Result<(), StoreError> {
        let path = self
            .root
            .join("alerts")
            .join(format!("{}.yaml", file_stem(name)));
        remove(&path, "alert", name)
    }
}
