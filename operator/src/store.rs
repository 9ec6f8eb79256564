//! Where profiles and alerts live. Two implementations share the CR schema:
//! Kubernetes custom resources (operator mode, later) and a directory of YAML
//! files (standalone): `DIR/profiles/<workload>.yaml` (`BehaviorProfile`) and
//! `DIR/alerts/<name>.yaml` (`SecurityAlert`).

use kestrel_scoring::SecurityAlert;
use std::path::{Path, PathBuf};

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
}

/// API group/version of Kestrel's resources (defined in `kestrel-api`).
pub use kestrel_api::API_VERSION;

/// A `SecurityAlert` document as stored: the custom resource itself
/// (`apiVersion`, `kind`, `metadata`, `spec`, `status`).
pub type AlertDocument = kestrel_api::SecurityAlert;

/// The object name of an alert: `<workload>-<id>`, lower-case, DNS-safe
/// (see [`kestrel_api::alert_object_name`]).
pub fn alert_name(alert: &SecurityAlert) -> String {
    alert.object_name()
}

/// A file name for a workload: DNS-label characters only, so any name is safe.
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
    if s.is_empty() || s.starts_with('.') {
        format!("w{s}")
    } else {
        s
    }
}

/// Persistence for profiles and alerts.
pub trait Store: Send {
    /// Every stored profile: its name and its YAML, or why it could not be read.
    fn load_profiles(&self) -> Vec<(String, Result<String, StoreError>)>;
    /// Writes a profile (replacing the previous one).
    fn save_profile(&self, workload: &str, yaml: &str) -> Result<(), StoreError>;
    /// Writes an alert (replacing the previous version of the same incident).
    fn save_alert(&self, alert: &SecurityAlert) -> Result<(), StoreError>;
    /// Every stored alert, or why it could not be read.
    fn load_alerts(&self) -> Vec<Result<AlertDocument, StoreError>>;
}

/// A directory of YAML files.
#[derive(Debug, Clone)]
pub struct DirStore {
    root: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes through a temporary file and a rename, so readers never see half a file.
fn write_atomic(path: &Path, data: &str) -> Result<(), StoreError> {
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, data).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

impl DirStore {
    /// A store under `root` (created if missing).
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        for sub in ["profiles", "alerts"] {
            let d = root.join(sub);
            std::fs::create_dir_all(&d).map_err(io(&d))?;
        }
        Ok(DirStore { root })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn yaml_files(&self, sub: &str) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.root.join(sub))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }
}

impl Store for DirStore {
    fn load_profiles(&self) -> Vec<(String, Result<String, StoreError>)> {
        self.yaml_files("profiles")
            .into_iter()
            .map(|p| {
                let name = p
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let text = std::fs::read_to_string(&p).map_err(io(&p));
                (name, text)
            })
            .collect()
    }

    fn save_profile(&self, workload: &str, yaml: &str) -> Result<(), StoreError> {
        write_atomic(
            &self
                .root
                .join("profiles")
                .join(format!("{}.yaml", file_stem(workload))),
            yaml,
        )
    }

    fn save_alert(&self, alert: &SecurityAlert) -> Result<(), StoreError> {
        let doc = AlertDocument::from_spec(alert.clone());
        let path = self.root.join("alerts").join(format!(
            "{}.yaml",
            doc.metadata.name.clone().unwrap_or_default()
        ));
        let yaml = kestrel_api::to_yaml(&doc).map_err(|e| StoreError::Format {
            path: path.clone(),
            message: e.to_string(),
        })?;
        write_atomic(&path, &yaml)
    }

    fn load_alerts(&self) -> Vec<Result<AlertDocument, StoreError>> {
        self.yaml_files("alerts")
            .into_iter()
            .map(|p| {
                let text = std::fs::read_to_string(&p).map_err(io(&p))?;
                kestrel_api::alert_from_yaml(&text).map_err(|e| StoreError::Format {
                    path: p.clone(),
                    message: e.to_string(),
                })
            })
            .collect()
    }
}
