//! TLS for the agent stream: certificate material (PEM files) and the server
//! and client configurations built from it.
//!
//! The CA's private key stays with the operator ([`TlsMaterial::ensure`]);
//! an agent gets its own certificate from [`TlsMaterial::issue_client`]
//! (`kestrel certs issue --node NAME`) and only ever reads it
//! ([`TlsMaterial::load_agent`]). Nothing replaces an existing CA.
//!
//! The crypto provider is rustls with `ring` (tonic's `tls-ring`).

use crate::error::{Error, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_rustls::rustls;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// A certificate and its private key, as PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFiles {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// The private key (PEM, mode 0600).
    pub key: PathBuf,
}

/// A self-signed CA with a server certificate and client certificates, as
/// PEM files in one directory:
///
/// | file | what |
/// |---|---|
/// | `ca.pem`, `ca-key.pem` | the CA |
/// | `server.pem`, `server-key.pem` | the operator (SANs: the server names) |
/// | `client-<name>.pem`, `client-<name>-key.pem` | one agent (CN and SAN: its node name) |
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsMaterial {
    /// The directory.
    pub dir: PathBuf,
    /// The CA.
    pub ca: CertFiles,
    /// The server certificate.
    pub server: CertFiles,
    /// Client certificates by name.
    pub clients: BTreeMap<String, CertFiles>,
}

fn check_name(name: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::Name {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() || name.len() > 253 {
        return bad("must be 1 to 253 characters");
    }
    if name.starts_with('.') {
        return bad("must not start with a dot");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'))
    {
        return bad("only letters, digits, '.', '-', '_' and ':' are allowed");
    }
    Ok(())
}

/// How long a CA is valid: ten years.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 86_400);
/// How long the operator's server certificate is valid: one year.
pub const SERVER_VALIDITY: Duration = Duration::from_secs(365 * 86_400);
/// How long an agent's certificate is valid unless told otherwise: 30 days.
pub const DEFAULT_CLIENT_VALIDITY: Duration = Duration::from_secs(30 * 86_400);

/// Writes `contents` to a temporary file next to `path` with `mode`, syncs
/// it and renames it over `path`: readers see the old file or the new one,
/// and the mode is `mode` even when `path` existed with another.
fn write_file(path: &Path, contents: &str, mode: u32) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let name = path
        .file_name()
        .map_or_else(|| "pem".into(), |n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(contents.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })
}

/// Creates `dir` with mode 0700 when it does not exist (an existing
/// directory keeps its mode).
fn make_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })
}

fn read_pem(path: &Path, marker: &str) -> Result<Vec<u8>> {
    let data = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8_lossy(&data);
    if !text.contains("-----BEGIN ") || !text.contains(marker) {
        return Err(Error::Pem {
            path: path.to_path_buf(),
            reason: format!("no PEM block containing {marker:?}"),
        });
    }
    Ok(data)
}

/// What a certificate file says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// Its names (CN, DNS and IP SANs).
    pub names: Vec<String>,
    /// Start of validity, seconds since the epoch.
    pub not_before: i64,
    /// End of validity, seconds since the epoch.
    pub not_after: i64,
}

impl CertInfo {
    /// Reads the first certificate of a PEM file.
    pub fn read(path: &Path) -> Result<Self> {
        let pem = read_pem(path, "CERTIFICATE")?;
        let bad = |reason: String| Error::Pem {
            path: path.to_path_buf(),
            reason,
        };
        let (_, p) =
            x509_parser::pem::parse_x509_pem(&pem).map_err(|e| bad(format!("not PEM: {e}")))?;
        let cert = p
            .parse_x509()
            .map_err(|e| bad(format!("not an X.509 certificate: {e}")))?;
        Ok(CertInfo {
            names: certificate_names(&p.contents),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
        })
    }

    /// Seconds of validity left at `now` (negative: expired).
    pub fn remaining(&self, now: i64) -> i64 {
        self.not_after - now
    }

    /// Whether it should be renewed at `now`: less than a third of its
    /// lifetime or less than 7 days left.
    pub fn renew_due(&self, now: i64) -> bool {
        let life = (self.not_after - self.not_before).max(1);
        let left = self.remaining(now);
        left < life / 3 || left < 7 * 86_400
    }
}

/// Seconds since the epoch now.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Checks the certificate at `path` is valid now; a certificate due for
/// renewal is logged (warn) with the date it expires.
pub fn check_validity(path: &Path, what: &str) -> Result<CertInfo> {
    let info = CertInfo::read(path)?;
    let now = unix_now();
    let at = |t: i64| {
        time::OffsetDateTime::from_unix_timestamp(t)
            .map_or_else(|_| t.to_string(), |d| d.date().to_string())
    };
    if info.remaining(now) <= 0 {
        return Err(Error::Credentials {
            path: path.to_path_buf(),
            reason: format!(
                "the {what} expired on {}; issue a new one",
                at(info.not_after)
            ),
        });
    }
    if info.not_before > now + 300 {
        return Err(Error::Credentials {
            path: path.to_path_buf(),
            reason: format!(
                "the {what} is not valid before {} (is this clock right?)",
                at(info.not_before)
            ),
        });
    }
    if info.renew_due(now) {
        tracing::warn!(
            file = %path.display(),
            expires = %at(info.not_after),
            days_left = info.remaining(now) / 86_400,
            "the {what} expires soon; renew it"
        );
    }
    Ok(info)
}

fn validity(params: &mut CertificateParams, lifetime: Duration) {
    let now = time::OffsetDateTime::now_utc();
    // A minute back, for clocks a little behind the issuer's.
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = now + time::Duration::seconds(lifetime.as_secs() as i64);
}

fn ca_params() -> Result<CertificateParams> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "kestrel-ca");
    ca_params
        .distinguished_name
        .push(DnType::OrganizationName, "kestrel");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut ca_params, CA_VALIDITY);
    Ok(ca_params)
}

/// Signs a leaf certificate with `issuer` and writes it and its new key.
fn issue_leaf(
    issuer: &Issuer<'_, KeyPair>,
    names: Vec<String>,
    cn: &str,
    usage: ExtendedKeyUsagePurpose,
    lifetime: Duration,
    files: &CertFiles,
) -> Result<()> {
    let mut p = CertificateParams::new(names)?;
    p.distinguished_name.push(DnType::CommonName, cn);
    p.use_authority_key_identifier_extension = true;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![usage];
    validity(&mut p, lifetime);
    let key = KeyPair::generate()?;
    let cert = p.signed_by(&key, issuer)?;
    // The key first: a certificate never sits next to a key it does not match
    // for longer than one rename.
    write_file(&files.key, &key.serialize_pem(), 0o600)?;
    write_file(&files.cert, &cert.pem(), 0o644)
}

impl TlsMaterial {
    fn paths(dir: &Path, client_names: &[String]) -> Self {
        TlsMaterial {
            dir: dir.to_path_buf(),
            ca: pair(dir, "ca"),
            server: pair(dir, "server"),
            clients: client_names
                .iter()
                .map(|n| (n.clone(), client_pair(dir, n)))
                .collect(),
        }
    }

    /// Generates a fresh CA, a server certificate for `server_names` (DNS
    /// names or IP addresses) and one client certificate per
    /// `client_names` entry, and writes them as PEM files into `dir`
    /// (created if missing; existing files are replaced). For tests and
    /// throw-away set-ups; the operator uses [`ensure`](Self::ensure).
    pub fn generate<S: AsRef<str>, C: AsRef<str>>(
        dir: &Path,
        server_names: &[S],
        client_names: &[C],
    ) -> Result<Self> {
        let names: Vec<String> = client_names
            .iter()
            .map(|s| s.as_ref().to_string())
            .collect();
        for n in &names {
            check_name(n)?;
        }
        let old = Self::paths(dir, &names);
        for f in [&old.ca, &old.server]
            .into_iter()
            .chain(old.clients.values())
        {
            let _ = std::fs::remove_file(&f.cert);
            let _ = std::fs::remove_file(&f.key);
        }
        Self::ensure(dir, server_names, client_names)
    }

    /// The operator's material in `dir`, completed where it is missing and
    /// never replaced:
    ///
    /// - the CA is loaded, or created when neither `ca.pem` nor
    ///   `ca-key.pem` exists (one without the other is an error: the
    ///   agents trust the certificate, so it is never silently replaced);
    /// - the server certificate is loaded, or issued by the CA for
    ///   `server_names` when missing;
    /// - each of `client_names` gets a certificate when it has none
    ///   ([`issue_client`](Self::issue_client)); existing ones are kept.
    ///
    /// Private keys are written 0600, a created directory 0700.
    pub fn ensure<S: AsRef<str>, C: AsRef<str>>(
        dir: &Path,
        server_names: &[S],
        client_names: &[C],
    ) -> Result<Self> {
        let server_names: Vec<String> = server_names
            .iter()
            .map(|s| s.as_ref().to_string())
            .collect();
        let client_names: Vec<String> = client_names
            .iter()
            .map(|s| s.as_ref().to_string())
            .collect();
        for n in server_names.iter().chain(&client_names) {
            check_name(n)?;
        }
        make_dir(dir)?;
        let m = Self::paths(dir, &client_names);
        let issuer = Self::ca(dir, true)?;
        if !(m.server.cert.is_file() && m.server.key.is_file()) {
            let cn = server_names
                .first()
                .cloned()
                .unwrap_or_else(|| "kestrel-operator".into());
            issue_leaf(
                &issuer,
                server_names,
                &cn,
                ExtendedKeyUsagePurpose::ServerAuth,
                SERVER_VALIDITY,
                &m.server,
            )?;
        }
        for (name, files) in &m.clients {
            if !(files.cert.is_file() && files.key.is_file()) {
                issue_leaf(
                    &issuer,
                    vec![name.clone()],
                    name,
                    ExtendedKeyUsagePurpose::ClientAuth,
                    DEFAULT_CLIENT_VALIDITY,
                    files,
                )?;
            }
        }
        Ok(m)
    }

    /// The CA of `dir` as an issuer; with `create`, a new CA when neither
    /// of its files exists.
    fn ca(dir: &Path, create: bool) -> Result<Issuer<'static, KeyPair>> {
        let ca = pair(dir, "ca");
        match (ca.cert.is_file(), ca.key.is_file()) {
            (true, true) => {
                let key_pem =
                    String::from_utf8_lossy(&read_pem(&ca.key, "PRIVATE KEY")?).into_owned();
                let key = KeyPair::from_pem(&key_pem).map_err(|e| Error::Pem {
                    path: ca.key.clone(),
                    reason: format!("not a private key: {e}"),
                })?;
                let cert_pem =
                    String::from_utf8_lossy(&read_pem(&ca.cert, "CERTIFICATE")?).into_owned();
                check_validity(&ca.cert, "CA certificate")?;
                Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| Error::Pem {
                    path: ca.cert.clone(),
                    reason: format!("not a CA certificate for ca-key.pem: {e}"),
                })
            }
            (false, false) if create => {
                let params = ca_params()?;
                let key = KeyPair::generate()?;
                let cert = params.self_signed(&key)?;
                write_file(&ca.key, &key.serialize_pem(), 0o600)?;
                write_file(&ca.cert, &cert.pem(), 0o644)?;
                tracing::info!(dir = %dir.display(), "created a new agent CA");
                Ok(Issuer::new(params, key))
            }
            (false, false) => Err(Error::Credentials {
                path: dir.to_path_buf(),
                reason: "no CA here (ca.pem and ca-key.pem): certificates are issued where \
                         the operator keeps its CA"
                    .into(),
            }),
            (true, false) => Err(Error::Credentials {
                path: ca.key.clone(),
                reason: "ca.pem is here but its key is not: this directory can verify \
                         certificates but not issue them (issue on the operator's host, or \
                         restore ca-key.pem); the CA is never replaced, since every agent \
                         trusts it"
                    .into(),
            }),
            (false, true) => Err(Error::Credentials {
                path: ca.cert.clone(),
                reason: "ca-key.pem is here but ca.pem is not: restore ca.pem (the CA is never \
                         replaced, since every agent trusts it)"
                    .into(),
            }),
        }
    }

    /// Issues (or renews) the certificate of agent `node` with the CA in
    /// `ca_dir`, valid for `lifetime`, and writes `client-<node>.pem`,
    /// `client-<node>-key.pem` and a copy of `ca.pem` into `out`: the three
    /// files an agent needs. Touches neither the CA nor any other agent's
    /// files.
    pub fn issue_client(
        ca_dir: &Path,
        node: &str,
        lifetime: Duration,
        out: &Path,
    ) -> Result<CertFiles> {
        check_name(node)?;
        if lifetime < Duration::from_secs(3600) || lifetime > CA_VALIDITY {
            return Err(Error::Credentials {
                path: out.to_path_buf(),
                reason: format!(
                    "a validity of {} s: must be between one hour and ten years",
                    lifetime.as_secs()
                ),
            });
        }
        let issuer = Self::ca(ca_dir, false)?;
        make_dir(out)?;
        let files = client_pair(out, node);
        issue_leaf(
            &issuer,
            vec![node.to_string()],
            node,
            ExtendedKeyUsagePurpose::ClientAuth,
            lifetime,
            &files,
        )?;
        let out_ca = out.join("ca.pem");
        let ca_pem = read_pem(&ca_dir.join("ca.pem"), "CERTIFICATE")?;
        if std::fs::read(&out_ca).ok().as_deref() != Some(ca_pem.as_slice()) {
            write_file(&out_ca, &String::from_utf8_lossy(&ca_pem), 0o644)?;
        }
        Ok(files)
    }

    /// An agent's credentials in `dir`: `ca.pem` and the certificate and key
    /// of `node`. Only reads: a missing or expired file is an error that says
    /// how to get one, and nothing is ever generated here. A certificate due
    /// for renewal is logged.
    pub fn load_agent(dir: &Path, node: &str) -> Result<Self> {
        check_name(node)?;
        let m = Self::paths(dir, &[node.to_string()]);
        let files = client_pair(dir, node);
        let hint = format!(
            "issue it on the operator's host with `kestrel certs issue --node {node} --out DIR` \
             and copy DIR's three files here"
        );
        for f in [&m.ca.cert, &files.cert, &files.key] {
            if !f.is_file() {
                return Err(Error::Credentials {
                    path: f.clone(),
                    reason: format!("missing; {hint}"),
                });
            }
        }
        check_validity(&m.ca.cert, "CA certificate")?;
        let info = check_validity(&files.cert, "agent certificate")?;
        if !info.names.iter().any(|n| n == node) {
            return Err(Error::Credentials {
                path: files.cert.clone(),
                reason: format!(
                    "this certificate is for {:?}, not node {node:?}; {hint}",
                    info.names
                ),
            });
        }
        let mode = std::fs::metadata(&files.key)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
            .unwrap_or(0);
        if mode & 0o077 != 0 {
            tracing::warn!(file = %files.key.display(), mode = format!("{mode:o}"), "a private key others can read; chmod 600 it");
        }
        Ok(m)
    }

    /// The files of client `name`.
    pub fn client(&self, name: &str) -> Option<&CertFiles> {
        self.clients.get(name)
    }
}

/// Signs agents' certificate requests with the CA of a directory: the
/// operator's side of enrollment (`Enroll`), where a node's certificate is
/// issued for a key the agent made and kept.
pub struct CertSigner {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
}

impl std::fmt::Debug for CertSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertSigner").finish_non_exhaustive()
    }
}

/// Shortest and longest lifetime [`CertSigner::sign_client`] gives.
pub const ENROLLED_VALIDITY_RANGE: (Duration, Duration) =
    (Duration::from_secs(600), Duration::from_secs(30 * 86_400));

impl CertSigner {
    /// The CA in `dir` (`ca.pem`, `ca-key.pem`); only reads.
    pub fn load(dir: &Path) -> Result<Self> {
        let issuer = TlsMaterial::ca(dir, false)?;
        let ca_pem =
            String::from_utf8_lossy(&read_pem(&dir.join("ca.pem"), "CERTIFICATE")?).into_owned();
        Ok(CertSigner { issuer, ca_pem })
    }

    /// The CA certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A client certificate for `node` (CN and the only DNS name), valid for
    /// `lifetime` (clamped to [`ENROLLED_VALIDITY_RANGE`]), for the public
    /// key of `csr_pem`, whose signature is verified. The request's own
    /// names and extensions are ignored. Returns the PEM and the expiry
    /// (Unix seconds).
    pub fn sign_client(
        &self,
        csr_pem: &str,
        node: &str,
        lifetime: Duration,
    ) -> Result<(String, i64)> {
        check_name(node)?;
        let csr =
            rcgen::CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| Error::Pem {
                path: PathBuf::from("<certificate request>"),
                reason: format!("not a valid signed PKCS#10 request: {e}"),
            })?;
        let lifetime = lifetime.clamp(ENROLLED_VALIDITY_RANGE.0, ENROLLED_VALIDITY_RANGE.1);
        let mut p = CertificateParams::new(vec![node.to_string()])?;
        p.distinguished_name.push(DnType::CommonName, node);
        p.use_authority_key_identifier_extension = true;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        validity(&mut p, lifetime);
        let not_after = p.not_after.unix_timestamp();
        let cert = p.signed_by(&csr.public_key, &self.issuer)?;
        Ok((cert.pem(), not_after))
    }
}

/// A new private key (PEM) and a certificate request for it naming `node`
/// (PEM): what an agent sends to `Enroll`. The key never leaves the agent.
pub fn new_key_and_request(node: &str) -> Result<(String, String)> {
    check_name(node)?;
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(vec![node.to_string()])?;
    p.distinguished_name.push(DnType::CommonName, node);
    let csr = p.serialize_request(&key)?.pem()?;
    Ok((key.serialize_pem(), csr))
}

fn pair(dir: &Path, stem: &str) -> CertFiles {
    CertFiles {
        cert: dir.join(format!("{stem}.pem")),
        key: dir.join(format!("{stem}-key.pem")),
    }
}

fn client_pair(dir: &Path, node: &str) -> CertFiles {
    pair(dir, &format!("client-{node}"))
}

/// Whether the server asks agents for a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// Every agent must present a certificate signed by the client CA.
    Required,
    /// Agents may present one; when they do it is verified and its names
    /// must include the Hello's node name.
    Optional,
}

#[derive(Clone)]
enum ServerMode {
    Plaintext,
    Tls {
        cert: Vec<u8>,
        key: Vec<u8>,
        client_ca: Option<(Vec<u8>, ClientAuth)>,
    },
}

/// How the operator's listener speaks TLS.
#[derive(Clone)]
pub struct ServerTls(ServerMode);

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            ServerMode::Plaintext => f.write_str("ServerTls::Plaintext"),
            ServerMode::Tls { client_ca, .. } => f
                .debug_struct("ServerTls")
                .field("client_auth", &client_ca.as_ref().map(|c| c.1))
                .finish_non_exhaustive(),
        }
    }
}

impl ServerTls {
    /// No TLS at all: for tests and local debugging only.
    pub fn plaintext() -> Self {
        ServerTls(ServerMode::Plaintext)
    }

    /// TLS with this certificate chain and key (PEM), no client certificates.
    pub fn from_pem(cert_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> Self {
        ServerTls(ServerMode::Tls {
            cert: cert_pem.into(),
            key: key_pem.into(),
            client_ca: None,
        })
    }

    /// Verifies client certificates against this CA (PEM): mutual TLS.
    pub fn with_client_ca(self, ca_pem: impl Into<Vec<u8>>, auth: ClientAuth) -> Self {
        match self.0 {
            ServerMode::Plaintext => self,
            ServerMode::Tls { cert, key, .. } => ServerTls(ServerMode::Tls {
                cert,
                key,
                client_ca: Some((ca_pem.into(), auth)),
            }),
        }
    }

    /// Reads the PEM files; with `client_ca`, client certificates are required.
    pub fn from_pem_files(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Self> {
        let tls = Self::from_pem(
            read_pem(cert, "CERTIFICATE")?,
            read_pem(key, "PRIVATE KEY")?,
        );
        Ok(match client_ca {
            None => tls,
            Some(ca) => tls.with_client_ca(read_pem(ca, "CERTIFICATE")?, ClientAuth::Required),
        })
    }

    /// The server side of `material`; `mutual` requires client certificates.
    pub fn from_material(material: &TlsMaterial, mutual: bool) -> Result<Self> {
        let ca = mutual.then_some(material.ca.cert.as_path());
        Self::from_pem_files(&material.server.cert, &material.server.key, ca)
    }

    /// Whether client certificates are verified.
    pub fn is_mutual(&self) -> bool {
        matches!(
            &self.0,
            ServerMode::Tls {
                client_ca: Some(_),
                ..
            }
        )
    }

    /// Whether every client must present a certificate.
    pub fn requires_client_cert(&self) -> bool {
        matches!(
            &self.0,
            ServerMode::Tls {
                client_ca: Some((_, ClientAuth::Required)),
                ..
            }
        )
    }

    /// The rustls configuration of the listener (None: plaintext): HTTP/2
    /// only, and client certificates verified against the client CA when
    /// one is set.
    pub(crate) fn rustls_config(&self) -> Result<Option<std::sync::Arc<rustls::ServerConfig>>> {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let ServerMode::Tls {
            cert,
            key,
            client_ca,
        } = &self.0
        else {
            return Ok(None);
        };
        let bad = |what: &str, e: String| Error::Pem {
            path: PathBuf::from(format!("<server {what}>")),
            reason: e,
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| bad("certificate", e.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| bad("key", e.to_string()))?;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| bad("protocol versions", e.to_string()))?;
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some((ca, auth)) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_slice_iter(ca) {
                    let c = c.map_err(|e| bad("client CA", e.to_string()))?;
                    roots.add(c).map_err(|e| bad("client CA", e.to_string()))?;
                }
                let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    std::sync::Arc::new(roots),
                    provider,
                );
                let v = if *auth == ClientAuth::Optional {
                    v.allow_unauthenticated()
                } else {
                    v
                };
                builder.with_client_cert_verifier(
                    v.build().map_err(|e| bad("client CA", e.to_string()))?,
                )
            }
        };
        let mut c = builder
            .with_single_cert(chain, key)
            .map_err(|e| bad("certificate", e.to_string()))?;
        c.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Some(std::sync::Arc::new(c)))
    }
}

#[derive(Clone)]
enum ClientMode {
    Plaintext,
    Tls {
        ca: Vec<u8>,
        identity: Option<(Vec<u8>, Vec<u8>)>,
        domain: Option<String>,
    },
}

/// How an agent connects: the CA it trusts, its own certificate for mutual
/// TLS, and optionally the server name to verify (default: the endpoint's host).
#[derive(Clone)]
pub struct ClientTls(ClientMode);

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            ClientMode::Plaintext => f.write_str("ClientTls::Plaintext"),
            ClientMode::Tls {
                identity, domain, ..
            } => f
                .debug_struct("ClientTls")
                .field("mutual", &identity.is_some())
                .field("domain", domain)
                .finish_non_exhaustive(),
        }
    }
}

impl ClientTls {
    /// No TLS at all: for tests and local debugging only (use `http://`).
    pub fn plaintext() -> Self {
        ClientTls(ClientMode::Plaintext)
    }

    /// TLS trusting this CA (PEM).
    pub fn from_pem(ca_pem: impl Into<Vec<u8>>) -> Self {
        ClientTls(ClientMode::Tls {
            ca: ca_pem.into(),
            identity: None,
            domain: None,
        })
    }

    /// Presents this certificate and key (PEM): mutual TLS.
    pub fn with_identity(self, cert_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> Self {
        match self.0 {
            ClientMode::Plaintext => self,
            ClientMode::Tls { ca, domain, .. } => ClientTls(ClientMode::Tls {
                ca,
                identity: Some((cert_pem.into(), key_pem.into())),
                domain,
            }),
        }
    }

    /// Verifies the server certificate against this name instead of the
    /// endpoint's host.
    pub fn with_domain(self, domain: impl Into<String>) -> Self {
        match self.0 {
            ClientMode::Plaintext => self,
            ClientMode::Tls { ca, identity, .. } => ClientTls(ClientMode::Tls {
                ca,
                identity,
                domain: Some(domain.into()),
            }),
        }
    }

    /// Reads the PEM files.
    pub fn from_pem_files(ca: &Path, identity: Option<&CertFiles>) -> Result<Self> {
        let tls = Self::from_pem(read_pem(ca, "CERTIFICATE")?);
        Ok(match identity {
            None => tls,
            Some(f) => tls.with_identity(
                read_pem(&f.cert, "CERTIFICATE")?,
                read_pem(&f.key, "PRIVATE KEY")?,
            ),
        })
    }

    /// The client side of `material`, presenting client certificate `name`
    /// when given.
    pub fn from_material(material: &TlsMaterial, name: Option<&str>) -> Result<Self> {
        let identity = match name {
            None => None,
            Some(n) => Some(material.client(n).ok_or_else(|| Error::Pem {
                path: material.dir.join(format!("client-{n}.pem")),
                reason: format!("no client certificate named {n:?} in this material"),
            })?),
        };
        Self::from_pem_files(&material.ca.cert, identity)
    }

    /// Whether TLS is used at all.
    pub fn is_tls(&self) -> bool {
        matches!(self.0, ClientMode::Tls { .. })
    }

    /// The server name to verify instead of the endpoint's host, if set.
    pub(crate) fn domain(&self) -> Option<&str> {
        match &self.0 {
            ClientMode::Tls {
                domain: Some(d), ..
            } => Some(d),
            _ => None,
        }
    }

    /// The same settings as a rustls configuration (None: plaintext), for
    /// diagnosing a connection tonic could not make.
    pub(crate) fn rustls_config(&self) -> Result<Option<std::sync::Arc<rustls::ClientConfig>>> {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let ClientMode::Tls { ca, identity, .. } = &self.0 else {
            return Ok(None);
        };
        let bad = |what: &str, e: String| Error::Pem {
            path: PathBuf::from(format!("<client {what}>")),
            reason: e,
        };
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca) {
            let c = c.map_err(|e| bad("CA", e.to_string()))?;
            roots.add(c).map_err(|e| bad("CA", e.to_string()))?;
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad("protocol versions", e.to_string()))?
            .with_root_certificates(roots);
        let mut c = match identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
                    .collect::<std::result::Result<_, _>>()
                    .map_err(|e| bad("certificate", e.to_string()))?;
                let key =
                    PrivateKeyDer::from_pem_slice(key).map_err(|e| bad("key", e.to_string()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| bad("certificate", e.to_string()))?
            }
        };
        c.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Some(std::sync::Arc::new(c)))
    }

    pub(crate) fn tonic_config(&self) -> Option<ClientTlsConfig> {
        match &self.0 {
            ClientMode::Plaintext => None,
            ClientMode::Tls {
                ca,
                identity,
                domain,
            } => {
                let mut c = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
                if let Some((cert, key)) = identity {
                    c = c.identity(Identity::from_pem(cert, key));
                }
                if let Some(d) = domain {
                    c = c.domain_name(d.clone());
                }
                Some(c)
            }
        }
    }
}

/// The names a peer certificate (DER) vouches for: its subject common names
/// and its DNS and IP subject alternative names.
pub fn certificate_names(der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::{FromDer, X509Certificate};
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_string))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => names.push((*d).to_string()),
                GeneralName::IPAddress(ip) => match ip.len() {
                    4 => {
                        let mut o = [0u8; 4];
                        o.copy_from_slice(ip);
                        names.push(std::net::Ipv4Addr::from(o).to_string());
                    }
                    16 => {
                        let mut o = [0u8; 16];
                        o.copy_from_slice(ip);
                        names.push(std::net::Ipv6Addr::from(o).to_string());
                    }
                    _ => {}
                },
                _ => {}
            }
        }
    }
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_client_certificates_name_their_node_in_cn_and_san() {
        let dir = tempfile::tempdir().unwrap();
        let m =
            TlsMaterial::generate(dir.path(), &["localhost", "127.0.0.1"], &["node-a"]).unwrap();
        let pem = std::fs::read_to_string(&m.client("node-a").unwrap().cert).unwrap();
        let der = pem_to_der(&pem);
        assert_eq!(certificate_names(&der), ["node-a"]);
        let spem = std::fs::read_to_string(&m.server.cert).unwrap();
        assert_eq!(
            certificate_names(&pem_to_der(&spem)),
            ["localhost", "127.0.0.1"]
        );
        let mode = std::fs::metadata(&m.server.key).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn adding_an_agent_keeps_the_ca_the_server_and_every_issued_certificate() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("tls");
        let a = TlsMaterial::ensure(dir.as_path(), &["localhost"], &["n1"]).unwrap();
        let before: Vec<Vec<u8>> = [&a.ca.cert, &a.ca.key, &a.server.cert, &a.clients["n1"].cert]
            .iter()
            .map(|p| std::fs::read(p).unwrap())
            .collect();
        let c = TlsMaterial::ensure(dir.as_path(), &["localhost"], &["n1", "n2"]).unwrap();
        let after: Vec<Vec<u8>> = [&c.ca.cert, &c.ca.key, &c.server.cert, &c.clients["n1"].cert]
            .iter()
            .map(|p| std::fs::read(p).unwrap())
            .collect();
        assert_eq!(before, after);
        assert!(c.clients["n2"].cert.is_file());
        assert_eq!(mode(dir.as_path()) & 0o777, 0o700);
    }

    #[test]
    fn an_agent_directory_is_only_read_and_never_turned_into_a_ca() {
        let op = tempfile::tempdir().unwrap();
        TlsMaterial::ensure(op.path(), &["localhost"], &[] as &[&str]).unwrap();
        let node = tempfile::tempdir().unwrap();
        TlsMaterial::issue_client(op.path(), "node-a", DEFAULT_CLIENT_VALIDITY, node.path())
            .unwrap();
        let mut listing: Vec<String> = std::fs::read_dir(node.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        listing.sort();
        assert_eq!(
            listing,
            ["ca.pem", "client-node-a-key.pem", "client-node-a.pem"]
        );
        let snapshot = |d: &Path| -> Vec<(String, Vec<u8>)> {
            let mut v: Vec<_> = std::fs::read_dir(d)
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        std::fs::read(e.path()).unwrap(),
                    )
                })
                .collect();
            v.sort();
            v
        };
        let before = snapshot(node.path());
        let m = TlsMaterial::load_agent(node.path(), "node-a").unwrap();
        assert_eq!(
            m.client("node-a").unwrap().cert,
            node.path().join("client-node-a.pem")
        );
        // The operator's path refuses to mint a CA where only ca.pem is.
        let err = TlsMaterial::ensure(node.path(), &["localhost"], &["node-a"]).unwrap_err();
        assert!(
            err.to_string().contains("ca-key.pem") && err.to_string().contains("never replaced"),
            "{err}"
        );
        assert_eq!(snapshot(node.path()), before);
        // Another node's name is not this certificate's.
        let err = TlsMaterial::load_agent(node.path(), "node-b").unwrap_err();
        assert!(
            err.to_string().contains("client-node-b.pem")
                && err
                    .to_string()
                    .contains("kestrel certs issue --node node-b"),
            "{err}"
        );
        assert_eq!(snapshot(node.path()), before);
    }

    #[test]
    fn issuing_rewrites_a_loose_key_as_0600_and_touches_no_other_agent() {
        let dir = tempfile::tempdir().unwrap();
        let m = TlsMaterial::ensure(dir.path(), &["localhost"], &["n1", "n2"]).unwrap();
        let n1 = std::fs::read(&m.clients["n1"].cert).unwrap();
        let ca = std::fs::read(&m.ca.cert).unwrap();
        std::fs::set_permissions(&m.clients["n2"].key, std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let renewed =
            TlsMaterial::issue_client(dir.path(), "n2", Duration::from_secs(86_400), dir.path())
                .unwrap();
        assert_eq!(mode(&renewed.key), 0o600);
        assert_eq!(std::fs::read(&m.clients["n1"].cert).unwrap(), n1);
        assert_eq!(std::fs::read(&m.ca.cert).unwrap(), ca);
        let info = CertInfo::read(&renewed.cert).unwrap();
        assert_eq!(info.names, ["n2"]);
        let life = info.not_after - info.not_before;
        assert!((86_400..=86_400 + 120).contains(&life), "{life}");
        // One day of a one-day certificate left: due for renewal.
        assert!(info.renew_due(unix_now()));
        let long = CertInfo::read(&m.clients["n1"].cert).unwrap();
        assert!(!long.renew_due(unix_now()));
        let err = TlsMaterial::issue_client(dir.path(), "n3", Duration::from_secs(60), dir.path())
            .unwrap_err();
        assert!(
            err.to_string().contains("between one hour and ten years"),
            "{err}"
        );
    }

    #[test]
    fn an_expired_agent_certificate_is_refused_with_its_date() {
        let dir = tempfile::tempdir().unwrap();
        TlsMaterial::ensure(dir.path(), &["localhost"], &[] as &[&str]).unwrap();
        let issuer = TlsMaterial::ca(dir.path(), false).unwrap();
        let mut p = CertificateParams::new(vec!["old".to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, "old");
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &issuer).unwrap();
        let files = client_pair(dir.path(), "old");
        write_file(&files.cert, &cert.pem(), 0o644).unwrap();
        write_file(&files.key, &key.serialize_pem(), 0o600).unwrap();
        let err = TlsMaterial::load_agent(dir.path(), "old").unwrap_err();
        assert!(err.to_string().contains("expired on 2021-01-01"), "{err}");
    }

    #[test]
    fn names_that_would_escape_the_directory_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = TlsMaterial::generate(dir.path(), &["localhost"], &["../evil"]).unwrap_err();
        assert!(err.to_string().contains("../evil"), "{err}");
    }

    #[test]
    fn a_file_without_pem_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ca.pem");
        std::fs::write(&p, "hello").unwrap();
        let err = ClientTls::from_pem_files(&p, None).unwrap_err();
        assert!(err.to_string().contains("ca.pem"), "{err}");
    }

    fn pem_to_der(pem: &str) -> Vec<u8> {
        let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        p.contents
    }
}
