//! Process-wide counters for the control API's `GET /metrics`.
//!
//! Owns: one Prometheus registry (prometheus-client) with what operators ask
//! a publisher about — refreshes by outcome, publishes by platform and
//! outcome, rate-limit waits, plugin call latency, plugins loaded and
//! rejected — and its text encoding.
//!
//! Never: labels anything with a secret, a post's text or an account's
//! profile; labels are platform ids, call names and fixed outcome words.

use std::sync::OnceLock;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

type Labels<const N: usize> = [(&'static str, String); N];

struct Metrics {
    registry: Registry,
    refreshes: Family<Labels<2>, Counter>,
    publishes: Family<Labels<2>, Counter>,
    rate_limit_waits: Family<Labels<1>, Counter>,
    rate_limit_wait_seconds: Family<Labels<1>, Counter<f64>>,
    plugin_calls: Family<Labels<2>, Histogram>,
    plugins_loaded: Gauge,
    plugins_rejected: Counter,
}

fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| {
        let mut registry = Registry::with_prefix("outreach");
        let refreshes = Family::<Labels<2>, Counter>::default();
        registry.register(
            "refreshes",
            "Token refreshes sent to platforms, by platform and outcome (ok, transient, needs_reconnect)",
            refreshes.clone(),
        );
        let publishes = Family::<Labels<2>, Counter>::default();
        registry.register(
            "publishes",
            "Deliveries of a post item to one account, by platform and outcome (published, failed, unknown)",
            publishes.clone(),
        );
        let rate_limit_waits = Family::<Labels<1>, Counter>::default();
        registry.register(
            "rate_limit_waits",
            "Times a publish waited out a platform's rate limit",
            rate_limit_waits.clone(),
        );
        let rate_limit_wait_seconds = Family::<Labels<1>, Counter<f64>>::default();
        registry.register(
            "rate_limit_wait_seconds",
            "Seconds spent waiting out rate limits",
            rate_limit_wait_seconds.clone(),
        );
        let plugin_calls = Family::<Labels<2>, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.005, 0.025, 0.1, 0.5, 2.5, 10.0,
            ])
        });
        registry.register(
            "plugin_call_seconds",
            "Wall time of calls into plugins (requests they make included), by plugin and call",
            plugin_calls.clone(),
        );
        let plugins_loaded = Gauge::default();
        registry.register(
            "plugins_loaded",
            "Platform plugins loaded",
            plugins_loaded.clone(),
        );
        let plugins_rejected = Counter::default();
        registry.register(
            "plugin_load_failures",
            "Plugin files that failed validation or compilation",
            plugins_rejected.clone(),
        );
        Metrics {
            registry,
            refreshes,
            publishes,
            rate_limit_waits,
            rate_limit_wait_seconds,
            plugin_calls,
            plugins_loaded,
            plugins_rejected,
        }
    })
}

pub fn refresh(platform: &str, outcome: &'static str) {
    metrics()
        .refreshes
        .get_or_create(&[
            ("platform", platform.to_string()),
            ("outcome", outcome.to_string()),
        ])
        .inc();
}

pub fn publish(platform: &str, outcome: &str) {
    metrics()
        .publishes
        .get_or_create(&[
            ("platform", platform.to_string()),
            ("outcome", outcome.to_string()),
        ])
        .inc();
}

pub fn rate_limit_wait(platform: &str, seconds: f64) {
    let m = metrics();
    let l = [("platform", platform.to_string())];
    m.rate_limit_waits.get_or_create(&l).inc();
    m.rate_limit_wait_seconds.get_or_create(&l).inc_by(seconds);
}

pub fn plugin_call(plugin: &str, call: &'static str, seconds: f64) {
    metrics()
        .plugin_calls
        .get_or_create(&[("plugin", plugin.to_string()), ("call", call.to_string())])
        .observe(seconds);
}

pub fn plugins_loaded(n: usize) {
    metrics().plugins_loaded.set(n as i64);
}

pub fn plugin_rejected() {
    metrics().plugins_rejected.inc();
}

/// Every metric in the Prometheus text exposition format.
pub fn render() -> String {
    let mut out = String::new();
    encode(&mut out, &metrics().registry).expect("writing to a String cannot fail");
    out
}
