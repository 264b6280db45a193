//! A development certificate authority (the `certs` subcommand, and the tests): a CA and
//! certificates for each node that serve both as server and client certificate, plus
//! optionally a tokens file with one token per role. Not for production: the CA key sits
//! next to the certificates.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

use super::auth;

/// A certificate authority that issues certificates in memory.
pub struct DevCa {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

/// A certificate and its private key, PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate.
    pub cert: String,
    /// The private key (PKCS#8).
    pub key: String,
}

/// How long an issued certificate is valid.
#[derive(Debug, Clone, Copy)]
pub enum Validity {
    /// From a minute ago for this many days.
    Days(i64),
    /// Expired yesterday (for tests of refusal).
    Expired,
}

impl DevCa {
    /// A new CA named `name`, valid ten years.
    pub fn new(name: &str) -> Result<DevCa, rcgen::Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::minutes(1);
        params.not_after = now + Duration::days(3650);
        let key = KeyPair::generate()?;
        let pem = params.self_signed(&key)?.pem();
        Ok(DevCa { params, key, pem })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.pem
    }

    /// The CA's private key, PEM.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A certificate for `names` (DNS names or IP addresses; the first is also the common
    /// name), usable as server and client certificate.
    pub fn issue(&self, names: &[String], validity: Validity) -> Result<Issued, rcgen::Error> {
        let mut params = CertificateParams::new(names.to_vec())?;
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, first.as_str());
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let now = OffsetDateTime::now_utc();
        (params.not_before, params.not_after) = match validity {
            Validity::Days(days) => (now - Duration::minutes(1), now + Duration::days(days)),
            Validity::Expired => (now - Duration::days(30), now - Duration::days(1)),
        };
        // A random serial, so a re-issued certificate is told apart from the old one.
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&rand::random::<[u8; 16]>()));
        let key = KeyPair::generate()?;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer)?;
        Ok(Issued {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }
}

/// Why the development certificates could not be written.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// Generating a key or certificate failed.
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    /// Writing a file failed.
    #[error("{}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

fn write(path: PathBuf, text: &str, secret: bool) -> Result<PathBuf, CertsError> {
    let wrap = |source| CertsError::Write {
        path: path.clone(),
        source,
    };
    let mode = if secret { 0o600 } else { 0o644 };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&path)
        .map_err(wrap)?;
    file.write_all(text.as_bytes()).map_err(wrap)?;
    // `mode` applies only to a new file; an existing one is tightened too.
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).map_err(wrap)?;
    Ok(path)
}

/// Options of [`write_dev_set`] beyond the names.
#[derive(Debug, Clone, Default)]
pub struct DevSetOptions {
    /// Further names every node certificate carries.
    pub sans: Vec<String>,
    /// Also write a tokens file and one token per role.
    pub tokens: bool,
    /// Give the files to this uid:gid (a one-shot container running as root writing for
    /// the node's non-root user).
    pub owner: Option<(u32, u32)>,
}

/// Writes `ca.crt`, `ca.key` and `<name>.crt` / `<name>.key` for every name into `out`.
/// Each node certificate names the node, `localhost`, the loopback addresses and `sans`.
/// With `tokens`, also a tokens file (`tokens`) and one token per role
/// (`admin.token`, `write.token`, `read.token`, `metrics.token`). Returns the files written.
pub fn write_dev_set(
    out: &Path,
    names: &[String],
    options: &DevSetOptions,
) -> Result<Vec<PathBuf>, CertsError> {
    let written = write_files(out, names, &options.sans, options.tokens)?;
    if let Some((uid, gid)) = options.owner {
        for path in &written {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|source| CertsError::Write {
                path: path.clone(),
                source,
            })?;
        }
    }
    Ok(written)
}

fn write_files(
    out: &Path,
    names: &[String],
    sans: &[String],
    tokens: bool,
) -> Result<Vec<PathBuf>, CertsError> {
    fs::create_dir_all(out).map_err(|source| CertsError::Write {
        path: out.to_owned(),
        source,
    })?;
    let ca = DevCa::new("openraft-memory development CA")?;
    let mut written = vec![
        write(out.join("ca.crt"), ca.cert_pem(), false)?,
        write(out.join("ca.key"), &ca.key_pem(), true)?,
    ];
    for name in names {
        let mut all = vec![name.clone(), "localhost".into(), "127.0.0.1".into(), "::1".into()];
        all.extend(sans.iter().cloned());
        let issued = ca.issue(&all, Validity::Days(365))?;
        written.push(write(out.join(format!("{name}.crt")), &issued.cert, false)?);
        written.push(write(out.join(format!("{name}.key")), &issued.key, true)?);
    }
    if tokens {
        let mut lines = String::from("# <sha256 of the token> <role> <name>; tokens: the *.token files\n");
        for role in ["admin", "write", "read", "metrics"] {
            let token = auth::new_token();
            lines.push_str(&format!("{} {role} dev-{role}\n", auth::hash_token(&token)));
            written.push(write(
                out.join(format!("{role}.token")),
                &format!("{token}\n"),
                true,
            )?);
        }
        written.push(write(out.join("tokens"), &lines, true)?);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::tls::{CertInfo, read_certs};

    #[test]
    fn issued_certificates_name_their_hosts_and_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = write_dev_set(
            dir.path(),
            &["node-0".into()],
            &DevSetOptions {
                sans: vec!["*.db.svc".into()],
                tokens: true,
                owner: None,
            },
        )
        .expect("written");
        assert!(files.iter().any(|f| f.ends_with("node-0.key")));
        let der = read_certs(&dir.path().join("node-0.crt")).expect("pem");
        let info = CertInfo::parse(&der[0]).expect("x509");
        assert!(info.names_host("node-0") && info.names_host("127.0.0.1") && info.names_host("x.db.svc"));
        assert_eq!(info.common_name.as_deref(), Some("node-0"));
        let mode = fs::metadata(dir.path().join("node-0.key"))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let pair = crate::security::tls::server_config(
            &dir.path().join("node-0.crt"),
            &dir.path().join("node-0.key"),
            Some((&dir.path().join("ca.crt"), true)),
        );
        assert!(pair.is_ok(), "a dev set loads as a server configuration");
        let tokens = fs::read_to_string(dir.path().join("tokens")).expect("tokens");
        assert_eq!(auth::Tokens::parse(&tokens).map(|t| t.len()), Ok(4));
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_dev_set(dir.path(), &["a".into(), "b".into()], &DevSetOptions::default()).expect("written");
        let err =
            crate::security::tls::server_config(&dir.path().join("a.crt"), &dir.path().join("b.key"), None)
                .expect_err("mismatched pair");
        assert!(err.to_string().contains("does not match"), "{err}");
    }
}
