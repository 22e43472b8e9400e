//! The outreach plugin SDK: everything a platform plugin needs, so that a
//! plugin is one short file of declarations and request building.
//!
//! A plugin implements [`Platform`] and registers it with
//! [`export_platform!`]:
//!
//! ```text
//! impl Platform for Example {
//!     fn manifest() -> Manifest { /* id, auth, endpoints, hosts, limits */ }
//!     fn publish(ctx: &Context, post: &Post) -> Result<Receipt, CallError> {
//!         Request::post(ctx.url("api", "/posts")?).json(&json!({"text": post.text}))
//!             .authed().class("publish").send()?.json_ok() /* → Receipt */
//!     }
//!     fn profile(ctx: &Context) -> Result<Profile, CallError> { /* … */ }
//! }
//! outreach_sdk::export_platform!(Example);
//! ```
//!
//! The README's "Write a platform plugin" has the complete example; it is
//! compiled as a doctest of this crate.
//!
//! The SDK never sees a secret: [`Request::authed`] asks the host to attach
//! the account's credential, and a URL or header that holds one is built in
//! parts with [`template`] (`template("{{access_token}}")` for a Discord
//! webhook): the host writes the secret into the marked part after its
//! allow-list check. Anything else — post text, ids from the platform — is
//! text and stays text, whatever it contains.
//!
//! Build with `cargo build --release --target wasm32-unknown-unknown`; the
//! host wraps the module into a component when it loads it (see README).

pub mod count;
pub mod fields;
mod http;
pub mod meta;
mod rules;
pub mod upload;

#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit/v0.2.0",
        world: "outreach:platform/plugin@0.2.0",
        pub_export_macro: true,
        export_macro_name: "__export_plugin_world",
        default_bindings_module: "outreach_sdk::bindings",
        generate_all,
    });
}

pub use bindings::outreach::platform::host::{Body, BodyPart, HttpError, Level, MediaSlice};
pub use bindings::outreach::platform::types::*;
pub use fields::Fields;
pub use http::{Multipart, Request, Response, encode_component, form_encode, query_url};
pub use rules::check_content;

/// The declarative half of a manifest from a TOML file beside the plugin's
/// code, read and checked when the plugin compiles:
/// `fn manifest() -> Manifest { outreach_sdk::platform!("platform.toml") }`.
pub use outreach_sdk_macros::platform;

/// Re-exported so plugins need no direct dependency on `serde_json`.
pub use serde_json;

/// Everything a plugin usually needs, in one import.
pub mod prelude {
    pub use crate::fields;
    pub use crate::{
        Account, AuthInfo, AuthKind, CallError, ClientAuth, ContentRules, Context, CountRule,
        CredentialPlacement, CustomExchange, Endpoint, ExchangeBody, ExpiryFormat, Field,
        FieldType, Fields, HeaderPlacement, HttpMethod, Identity, IdentityChoice, Level,
        LimitScope, Manifest, Media, MediaKind, MediaRule, Multipart, Pair, PkceMethod, Platform,
        Post, PostField, Problem, Profile, RateLimit, RateLimitHeaders, RateLimited, Receipt,
        ReceiptState, RefreshStyle, Request, ResetFormat, Response, SecretName, Setting, TextPart,
        TokenShape, check_content, encode_component, json_template, log, now_millis, pair, pairs,
        query_url, rfc3339_millis, sleep_millis, template, template_fields,
    };
    pub use serde_json::json;
}

/// What a platform plugin implements. Only `manifest`, `publish` and
/// `profile` are required; the rest have defaults that suit most platforms.
pub trait Platform {
    /// Describe the platform: auth, endpoints, hosts, limits, rules.
    fn manifest() -> Manifest;

    /// Problems with a post, before anything is sent. The default checks
    /// the manifest's content rules (length by the platform's counting
    /// rule, title, media kinds, counts and sizes). A plugin that reads
    /// platform fields (`post.extra`) or account settings checks their
    /// values here too, with [`Fields`].
    fn validate(post: &Post, account: Option<&Account>) -> Vec<Problem> {
        check_content(&Self::manifest().content, post, account)
    }

    /// Publish one post (or one reply of a thread).
    fn publish(ctx: &Context, post: &Post) -> Result<Receipt, CallError>;

    /// Who the account is.
    fn profile(ctx: &Context) -> Result<Profile, CallError>;

    /// Whether `post` already exists on the platform (to settle an attempt
    /// whose outcome is unknown). The default cannot tell.
    fn find_post(_ctx: &Context, _post: &Post) -> Result<Option<Receipt>, CallError> {
        Ok(None)
    }

    /// Where a post this plugin reported as pending stands now. The default
    /// (for platforms that never answer pending) returns it unchanged.
    fn check_receipt(_ctx: &Context, receipt: &Receipt) -> Result<Receipt, CallError> {
        Ok(receipt.clone())
    }

    /// The pages or organizations the grant in `ctx` can act as (for a
    /// manifest with `auth.identities`). The default: none.
    fn list_identities(_ctx: &Context) -> Result<Vec<Identity>, CallError> {
        Ok(Vec::new())
    }
}

static MANIFEST: std::sync::OnceLock<fn() -> Manifest> = std::sync::OnceLock::new();

/// Whether the account's credential is one that expires (and so a 401 may
/// mean "expired" rather than "revoked"), from the manifest. Asked only
/// when a response is a 401, so no call builds the manifest otherwise.
pub fn credential_expires() -> bool {
    let Some(manifest) = MANIFEST.get() else {
        return true;
    };
    let m = manifest();
    m.auth.access_token_lifetime > 0
        || !matches!(m.auth.refresh, RefreshStyle::None)
        || matches!(
            m.auth.kind,
            AuthKind::Oauth2 | AuthKind::Oauth2Pkce | AuthKind::Oidc | AuthKind::AppPassword
        )
}

#[doc(hidden)]
pub fn __note_manifest(manifest: fn() -> Manifest) {
    let _ = MANIFEST.set(manifest);
}

/// Register a [`Platform`] implementation as this component's exports.
#[macro_export]
macro_rules! export_platform {
    ($platform:ty) => {
        #[doc(hidden)]
        pub struct __OutreachExports;

        impl $crate::bindings::Guest for __OutreachExports {
            fn describe() -> $crate::Manifest {
                <$platform as $crate::Platform>::manifest()
            }
            fn validate(
                post: $crate::Post,
                account: ::core::option::Option<$crate::Account>,
            ) -> ::std::vec::Vec<$crate::Problem> {
                <$platform as $crate::Platform>::validate(&post, account.as_ref())
            }
            fn publish(
                ctx: $crate::Context,
                post: $crate::Post,
            ) -> ::core::result::Result<$crate::Receipt, $crate::CallError> {
                $crate::__note_manifest(<$platform as $crate::Platform>::manifest);
                <$platform as $crate::Platform>::publish(&ctx, &post)
            }
            fn profile(
                ctx: $crate::Context,
            ) -> ::core::result::Result<$crate::Profile, $crate::CallError> {
                $crate::__note_manifest(<$platform as $crate::Platform>::manifest);
                <$platform as $crate::Platform>::profile(&ctx)
            }
            fn find_post(
                ctx: $crate::Context,
                post: $crate::Post,
            ) -> ::core::result::Result<::core::option::Option<$crate::Receipt>, $crate::CallError>
            {
                $crate::__note_manifest(<$platform as $crate::Platform>::manifest);
                <$platform as $crate::Platform>::find_post(&ctx, &post)
            }
            fn check_receipt(
                ctx: $crate::Context,
                receipt: $crate::Receipt,
            ) -> ::core::result::Result<$crate::Receipt, $crate::CallError> {
                $crate::__note_manifest(<$platform as $crate::Platform>::manifest);
                <$platform as $crate::Platform>::check_receipt(&ctx, &receipt)
            }
            fn list_identities(
                ctx: $crate::Context,
            ) -> ::core::result::Result<::std::vec::Vec<$crate::Identity>, $crate::CallError> {
                $crate::__note_manifest(<$platform as $crate::Platform>::manifest);
                <$platform as $crate::Platform>::list_identities(&ctx)
            }
        }

        $crate::bindings::__export_plugin_world!(__OutreachExports with_types_in $crate::bindings);
    };
}

impl MediaRule {
    /// Up to `max_count` attachments of `kind`, each at most `max_bytes`,
    /// of these MIME types.
    pub fn new(kind: MediaKind, max_count: u32, max_bytes: u64, mime_types: &[&str]) -> Self {
        MediaRule {
            kind,
            max_count,
            max_bytes,
            mime_types: mime_types.iter().map(|m| m.to_string()).collect(),
            needs_public_url: false,
        }
    }

    /// Items of this kind must be fetchable from a public URL.
    pub fn public_url(mut self) -> Self {
        self.needs_public_url = true;
        self
    }
}

impl Receipt {
    /// A post that is live as `id`, at `url`.
    pub fn published(id: impl Into<String>, url: Option<String>) -> Self {
        Receipt {
            id: id.into(),
            url,
            state: ReceiptState::Published,
        }
    }
}

impl PostField {
    /// A field with one of `allowed` values, `default` when not given.
    pub fn choice(name: &str, description: &str, allowed: &[&str], default: Option<&str>) -> Self {
        PostField {
            name: name.into(),
            description: description.into(),
            kind: FieldType::Choice,
            required: false,
            allowed: allowed.iter().map(|a| a.to_string()).collect(),
            default_value: default.map(str::to_string),
        }
    }

    /// A field of type `kind` (text, integer, boolean, url).
    pub fn of(name: &str, kind: FieldType, description: &str) -> Self {
        PostField {
            name: name.into(),
            description: description.into(),
            kind,
            required: false,
            allowed: Vec::new(),
            default_value: None,
        }
    }

    /// The post cannot go to this platform without it.
    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }
}

/// Text with `{{name}}` marks where the host writes a secret (`access_token`,
/// `refresh_token`, `client_id`, `client_secret`, `username`, `password`)
/// and `{{setting:NAME}}` where it writes an account setting
/// (`{{appsecret_proof}}`: Meta's proof of the access token), in parts. Takes only text written in the plugin's code (`&'static str`):
/// text that comes from a post or a platform must never become a template.
pub fn template(text: &'static str) -> Vec<TextPart> {
    parts_of(text, SecretEncoding::Raw)
}

/// [`template`] for a JSON document: secrets are written as the inside of
/// a JSON string (`{"password":"{{password}}"}`).
pub fn json_template(text: &'static str) -> Vec<TextPart> {
    parts_of(text, SecretEncoding::JsonString)
}

/// Name/template pairs as [`Field`]s (headers, query, form fields of a
/// declared exchange).
pub fn template_fields(items: &[(&'static str, &'static str)]) -> Vec<Field> {
    items
        .iter()
        .map(|(name, value)| Field {
            name: name.to_string(),
            value: template(value),
        })
        .collect()
}

fn parts_of(text: &str, encoding: SecretEncoding) -> Vec<TextPart> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        literal.push_str(&rest[..start]);
        let name = match after[..end].trim() {
            "access_token" => Some(SecretName::AccessToken),
            "refresh_token" => Some(SecretName::RefreshToken),
            "client_id" => Some(SecretName::ClientId),
            "client_secret" => Some(SecretName::ClientSecret),
            "username" => Some(SecretName::Username),
            "password" => Some(SecretName::Password),
            _ => None,
        };
        if after[..end].trim() == "appsecret_proof" {
            if !literal.is_empty() {
                parts.push(TextPart::Text(std::mem::take(&mut literal)));
            }
            parts.push(TextPart::AppsecretProof);
            rest = &after[end + 2..];
            continue;
        }
        match name {
            Some(name) => {
                if !literal.is_empty() {
                    parts.push(TextPart::Text(std::mem::take(&mut literal)));
                }
                parts.push(TextPart::Secret(SecretPart { name, encoding }));
            }
            None => match after[..end].trim().strip_prefix("setting:") {
                // An account setting by name (a page id an exchange needs).
                Some(setting) if !setting.is_empty() => {
                    if !literal.is_empty() {
                        parts.push(TextPart::Text(std::mem::take(&mut literal)));
                    }
                    parts.push(TextPart::Setting(setting.to_string()));
                }
                _ => literal.push_str(&rest[start..start + end + 4]),
            },
        }
        rest = &after[end + 2..];
    }
    literal.push_str(rest);
    if !literal.is_empty() || parts.is_empty() {
        parts.push(TextPart::Text(literal));
    }
    parts
}

impl AuthInfo {
    /// A credential the user pastes once and that never expires or
    /// refreshes (API key, bot token, webhook URL), attached as `placement`.
    pub fn static_credential(kind: AuthKind, placement: CredentialPlacement) -> Self {
        AuthInfo {
            kind,
            scopes: vec![],
            scope_separator: " ".into(),
            client_auth: ClientAuth::None,
            authorize_params: vec![],
            token_params: vec![],
            token_response: TokenShape {
                expiry_format: ExpiryFormat::Never,
                ..Default::default()
            },
            refresh: RefreshStyle::None,
            pkce: PkceMethod::S256,
            access_token_lifetime: 0,
            refresh_token_lifetime: 0,
            refresh_min_age: 0,
            placement: vec![placement],
            dynamic_registration: false,
            login: None,
            after_connect: vec![],
            identities: None,
        }
    }
}

impl RateLimit {
    /// `requests` of `class` per `window_seconds` for each account.
    pub fn per_account(class: &str, requests: u32, window_seconds: u32) -> Self {
        RateLimit {
            class: class.into(),
            requests,
            window_seconds,
            scope: LimitScope::Account,
        }
    }

    /// `requests` of `class` per `window_seconds` for the whole app (all
    /// accounts together).
    pub fn per_app(class: &str, requests: u32, window_seconds: u32) -> Self {
        RateLimit {
            scope: LimitScope::App,
            ..Self::per_account(class, requests, window_seconds)
        }
    }
}

impl RateLimitHeaders {
    /// The usual trio `{prefix}limit`, `{prefix}remaining`, `{prefix}reset`
    /// (`x-ratelimit-`, `x-rate-limit-`, `ratelimit-`).
    pub fn prefixed(prefix: &str, reset_format: ResetFormat) -> Self {
        RateLimitHeaders {
            limit: Some(format!("{prefix}limit")),
            remaining: Some(format!("{prefix}remaining")),
            reset: Some(format!("{prefix}reset")),
            reset_format,
        }
    }
}

/// A [`Pair`] from two string-likes.
pub fn pair(name: impl Into<String>, value: impl Into<String>) -> Pair {
    Pair {
        name: name.into(),
        value: value.into(),
    }
}

/// Many [`Pair`]s from `(name, value)` tuples.
pub fn pairs(items: &[(&str, &str)]) -> Vec<Pair> {
    items.iter().map(|(n, v)| pair(*n, *v)).collect()
}

/// Write to the host's log.
pub fn log(level: Level, message: &str) {
    bindings::outreach::platform::host::log(level, message);
}

/// Milliseconds since the Unix epoch, from the host's clock.
pub fn now_millis() -> u64 {
    bindings::outreach::platform::host::now_millis()
}

/// `millis` since the Unix epoch as RFC 3339 UTC with milliseconds
/// (`2026-11-26T12:00:00.000Z`). Hand-rolled (days → civil date) because a
/// date crate would add more to every plugin than this whole function.
pub fn rfc3339_millis(millis: u64) -> String {
    let (secs, ms) = (millis / 1000, millis % 1000);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 >= 0.
    let z = days as i64 + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Sleep in the host (bounded by the call's deadline).
pub fn sleep_millis(millis: u64) {
    bindings::outreach::platform::host::sleep_millis(millis)
}

/// Remember where a long upload of this delivery stands, so that a later
/// attempt resumes there (`""` forgets it). The host keeps it encrypted
/// and never shows its values.
pub fn checkpoint(state: &str) {
    bindings::outreach::platform::host::checkpoint(state)
}

/// What [`checkpoint`] last saved for this delivery.
pub fn last_checkpoint() -> Option<String> {
    bindings::outreach::platform::host::last_checkpoint()
}

impl Context {
    /// The effective URL of endpoint `name` (manifest value or the user's
    /// override), with `path` appended.
    pub fn url(&self, name: &str, path: &str) -> Result<String, CallError> {
        let base = self
            .endpoints
            .iter()
            .find(|e| e.name == name)
            .map(|e| e.url.as_str())
            .ok_or_else(|| {
                CallError::Rejected(format!("the plugin has no endpoint named `{name}`"))
            })?;
        Ok(join_url(base, path))
    }

    /// The value of account setting `name`, if set.
    pub fn setting(&self, name: &str) -> Option<&str> {
        self.account.setting(name)
    }

    /// The platform's id for the account, or an error telling the user to
    /// re-add it (the id is learned when the account is added).
    pub fn user_id(&self) -> Result<&str, CallError> {
        self.account.user_id.as_deref().ok_or_else(|| {
            CallError::NeedsReconnect(format!(
                "account `{}` has no platform user id; remove and add it again",
                self.account.name
            ))
        })
    }
}

impl Account {
    /// The value of setting `name`, if set.
    pub fn setting(&self, name: &str) -> Option<&str> {
        self.settings
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.value.as_str())
    }
}

impl Post {
    /// The value of platform-specific field `name` from the post file.
    pub fn extra(&self, name: &str) -> Option<&str> {
        self.extra
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.value.as_str())
    }
}

/// Join a base URL and a path with exactly one slash between them.
pub fn join_url(base: &str, path: &str) -> String {
    if path.is_empty() {
        return base.to_string();
    }
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

impl Default for TokenShape {
    fn default() -> Self {
        TokenShape {
            access_token: "access_token".into(),
            refresh_token: "refresh_token".into(),
            expiry: "expires_in".into(),
            expiry_format: ExpiryFormat::SecondsFromNow,
            refresh_expiry: String::new(),
            scope: "scope".into(),
            error: "error".into(),
        }
    }
}

impl Default for ContentRules {
    fn default() -> Self {
        ContentRules {
            max_length: 0,
            counting: CountRule::Chars,
            max_length_setting: None,
            title_required: false,
            max_title_length: 0,
            media_required: false,
            media: Vec::new(),
            threads: false,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn templates_mark_secrets_and_keep_the_rest_text() {
        use crate::{SecretName, TextPart};
        let t = super::template("{{access_token}}?wait=true");
        assert!(matches!(&t[0], TextPart::Secret(s) if s.name == SecretName::AccessToken));
        assert!(matches!(&t[1], TextPart::Text(s) if s == "?wait=true"));
        let t = super::template("a {{unknown}} b");
        assert!(matches!(&t[..], [TextPart::Text(s)] if s == "a {{unknown}} b"));
    }

    #[test]
    fn rfc3339_from_epoch_millis() {
        assert_eq!(super::rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            super::rfc3339_millis(951_782_400_123),
            "2000-02-29T00:00:00.123Z"
        );
        assert_eq!(
            super::rfc3339_millis(1_795_694_461_999),
            "2026-11-26T12:01:01.999Z"
        );
    }
}

/// The README's plugin example, compiled as a test so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeExample;
