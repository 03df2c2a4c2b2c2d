//! What the server's and the agent's config loaders share: `ConfigError` (what is wrong,
//! which key, where in which file), TOML parsing that tracks key paths and positions, and the
//! checks of common value kinds (durations, addresses, paths).
//!
//! Parsing text is not I/O; [`read_config_file`] is the one function here that reads a file.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::parse_duration;

/// A config that cannot be used. `Display` reads `FILE:LINE:COLUMN: PROBLEM`, with the line
/// and column of the offending key or value when it is written in the file (a refused
/// default has none), and the problem names the key.
#[derive(Debug)]
pub struct ConfigError {
    file: Option<PathBuf>,
    position: Option<(usize, usize)>,
    kind: ConfigErrorKind,
}

/// The problem itself, without the file and position.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ConfigErrorKind {
    /// The file could not be read.
    #[error("cannot read the config file: {0}")]
    Read(std::io::Error),
    /// Not TOML at all.
    #[error("invalid TOML: {0}")]
    Syntax(String),
    /// A key that no version of the config knows at this place.
    #[error("unknown key {key:?} at {at}; {expected}")]
    UnknownKey {
        /// The key as written.
        key: String,
        /// The table holding it (`svid`, `the top level`).
        at: String,
        /// The keys allowed there.
        expected: String,
    },
    /// A required key is absent.
    #[error("missing required key {0:?}")]
    MissingKey(String),
    /// A value that is present but wrong; `reason` says why.
    #[error("{key}: {reason}")]
    Invalid {
        /// The key path, e.g. `ca.ttl` or `federation.federates_with[0].url`.
        key: String,
        /// Why the value was refused.
        reason: String,
    },
}

impl ConfigError {
    /// The problem, without the file and position.
    pub fn kind(&self) -> &ConfigErrorKind {
        &self.kind
    }

    /// The key path the error is about, when it is about one key.
    pub fn key(&self) -> Option<String> {
        match &self.kind {
            ConfigErrorKind::UnknownKey { key, at, .. } if at == TOP_LEVEL => Some(key.clone()),
            ConfigErrorKind::UnknownKey { key, at, .. } => Some(format!("{at}.{key}")),
            ConfigErrorKind::MissingKey(key) | ConfigErrorKind::Invalid { key, .. } => {
                Some(key.clone())
            }
            ConfigErrorKind::Read(_) | ConfigErrorKind::Syntax(_) => None,
        }
    }

    /// The file the config came from, if it came from one.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The 1-based line and column of the offending key or value, when it is in the file.
    pub fn position(&self) -> Option<(usize, usize)> {
        self.position
    }

    /// An error of this kind, not yet placed in a file.
    pub fn new(kind: ConfigErrorKind) -> Self {
        Self {
            file: None,
            position: None,
            kind,
        }
    }

    /// A refused value of `key`, with the reason.
    pub fn invalid(key: impl Into<String>, reason: impl fmt::Display) -> Self {
        Self::new(ConfigErrorKind::Invalid {
            key: key.into(),
            reason: reason.to_string(),
        })
    }

    /// Points the error at a 1-based line and column.
    pub fn at_position(mut self, position: Option<(usize, usize)>) -> Self {
        self.position = position;
        self
    }

    /// Names the file the config came from.
    pub fn in_file(mut self, file: &Path) -> Self {
        self.file = Some(file.to_owned());
        self
    }
}

/// How [`ConfigErrorKind::UnknownKey`] names the root table.
pub const TOP_LEVEL: &str = "the top level";

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.position) {
            (Some(file), Some((line, column))) => {
                write!(f, "{}:{line}:{column}: ", file.display())?
            }
            (Some(file), None) => write!(f, "{}: ", file.display())?,
            (None, Some((line, column))) => write!(f, "line {line}, column {column}: ")?,
            (None, None) => {}
        }
        write!(f, "{}", self.kind)
    }
}

// The kind is already in `Display`, so it is not also offered as `source()` (style.md).
impl std::error::Error for ConfigError {}

/// Reads a config file; relative paths in it are relative to the directory holding it, which
/// is returned (absolute) beside the text.
pub fn read_config_file(path: &Path) -> Result<(String, PathBuf), ConfigError> {
    // `absolute` is lexical: it does not touch the filesystem.
    let file = std::path::absolute(path)
        .map_err(|e| ConfigError::new(ConfigErrorKind::Read(e)).in_file(path))?;
    let text = std::fs::read_to_string(&file)
        .map_err(|e| ConfigError::new(ConfigErrorKind::Read(e)).in_file(path))?;
    let base_dir = file.parent().unwrap_or(Path::new("/")).to_owned();
    Ok((text, base_dir))
}

/// Parses TOML text into a raw config struct; errors name the key path and carry the line and
/// column.
pub fn parse_toml<T: DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    let deserializer = toml::Deserializer::parse(text).map_err(|e| {
        ConfigError::new(ConfigErrorKind::Syntax(one_line(e.message())))
            .at_position(e.span().map(|s| line_column(text, s.start)))
    })?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let e = e.into_inner();
        let position = e.span().map(|s| line_column(text, s.start));
        serde_error(&path, e.message()).at_position(position)
    })
}

/// Points an error found by the checks at its key in the file, when the key is written there
/// (a refused default has no position).
pub fn place(text: &str, error: ConfigError) -> ConfigError {
    let position = error.key().and_then(|key| locate(text, &key));
    error.at_position(position)
}

/// Turns serde's fixed messages for unknown and missing fields into our wording, which names
/// the whole key path (`path` is where the deserializer stood: `.` for the root).
fn serde_error(path: &str, message: &str) -> ConfigError {
    let message = one_line(message);
    let at = if path == "." { None } else { Some(path) };
    let join = |key: &str| match at {
        Some(at) => format!("{at}.{key}"),
        None => key.to_owned(),
    };
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((key, expected)) = rest.split_once("`, ")
    {
        // serde_path_to_error includes the unknown key in the path; the table is its parent.
        let table = at
            .and_then(|p| p.strip_suffix(key))
            .map(|p| p.trim_end_matches('.'))
            .filter(|p| !p.is_empty());
        return ConfigError::new(ConfigErrorKind::UnknownKey {
            key: key.to_owned(),
            at: table.unwrap_or(TOP_LEVEL).to_owned(),
            expected: expected.replace('`', ""),
        });
    }
    if let Some(rest) = message.strip_prefix("missing field `")
        && let Some(key) = rest.strip_suffix('`')
    {
        return ConfigError::new(ConfigErrorKind::MissingKey(join(key)));
    }
    match at {
        Some(key) => ConfigError::invalid(key, message),
        None => ConfigError::invalid("(top level)", message),
    }
}

/// A duration in the command-line syntax (`30s`, `5m`, `1h`) that must not be zero.
pub fn positive_duration(key: &str, text: &str) -> Result<Duration, ConfigError> {
    let duration = parse_duration(text).map_err(|e| ConfigError::invalid(key, e))?;
    if duration.is_zero() {
        return Err(ConfigError::invalid(
            key,
            format!("{text:?} is zero; it must be positive"),
        ));
    }
    Ok(duration)
}

/// An `IP:PORT` address.
pub fn socket_addr(key: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|_| {
        ConfigError::invalid(
            key,
            format!("invalid address {text:?}: write IP:PORT, such as 0.0.0.0:8081 or [::1]:8081"),
        )
    })
}

/// A `HOST:PORT` address (a name or an IP, IPv6 in brackets), kept as written: names are
/// resolved where it is used.
pub fn host_port(key: &str, text: &str) -> Result<String, ConfigError> {
    let bad = || {
        ConfigError::invalid(
            key,
            format!("invalid address {text:?}: write HOST:PORT, such as 127.0.0.1:8081"),
        )
    };
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || host.contains(['/', ' ', '@']) || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok(text.to_owned())
}

/// A path, made absolute against `base_dir` (the config file's directory) when relative.
pub fn resolve_path(key: &str, text: &str, base_dir: &Path) -> Result<PathBuf, ConfigError> {
    if text.is_empty() {
        return Err(ConfigError::invalid(key, "path is empty"));
    }
    // `join` keeps an absolute `text` as it is.
    Ok(base_dir.join(text))
}

/// `invalid value "...": reason`.
pub fn quoted(value: &str, error: impl fmt::Display) -> String {
    format!("invalid value {value:?}: {error}")
}

fn one_line(message: &str) -> String {
    message.trim().replace('\n', "; ")
}

/// The position of the value of `key` (`ca.ttl`, `federation.federates_with[0].url`) in the
/// TOML text, if it is written there.
pub fn locate(text: &str, key: &str) -> Option<(usize, usize)> {
    use toml::de::{DeTable, DeValue};

    let document = DeTable::parse(text).ok()?;
    let mut table = document.get_ref();
    let mut parts = key.split('.').peekable();
    while let Some(part) = parts.next() {
        let (name, index) = match part.split_once('[') {
            Some((name, index)) => (name, Some(index.strip_suffix(']')?.parse::<usize>().ok()?)),
            None => (part, None),
        };
        let mut value = table.get(name)?;
        if let Some(index) = index {
            let DeValue::Array(array) = value.get_ref() else {
                return None;
            };
            value = array.get(index)?;
        }
        if parts.peek().is_none() {
            return Some(line_column(text, value.span().start));
        }
        let DeValue::Table(inner) = value.get_ref() else {
            return None;
        };
        table = inner;
    }
    None
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_counted_in_characters() {
        assert_eq!(line_column("ab\ncdé\nf", 0), (1, 1));
        assert_eq!(line_column("ab\ncdé\nf", 3), (2, 1));
        assert_eq!(line_column("ab\ncdé\nf", 8), (3, 1));
        assert_eq!(line_column("ab\ncdé\nf", 99), (3, 2));
    }
}
