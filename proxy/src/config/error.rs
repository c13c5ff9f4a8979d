//! What can be wrong with a configuration: while it is read and checked (`ConfigError`, which
//! `--check` prints), and while it is turned into the server's parts (`PlanError`).

use std::fmt;
use std::path::PathBuf;

use pingora::tls::error::ErrorStack;

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

/// A valid configuration whose parts cannot be built: files and names are only read when the
/// server is assembled, and may have changed since the check.
#[derive(Debug)]
pub enum PlanError {
    /// `upstream.ca_file` gives no trust anchors.
    CaFile { file: PathBuf, problem: CaProblem },
    /// An `upstream.addresses` name did not resolve.
    Resolve(std::io::Error),
    /// `upstream.health_check_path` is not a request target.
    HealthCheckPath(http::uri::InvalidUri),
}

#[derive(Debug)]
pub enum CaProblem {
    Read(std::io::Error),
    Pem(ErrorStack),
    NoCertificate,
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanError::CaFile { file, problem } => write!(f, "{}: {problem}", file.display()),
            PlanError::Resolve(e) => e.fmt(f),
            PlanError::HealthCheckPath(e) => e.fmt(f),
        }
    }
}

impl fmt::Display for CaProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaProblem::Read(e) => e.fmt(f),
            CaProblem::Pem(e) => e.fmt(f),
            CaProblem::NoCertificate => f.write_str("no certificate"),
        }
    }
}

impl std::error::Error for PlanError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PlanError::CaFile {
                problem: CaProblem::Read(e),
                ..
            } => Some(e),
            PlanError::CaFile {
                problem: CaProblem::Pem(e),
                ..
            } => Some(e),
            PlanError::CaFile { .. } => None,
            PlanError::Resolve(e) => Some(e),
            PlanError::HealthCheckPath(e) => Some(e),
        }
    }
}
