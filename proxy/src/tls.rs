//! Listener certificates that can be replaced without a restart (cert-manager rotations).
//!
//! The certificate is chosen per handshake from a lock-free snapshot; a background watcher
//! reloads it when the files change or on SIGHUP. A reload that fails (half-written file,
//! key not matching) keeps the previous certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::tls::ext::{ssl_add_chain_cert, ssl_use_certificate, ssl_use_private_key};
use pingora::tls::pkey::{PKey, Private};
use pingora::tls::x509::X509;

/// How often the files are checked for a change.
const WATCH_INTERVAL: Duration = Duration::from_secs(5);

struct Identity {
    chain: Vec<X509>,
    key: PKey<Private>,
    modified: (Option<SystemTime>, Option<SystemTime>),
}

pub struct CertStore {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: ArcSwap<Identity>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn load(cert_path: &Path, key_path: &Path) -> Result<Identity, String> {
    let modified = (modified(cert_path), modified(key_path));
    let cert_pem = std::fs::read(cert_path).map_err(|e| format!("{}: {e}", cert_path.display()))?;
    let key_pem = std::fs::read(key_path).map_err(|e| format!("{}: {e}", key_path.display()))?;
    let chain = X509::stack_from_pem(&cert_pem)
        .map_err(|e| format!("{}: not a PEM certificate chain: {e}", cert_path.display()))?;
    let key = PKey::private_key_from_pem(&key_pem)
        .map_err(|e| format!("{}: not a PEM private key: {e}", key_path.display()))?;
    let leaf = chain
        .first()
        .ok_or_else(|| format!("{}: no certificate", cert_path.display()))?;
    let matches = leaf
        .public_key()
        .map(|public| public.public_eq(&key))
        .unwrap_or(false);
    if !matches {
        return Err(format!(
            "{} does not match the certificate in {}",
            key_path.display(),
            cert_path.display()
        ));
    }
    Ok(Identity {
        chain,
        key,
        modified,
    })
}

impl CertStore {
    pub fn open(cert_path: &Path, key_path: &Path) -> Result<CertStore, String> {
        let identity = load(cert_path, key_path)?;
        Ok(CertStore {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current: ArcSwap::from_pointee(identity),
        })
    }

    /// Reloads when either file changed (or always, when `force`); keeps the old pair on error.
    fn reload(&self, force: bool) {
        let seen = self.current.load().modified;
        let now = (modified(&self.cert_path), modified(&self.key_path));
        if !force && seen == now {
            return;
        }
        match load(&self.cert_path, &self.key_path) {
            Ok(identity) => {
                self.current.store(Arc::new(identity));
                tracing::info!(cert = %self.cert_path.display(), "listener certificate reloaded");
            }
            Err(error) => {
                tracing::warn!(%error, "listener certificate reload failed; keeping the current one")
            }
        }
    }
}

/// Hands the current certificate to each TLS handshake.
pub struct CertResolver(pub Arc<CertStore>);

#[async_trait]
impl TlsAccept for CertResolver {
    async fn certificate_callback(&self, ssl: &mut TlsRef) {
        let identity = self.0.current.load();
        let Some((leaf, intermediates)) = identity.chain.split_first() else {
            return;
        };
        let installed = ssl_use_certificate(ssl, leaf)
            .and_then(|()| ssl_use_private_key(ssl, &identity.key))
            .and_then(|()| {
                intermediates
                    .iter()
                    .try_for_each(|cert| ssl_add_chain_cert(ssl, cert))
            });
        if let Err(error) = installed {
            tracing::error!(%error, "could not install the listener certificate");
        }
    }
}

/// Polls the certificate files and listens for SIGHUP. It runs even without TLS listeners, so
/// that a SIGHUP (sent by habit, or by a service manager's reload) never kills the process.
pub struct CertWatcher(pub Option<Arc<CertStore>>);

#[async_trait]
impl BackgroundService for CertWatcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(signal) => Some(signal),
            Err(error) => {
                tracing::warn!(%error, "SIGHUP handler not installed; file polling only");
                None
            }
        };
        loop {
            let hangup_received = async {
                match hangup.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(WATCH_INTERVAL) => {
                    if let Some(store) = &self.0 {
                        store.reload(false);
                    }
                }
                _ = hangup_received => match &self.0 {
                    Some(store) => store.reload(true),
                    None => tracing::info!("SIGHUP received: no TLS listener, nothing to reload"),
                },
                _ = shutdown.changed() => return,
            }
        }
    }
}
