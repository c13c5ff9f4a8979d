//! Prometheus metrics (README "Operations"). Every label value comes from a closed set: routes, outcomes,
//! the typed error reasons, response classes and configured cloud names; never request data.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use filters::{AuthorizeError, Outcome, Scope, Violation};

/// A label enum: each variant's label is written once, and `ALL` pre-creates every series.
macro_rules! labels {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $label:literal),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($variant),*
        }

        impl $name {
            // Not every set is pre-created whole (a guard result goes with its own reasons).
            #[allow(dead_code)]
            pub const ALL: &[$name] = &[$($name::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $label),*
                }
            }
        }
    };
}

labels! {
    /// Where a request went: the authorize decision, or straight through.
    Route { Authorize = "authorize", Other = "other" }
}

labels! {
    /// What became of a request that was not an authorize decision (those count as
    /// `filters::Outcome`).
    Forwarding { Proxied = "proxied", Failed = "failed" }
}

labels! {
    /// x5c injection results: per key (`injected`, `present`, `no_match`) and per key-set
    /// response that was passed through unchanged (`invalid_body`, `too_large`, `encoded`).
    X5cResult {
        Injected = "injected",
        Present = "present",
        NoMatch = "no_match",
        InvalidBody = "invalid_body",
        TooLarge = "too_large",
        Encoded = "encoded",
    }
}

labels! {
    /// `eam_response_guard_total{result}`: checked and passed, refused, or not inspected.
    GuardResult { Ok = "ok", Violation = "violation", Skipped = "skipped" }
}

labels! {
    /// Why a page that may be a form_post was not inspected.
    GuardSkip {
        TooLarge = "too_large",
        UnknownEncoding = "unknown_encoding",
        Undecodable = "undecodable",
    }
}

labels! {
    /// `eam_response_guard_sealed_total{result}`: accepted Entra requests sealed into a cookie,
    /// too large for one, or without a state or nonce to match an answer to.
    SealResult { Sealed = "sealed", TooLarge = "too_large", NotRememberable = "not_rememberable" }
}

labels! {
    /// `eam_response_guard_unsealed_total{result}`: for an answer this replica's memory did not
    /// match, the request's sealed cookie opened, absent, unreadable (another key, altered) or
    /// expired.
    UnsealResult {
        Opened = "opened",
        Missing = "missing",
        Unreadable = "unreadable",
        Expired = "expired",
    }
}

labels! {
    /// Upstream answers by status class, and requests that got none.
    UpstreamClass {
        Informational = "1xx",
        Success = "2xx",
        Redirection = "3xx",
        ClientError = "4xx",
        ServerError = "5xx",
        Error = "error",
    }
}

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub hint_rejections: IntCounterVec,
    pub spoofed_params_removed: IntCounter,
    pub hint_validation: Histogram,
    pub request_duration: HistogramVec,
    pub upstream_responses: IntCounterVec,
    pub jwks_refresh: IntCounterVec,
    pub jwks_keys: IntGaugeVec,
    pub jwks_age: prometheus::GaugeVec,
    pub x5c_injections: IntCounterVec,
    pub response_guard: IntCounterVec,
    pub response_guard_remembered: IntGauge,
    pub response_guard_sealed: IntCounterVec,
    pub response_guard_unsealed: IntCounterVec,
    pub discovery_up: IntGauge,
    pub authorize_paths_unlisted: IntGauge,
    pub rate_limited: IntCounterVec,
}

impl Metrics {
    pub fn new(clouds: &[String]) -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "eam_requests_total",
                "Requests handled, by route and outcome",
            ),
            &["route", "outcome"],
        )?;
        let hint_rejections = IntCounterVec::new(
            Opts::new(
                "eam_hint_rejections_total",
                "Authorize requests refused, by reason",
            ),
            &["reason"],
        )?;
        let spoofed_params_removed = IntCounter::new(
            "eam_spoofed_params_removed_total",
            "Client-sent parameters with the reserved prefix that were removed",
        )?;
        // One RSA-2048 verification costs tens of microseconds: buckets start well below 1 ms.
        let hint_validation = Histogram::with_opts(
            HistogramOpts::new(
                "eam_hint_validation_seconds",
                "Time to validate an id_token_hint, accepted or rejected",
            )
            .buckets(vec![
                0.000_025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05,
                0.25, 1.0, 5.0,
            ]),
        )?;
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "eam_request_duration_seconds",
                "Time from request to the end of the response, upstream included",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ]),
            &["route"],
        )?;
        let upstream_responses = IntCounterVec::new(
            Opts::new(
                "eam_upstream_responses_total",
                "Upstream responses by status class; `error` when none came",
            ),
            &["class"],
        )?;
        let jwks_refresh = IntCounterVec::new(
            Opts::new(
                "eam_jwks_refresh_total",
                "Key set fetches, by cloud and result",
            ),
            &["cloud", "result"],
        )?;
        let jwks_keys = IntGaugeVec::new(
            Opts::new("eam_jwks_keys", "Keys in the current key set"),
            &["cloud"],
        )?;
        let jwks_age = prometheus::GaugeVec::new(
            Opts::new(
                "eam_jwks_age_seconds",
                "Seconds since the current key set was loaded (-1: never loaded)",
            ),
            &["cloud"],
        )?;
        let response_guard = IntCounterVec::new(
            Opts::new(
                "eam_response_guard_total",
                "The provider's form_post answers to Entra, by guard result and reason",
            ),
            &["result", "reason"],
        )?;
        let response_guard_remembered = IntGauge::new(
            "eam_response_guard_remembered",
            "Accepted Entra requests the response guard remembers",
        )?;

        let x5c_injections = IntCounterVec::new(
            Opts::new(
                "eam_x5c_injections_total",
                "OP key-set keys given x5c (injected), already carrying it (present) or without a configured certificate (no_match); key-set responses passed through unchanged (invalid_body, too_large, encoded)",
            ),
            &["result"],
        )?;

        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(x5c_injections.clone()))?;
        registry.register(Box::new(hint_rejections.clone()))?;
        registry.register(Box::new(spoofed_params_removed.clone()))?;
        registry.register(Box::new(hint_validation.clone()))?;
        registry.register(Box::new(request_duration.clone()))?;
        registry.register(Box::new(upstream_responses.clone()))?;
        registry.register(Box::new(jwks_refresh.clone()))?;
        registry.register(Box::new(jwks_keys.clone()))?;
        registry.register(Box::new(jwks_age.clone()))?;
        registry.register(Box::new(response_guard.clone()))?;
        registry.register(Box::new(response_guard_remembered.clone()))?;
        let response_guard_sealed = IntCounterVec::new(
            Opts::new(
                "eam_response_guard_sealed_total",
                "Accepted Entra requests sealed into the response guard's cookie, or why not",
            ),
            &["result"],
        )?;
        let response_guard_unsealed = IntCounterVec::new(
            Opts::new(
                "eam_response_guard_unsealed_total",
                "Answers the replica's memory did not match, by what the request's sealed cookie gave",
            ),
            &["result"],
        )?;
        registry.register(Box::new(response_guard_sealed.clone()))?;
        registry.register(Box::new(response_guard_unsealed.clone()))?;
        for result in SealResult::ALL {
            response_guard_sealed.with_label_values(&[result.as_str()]);
        }
        for result in UnsealResult::ALL {
            response_guard_unsealed.with_label_values(&[result.as_str()]);
        }
        let discovery_up = IntGauge::new(
            "eam_discovery_up",
            "1 when the last read of the OP's discovery document succeeded",
        )?;
        let authorize_paths_unlisted = IntGauge::new(
            "eam_authorize_paths_unlisted",
            "Authorize paths the OP's discovery names that authorize.paths does not list",
        )?;
        registry.register(Box::new(discovery_up.clone()))?;
        registry.register(Box::new(authorize_paths_unlisted.clone()))?;
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        // README "Abuse limits": by limit only, never by client.
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "eam_rate_limited_total",
                "Entra authorize requests refused because their client reached a limit",
            ),
            &["limit"],
        )?;
        registry.register(Box::new(rate_limited.clone()))?;
        for limit in filters::Limit::ALL {
            rate_limited.with_label_values(&[limit.as_str()]);
        }

        // Pre-create every series so dashboards and alerts see zeros, not gaps.
        for route in Route::ALL {
            request_duration.with_label_values(&[route.as_str()]);
            let authorize = Outcome::ALL.iter().map(|o| o.as_str());
            let forwarding = Forwarding::ALL.iter().map(|f| f.as_str());
            for outcome in authorize.chain(forwarding) {
                requests.with_label_values(&[route.as_str(), outcome]);
            }
        }
        for reason in AuthorizeError::ALL_REASONS {
            hint_rejections.with_label_values(&[reason]);
        }
        for result in X5cResult::ALL {
            x5c_injections.with_label_values(&[result.as_str()]);
        }
        let guard = |result: GuardResult, reason: &str| {
            response_guard.with_label_values(&[result.as_str(), reason]);
        };
        for scope in Scope::ALL {
            guard(GuardResult::Ok, scope.as_str());
        }
        for reason in Violation::ALL_REASONS {
            guard(GuardResult::Violation, reason);
        }
        for skip in GuardSkip::ALL {
            guard(GuardResult::Skipped, skip.as_str());
        }
        for class in UpstreamClass::ALL {
            upstream_responses.with_label_values(&[class.as_str()]);
        }
        for cloud in clouds {
            for result in ["success", "failure"] {
                jwks_refresh.with_label_values(&[cloud.as_str(), result]);
            }
            jwks_keys.with_label_values(&[cloud.as_str()]);
            jwks_age.with_label_values(&[cloud.as_str()]).set(-1.0);
        }

        Ok(Metrics {
            registry,
            requests,
            hint_rejections,
            spoofed_params_removed,
            hint_validation,
            request_duration,
            upstream_responses,
            jwks_refresh,
            jwks_keys,
            jwks_age,
            x5c_injections,
            response_guard,
            response_guard_remembered,
            response_guard_sealed,
            response_guard_unsealed,
            discovery_up,
            authorize_paths_unlisted,
            rate_limited,
        })
    }

    pub fn upstream_status(&self, status: u16) {
        let class = match status {
            100..=199 => UpstreamClass::Informational,
            200..=299 => UpstreamClass::Success,
            300..=399 => UpstreamClass::Redirection,
            400..=499 => UpstreamClass::ClientError,
            _ => UpstreamClass::ServerError,
        };
        self.upstream_class(class);
    }

    pub fn upstream_class(&self, class: UpstreamClass) {
        self.upstream_responses
            .with_label_values(&[class.as_str()])
            .inc();
    }

    pub fn x5c_result(&self, result: X5cResult) {
        self.x5c_injections
            .with_label_values(&[result.as_str()])
            .inc();
    }

    pub fn request(&self, route: Route, outcome: &str) {
        self.requests
            .with_label_values(&[route.as_str(), outcome])
            .inc();
    }

    pub fn guard(&self, result: GuardResult, reason: &str) {
        self.response_guard
            .with_label_values(&[result.as_str(), reason])
            .inc();
    }

    pub fn guard_skipped(&self, skip: GuardSkip) {
        self.guard(GuardResult::Skipped, skip.as_str());
    }

    pub fn guard_sealed(&self, result: SealResult) {
        self.response_guard_sealed
            .with_label_values(&[result.as_str()])
            .inc();
    }

    pub fn guard_unsealed(&self, result: UnsealResult) {
        self.response_guard_unsealed
            .with_label_values(&[result.as_str()])
            .inc();
    }

    /// The text exposition format, with its content type.
    pub fn render(&self) -> (String, Vec<u8>) {
        let encoder = TextEncoder::new();
        let mut out = Vec::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        (encoder.format_type().to_string(), out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spec_metric_is_exported_from_the_start() {
        let metrics = Metrics::new(&["global".to_string()]).unwrap();
        let (content_type, body) = metrics.render();
        assert!(content_type.starts_with("text/plain; version=0.0.4"));
        let text = String::from_utf8(body).unwrap();
        for name in [
            "eam_requests_total{outcome=\"accepted\",route=\"authorize\"} 0",
            "eam_hint_rejections_total{reason=\"bad_signature\"} 0",
            "eam_spoofed_params_removed_total 0",
            "eam_hint_validation_seconds_bucket",
            "eam_request_duration_seconds_bucket{route=\"other\"",
            "eam_upstream_responses_total{class=\"5xx\"} 0",
            "eam_jwks_refresh_total{cloud=\"global\",result=\"failure\"} 0",
            "eam_jwks_keys{cloud=\"global\"} 0",
            "eam_jwks_age_seconds{cloud=\"global\"} -1",
            "eam_x5c_injections_total{result=\"no_match\"} 0",
            "eam_response_guard_total{reason=\"sub_mismatch\",result=\"violation\"} 0",
            "eam_response_guard_total{reason=\"stateless\",result=\"ok\"} 0",
            "eam_response_guard_total{reason=\"too_large\",result=\"skipped\"} 0",
            "eam_response_guard_remembered 0",
            "eam_response_guard_sealed_total{result=\"too_large\"} 0",
            "eam_response_guard_unsealed_total{result=\"unreadable\"} 0",
            "process_resident_memory_bytes",
            "process_open_fds",
        ] {
            assert!(text.contains(name), "missing {name}");
        }
    }

    #[test]
    fn upstream_status_classes() {
        let metrics = Metrics::new(&[]).unwrap();
        for status in [101, 200, 204, 302, 404, 502, 599] {
            metrics.upstream_status(status);
        }
        let count = |class: &str| metrics.upstream_responses.with_label_values(&[class]).get();
        assert_eq!(
            [
                count("1xx"),
                count("2xx"),
                count("3xx"),
                count("4xx"),
                count("5xx")
            ],
            [1, 2, 1, 1, 2]
        );
    }
}
