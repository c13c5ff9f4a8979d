//! `[upstream]` as Pingora's parts: the load balancer over its addresses, with the health check
//! and the TLS trust that every connection to the OP shares.

use std::sync::Arc;
use std::time::Duration;

use pingora::lb::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora::lb::selection::RoundRobin;
use pingora::lb::LoadBalancer;
use pingora::protocols::tls::CaType;
use pingora::tls::x509::X509;

use super::error::{CaProblem, PlanError};
use super::schema::Upstream;
use crate::upstream_client::{self, UpstreamSettings};

pub struct UpstreamPlan {
    pub addresses: Vec<String>,
    /// Resolved instances, their health check and its interval: a background service's task.
    pub balancer: LoadBalancer<RoundRobin>,
    pub settings: UpstreamSettings,
}

pub(super) fn plan(upstream: &Upstream) -> Result<UpstreamPlan, PlanError> {
    let mut balancer = LoadBalancer::try_from_iter(upstream.addresses.iter().map(String::as_str))
        .map_err(PlanError::Resolve)?;
    let sni = upstream.sni.clone().unwrap_or_default();
    let ca = upstream
        .ca_file
        .as_deref()
        .map(load_ca)
        .transpose()?
        .map(Arc::new);
    balancer.set_health_check(health_check(upstream, &sni, ca.clone())?);
    balancer.health_check_frequency =
        Some(Duration::from_millis(upstream.health_check_interval_ms));
    Ok(UpstreamPlan {
        addresses: upstream.addresses.clone(),
        balancer,
        settings: UpstreamSettings {
            tls: upstream.tls,
            sni,
            verify: upstream.verify,
            ca,
            host_header: upstream.host_header.clone(),
            connect_timeout: Duration::from_millis(upstream.connect_timeout_ms),
            read_timeout: Duration::from_millis(upstream.read_timeout_ms),
            send_timeout: Duration::from_millis(upstream.send_timeout_ms),
            stream_idle_timeout: Duration::from_millis(upstream.stream_idle_timeout_ms),
        },
    })
}

/// The certificates of `upstream.ca_file` (PEM, one or more).
fn load_ca(path: &std::path::Path) -> Result<CaType, PlanError> {
    let problem = |problem| PlanError::CaFile {
        file: path.to_path_buf(),
        problem,
    };
    let pem = std::fs::read(path).map_err(|e| problem(CaProblem::Read(e)))?;
    let certs = X509::stack_from_pem(&pem).map_err(|e| problem(CaProblem::Pem(e)))?;
    if certs.is_empty() {
        return Err(problem(CaProblem::NoCertificate));
    }
    Ok(certs.into_boxed_slice())
}

/// TCP (TLS) connect, or an HTTP GET of `health_check_path` that must answer 2xx.
fn health_check(
    upstream: &Upstream,
    sni: &str,
    ca: Option<Arc<CaType>>,
) -> Result<Box<dyn HealthCheck + Send + Sync>, PlanError> {
    if upstream.health_check_path.is_empty() {
        let mut check = if upstream.tls {
            TcpHealthCheck::new_tls(sni)
        } else {
            TcpHealthCheck::new()
        };
        upstream_client::trust(&mut check.peer_template.options, upstream.verify, ca);
        return Ok(check);
    }
    let host = upstream
        .host_header
        .clone()
        .or_else(|| upstream.sni.clone())
        .unwrap_or_else(|| "localhost".into());
    let mut check = HttpHealthCheck::new(&host, upstream.tls);
    let target = upstream
        .health_check_path
        .parse()
        .map_err(PlanError::HealthCheckPath)?;
    check.req.set_uri(target);
    if upstream.tls {
        check.peer_template.sni = sni.to_string();
    }
    upstream_client::trust(&mut check.peer_template.options, upstream.verify, ca);
    check.validator = Some(Box::new(|response| {
        if response.status.is_success() {
            Ok(())
        } else {
            Err(pingora::Error::explain(
                pingora::ErrorType::InternalError,
                format!("health check answered {}", response.status),
            ))
        }
    }));
    Ok(Box::new(check))
}

/// `Host` of the proxy's own discovery read: the name the OP is known by, when one is
/// configured, since the OP may build its endpoint URLs from it.
pub(super) fn discovery_host(upstream: &Upstream) -> String {
    upstream
        .host_header
        .clone()
        .or_else(|| upstream.sni.clone())
        .or_else(|| upstream.addresses.first().cloned())
        .unwrap_or_else(|| "localhost".into())
}
