//! A value that must never be printed: tokens, client secrets, keys.
//!
//! `Debug` and `Display` print `[redacted]`; the bytes are zeroed on drop.
//! The only way to read the value is [`Secret::expose`], which makes every
//! use greppable. Hand-rolled rather than `secrecy` because the store needs
//! `Serialize` of the real value inside the encrypted envelope, which
//! `secrecy` deliberately makes awkward.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroize;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret value. Call only where the value is needed on the wire
    /// or inside the encrypted store.
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Serialises the real value: only the store (inside age encryption) does
/// this. Output types meant for people use `#[serde(skip)]` on secrets.
impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Secret(String::deserialize(d)?))
    }
}

/// Replace every form of any of `secrets` in `text` with `[redacted]`.
pub fn scrub(text: &str, secrets: &[&Secret]) -> String {
    Scrubber::new(secrets).text(text)
}

/// Everything in a set of secrets that gives one of them away, in every
/// form it may take on the wire or in a platform's answer, and the means to
/// replace all of them at once.
///
/// A secret counts as a whole (its raw text) and, when it is a URL (a
/// Discord webhook, a Slack hook), by its parts: the URL as `url` normalises
/// it (scheme and host in lower case), and every path segment or query
/// value that looks like an id or key (six or more characters with a digit,
/// or sixteen or more). Words such as `webhooks` or `api` are left alone:
/// they appear in ordinary text and give nothing away. Each fragment is
/// matched raw, percent-encoded, form-encoded and JSON-escaped (`/` as
/// `\/` too), so a platform that echoes the request path in any of those
/// forms is scrubbed as well.
///
/// Matching is one Aho-Corasick pass (leftmost-longest), on text or bytes.
#[derive(Clone, Default)]
pub struct Scrubber {
    matcher: Option<aho_corasick::AhoCorasick>,
}

/// Fragments shorter than this are never scrubbed on their own: they would
/// blank out ordinary words.
const MIN_FRAGMENT: usize = 6;

impl Scrubber {
    pub fn new(secrets: &[&Secret]) -> Self {
        let mut patterns: Vec<String> = Vec::new();
        for s in secrets {
            for fragment in fragments(s.expose()) {
                for form in forms(&fragment) {
                    if form.len() >= 4 && !patterns.contains(&form) {
                        patterns.push(form);
                    }
                }
            }
        }
        if patterns.is_empty() {
            return Scrubber { matcher: None };
        }
        let matcher = aho_corasick::AhoCorasick::builder()
            .match_kind(aho_corasick::MatchKind::LeftmostLongest)
            .ascii_case_insensitive(false)
            .build(&patterns)
            .ok();
        Scrubber { matcher }
    }

    /// Whether `bytes` holds any secret fragment.
    pub fn finds(&self, bytes: &[u8]) -> bool {
        self.matcher.as_ref().is_some_and(|m| m.is_match(bytes))
    }

    pub fn text(&self, text: &str) -> String {
        match &self.matcher {
            Some(m) if m.is_match(text) => m.replace_all(text, &vec![REDACTED; m.patterns_len()]),
            _ => text.to_string(),
        }
    }

    pub fn bytes(&self, bytes: Vec<u8>) -> Vec<u8> {
        match &self.matcher {
            Some(m) if m.is_match(&bytes) => {
                m.replace_all_bytes(&bytes, &vec![REDACTED.as_bytes(); m.patterns_len()])
            }
            _ => bytes,
        }
    }
}

impl std::fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scrubber([redacted])")
    }
}

const REDACTED: &str = "[redacted]";

/// The parts of one secret that must never be shown.
fn fragments(value: &str) -> Vec<String> {
    let mut out = vec![value.to_string()];
    let lower = value.to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return out;
    }
    let Ok(url) = url::Url::parse(value) else {
        return out;
    };
    out.push(url.as_str().to_string());
    let path = url.path();
    if path.len() > 1 {
        out.push(format!(
            "{path}{}",
            url.query().map(|q| format!("?{q}")).unwrap_or_default()
        ));
    }
    let telling = |part: &str| {
        part.len() >= MIN_FRAGMENT && (part.len() >= 16 || part.bytes().any(|b| b.is_ascii_digit()))
    };
    for seg in url.path_segments().into_iter().flatten() {
        let decoded = percent_encoding::percent_decode_str(seg).decode_utf8_lossy();
        for part in [seg.to_string(), decoded.into_owned()] {
            let part: String = part;
            if telling(&part) {
                out.push(part);
            }
        }
    }
    for (_, v) in url.query_pairs() {
        if telling(&v) {
            out.push(v.into_owned());
        }
    }
    if let Some(user) = Some(url.username()).filter(|u| telling(u)) {
        out.push(user.to_string());
    }
    if let Some(pass) = url.password().filter(|p| p.len() >= 4) {
        out.push(pass.to_string());
    }
    out
}

/// The ways `fragment` may be written: raw, percent-encoded, form-encoded,
/// JSON-escaped (with and without `/` escaped).
fn forms(fragment: &str) -> Vec<String> {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    let json = serde_json::to_string(fragment).unwrap_or_default();
    let json = json.trim_matches('"').to_string();
    let mut out = vec![
        fragment.to_string(),
        utf8_percent_encode(fragment, UNRESERVED).to_string(),
        utf8_percent_encode(fragment, NON_ALPHANUMERIC).to_string(),
        url::form_urlencoded::byte_serialize(fragment.as_bytes()).collect(),
        json.replace('/', "\\/"),
        json,
    ];
    // Percent-escapes in lower case, as some servers write them.
    let lower_escapes: Vec<String> = out
        .iter()
        .filter(|f| f.contains('%'))
        .map(|f| lower_percent_escapes(f))
        .collect();
    out.extend(lower_escapes);
    out.sort();
    out.dedup();
    out
}

fn lower_percent_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '%' {
            for _ in 0..2 {
                if let Some(h) = chars.next() {
                    out.push(h.to_ascii_lowercase());
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s = Secret::new("hunter2-token");
        assert_eq!(format!("{s} {s:?}"), "[redacted] [redacted]");
        assert_eq!(scrub("a hunter2-token b", &[&s]), "a [redacted] b");
    }

    #[test]
    fn url_credentials_are_scrubbed_by_their_parts() {
        let hook = Secret::new(
            "HTTPS://Discord.com/api/webhooks/112233445566778899/AbC-dEf_gHiJkLmNoPqRsTuVwXyZ0123456789",
        );
        let s = Scrubber::new(&[&hook]);
        let echoed = r#"{"message": "Unknown Webhook", "path": "\/api\/webhooks\/112233445566778899\/AbC-dEf_gHiJkLmNoPqRsTuVwXyZ0123456789"}"#;
        let out = s.text(echoed);
        assert!(!out.contains("112233445566778899"), "{out}");
        assert!(!out.contains("AbC-dEf"), "{out}");
        assert!(out.contains("Unknown Webhook"), "{out}");
        let lower = "see https://discord.com/api/webhooks/112233445566778899/x";
        assert!(!s.text(lower).contains("112233445566778899"));
        assert!(s.text("the webhooks api").contains("webhooks api"));
        let encoded = "p=%2Fapi%2Fwebhooks%2F112233445566778899%2F";
        assert!(
            !s.text(encoded).contains("112233445566778899"),
            "{}",
            s.text(encoded)
        );
        let bytes = b"\xff\xfe AbC-dEf_gHiJkLmNoPqRsTuVwXyZ0123456789 \xff".to_vec();
        assert!(!String::from_utf8_lossy(&s.bytes(bytes)).contains("AbC-dEf"));
    }
}
