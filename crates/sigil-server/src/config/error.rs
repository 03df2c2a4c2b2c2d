//! `ConfigError`: what is wrong with a config, which key, and where in which file.

use std::fmt;
use std::path::{Path, PathBuf};

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

    pub(crate) fn new(kind: ConfigErrorKind) -> Self {
        Self {
            file: None,
            position: None,
            kind,
        }
    }

    pub(crate) fn invalid(key: impl Into<String>, reason: impl fmt::Display) -> Self {
        Self::new(ConfigErrorKind::Invalid {
            key: key.into(),
            reason: reason.to_string(),
        })
    }

    pub(crate) fn at_position(mut self, position: Option<(usize, usize)>) -> Self {
        self.position = position;
        self
    }

    pub(crate) fn in_file(mut self, file: &Path) -> Self {
        self.file = Some(file.to_owned());
        self
    }
}

/// How [`ConfigErrorKind::UnknownKey`] names the root table.
pub(crate) const TOP_LEVEL: &str = "the top level";

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
