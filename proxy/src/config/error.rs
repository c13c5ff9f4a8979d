//! What can be wrong with a configuration while it is read and checked: what `--check` prints.

use std::fmt;
use std::path::PathBuf;

/// Every variant but `Read` and `Syntax` names the key path (`apps[1].cloud`, `server.bogus`),
/// so that an operator knows exactly what to fix.
#[derive(Debug)]
pub enum ConfigError {
    /// The file cannot be read.
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    /// The text is not TOML.
    Syntax(toml::de::Error),
    /// A key is unknown, or its value has the wrong type (serde's reason). The key is empty
    /// when serde names none.
    Schema { key: String, reason: String },
    /// A value breaks one of the configuration's rules.
    Invalid { key: String, reason: String },
}

impl ConfigError {
    pub(crate) fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// The key path the error is about; empty when it is about the whole file.
    pub fn key(&self) -> &str {
        match self {
            ConfigError::Read { .. } | ConfigError::Syntax(_) => "",
            ConfigError::Schema { key, .. } | ConfigError::Invalid { key, .. } => key,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { file, source } => {
                write!(f, "cannot read {}: {source}", file.display())
            }
            ConfigError::Syntax(e) => e.fmt(f),
            ConfigError::Schema { key, reason } if key.is_empty() => f.write_str(reason),
            ConfigError::Schema { key, reason } | ConfigError::Invalid { key, reason } => {
                write!(f, "{key}: {reason}")
            }
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Read { source, .. } => Some(source),
            ConfigError::Syntax(e) => Some(e),
            ConfigError::Schema { .. } | ConfigError::Invalid { .. } => None,
        }
    }
}
