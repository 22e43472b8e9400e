//! `platform!("platform.toml")`: the declarative half of a plugin's
//! manifest — auth, endpoints, hosts, limits, content rules, settings and
//! post fields — read from a TOML file beside the plugin's code when the
//! plugin is compiled, so that the code holds only request building.
//!
//! Owns: reading and checking the file at compile time (unknown keys, WIT
//! values that do not exist, `{{…}}` marks that name no secret, endpoints
//! that are not https, settings an exchange or identity names but nobody
//! declares) and turning it into the expression that builds the SDK's
//! `Manifest`. A mistake is a compile error naming the file and what is
//! wrong; the file is tracked, so editing it rebuilds the plugin.
//!
//! Never: runs in the plugin (nothing of TOML is compiled into it) or
//! checks what only the host can (a host pattern's syntax is checked again
//! when the plugin loads).
//!
//! Values are written as the WIT spells them (`oauth2-pkce`,
//! `x-weighted`, `seconds-until`); the SDK's README section "platform.toml"
//! shows every key.

use std::fmt::Write as _;

use serde::Deserialize;
use toml::Table;

/// Build the manifest declared in a TOML file, relative to the plugin
/// crate's root: `fn manifest() -> Manifest { outreach_sdk::platform!("platform.toml") }`.
#[proc_macro]
pub fn platform(input: proc_macro::TokenStream) -> proc_macro::TokenStream {
    let arg = input.to_string();
    let rel = arg.trim().trim_matches('"');
    let root = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let path = std::path::Path::new(&root).join(rel);
    let shown = path.display().to_string();
    let code = match std::fs::read_to_string(&path) {
        Err(e) => Err(format!("cannot read {shown}: {e}")),
        Ok(text) => toml::from_str::<Platform>(&text)
            .map_err(|e| format!("{shown}: {e}"))
            .and_then(|p| generate(&p).map_err(|e| format!("{shown}: {e}"))),
    };
    let out = match code {
        Ok(expr) => format!("{{ const _: &str = include_str!({shown:?}); {expr} }}"),
        Err(msg) => format!("compile_error!({msg:?})"),
    };
    out.parse().expect("generated code parses")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Platform {
    id: String,
    name: String,
    /// Defaults to the plugin crate's version.
    version: Option<String>,
    auth: Auth,
    #[serde(default)]
    endpoints: Table,
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default)]
    rate_limits: Vec<Limit>,
    rate_limit_headers: Option<LimitHeaders>,
    #[serde(default)]
    content: Content,
    #[serde(default)]
    settings: Vec<Setting>,
    #[serde(default)]
    post_fields: Vec<PostField>,
    #[serde(default)]
    idempotent_publish: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Auth {
    kind: String,
    #[serde(default)]
    scopes: Vec<String>,
    scope_separator: Option<String>,
    client_auth: Option<String>,
    #[serde(default)]
    authorize_params: Table,
    #[serde(default)]
    token_params: Table,
    token_response: Option<Shape>,
    /// `none`, `standard`, `rotating`, `relogin`, or `{ custom = {…} }`.
    refresh: Option<toml::Value>,
    pkce: Option<String>,
    #[serde(default)]
    access_token_lifetime: u64,
    #[serde(default)]
    refresh_token_lifetime: u64,
    /// Seconds a token must have lived before it may be refreshed.
    #[serde(default)]
    refresh_min_age: u64,
    /// `"bearer"`, `{ header = { name, prefix } }`, `{ query = "…" }`,
    /// `{ proof = "…" }`, `{ cookie = "…" }`.
    #[serde(default)]
    placement: Vec<toml::Value>,
    #[serde(default)]
    dynamic_registration: bool,
    login: Option<Exchange>,
    #[serde(default)]
    after_connect: Vec<Exchange>,
    identities: Option<Identities>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Shape {
    access_token: Option<String>,
    refresh_token: Option<String>,
    expiry: Option<String>,
    expiry_format: Option<String>,
    refresh_expiry: Option<String>,
    scope: Option<String>,
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Exchange {
    method: Option<String>,
    url: String,
    #[serde(default)]
    query: Table,
    #[serde(default)]
    headers: Table,
    /// A form (`form = { name = "template" }`) or a JSON template.
    form: Option<Table>,
    json: Option<String>,
    response: Option<Shape>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Identities {
    setting: String,
    exchange: Option<Exchange>,
    #[serde(default)]
    self_allowed: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Limit {
    class: String,
    requests: u32,
    window_seconds: u32,
    scope: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitHeaders {
    /// `x-rate-limit-` for `x-rate-limit-limit`, `-remaining`, `-reset`.
    prefix: Option<String>,
    limit: Option<String>,
    remaining: Option<String>,
    reset: Option<String>,
    reset_format: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Content {
    #[serde(default)]
    max_length: u32,
    counting: Option<String>,
    max_length_setting: Option<String>,
    #[serde(default)]
    title_required: bool,
    #[serde(default)]
    max_title_length: u32,
    #[serde(default)]
    media_required: bool,
    #[serde(default)]
    threads: bool,
    #[serde(default)]
    media: Vec<Media>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Media {
    kind: String,
    max_count: u32,
    max_bytes: u64,
    #[serde(default)]
    mime_types: Vec<String>,
    #[serde(default)]
    needs_public_url: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Setting {
    name: String,
    description: String,
    #[serde(default)]
    required: bool,
    default_value: Option<String>,
    #[serde(default)]
    is_host: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PostField {
    name: String,
    description: String,
    kind: Option<String>,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    allowed: Vec<String>,
    default_value: Option<String>,
}

const SDK: &str = "::outreach_sdk";

/// A WIT enum value as its Rust variant (`oauth2-pkce` → `Oauth2Pkce`),
/// checked against the values `allowed`.
fn variant(what: &str, value: &str, allowed: &[&str]) -> Result<String, String> {
    if !allowed.contains(&value) {
        return Err(format!(
            "{what} = {value:?} is not one of: {}",
            allowed.join(", ")
        ));
    }
    let camel: String = value
        .split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect();
    let ty = what.rsplit('.').next().unwrap_or(what);
    let ty = TYPES
        .iter()
        .find(|(k, _)| *k == ty)
        .map(|(_, t)| *t)
        .unwrap_or(ty);
    Ok(format!("{SDK}::{ty}::{camel}"))
}

/// Which SDK type each key's values belong to.
const TYPES: &[(&str, &str)] = &[
    ("kind", "AuthKind"),
    ("client_auth", "ClientAuth"),
    ("expiry_format", "ExpiryFormat"),
    ("method", "HttpMethod"),
    ("pkce", "PkceMethod"),
    ("scope", "LimitScope"),
    ("reset_format", "ResetFormat"),
    ("counting", "CountRule"),
    ("media_kind", "MediaKind"),
    ("field_kind", "FieldType"),
    ("refresh", "RefreshStyle"),
];

const AUTH_KINDS: &[&str] = &[
    "oauth2",
    "oauth2-pkce",
    "oidc",
    "api-key",
    "app-password",
    "bot-token",
    "webhook-url",
    "session-login",
    "none",
];

fn lit(s: &str) -> String {
    format!("{s:?}")
}

fn string(s: &str) -> String {
    format!("::std::string::String::from({s:?})")
}

fn strings(v: &[String]) -> String {
    let items: Vec<String> = v.iter().map(|s| string(s)).collect();
    format!("::std::vec![{}]", items.join(", "))
}

fn option(v: &Option<String>) -> String {
    match v {
        Some(s) => format!("::core::option::Option::Some({})", string(s)),
        None => "::core::option::Option::None".into(),
    }
}

/// Check the `{{…}}` marks of a template: each must name a secret the
/// host holds, `appsecret_proof`, or a declared setting.
fn check_template(where_: &str, t: &str, settings: &[String]) -> Result<(), String> {
    let mut rest = t;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        let name = after[..end].trim();
        let known = matches!(
            name,
            "access_token"
                | "refresh_token"
                | "client_id"
                | "client_secret"
                | "username"
                | "password"
                | "appsecret_proof"
        );
        match name.strip_prefix("setting:") {
            Some(s) if !settings.iter().any(|d| d == s) => {
                return Err(format!(
                    "{where_} uses setting `{s}`, which `settings` does not declare"
                ));
            }
            Some(_) => {}
            None if !known => {
                return Err(format!(
                    "{where_} has `{{{{{name}}}}}`, which names no secret (access_token, refresh_token, client_id, client_secret, username, password, appsecret_proof) or setting (`{{{{setting:NAME}}}}`)"
                ));
            }
            None => {}
        }
        rest = &after[end + 2..];
    }
    Ok(())
}

/// `[(name, template)]` as `template_fields(&[…])`, every value checked.
fn fields(where_: &str, t: &Table, settings: &[String]) -> Result<String, String> {
    let mut items = Vec::new();
    for (k, v) in t {
        let Some(v) = v.as_str() else {
            return Err(format!("{where_}.{k} must be a string"));
        };
        check_template(&format!("{where_}.{k}"), v, settings)?;
        items.push(format!("({}, {})", lit(k), lit(v)));
    }
    Ok(format!("{SDK}::template_fields(&[{}])", items.join(", ")))
}

fn shape(where_: &str, s: Option<&Shape>) -> Result<String, String> {
    let d = Shape::default();
    let s = s.unwrap_or(&d);
    let or = |v: &Option<String>, default: &str| string(v.as_deref().unwrap_or(default));
    let format = variant(
        &format!("{where_}.expiry_format"),
        s.expiry_format.as_deref().unwrap_or("seconds-from-now"),
        &["seconds-from-now", "unix-seconds", "unix-millis", "never"],
    )?;
    Ok(format!(
        "{SDK}::TokenShape {{ access_token: {}, refresh_token: {}, expiry: {}, expiry_format: {format}, refresh_expiry: {}, scope: {}, error: {} }}",
        or(&s.access_token, "access_token"),
        or(&s.refresh_token, "refresh_token"),
        or(&s.expiry, "expires_in"),
        or(&s.refresh_expiry, ""),
        or(&s.scope, "scope"),
        or(&s.error, "error"),
    ))
}

fn exchange(where_: &str, x: &Exchange, settings: &[String]) -> Result<String, String> {
    let method = variant(
        &format!("{where_}.method"),
        x.method.as_deref().unwrap_or("get"),
        &["get", "post", "put", "patch", "delete", "head"],
    )?;
    check_template(&format!("{where_}.url"), &x.url, settings)?;
    let body = match (&x.form, &x.json) {
        (Some(_), Some(_)) => {
            return Err(format!("{where_} has both `form` and `json`; pick one"));
        }
        (Some(f), None) => format!(
            "{SDK}::ExchangeBody::Form({})",
            fields(&format!("{where_}.form"), f, settings)?
        ),
        (None, Some(j)) => {
            check_template(&format!("{where_}.json"), j, settings)?;
            format!(
                "{SDK}::ExchangeBody::Json({SDK}::json_template({}))",
                lit(j)
            )
        }
        (None, None) => format!("{SDK}::ExchangeBody::None"),
    };
    Ok(format!(
        "{SDK}::CustomExchange {{ method: {method}, url: {SDK}::template({}), query: {}, headers: {}, body: {body}, response: {} }}",
        lit(&x.url),
        fields(&format!("{where_}.query"), &x.query, settings)?,
        fields(&format!("{where_}.headers"), &x.headers, settings)?,
        shape(&format!("{where_}.response"), x.response.as_ref())?,
    ))
}

fn placement(v: &toml::Value) -> Result<String, String> {
    let bad = || {
        format!(
            "auth.placement: {v} is not one of \"bearer\", {{ header = {{ name, prefix }} }}, {{ query = \"…\" }}, {{ proof = \"…\" }}, {{ cookie = \"…\" }}"
        )
    };
    if v.as_str() == Some("bearer") {
        return Ok(format!("{SDK}::CredentialPlacement::Bearer"));
    }
    let t = v.as_table().filter(|t| t.len() == 1).ok_or_else(bad)?;
    let (k, v) = t.iter().next().ok_or_else(bad)?;
    match (k.as_str(), v) {
        ("header", toml::Value::Table(h)) => {
            let name = h.get("name").and_then(|n| n.as_str()).ok_or_else(bad)?;
            let prefix = h.get("prefix").and_then(|p| p.as_str()).unwrap_or("");
            Ok(format!(
                "{SDK}::CredentialPlacement::Header({SDK}::HeaderPlacement {{ name: {}, prefix: {} }})",
                string(name),
                string(prefix)
            ))
        }
        ("query" | "proof" | "cookie", toml::Value::String(s)) => {
            let tag = match k.as_str() {
                "query" => "Query",
                "proof" => "Proof",
                _ => "Cookie",
            };
            Ok(format!("{SDK}::CredentialPlacement::{tag}({})", string(s)))
        }
        _ => Err(bad()),
    }
}

fn generate(p: &Platform) -> Result<String, String> {
    let id_ok = !p.id.is_empty()
        && p.id.len() <= 32
        && p.id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !id_ok {
        return Err(format!(
            "id = {:?} must be 1-32 characters of a-z, 0-9, `-`, `_`",
            p.id
        ));
    }
    let settings: Vec<String> = p.settings.iter().map(|s| s.name.clone()).collect();
    let a = &p.auth;
    let kind = variant("auth.kind", &a.kind, AUTH_KINDS)?;
    let client_auth = variant(
        "auth.client_auth",
        a.client_auth.as_deref().unwrap_or("none"),
        &["basic", "body", "none"],
    )?;
    let pkce = variant(
        "auth.pkce",
        a.pkce.as_deref().unwrap_or("s256"),
        &["s256", "s256-hex", "plain"],
    )?;
    let refresh = match &a.refresh {
        None => format!("{SDK}::RefreshStyle::None"),
        Some(toml::Value::String(s)) => variant(
            "auth.refresh",
            s,
            &["none", "standard", "rotating", "relogin"],
        )?,
        Some(toml::Value::Table(t)) if t.len() == 1 && t.contains_key("custom") => {
            let x: Exchange = t["custom"]
                .clone()
                .try_into()
                .map_err(|e| format!("auth.refresh.custom: {e}"))?;
            format!(
                "{SDK}::RefreshStyle::Custom({})",
                exchange("auth.refresh.custom", &x, &settings)?
            )
        }
        Some(other) => {
            return Err(format!(
                "auth.refresh = {other} is not one of none, standard, rotating, relogin, {{ custom = {{…}} }}"
            ));
        }
    };
    let placements = a
        .placement
        .iter()
        .map(placement)
        .collect::<Result<Vec<_>, _>>()?;
    let login = match &a.login {
        Some(x) => format!(
            "::core::option::Option::Some({})",
            exchange("auth.login", x, &settings)?
        ),
        None => "::core::option::Option::None".into(),
    };
    let after = a
        .after_connect
        .iter()
        .enumerate()
        .map(|(i, x)| exchange(&format!("auth.after_connect[{i}]"), x, &settings))
        .collect::<Result<Vec<_>, _>>()?;
    let identities = match &a.identities {
        Some(i) => {
            if !settings.contains(&i.setting) {
                return Err(format!(
                    "auth.identities.setting = {:?} is not declared in `settings`",
                    i.setting
                ));
            }
            let x = match &i.exchange {
                Some(x) => format!(
                    "::core::option::Option::Some({})",
                    exchange("auth.identities.exchange", x, &settings)?
                ),
                None => "::core::option::Option::None".into(),
            };
            format!(
                "::core::option::Option::Some({SDK}::IdentityChoice {{ setting: {}, exchange: {x}, self_allowed: {} }})",
                string(&i.setting),
                i.self_allowed
            )
        }
        None => "::core::option::Option::None".into(),
    };
    let auth = format!(
        "{SDK}::AuthInfo {{ kind: {kind}, scopes: {}, scope_separator: {}, client_auth: {client_auth}, authorize_params: {}, token_params: {}, token_response: {}, refresh: {refresh}, pkce: {pkce}, access_token_lifetime: {}, refresh_token_lifetime: {}, refresh_min_age: {}, placement: ::std::vec![{}], dynamic_registration: {}, login: {login}, after_connect: ::std::vec![{}], identities: {identities} }}",
        strings(&a.scopes),
        string(a.scope_separator.as_deref().unwrap_or(" ")),
        fields("auth.authorize_params", &a.authorize_params, &settings)?,
        fields("auth.token_params", &a.token_params, &settings)?,
        shape("auth.token_response", a.token_response.as_ref())?,
        a.access_token_lifetime,
        a.refresh_token_lifetime,
        a.refresh_min_age,
        placements.join(", "),
        a.dynamic_registration,
        after.join(", "),
    );

    let mut endpoints = String::new();
    for (name, url) in &p.endpoints {
        let Some(url) = url.as_str() else {
            return Err(format!("endpoints.{name} must be a URL string"));
        };
        let setting = url
            .strip_prefix('{')
            .and_then(|r| r.split_once('}'))
            .map(|(s, _)| s);
        match setting {
            Some(s) if !p.settings.iter().any(|d| d.name == s && d.is_host) => {
                return Err(format!(
                    "endpoints.{name} starts with `{{{s}}}`, which is not a setting declared with is_host = true"
                ));
            }
            Some(_) => {}
            None if !url.starts_with("https://") => {
                return Err(format!(
                    "endpoints.{name} = {url:?} must be an https URL (or start with `{{SETTING}}`)"
                ));
            }
            None => {}
        }
        let _ = write!(
            endpoints,
            "{SDK}::Endpoint {{ name: {}, url: {} }}, ",
            string(name),
            string(url)
        );
    }

    let mut limits = String::new();
    for (i, l) in p.rate_limits.iter().enumerate() {
        if l.requests == 0 || l.window_seconds == 0 {
            return Err(format!(
                "rate_limits[{i}] must allow at least one request in a window of at least one second"
            ));
        }
        let scope = variant(
            &format!("rate_limits[{i}].scope"),
            l.scope.as_deref().unwrap_or("account"),
            &["app", "account"],
        )?;
        let _ = write!(
            limits,
            "{SDK}::RateLimit {{ class: {}, requests: {}, window_seconds: {}, scope: {scope} }}, ",
            string(&l.class),
            l.requests,
            l.window_seconds
        );
    }
    let headers = match &p.rate_limit_headers {
        None => "::core::option::Option::None".into(),
        Some(h) => {
            let format = variant(
                "rate_limit_headers.reset_format",
                &h.reset_format,
                &["unix-seconds", "seconds-until", "timestamp"],
            )?;
            let named = |suffix: &str, given: &Option<String>| match (&h.prefix, given) {
                (_, Some(g)) => Some(g.clone()),
                (Some(prefix), None) => Some(format!("{prefix}{suffix}")),
                (None, None) => None,
            };
            format!(
                "::core::option::Option::Some({SDK}::RateLimitHeaders {{ limit: {}, remaining: {}, reset: {}, reset_format: {format} }})",
                option(&named("limit", &h.limit)),
                option(&named("remaining", &h.remaining)),
                option(&named("reset", &h.reset)),
            )
        }
    };

    let c = &p.content;
    let counting = variant(
        "content.counting",
        c.counting.as_deref().unwrap_or("chars"),
        &["chars", "graphemes", "x-weighted", "utf16", "bytes"],
    )?;
    if let Some(s) = &c.max_length_setting
        && !settings.contains(s)
    {
        return Err(format!(
            "content.max_length_setting = {s:?} is not declared in `settings`"
        ));
    }
    let mut media = String::new();
    for (i, m) in c.media.iter().enumerate() {
        if m.max_count == 0 || m.max_bytes == 0 {
            return Err(format!(
                "content.media[{i}] must allow at least one item of at least one byte"
            ));
        }
        let kind = variant(
            &format!("content.media[{i}].media_kind"),
            &m.kind,
            &["image", "video", "gif", "document"],
        )?;
        let _ = write!(
            media,
            "{SDK}::MediaRule {{ kind: {kind}, max_count: {}, max_bytes: {}, mime_types: {}, needs_public_url: {} }}, ",
            m.max_count,
            m.max_bytes,
            strings(&m.mime_types),
            m.needs_public_url
        );
    }
    let content = format!(
        "{SDK}::ContentRules {{ max_length: {}, counting: {counting}, max_length_setting: {}, title_required: {}, max_title_length: {}, media_required: {}, media: ::std::vec![{media}], threads: {} }}",
        c.max_length,
        option(&c.max_length_setting),
        c.title_required,
        c.max_title_length,
        c.media_required,
        c.threads
    );

    let mut settings_code = String::new();
    for s in &p.settings {
        let _ = write!(
            settings_code,
            "{SDK}::Setting {{ name: {}, description: {}, required: {}, default_value: {}, is_host: {} }}, ",
            string(&s.name),
            string(&s.description),
            s.required,
            option(&s.default_value),
            s.is_host
        );
    }
    let mut fields_code = String::new();
    for (i, f) in p.post_fields.iter().enumerate() {
        let kind = variant(
            &format!("post_fields[{i}].field_kind"),
            f.kind.as_deref().unwrap_or("text"),
            &["text", "integer", "boolean", "choice", "url"],
        )?;
        if f.kind.as_deref() == Some("choice") && f.allowed.is_empty() {
            return Err(format!(
                "post_fields[{i}] ({}) is a choice with no `allowed` values",
                f.name
            ));
        }
        if let Some(d) = &f.default_value
            && !f.allowed.is_empty()
            && !f.allowed.contains(d)
        {
            return Err(format!(
                "post_fields[{i}] ({}) defaults to {d:?}, which is not among its allowed values",
                f.name
            ));
        }
        let _ = write!(
            fields_code,
            "{SDK}::PostField {{ name: {}, description: {}, kind: {kind}, required: {}, allowed: {}, default_value: {} }}, ",
            string(&f.name),
            string(&f.description),
            f.required,
            strings(&f.allowed),
            option(&f.default_value)
        );
    }
    let version = match &p.version {
        Some(v) => string(v),
        None => "::std::string::String::from(env!(\"CARGO_PKG_VERSION\"))".into(),
    };
    Ok(format!(
        "{SDK}::Manifest {{ id: {}, name: {}, version: {version}, auth: {auth}, endpoints: ::std::vec![{endpoints}], hosts: {}, rate_limits: ::std::vec![{limits}], rate_limit_headers: {headers}, content: {content}, settings: ::std::vec![{settings_code}], post_fields: ::std::vec![{fields_code}], idempotent_publish: {} }}",
        string(&p.id),
        string(&p.name),
        strings(&p.hosts),
        p.idempotent_publish
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<String, String> {
        toml::from_str::<Platform>(text)
            .map_err(|e| e.to_string())
            .and_then(|p| generate(&p))
    }

    const BASE: &str =
        "id = \"demo\"\nname = \"Demo\"\n[auth]\nkind = \"api-key\"\nplacement = [\"bearer\"]\n";

    #[test]
    fn a_valid_file_builds_a_manifest() {
        let code = check(&format!(
            "{BASE}[endpoints]\napi = \"https://api.demo.example\"\n[[post_fields]]\nname = \"visibility\"\ndescription = \"who\"\nkind = \"choice\"\nallowed = [\"public\", \"private\"]\n"
        ))
        .unwrap();
        assert!(code.contains("AuthKind::ApiKey"), "{code}");
        assert!(code.contains("FieldType::Choice"), "{code}");
        assert!(code.contains("\"https://api.demo.example\""), "{code}");
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            (format!("{BASE}colour = 1\n"), "unknown field `colour`"),
            (
                BASE.replace("api-key", "api_key"),
                "auth.kind = \"api_key\" is not one of",
            ),
            (
                format!("{BASE}[endpoints]\napi = \"http://plain.example\"\n"),
                "must be an https URL",
            ),
            (
                format!("{BASE}[endpoints]\napi = \"{{instance}}/v1\"\n"),
                "not a setting declared with is_host = true",
            ),
            (
                format!(
                    "{BASE}[auth.login]\nurl = \"login\"\nform = {{ pw = \"{{{{pasword}}}}\" }}\n"
                ),
                "names no secret",
            ),
            (
                format!("{BASE}[auth.identities]\nsetting = \"page_id\"\n"),
                "is not declared in `settings`",
            ),
            (
                format!(
                    "{BASE}[[post_fields]]\nname = \"v\"\ndescription = \"d\"\nkind = \"choice\"\n"
                ),
                "a choice with no `allowed` values",
            ),
        ];
        for (text, says) in cases {
            let err = check(&text).unwrap_err();
            assert!(err.contains(says), "{text}\n→ {err}");
        }
    }
}
