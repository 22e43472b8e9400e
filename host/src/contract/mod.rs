//! The contract: the types and interfaces generated from the WIT world a
//! plugin implements, shared by the broker ([`crate::http`]) and the plugin
//! host ([`crate::plugin`]), and how its errors read for people.
//!
//! Owns: the generated bindings of every contract version the host
//! implements — the current one ([`wit`], 0.2.0), which is the host's own
//! model, and 0.1.0 ([`v0_1`]) with the conversions of its data into the
//! current model — and small helpers on their types.
//!
//! Never: loads, calls or checks a plugin (that is [`crate::plugin`]), or
//! sends a request (that is [`crate::http`]).

/// The contract version whose types the host works with.
pub const CURRENT: &str = "0.2.0";

/// Bindings generated from the current contract.
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/v0.2.0",
        world: "outreach:platform/plugin@0.2.0",
        imports: { default: async | trappable },
        exports: { default: async },
        additional_derives: [serde::Serialize, serde::Deserialize],
    });
}

/// Short paths to the contract's interfaces.
pub mod wit {
    pub use super::bindings::outreach::platform::{host, types};
}

impl wit::types::Post {
    /// A text-only post (no title, link, media or thread), keyed by
    /// `idempotency_key`.
    pub fn text(text: impl Into<String>, idempotency_key: impl Into<String>) -> Self {
        wit::types::Post {
            text: text.into(),
            title: None,
            link: None,
            media: Vec::new(),
            reply_to: None,
            thread_root: None,
            extra: Vec::new(),
            idempotency_key: idempotency_key.into(),
        }
    }
}

use wit::types::{CallError, SecretName};

/// The name a secret has in the host's credential maps and in 0.1.0
/// placeholders (`access_token` for `{{access_token}}`).
pub fn secret_key(name: SecretName) -> &'static str {
    match name {
        SecretName::AccessToken => "access_token",
        SecretName::RefreshToken => "refresh_token",
        SecretName::ClientId => "client_id",
        SecretName::ClientSecret => "client_secret",
        SecretName::Username => "username",
        SecretName::Password => "password",
    }
}

/// The secret a 0.1.0 placeholder name stands for.
pub fn secret_named(key: &str) -> Option<SecretName> {
    Some(match key {
        "access_token" => SecretName::AccessToken,
        "refresh_token" => SecretName::RefreshToken,
        "client_id" => SecretName::ClientId,
        "client_secret" => SecretName::ClientSecret,
        "username" => SecretName::Username,
        "password" => SecretName::Password,
        _ => return None,
    })
}

impl wit::types::CustomExchange {
    /// Whether the exchange sends secret `name` anywhere.
    pub fn uses(&self, name: SecretName) -> bool {
        use wit::types::{ExchangeBody, TextPart};
        let named = |parts: &[TextPart]| {
            parts
                .iter()
                .any(|p| matches!(p, TextPart::Secret(s) if s.name == name))
        };
        named(&self.url)
            || self
                .query
                .iter()
                .chain(&self.headers)
                .any(|f| named(&f.value))
            || match &self.body {
                ExchangeBody::None => false,
                ExchangeBody::Form(f) => f.iter().any(|f| named(&f.value)),
                ExchangeBody::Json(t) => named(t),
            }
    }
}

pub mod v0_1;

/// A call error as one line for people.
pub fn describe_call_error(e: &CallError) -> String {
    match e {
        CallError::AuthExpired(m) => format!("access token expired or invalid: {m}"),
        CallError::NeedsReconnect(m) => format!("needs reconnect: {m}"),
        CallError::RateLimited(r) => match r.retry_after_seconds {
            Some(s) => format!("rate limited, retry in {s} s: {}", r.message),
            None => format!("rate limited: {}", r.message),
        },
        CallError::Rejected(m) => format!("rejected: {m}"),
        CallError::Transient(m) => format!("temporary failure: {m}"),
        CallError::OutcomeUnknown(m) => {
            format!("outcome unknown (the post may or may not exist): {m}")
        }
    }
}

/// The short kind name of a call error, for `--json`.
pub fn call_error_kind(e: &CallError) -> &'static str {
    match e {
        CallError::AuthExpired(_) => "auth-expired",
        CallError::NeedsReconnect(_) => "needs-reconnect",
        CallError::RateLimited(_) => "rate-limited",
        CallError::Rejected(_) => "rejected",
        CallError::Transient(_) => "transient",
        CallError::OutcomeUnknown(_) => "outcome-unknown",
    }
}
