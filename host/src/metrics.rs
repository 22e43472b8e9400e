//! Process-wide counters for the control API's `GET /metrics`.
//!
//! Owns: one Prometheus registry (prometheus-client) with what operators ask
//! a publisher about — refreshes by outcome, publishes by platform and
//! outcome, rate-limit waits, plugin call latency, plugins loaded and
//! rejected, plugin files loaded, and what the daemon's file watcher did
//! (events it ignored or acted on, reloads, changes that changed nothing),
//! and whether the PostgreSQL store answers — and its text encoding.
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
    plugin_loads: Counter,
    watch_events: Family<Labels<1>, Counter>,
    reloads: Family<Labels<1>, Counter>,
    reloads_unchanged: Family<Labels<1>, Counter>,
    uploaded: Family<Labels<1>, Counter>,
    database_retries: Counter,
    database_up: Gauge,
}

/// What the watcher reloads, for the `kind` label.
pub const RELOAD_KINDS: [&str; 3] = ["config", "plugin", "post"];

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
        let plugin_loads = Counter::default();
        registry.register(
            "plugin_loads",
            "Plugin files read, checked and compiled (or taken from the compile cache), successfully or not",
            plugin_loads.clone(),
        );
        let watch_events = Family::<Labels<1>, Counter>::default();
        registry.register(
            "watch_events",
            "File events seen by the daemon's watcher, by action: ignored (a read, open or close without writing; a metadata change) or queued (a write, create, rename or removal)",
            watch_events.clone(),
        );
        let reloads = Family::<Labels<1>, Counter>::default();
        registry.register(
            "reloads",
            "Watched files the daemon acted on because their content changed (or they appeared or went away), by kind (config, plugin, post)",
            reloads.clone(),
        );
        let reloads_unchanged = Family::<Labels<1>, Counter>::default();
        registry.register(
            "reloads_unchanged",
            "Watched files written with the content they already had: nothing was done, by kind (config, plugin, post)",
            reloads_unchanged.clone(),
        );
        // Every series exists from the start, so a reader sees 0, not nothing.
        for kind in RELOAD_KINDS {
            let _ = reloads.get_or_create(&[("kind", kind.to_string())]);
            let _ = reloads_unchanged.get_or_create(&[("kind", kind.to_string())]);
        }
        for action in ["ignored", "queued"] {
            let _ = watch_events.get_or_create(&[("action", action.to_string())]);
        }
        let uploaded = Family::<Labels<1>, Counter>::default();
        let database_retries = Counter::default();
        registry.register(
            "database_retries",
            "Operations on the PostgreSQL store tried again after a transient failure (a restart, a dropped connection)",
            database_retries.clone(),
        );
        let database_up = Gauge::default();
        registry.register(
            "database_up",
            "1 while the PostgreSQL store answered its last operation, 0 after one failed for being unreachable (always 0 with the files store, which has no server)",
            database_up.clone(),
        );
        registry.register(
            "uploaded_bytes",
            "Media bytes sent to platforms, by platform (grows while an upload runs)",
            uploaded.clone(),
        );
        Metrics {
            uploaded,
            registry,
            refreshes,
            publishes,
            rate_limit_waits,
            rate_limit_wait_seconds,
            plugin_calls,
            plugins_loaded,
            plugins_rejected,
            plugin_loads,
            watch_events,
            reloads,
            reloads_unchanged,
            database_retries,
            database_up,
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

/// `bytes` more of a media upload reached `platform`.
pub fn uploaded(platform: &str, bytes: u64) {
    if bytes > 0 {
        metrics()
            .uploaded
            .get_or_create(&[("platform", platform.to_string())])
            .inc_by(bytes);
    }
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

/// A plugin file was read, checked and compiled (or taken from the cache).
pub fn plugin_load() {
    metrics().plugin_loads.inc();
}

/// The watcher saw a file event: `queued` when it may mean a change,
/// `ignored` when it cannot (a read, an open, a close without writing).
pub fn watch_event(queued: bool) {
    let action = if queued { "queued" } else { "ignored" };
    metrics()
        .watch_events
        .get_or_create(&[("action", action.to_string())])
        .inc();
}

/// The watcher acted on a changed file of `kind` (one of [`RELOAD_KINDS`]).
pub fn reload(kind: &'static str) {
    metrics()
        .reloads
        .get_or_create(&[("kind", kind.to_string())])
        .inc();
}

/// The watcher saw a write that left a file of `kind` as it was.
pub fn reload_unchanged(kind: &'static str) {
    metrics()
        .reloads_unchanged
        .get_or_create(&[("kind", kind.to_string())])
        .inc();
}

/// Every metric in the Prometheus text exposition format.
pub fn render() -> String {
    let mut out = String::new();
    encode(&mut out, &metrics().registry).expect("writing to a String cannot fail");
    out
}

/// An operation on the PostgreSQL store is tried again.
pub fn database_retry() {
    metrics().database_retries.inc();
}

/// Whether the PostgreSQL store answered (`false`: unreachable).
pub fn database_up(up: bool) {
    metrics().database_up.set(i64::from(up));
}
