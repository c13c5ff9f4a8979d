//! README "Configuration reference": `eam-proxy --check` validates a configuration and names the
//! offending key. It accepts the tests' configuration here; its refusals, each checked with
//! `--check` and at start-up, are `fault_drills::broken_configuration_files_…` (syntax, types,
//! unknown keys, every semantic rule) and `key_lifecycle::config_…` (apps, clouds, key sets).

use eam_tests::{check_config, closed_port, ProxyConfig};

#[test]
fn check_accepts_the_test_configuration() {
    check_config(ProxyConfig::with_upstreams(&[closed_port()])).assert_accepted();
}
