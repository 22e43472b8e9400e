//! The contract: the types and interfaces generated from the WIT world a
//! plugin implements, shared by the broker ([`crate::http`]) and the plugin
//! host ([`crate::plugin`]), and how its errors read for people.
//!
//! Owns: the generated bindings and small helpers on their types.
//!
//! Never: loads, calls or checks a plugin (that is [`crate::plugin`]), or
//! sends a request (that is [`crate::http`]).

/// Bindings generated from the contract.
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1.0",
        world: "outreach:platform/plugin@0.1.0",
        imports: { default: async | trappable },
        exports: { default: async },
        additional_derives: [serde::Serialize],
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

use wit::types::CallError;

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
