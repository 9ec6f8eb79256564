//! TLS for the agent stream: certificate material (generated or loaded from
//! PEM files) and the server and client configurations built from it.
//!
//! The crypto provider is rustls with `ring` (tonic's `tls-ring`).

use crate::error::{Error, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

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

fn write_file(path: &Path, contents: &str, mode: u32) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    f.write_all(contents.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)
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

impl TlsMaterial {
    fn paths(dir: &Path, client_names: &[String]) -> Self {
        let pair = |stem: &str| CertFiles {
            cert: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}-key.pem")),
        };
        TlsMaterial {
            dir: dir.to_path_buf(),
            ca: pair("ca"),
            server: pair("server"),
            clients: client_names
                .iter()
                .map(|n| (n.clone(), pair(&format!("client-{n}"))))
                .collect(),
        }
    }

    /// Generates a fresh CA, a server certificate for `server_names` (DNS
    /// names or IP addresses) and one client certificate per
    /// `client_names` entry, and writes them as PEM files into `dir`
    /// (created if missing; existing files are replaced).
    pub fn generate<S: AsRef<str>, C: AsRef<str>>(
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
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let m = Self::paths(dir, &client_names);

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
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca_params.self_signed(&ca_key)?;
        write_file(&m.ca.cert, &ca_cert.pem(), 0o644)?;
        write_file(&m.ca.key, &ca_key.serialize_pem(), 0o600)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf =
            |names: Vec<String>, cn: &str, usage: ExtendedKeyUsagePurpose, files: &CertFiles| {
                let mut p = CertificateParams::new(names)?;
                p.distinguished_name.push(DnType::CommonName, cn);
                p.use_authority_key_identifier_extension = true;
                p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
                p.extended_key_usages = vec![usage];
                let key = KeyPair::generate()?;
                let cert = p.signed_by(&key, &issuer)?;
                write_file(&files.cert, &cert.pem(), 0o644)?;
                write_file(&files.key, &key.serialize_pem(), 0o600)
            };
        let server_cn = server_names
            .first()
            .cloned()
            .unwrap_or_else(|| "kestrel-operator".into());
        leaf(
            server_names,
            &server_cn,
            ExtendedKeyUsagePurpose::ServerAuth,
            &m.server,
        )?;
        for (name, files) in &m.clients {
            leaf(
                vec![name.clone()],
                name,
                ExtendedKeyUsagePurpose::ClientAuth,
                files,
            )?;
        }
        Ok(m)
    }

    /// Uses the material in `dir` when every file exists (server names are
    /// then those of the existing certificate), generates it otherwise.
    pub fn load_or_generate<S: AsRef<str>, C: AsRef<str>>(
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
        let m = Self::paths(dir, &names);
        let all = std::iter::once(&m.ca)
            .chain(std::iter::once(&m.server))
            .chain(m.clients.values());
        if all.clone().all(|f| f.cert.is_file() && f.key.is_file()) {
            Ok(m)
        } else {
            Self::generate(dir, server_names, client_names)
        }
    }

    /// The files of client `name`.
    pub fn client(&self, name: &str) -> Option<&CertFiles> {
        self.clients.get(name)
    }
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

    pub(crate) fn tonic_config(&self) -> Option<ServerTlsConfig> {
        match &self.0 {
            ServerMode::Plaintext => None,
            ServerMode::Tls {
                cert,
                key,
                client_ca,
            } => {
                let mut c = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
                if let Some((ca, auth)) = client_ca {
                    c = c
                        .client_ca_root(Certificate::from_pem(ca))
                        .client_auth_optional(*auth == ClientAuth::Optional);
                }
                Some(c)
            }
        }
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

    #[test]
    fn existing_material_is_reused_and_missing_material_is_generated() {
        let dir = tempfile::tempdir().unwrap();
        let a = TlsMaterial::load_or_generate(dir.path(), &["localhost"], &["n1"]).unwrap();
        let ca1 = std::fs::read(&a.ca.cert).unwrap();
        let b = TlsMaterial::load_or_generate(dir.path(), &["localhost"], &["n1"]).unwrap();
        assert_eq!(std::fs::read(&b.ca.cert).unwrap(), ca1);
        let c = TlsMaterial::load_or_generate(dir.path(), &["localhost"], &["n1", "n2"]).unwrap();
        assert_ne!(std::fs::read(&c.ca.cert).unwrap(), ca1);
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
