//! Contract 0.1.0: its bindings, and its data in the current model.
//!
//! A 0.1.0 plugin marks where a credential goes with `{{name}}`
//! placeholders inside text. Its manifest's exchange templates (logins,
//! custom refreshes, token parameters) are written by the plugin's author
//! and filled with the user's own input, so every placeholder there becomes
//! a secret part here. Requests a 0.1.0 plugin builds at run time are
//! converted by the plugin host, which knows what the call was given (see
//! `crate::plugin`), not here.
//!
//! Owns: the 0.1.0 bindings and the conversions of its records into and out
//! of the current model.
//!
//! Never: sends, loads or calls anything.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::secret_named;
use super::wit::types as now;

/// Bindings generated from contract 0.1.0.
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1.0",
        world: "outreach:platform/plugin@0.1.0",
        imports: { default: async | trappable },
        exports: { default: async },
        additional_derives: [serde::Serialize, serde::Deserialize],
    });
}

/// Short paths to 0.1.0's interfaces.
pub mod wit {
    pub use super::bindings::outreach::platform::{host, types};
}

use wit::types as old;

/// A record whose shape is the same in both versions, in the other
/// version's type. Both sides are generated from WIT records with the same
/// fields and cases, so their serde forms are the same.
pub fn same<A: Serialize, B: DeserializeOwned>(a: &A) -> B {
    serde_json::to_value(a)
        .and_then(serde_json::from_value)
        .expect("a record of the same shape in contracts 0.1.0 and 0.2.0")
}

/// `text` with every `{{name}}` of a credential the host holds as a secret
/// part (written with `encoding`), and the rest as text.
pub fn template(text: &str, encoding: now::SecretEncoding) -> Vec<now::TextPart> {
    let mut parts = Vec::new();
    let mut rest = text;
    let mut literal = String::new();
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            break;
        };
        literal.push_str(&rest[..start]);
        match secret_named(after[..end].trim()) {
            Some(name) => {
                if !literal.is_empty() {
                    parts.push(now::TextPart::Text(std::mem::take(&mut literal)));
                }
                parts.push(now::TextPart::Secret(now::SecretPart { name, encoding }));
            }
            // Not a credential: text, as 0.1.0 would have refused to send it.
            None => literal.push_str(&rest[start..start + 2 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    literal.push_str(rest);
    if !literal.is_empty() || parts.is_empty() {
        parts.push(now::TextPart::Text(literal));
    }
    parts
}

fn fields(pairs: &[old::Pair], encoding: now::SecretEncoding) -> Vec<now::Field> {
    pairs
        .iter()
        .map(|p| now::Field {
            name: p.name.clone(),
            value: template(&p.value, encoding),
        })
        .collect()
}

fn token_shape(s: &old::TokenShape) -> now::TokenShape {
    now::TokenShape {
        access_token: s.access_token.clone(),
        refresh_token: s.refresh_token.clone(),
        expiry: s.expiry.clone(),
        expiry_format: same(&s.expiry_format),
        refresh_expiry: String::new(),
        scope: s.scope.clone(),
        error: s.error.clone(),
    }
}

fn exchange(x: &old::CustomExchange) -> now::CustomExchange {
    use now::SecretEncoding::{JsonString, Raw};
    now::CustomExchange {
        method: same(&x.method),
        url: template(&x.url, Raw),
        query: fields(&x.query, Raw),
        headers: fields(&x.headers, Raw),
        body: match &x.body {
            old::ExchangeBody::None => now::ExchangeBody::None,
            old::ExchangeBody::Form(f) => now::ExchangeBody::Form(fields(f, Raw)),
            old::ExchangeBody::Json(t) => now::ExchangeBody::Json(template(t, JsonString)),
        },
        response: token_shape(&x.response),
    }
}

/// A 0.1.0 manifest in the current model: placeholders in its exchange
/// templates become secret parts, its one placement a list of one, its
/// platform-wide "media needs a public URL" a rule of every media kind. It
/// declares no post fields (a 0.1.0 plugin checks its own in `validate`).
pub fn manifest(m: &old::Manifest) -> now::Manifest {
    use now::SecretEncoding::Raw;
    let a = &m.auth;
    now::Manifest {
        id: m.id.clone(),
        name: m.name.clone(),
        version: m.version.clone(),
        auth: now::AuthInfo {
            kind: same(&a.kind),
            scopes: a.scopes.clone(),
            scope_separator: a.scope_separator.clone(),
            client_auth: same(&a.client_auth),
            authorize_params: fields(&a.authorize_params, Raw),
            token_params: fields(&a.token_params, Raw),
            token_response: token_shape(&a.token_response),
            refresh: match &a.refresh {
                old::RefreshStyle::None => now::RefreshStyle::None,
                old::RefreshStyle::Standard => now::RefreshStyle::Standard,
                old::RefreshStyle::Rotating => now::RefreshStyle::Rotating,
                old::RefreshStyle::Custom(x) => now::RefreshStyle::Custom(exchange(x)),
            },
            pkce: now::PkceMethod::S256,
            access_token_lifetime: a.access_token_lifetime,
            refresh_token_lifetime: a.refresh_token_lifetime,
            refresh_min_age: 0,
            placement: vec![same(&a.placement)],
            dynamic_registration: a.dynamic_registration,
            login: a.login.as_ref().map(exchange),
            after_connect: Vec::new(),
            identities: None,
        },
        endpoints: same(&m.endpoints),
        hosts: m.hosts.clone(),
        rate_limits: same(&m.rate_limits),
        rate_limit_headers: same(&m.rate_limit_headers),
        content: now::ContentRules {
            max_length: m.content.max_length,
            counting: same(&m.content.counting),
            max_length_setting: m.content.max_length_setting.clone(),
            title_required: m.content.title_required,
            max_title_length: m.content.max_title_length,
            media_required: m.content.media_required,
            media: m
                .content
                .media
                .iter()
                .map(|r| now::MediaRule {
                    kind: same(&r.kind),
                    max_count: r.max_count,
                    max_bytes: r.max_bytes,
                    mime_types: r.mime_types.clone(),
                    needs_public_url: m.content.needs_public_media_url,
                })
                .collect(),
            threads: m.content.threads,
        },
        settings: same(&m.settings),
        post_fields: Vec::new(),
        idempotent_publish: m.idempotent_publish,
    }
}

/// A 0.1.0 receipt: always a published post.
pub fn receipt(r: &old::Receipt) -> now::Receipt {
    now::Receipt {
        id: r.id.clone(),
        url: r.url.clone(),
        state: now::ReceiptState::Published,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use now::{SecretEncoding, SecretName, SecretPart, TextPart};

    #[test]
    fn templates_mark_only_credentials() {
        let t = template("{{access_token}}?wait=true&x={{nope}}", SecretEncoding::Raw);
        assert_eq!(t.len(), 2);
        assert!(matches!(
            &t[0],
            TextPart::Secret(SecretPart {
                name: SecretName::AccessToken,
                ..
            })
        ));
        assert!(matches!(&t[1], TextPart::Text(s) if s == "?wait=true&x={{nope}}"));
        let t = template(r#"{"a":"{{ password }}"}"#, SecretEncoding::JsonString);
        assert_eq!(t.len(), 3);
        let t = template("plain", SecretEncoding::Raw);
        assert!(matches!(&t[..], [TextPart::Text(s)] if s == "plain"));
    }
}
