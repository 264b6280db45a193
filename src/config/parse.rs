//! How setting values are read from text, with errors that show what a valid value looks
//! like. (The `config` crate's own messages for enums, durations and addresses name Rust
//! types, such as "enum StorageMode does not have variant constructor bogus".)

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, de::Error};

/// A setting written as one of a fixed set of lowercase words.
pub trait Choice: Sized + Copy + 'static {
    /// The words and their values.
    const CHOICES: &'static [(&'static str, Self)];
}

/// Reads a [`Choice`], naming the allowed words when the value is none of them.
pub fn choice<'de, D: Deserializer<'de>, T: Choice>(d: D) -> Result<T, D::Error> {
    let raw = String::deserialize(d)?;
    let word = raw.trim().to_ascii_lowercase();
    T::CHOICES
        .iter()
        .find(|(name, _)| *name == word)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let allowed: Vec<String> = T::CHOICES.iter().map(|(n, _)| format!("`{n}`")).collect();
            D::Error::custom(format!("`{raw}` is not one of {}", allowed.join(", ")))
        })
}

/// Reads a duration with a unit (`5s`, `250ms`, `1m`, `1h30m`).
pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let raw = String::deserialize(d)?;
    humantime::parse_duration(raw.trim()).map_err(|e| {
        D::Error::custom(format!(
            "`{raw}` is not a duration ({e}); write a number with a unit, e.g. `5s`, `250ms`, `1m`"
        ))
    })
}

fn parse_addr(raw: &str) -> Result<SocketAddr, String> {
    raw.trim().parse().map_err(|_| {
        format!(
            "`{raw}` is not an IP:port address; use an IP address, e.g. `127.0.0.1:8080` or `0.0.0.0:8080` \
             (listen addresses are not resolved: write `127.0.0.1`, not `localhost`)"
        )
    })
}

/// Reads a listen address (`IP:port`).
pub fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let raw = String::deserialize(d)?;
    parse_addr(&raw).map_err(D::Error::custom)
}

/// Reads an optional `IP:port`; empty means none.
pub fn optional_socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let raw = String::deserialize(d)?;
    if raw.trim().is_empty() {
        return Ok(None);
    }
    parse_addr(&raw).map(Some).map_err(D::Error::custom)
}

/// Every dotted leaf key the defaults define (`tls.peer.cert`): what the environment may set.
pub fn known_keys(defaults: &config::Map<String, config::Value>) -> Vec<String> {
    fn walk(prefix: &str, table: &config::Map<String, config::Value>, keys: &mut Vec<String>) {
        for (name, value) in table {
            let key = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            match value.clone().into_table() {
                Ok(inner) => walk(&key, &inner, keys),
                Err(_) => keys.push(key),
            }
        }
    }
    let mut keys = Vec::new();
    walk("", defaults, &mut keys);
    keys.sort();
    keys
}

/// What is wrong with the environment: an error for a variable of ours that names no
/// setting, and warnings for names that look like ours but will be ignored.
pub fn check_env<'a>(
    vars: impl Iterator<Item = &'a String>,
    known: &[String],
) -> Result<Vec<String>, String> {
    let mut warnings = Vec::new();
    let mut vars: Vec<&String> = vars.collect();
    vars.sort();
    for var in vars {
        if let Some(rest) = var.strip_prefix("OPENRAFT_MEMORY__") {
            let key = rest.to_ascii_lowercase().replace("__", ".");
            if !known.contains(&key) {
                let section = key.split('.').next().unwrap_or_default();
                let siblings: Vec<&str> = known
                    .iter()
                    .filter_map(|k| k.strip_prefix(&format!("{section}.")))
                    .collect();
                let hint = if siblings.is_empty() {
                    let sections: std::collections::BTreeSet<&str> =
                        known.iter().filter_map(|k| k.split('.').next()).collect();
                    format!(
                        "there is no section `{section}` (sections: {})",
                        sections.into_iter().collect::<Vec<_>>().join(", ")
                    )
                } else {
                    format!("settings in `{section}`: {}", siblings.join(", "))
                };
                return Err(format!(
                    "environment variable `{var}` names no setting (`{key}`); {hint}"
                ));
            }
        } else if var.starts_with("OPENRAFT_MEMORY_") {
            warnings.push(format!(
                "ignoring environment variable `{var}`: settings are OPENRAFT_MEMORY__SECTION__KEY, with double underscores"
            ));
        }
    }
    Ok(warnings)
}
