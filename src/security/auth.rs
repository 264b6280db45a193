//! Authorization on the client ports: roles, the tokens file, and the decision for one
//! request. Tokens are stored as SHA-256 hashes: a token is 256 random bits, so a fast hash
//! is enough (no password stretching needed), and a leaked tokens file grants nothing.

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::tls::CertInfo;

/// What a caller may do. `Read` < `Write` < `Admin`; `Metrics` may only scrape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Scrape `/metrics`.
    Metrics,
    /// Read records and the cluster's status.
    Read,
    /// Read and change records.
    Write,
    /// Everything: membership, backups, reflection.
    Admin,
}

impl Role {
    /// Whether this role may do what `needed` allows.
    pub fn allows(self, needed: Role) -> bool {
        match (self, needed) {
            (Role::Admin, _) => true,
            (Role::Metrics, Role::Metrics) => true,
            (Role::Metrics, _) | (_, Role::Metrics) => false,
            (Role::Write, _) => needed != Role::Admin,
            (Role::Read, _) => needed == Role::Read,
        }
    }

    fn parse(word: &str) -> Option<Role> {
        Some(match word {
            "metrics" => Role::Metrics,
            "read" => Role::Read,
            "write" => Role::Write,
            "admin" => Role::Admin,
            _ => return None,
        })
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Metrics => "metrics",
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        })
    }
}

#[derive(Debug)]
enum Credential {
    Token([u8; 32]),
    Cert(String),
}

#[derive(Debug)]
struct Entry {
    credential: Credential,
    role: Role,
    name: String,
}

/// The parsed tokens file.
#[derive(Debug, Default)]
pub struct Tokens {
    entries: Vec<Entry>,
}

/// SHA-256 of a token.
fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The tokens-file form of a token's hash: `sha256:<hex>`.
pub fn hash_token(token: &str) -> String {
    let hex: String = digest(token).iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// A new random token (256 bits, hex).
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl Tokens {
    /// Parses a tokens file: one `sha256:<hex> <role> <name>` or `cert:<name> <role> <name>`
    /// per line; blank lines and `#` comments are skipped. Errors name the line.
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let mut entries = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |problem: &str| format!("line {}: {problem}", n + 1);
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [credential, role, name] = fields[..] else {
                return Err(at(
                    "expected three fields: `sha256:<hex> <role> <name>` or `cert:<certificate name> <role> <name>`",
                ));
            };
            let role = Role::parse(role).ok_or_else(|| {
                at(&format!(
                    "unknown role `{role}`; roles: read, write, admin, metrics"
                ))
            })?;
            let credential = if let Some(hex) = credential.strip_prefix("sha256:") {
                Credential::Token(
                    parse_hex(hex).ok_or_else(|| at("the hash must be 64 hex digits after `sha256:`"))?,
                )
            } else if let Some(cert) = credential.strip_prefix("cert:") {
                Credential::Cert(cert.to_ascii_lowercase())
            } else {
                return Err(at(
                    "the first field must start with `sha256:` or `cert:` (tokens are stored hashed; `openraft-memory token` prints the line)",
                ));
            };
            entries.push(Entry {
                credential,
                role,
                name: name.to_owned(),
            });
        }
        Ok(Tokens { entries })
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the file has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry of a bearer token. Every hash is compared, in constant time, so the time
    /// taken says nothing about which entry (if any) came close.
    fn by_token(&self, token: &str) -> Option<&Entry> {
        let presented = digest(token);
        let mut found = None;
        for entry in &self.entries {
            if let Credential::Token(hash) = &entry.credential
                && bool::from(hash.ct_eq(&presented))
            {
                found = Some(entry);
            }
        }
        found
    }

    fn by_cert(&self, cert: &CertInfo) -> Option<&Entry> {
        self.entries.iter().find(|e| match &e.credential {
            Credential::Cert(name) => {
                cert.names.contains(name)
                    || cert.common_name.as_deref().map(str::to_ascii_lowercase).as_ref() == Some(name)
            }
            Credential::Token(_) => false,
        })
    }
}

/// Who made a request, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's or certificate's name.
    pub name: String,
    /// What it may do.
    pub role: Role,
}

/// Why a request was not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No credential, or one that is not known (401 / UNAUTHENTICATED).
    #[error("{0}")]
    Unauthenticated(String),
    /// A known caller without the role (403 / PERMISSION_DENIED).
    #[error("`{name}` has role `{role}`; this needs `{needed}`")]
    Forbidden {
        /// The caller.
        name: String,
        /// Its role.
        role: Role,
        /// The role needed.
        needed: Role,
    },
}

/// What the node requires of callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// No authorization: every caller is admin.
    Open,
    /// A verified client certificate is required and makes its holder admin (no tokens file
    /// but `tls.client.ca` set, as etcd's `--client-cert-auth` without auth).
    AnyCertificate,
    /// The tokens file decides.
    Tokens,
}

/// Decides one request needing `needed` (`None`: anyone).
pub fn authorize(
    policy: Policy,
    tokens: Option<&Tokens>,
    bearer: Option<&str>,
    cert: Option<&CertInfo>,
    needed: Option<Role>,
) -> Result<Caller, Denied> {
    let anonymous = Caller {
        name: "anonymous".into(),
        role: Role::Admin,
    };
    let Some(needed) = needed else {
        return Ok(anonymous);
    };
    let caller = match policy {
        Policy::Open => return Ok(anonymous),
        Policy::AnyCertificate => match cert {
            Some(cert) => Caller {
                name: cert.identity(),
                role: Role::Admin,
            },
            None => {
                return Err(Denied::Unauthenticated(
                    "this node requires a client certificate from its CA".into(),
                ));
            }
        },
        Policy::Tokens => {
            let tokens = tokens.ok_or_else(|| Denied::Unauthenticated("no tokens are loaded".into()))?;
            let entry = match (bearer, cert) {
                (Some(token), _) => tokens.by_token(token).ok_or_else(|| {
                    Denied::Unauthenticated("the bearer token is not known (revoked, or mistyped)".into())
                })?,
                (None, Some(cert)) => tokens.by_cert(cert).ok_or_else(|| {
                    Denied::Unauthenticated(format!(
                        "the client certificate `{}` is mapped to no role; send a bearer token",
                        cert.identity()
                    ))
                })?,
                (None, None) => {
                    return Err(Denied::Unauthenticated(
                        "a bearer token is required: send `Authorization: Bearer <token>`".into(),
                    ));
                }
            };
            Caller {
                name: entry.name.clone(),
                role: entry.role,
            }
        }
    };
    if caller.role.allows(needed) {
        Ok(caller)
    } else {
        Err(Denied::Forbidden {
            name: caller.name,
            role: caller.role,
            needed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        let text = format!(
            "# comment\n\n{} read reader\n{} write writer\n{} admin root\ncert:ops.example admin ops\n",
            hash_token("r"),
            hash_token("w"),
            hash_token("a")
        );
        Tokens::parse(&text).expect("valid")
    }

    #[test]
    fn roles_are_ordered_and_metrics_stands_apart() {
        assert!(Role::Admin.allows(Role::Metrics));
        assert!(Role::Write.allows(Role::Read));
        assert!(!Role::Write.allows(Role::Admin));
        assert!(!Role::Read.allows(Role::Write));
        assert!(!Role::Read.allows(Role::Metrics));
        assert!(!Role::Metrics.allows(Role::Read));
    }

    #[test]
    fn tokens_decide_by_role() {
        let t = tokens();
        let auth = |bearer, needed| authorize(Policy::Tokens, Some(&t), bearer, None, Some(needed));
        assert_eq!(auth(Some("w"), Role::Write).map(|c| c.name), Ok("writer".into()));
        assert!(matches!(
            auth(Some("r"), Role::Write),
            Err(Denied::Forbidden { .. })
        ));
        assert!(matches!(
            auth(Some("w"), Role::Admin),
            Err(Denied::Forbidden { .. })
        ));
        assert!(auth(Some("a"), Role::Admin).is_ok());
        assert!(matches!(
            auth(Some("nope"), Role::Read),
            Err(Denied::Unauthenticated(_))
        ));
        assert!(matches!(auth(None, Role::Read), Err(Denied::Unauthenticated(_))));
        assert!(
            authorize(Policy::Tokens, Some(&t), None, None, None).is_ok(),
            "anonymous routes"
        );
    }

    #[test]
    fn a_certificate_can_stand_for_a_token() {
        let t = tokens();
        let cert = CertInfo {
            names: vec!["ops.example".into()],
            common_name: None,
            serial: "1".into(),
            not_after: 0,
        };
        let caller = authorize(Policy::Tokens, Some(&t), None, Some(&cert), Some(Role::Admin));
        assert_eq!(caller.map(|c| c.name), Ok("ops".into()));
        let any = authorize(Policy::AnyCertificate, None, None, Some(&cert), Some(Role::Admin));
        assert!(any.is_ok());
        assert!(authorize(Policy::AnyCertificate, None, None, None, Some(Role::Read)).is_err());
    }

    #[test]
    fn bad_lines_are_named() {
        let err = Tokens::parse("sha256:abc read x").expect_err("short hash");
        assert!(err.starts_with("line 1:"), "{err}");
        let err = Tokens::parse(&format!("\n{} root x", hash_token("t"))).expect_err("role");
        assert!(err.contains("line 2") && err.contains("unknown role"), "{err}");
        let err = Tokens::parse("plaintext admin x").expect_err("unhashed");
        assert!(err.contains("sha256:"), "{err}");
        assert!(Tokens::parse("a b").is_err());
    }
}
