//! Per-client abuse limits on Entra's authorize requests (README "Abuse limits"): this module
//! only counts; `filters` refuses, from the standing counted here (`Progress::over_limit`,
//! `Progress::fetch_refused`).
//!
//! Counts live in this process: with N replicas and no sticky balancing, a client spread over
//! them gets up to N times each limit through.

use std::net::IpAddr;
use std::time::Duration;

use filters::{Exceeded, Limit, Summary};
use pingora_limits::rate::{Rate, RateComponents};

/// Rows and columns of each count-min sketch. Its hashes are seeded per process, so a client
/// cannot choose addresses that collide with another's; with fewer than a few thousand
/// active clients per window, over-counting through collisions is negligible.
const HASHES: usize = 4;
const SLOTS: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitSettings {
    pub window: Duration,
    pub failed_validations: u32,
    pub key_refetches: u32,
    pub ipv6_prefix: u8,
    pub exempt: Vec<ipnet::IpNet>,
}

/// Which client a request is counted against: its address, an IPv6 one cut to its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(IpAddr);

pub struct Limits {
    settings: LimitSettings,
    failures: Rate,
    refetches: Rate,
}

impl Limits {
    pub fn new(settings: LimitSettings) -> Limits {
        Limits {
            failures: Rate::new_with_estimator_config(settings.window, HASHES, SLOTS),
            refetches: Rate::new_with_estimator_config(settings.window, HASHES, SLOTS),
            settings,
        }
    }

    /// The key of a client, `None` when it is exempt (or has no IP address: a Unix socket).
    pub fn key(&self, client: Option<IpAddr>) -> Option<ClientKey> {
        let ip = client?.to_canonical();
        if crate::forwarded::in_networks(&self.settings.exempt, &ip) {
            return None;
        }
        Some(ClientKey(match ip {
            IpAddr::V6(v6) => ipnet::Ipv6Net::new(v6, self.settings.ipv6_prefix)
                .map_or(ip, |net| IpAddr::V6(net.network())),
            v4 => v4,
        }))
    }

    /// The client reached its failed-validation limit in the current window.
    pub fn failures_exceeded(&self, key: ClientKey) -> Option<Exceeded> {
        let limit = self.settings.failed_validations;
        exceeded(&self.failures, key, limit, Limit::FailedValidations)
    }

    /// Whether the client may set off one more key fetch; if so, it is counted.
    pub fn take_refetch(&self, key: ClientKey) -> Result<(), Exceeded> {
        let limit = self.settings.key_refetches;
        match exceeded(&self.refetches, key, limit, Limit::KeyRefetches) {
            Some(exceeded) => Err(exceeded),
            None => {
                self.refetches.observe(&key, 1);
                Ok(())
            }
        }
    }

    /// Counts a ruled request against its client when the ruling says it should.
    pub fn settle(&self, key: ClientKey, summary: &Summary) {
        if summary.counts_as_failure() {
            self.failures.observe(&key, 1);
        }
    }
}

/// Fixed windows: only the current one's count is held to the limit, so `Retry-After` (the
/// time left in it) is exact and a client that stops is served as soon as it ends.
fn exceeded(rate: &Rate, key: ClientKey, limit: u32, which: Limit) -> Option<Exceeded> {
    rate.rate_with(&key, |c: RateComponents| {
        (c.curr_samples >= limit as isize).then(|| {
            let left = c.interval.as_secs_f64() * (1.0 - c.current_interval_fraction);
            Exceeded {
                limit: which,
                retry_after: (left.ceil() as u64).max(1),
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use filters::{AuthorizeError, Outcome};

    fn limits(failed_validations: u32, key_refetches: u32) -> Limits {
        Limits::new(LimitSettings {
            window: Duration::from_secs(60),
            failed_validations,
            key_refetches,
            ipv6_prefix: 64,
            exempt: vec!["10.1.0.0/16".parse().unwrap()],
        })
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    fn refused(error: AuthorizeError) -> Summary {
        Summary {
            outcome: Outcome::Rejected,
            error: Some(error),
            entra: true,
            ..Summary::default()
        }
    }

    #[test]
    fn ipv6_clients_are_counted_by_prefix_and_exempt_ones_not_at_all() {
        let l = limits(1, 1);
        assert_eq!(
            l.key(ip("2001:db8:1:2::1")),
            l.key(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(l.key(ip("2001:db8:1:2::1")), l.key(ip("2001:db8:1:3::1")));
        assert_ne!(l.key(ip("192.0.2.1")), l.key(ip("192.0.2.2")));
        // An IPv4 client on a dual-stack socket is the same client.
        assert_eq!(l.key(ip("::ffff:192.0.2.1")), l.key(ip("192.0.2.1")));
        assert_eq!(l.key(ip("10.1.200.3")), None);
        assert_eq!(l.key(ip("::ffff:10.1.0.1")), None);
        assert_eq!(l.key(None), None);
    }

    #[test]
    fn failures_reach_the_limit_and_only_failures_count() {
        let l = limits(2, 1);
        let (a, b) = (
            l.key(ip("192.0.2.1")).unwrap(),
            l.key(ip("192.0.2.2")).unwrap(),
        );
        for uncounted in [
            refused(AuthorizeError::KeysUnavailable),
            refused(AuthorizeError::RateLimited(Limit::FailedValidations)),
            Summary::default(),
        ] {
            l.settle(a, &uncounted);
        }
        assert_eq!(l.failures_exceeded(a), None);
        l.settle(a, &refused(AuthorizeError::BadSignature));
        assert_eq!(l.failures_exceeded(a), None);
        l.settle(a, &refused(AuthorizeError::Expired));
        let exceeded = l.failures_exceeded(a).unwrap();
        assert_eq!(exceeded.limit, Limit::FailedValidations);
        assert!((1..=60).contains(&exceeded.retry_after), "{exceeded:?}");
        assert_eq!(l.failures_exceeded(b), None);
    }

    #[test]
    fn refetches_are_taken_until_the_limit() {
        let l = limits(1, 2);
        let a = l.key(ip("192.0.2.1")).unwrap();
        assert_eq!(l.take_refetch(a), Ok(()));
        assert_eq!(l.take_refetch(a), Ok(()));
        let refused = l.take_refetch(a).unwrap_err();
        assert_eq!(refused.limit, Limit::KeyRefetches);
        // A refused fetch is not counted: the count stays at the limit.
        assert!(l.take_refetch(a).is_err());
        assert_eq!(l.failures_exceeded(a), None);
    }

    #[test]
    fn a_client_is_served_again_once_the_window_ends() {
        let l = Limits::new(LimitSettings {
            window: Duration::from_secs(1),
            ..limits(1, 1).settings
        });
        let a = l.key(ip("192.0.2.1")).unwrap();
        l.settle(a, &refused(AuthorizeError::BadSignature));
        assert_eq!(l.failures_exceeded(a).map(|e| e.retry_after), Some(1));
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(l.failures_exceeded(a), None);
    }
}
