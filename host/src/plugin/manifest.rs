//! Checking a plugin's manifest, and deriving from it what the host needs:
//! the allow-list and the effective endpoints of one account.
//!
//! Never: trusts a manifest that has not passed [`check`].

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::contract::wit::types::{Account, Endpoint, Manifest};
use crate::http::AllowedHost;

/// Every problem with `m`, joined; `Ok` if it can be used.
pub fn check(m: &Manifest) -> Result<(), String> {
    let mut problems = Vec::new();
    let id_ok = !m.id.is_empty()
        && m.id.len() <= 32
        && m.id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !id_ok {
        problems.push(format!(
            "id `{}` must be 1-32 characters of a-z, 0-9, `-`, `_`",
            m.id
        ));
    }
    if m.name.trim().is_empty() {
        problems.push("name is empty".into());
    }
    if m.version.trim().is_empty() {
        problems.push("version is empty".into());
    }
    let mut seen = std::collections::BTreeSet::new();
    for e in &m.endpoints {
        if !seen.insert(e.name.as_str()) {
            problems.push(format!("endpoint `{}` is declared twice", e.name));
        }
        let concrete = e.url.starts_with('{') && e.url.contains('}');
        if concrete {
            let setting = &e.url[1..e.url.find('}').unwrap_or(1)];
            if !m.settings.iter().any(|s| s.name == setting && s.is_host) {
                problems.push(format!(
                    "endpoint `{}` uses setting `{setting}`, which is not declared as a host setting",
                    e.name
                ));
            }
        } else {
            match url::Url::parse(&e.url) {
                Ok(u) if u.scheme() == "https" && u.host_str().is_some() => {}
                Ok(_) => problems.push(format!(
                    "endpoint `{}` = `{}` must be an https URL with a host",
                    e.name, e.url
                )),
                Err(err) => problems.push(format!(
                    "endpoint `{}` = `{}` does not parse: {err}",
                    e.name, e.url
                )),
            }
        }
    }
    for h in &m.hosts {
        if let Err(e) = AllowedHost::from_pattern(h) {
            problems.push(e);
        }
    }
    for l in &m.rate_limits {
        if l.requests == 0 || l.window_seconds == 0 {
            problems.push(format!(
                "rate limit for class `{}` must allow at least one request in a window of at least one second",
                l.class
            ));
        }
    }
    for r in &m.content.media {
        if r.max_count == 0 || r.max_bytes == 0 {
            problems.push(format!(
                "media rule for {} must allow at least one item of at least one byte",
                wit_name(&r.kind)
            ));
        }
    }
    let mut names = std::collections::BTreeSet::new();
    for s in &m.settings {
        if s.name.is_empty() || !names.insert(s.name.as_str()) {
            problems.push(format!("setting `{}` is empty or declared twice", s.name));
        }
    }
    if let Some(choice) = &m.auth.identities
        && !m.settings.iter().any(|s| s.name == choice.setting)
    {
        problems.push(format!(
            "identities go to setting `{}`, which is not declared in `settings`",
            choice.setting
        ));
    }
    use crate::contract::wit::types::{AuthKind, CredentialPlacement, RefreshStyle};
    if matches!(m.auth.kind, AuthKind::SessionLogin | AuthKind::AppPassword)
        && m.auth.login.is_none()
    {
        problems.push(format!(
            "auth kind {} needs a `login` exchange",
            wit_name(&m.auth.kind)
        ));
    }
    if matches!(m.auth.refresh, RefreshStyle::Relogin) && m.auth.login.is_none() {
        problems.push("refresh style relogin needs a `login` exchange".into());
    }
    for p in &m.auth.placement {
        if let CredentialPlacement::Cookie(name) = p
            && (name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b";,=\"".contains(&b)))
        {
            problems.push(format!("cookie name `{name}` is not a valid cookie name"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// The hosts a plugin may call on its own declaration: its `hosts` and the
/// hosts of its concrete endpoints.
pub fn declared_hosts(m: &Manifest) -> Vec<AllowedHost> {
    let mut out: Vec<AllowedHost> = m
        .hosts
        .iter()
        .filter_map(|h| AllowedHost::from_pattern(h).ok())
        .collect();
    for e in &m.endpoints {
        if let Ok(u) = url::Url::parse(&e.url)
            && let Some(a) = AllowedHost::from_url(&u)
            && !out.contains(&a)
        {
            out.push(a);
        }
    }
    out
}

/// The endpoint overrides in `overrides` (a `[platforms.ID.endpoints]`
/// table) that name no endpoint of `m`, each with a message that names the
/// endpoints `m` has.
pub fn unknown_overrides(
    m: &Manifest,
    overrides: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    let names: Vec<&str> = m.endpoints.iter().map(|e| e.name.as_str()).collect();
    overrides
        .keys()
        .filter(|name| !names.contains(&name.as_str()))
        .map(|name| {
            let has = if names.is_empty() {
                "it declares no endpoints".to_string()
            } else {
                format!("its endpoints are {}", names.join(", "))
            };
            let hint = nearest(name, &names)
                .map(|n| format!("did you mean `{n}`? "))
                .unwrap_or_default();
            (
                name.clone(),
                format!(
                    "the {} plugin has no endpoint named `{name}` ({hint}{has})",
                    m.id
                ),
            )
        })
        .collect()
}

/// The name in `known` that `name` is most likely a typo of: the same but
/// for case, or at most two edits away.
fn nearest<'k>(name: &str, known: &[&'k str]) -> Option<&'k str> {
    fn distance(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut diagonal = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let substitute = diagonal + usize::from(ca != *cb);
                diagonal = row[j + 1];
                row[j + 1] = substitute.min(row[j] + 1).min(row[j + 1] + 1);
            }
        }
        row[b.len()]
    }
    let lower = name.to_lowercase();
    known
        .iter()
        .map(|k| (distance(&lower, &k.to_lowercase()), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Check the config's endpoint overrides against the loaded plugins: a
/// name a plugin does not declare is an error naming the file, line, key
/// and the endpoints the plugin has (an override for a plugin that is not
/// loaded is checked when it is).
pub fn check_overrides(
    cfg: &crate::config::Loaded,
    host: &crate::plugin::Host,
) -> Result<(), crate::config::ConfigError> {
    let problems = override_problems(cfg, |id| host.get(id).ok());
    match (&cfg.file, problems.is_empty()) {
        (_, true) => Ok(()),
        (Some(path), false) => Err(crate::config::ConfigError::Invalid {
            path: path.clone(),
            message: problems.join("; "),
        }),
        // Without a config file there are no overrides.
        (None, false) => Ok(()),
    }
}

/// One message per override that names no endpoint of its plugin, with
/// the line it is on.
pub fn override_problems(
    cfg: &crate::config::Loaded,
    plugin: impl Fn(&str) -> Option<std::sync::Arc<crate::plugin::LoadedPlugin>>,
) -> Vec<String> {
    let text = cfg
        .file
        .as_deref()
        .and_then(|f| crate::config::read_regular_text(f).ok())
        .unwrap_or_default();
    let mut out = Vec::new();
    for (id, p) in &cfg.config.platforms {
        let Some(plugin) = plugin(id) else {
            continue;
        };
        for (name, message) in unknown_overrides(&plugin.manifest, &p.endpoints) {
            let line = crate::config::line_of(&text, &format!("platforms.{id}.endpoints"), &name)
                .map(|n| format!("line {n}, "))
                .unwrap_or_default();
            out.push(format!(
                "{line}platforms.{id}.endpoints.{name}: {message}; fix the name or remove the line"
            ));
        }
    }
    out
}

/// Where one endpoint a plugin's calls use comes from.
#[derive(Debug, Clone, Serialize)]
pub struct EffectiveEndpoint {
    pub name: String,
    /// The URL in effect (`{setting}…` when an account's setting fills it).
    pub url: String,
    /// `manifest`, `config: platforms.ID.endpoints.NAME`, or "manifest,
    /// with the account's \`instance\` setting".
    pub from: String,
    /// The manifest's URL, when the config overrides it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
}

/// One host a plugin may call, and every reason it may.
#[derive(Debug, Clone, Serialize)]
pub struct EffectiveHost {
    /// `scheme://host:port`, or "the account's \`instance\` setting".
    pub host: String,
    pub from: Vec<String>,
}

/// What a plugin works with once the config is applied: its endpoints
/// (the manifest's, with the config's overrides) and the hosts it may call
/// (the manifest's `hosts`, its endpoints' hosts, the overrides' hosts, and
/// hosts the account's settings name), each with where it came from.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Effective {
    pub endpoints: Vec<EffectiveEndpoint>,
    pub hosts: Vec<EffectiveHost>,
}

/// [`Effective`] for `m` under the config's `overrides`.
pub fn effective(m: &Manifest, overrides: &BTreeMap<String, String>) -> Effective {
    let setting_of = |url: &str| {
        url.strip_prefix('{')
            .and_then(|rest| rest.split_once('}'))
            .map(|(setting, _)| setting.to_string())
    };
    let config_key = |name: &str| format!("config: platforms.{}.endpoints.{name}", m.id);
    let endpoints = m
        .endpoints
        .iter()
        .map(|e| match overrides.get(&e.name) {
            Some(url) => EffectiveEndpoint {
                name: e.name.clone(),
                url: url.clone(),
                from: config_key(&e.name),
                replaces: Some(e.url.clone()),
            },
            None => EffectiveEndpoint {
                name: e.name.clone(),
                url: e.url.clone(),
                from: match setting_of(&e.url) {
                    Some(setting) => format!("manifest, with the account's `{setting}` setting"),
                    None => "manifest".into(),
                },
                replaces: None,
            },
        })
        .collect();
    let mut hosts: Vec<EffectiveHost> = Vec::new();
    let mut add = |host: String, from: String| match hosts.iter_mut().find(|h| h.host == host) {
        Some(h) => {
            if !h.from.contains(&from) {
                h.from.push(from);
            }
        }
        None => hosts.push(EffectiveHost {
            host,
            from: vec![from],
        }),
    };
    let show = |h: &AllowedHost| format!("{}://{}:{}", h.scheme, h.host, h.port);
    // The config's first: they are what the user changed.
    for e in &m.endpoints {
        if let Some(url) = overrides.get(&e.name)
            && let Ok(u) = url::Url::parse(url)
            && let Some(a) = AllowedHost::from_url(&u)
        {
            add(show(&a), config_key(&e.name));
        }
    }
    for h in &m.hosts {
        if let Ok(a) = AllowedHost::from_pattern(h) {
            add(show(&a), "manifest: hosts".into());
        }
    }
    for e in &m.endpoints {
        if let Ok(u) = url::Url::parse(&e.url)
            && let Some(a) = AllowedHost::from_url(&u)
        {
            add(show(&a), format!("manifest: endpoint {}", e.name));
        }
    }
    for s in m.settings.iter().filter(|s| s.is_host) {
        add(
            format!("the account's `{}` setting", s.name),
            "manifest: a host setting, per account".into(),
        );
    }
    Effective { endpoints, hosts }
}

/// The endpoints one account's calls use: the manifest's, with the user's
/// overrides from config, and `{setting}` templates filled from the
/// account's settings. An endpoint whose setting is missing is left out.
/// An override that names no endpoint of the plugin is not one (the config
/// is refused for it: [`check_overrides`]).
pub fn effective_endpoints(
    m: &Manifest,
    overrides: &BTreeMap<String, String>,
    account: Option<&Account>,
) -> Vec<Endpoint> {
    let mut out = Vec::new();
    for e in &m.endpoints {
        let url = if let Some(o) = overrides.get(&e.name) {
            Some(o.clone())
        } else if let Some(rest) = e.url.strip_prefix('{') {
            rest.split_once('}').and_then(|(setting, tail)| {
                let base = account?
                    .settings
                    .iter()
                    .find(|p| p.name == setting)?
                    .value
                    .clone();
                Some(format!("{}{}", base.trim_end_matches('/'), tail))
            })
        } else {
            Some(e.url.clone())
        };
        if let Some(url) = url {
            out.push(Endpoint {
                name: e.name.clone(),
                url,
            });
        }
    }
    out
}

/// A loaded plugin as `outreach plugins` and `GET /platforms` show it.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub id: String,
    pub name: String,
    pub version: String,
    /// `built in` (carried by the binary) or `folder` (the plugins folder).
    pub source: &'static str,
    /// A folder plugin that takes the place of the built-in one.
    pub shadows_built_in: bool,
    /// The contract version it was built against.
    pub contract: String,
    pub auth: String,
    /// The hosts it may call, with the config's overrides.
    pub hosts: Vec<String>,
    /// The same, each with where it comes from.
    pub host_sources: Vec<EffectiveHost>,
    /// Its endpoints in effect: the manifest's, with the config's
    /// overrides, each with where it comes from.
    pub endpoints: Vec<EffectiveEndpoint>,
    pub rate_limits: Vec<String>,
    pub max_length: u32,
    pub counting: String,
    pub path: String,
    /// SHA-256 of the file that is serving.
    pub sha256: String,
    /// The full manifest, in WIT spelling.
    pub manifest: serde_json::Value,
    /// Hosts it declares that some accounts' credentials may not go to
    /// until the user approves them (`outreach plugins approve ID`), and
    /// those accounts. Filled in by whoever can read the store.
    pub awaiting_approval: Vec<String>,
    pub awaiting_accounts: Vec<String>,
}

/// A plugin file that failed to load, and why.
#[derive(Debug, Serialize)]
pub struct Rejected {
    pub path: String,
    pub error: String,
    /// What keeps serving from this path (`id version sha256`), if an
    /// earlier version of the file loaded.
    pub serving: Option<String>,
}

/// Every loaded plugin and every rejected file.
#[derive(Debug, Serialize)]
pub struct Platforms {
    pub plugins: Vec<Summary>,
    pub rejected: Vec<Rejected>,
}

impl Platforms {
    /// Every plugin `host` serves, with `cfg`'s endpoint overrides applied.
    pub fn of(host: &crate::plugin::Host, cfg: &crate::config::Loaded) -> Self {
        let shadowed = host.shadowed_ids();
        let plugins: Vec<Summary> = host
            .plugins()
            .iter()
            .map(|p| {
                let m = &p.manifest;
                let effective = effective(m, &cfg.platform(&m.id).endpoints);
                Summary {
                    id: m.id.clone(),
                    name: m.name.clone(),
                    version: m.version.clone(),
                    source: if p.is_built_in() {
                        "built in"
                    } else {
                        "folder"
                    },
                    shadows_built_in: !p.is_built_in() && shadowed.contains(&m.id),
                    contract: p.contract.to_string(),
                    auth: wit_name(&m.auth.kind),
                    hosts: effective.hosts.iter().map(|h| h.host.clone()).collect(),
                    host_sources: effective.hosts,
                    endpoints: effective.endpoints,
                    rate_limits: m
                        .rate_limits
                        .iter()
                        .map(|l| {
                            format!(
                                "{} {}/{}s per {}",
                                l.class,
                                l.requests,
                                l.window_seconds,
                                wit_name(&l.scope)
                            )
                        })
                        .collect(),
                    max_length: m.content.max_length,
                    counting: wit_name(&m.content.counting),
                    path: p.path.display().to_string(),
                    sha256: p.sha256.clone(),
                    manifest: wit_style(m),
                    awaiting_approval: Vec::new(),
                    awaiting_accounts: Vec::new(),
                }
            })
            .collect();
        let rejected = host
            .rejected()
            .into_iter()
            .map(|(p, e)| Rejected {
                serving: plugins
                    .iter()
                    .find(|s: &&Summary| Path::new(&s.path) == p)
                    .map(|s| format!("{} {} {}", s.id, s.version, s.sha256)),
                path: p.display().to_string(),
                error: e,
            })
            .collect();
        Platforms { plugins, rejected }
    }
}

/// A generated enum value as the WIT spells it: `Oauth2Pkce` → `oauth2-pkce`.
pub fn wit_name(v: &impl Serialize) -> String {
    match wit_style(v) {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    }
}

/// Serialise a generated WIT type with its enum and variant names in WIT
/// spelling (the generated Rust types carry Rust spelling).
pub fn wit_style(v: &impl Serialize) -> serde_json::Value {
    fn kebab(s: &str) -> String {
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if c.is_ascii_uppercase() {
                if i > 0 {
                    out.push('-');
                }
                out.push(c.to_ascii_lowercase());
            } else {
                out.push(c);
            }
        }
        out
    }
    fn is_rust_name(s: &str) -> bool {
        s.starts_with(|c: char| c.is_ascii_uppercase())
            && s.chars().all(|c| c.is_ascii_alphanumeric())
    }
    /// Fields whose values are WIT enums or variants.
    const ENUM_FIELDS: [&str; 9] = [
        "kind",
        "client_auth",
        "expiry_format",
        "reset_format",
        "counting",
        "placement",
        "refresh",
        "scope",
        "method",
    ];
    fn walk(v: serde_json::Value, enum_field: bool) -> serde_json::Value {
        use serde_json::Value;
        match v {
            Value::String(s) if enum_field && is_rust_name(&s) => Value::String(kebab(&s)),
            Value::Array(a) => Value::Array(a.into_iter().map(|v| walk(v, false)).collect()),
            Value::Object(o) => Value::Object(
                o.into_iter()
                    .map(|(k, v)| {
                        // Struct fields are snake_case; a capitalised key is
                        // a variant's case name.
                        if is_rust_name(&k) {
                            (kebab(&k), walk(v, false))
                        } else {
                            let e = ENUM_FIELDS.contains(&k.as_str());
                            (k, walk(v, e))
                        }
                    })
                    .collect(),
            ),
            other => other,
        }
    }
    walk(serde_json::to_value(v).unwrap_or_default(), true)
}
