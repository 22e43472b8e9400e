//! The default `validate`: checks a post against the manifest's content
//! rules, so most plugins need no validation code of their own.

use crate::count::count;
use crate::{Account, ContentRules, CountRule, MediaKind, Post, Problem};

fn problem(field: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        field: field.into(),
        message: message.into(),
    }
}

fn kind_name(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Image => "image",
        MediaKind::Video => "video",
        MediaKind::Gif => "gif",
        MediaKind::Document => "document",
    }
}

/// How a length counted by `rule` reads to the user: its unit, and a note
/// on how it was counted (empty when plain characters are meant). Never
/// the contract's own name for the rule.
fn length_words(rule: CountRule) -> (&'static str, &'static str) {
    match rule {
        CountRule::Chars => ("characters", ""),
        CountRule::Graphemes => ("characters", " (characters as they appear on screen)"),
        CountRule::XWeighted => (
            "characters",
            " (counted the way X counts: every link as 23 characters, most emoji and CJK characters as 2)",
        ),
        CountRule::Utf16 => (
            "characters",
            " (counted in UTF-16 code units, as the platform does: most emoji count as 2)",
        ),
        CountRule::Bytes => ("bytes", " (of UTF-8, as the platform counts them)"),
    }
}

/// Every way `post` breaks `rules`. A per-account length limit (a Mastodon
/// instance's) comes from the account setting the rules name.
pub fn check_content(rules: &ContentRules, post: &Post, account: Option<&Account>) -> Vec<Problem> {
    let mut out = Vec::new();
    let max = rules
        .max_length_setting
        .as_deref()
        .and_then(|name| account?.setting(name))
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(rules.max_length);
    let len = count(&post.text, rules.counting);
    if max > 0 && len > max as usize {
        out.push(problem("text", {
            let (unit, how) = length_words(rules.counting);
            format!("is {len} {unit} long; the limit is {max}{how}")
        }));
    }
    // A titled post (Reddit, Hacker News) may be its title and link alone.
    let titled =
        rules.title_required && post.title.as_deref().is_some_and(|t| !t.trim().is_empty());
    if post.text.trim().is_empty() && post.media.is_empty() && !titled {
        out.push(problem("text", "is empty and the post has no media"));
    }
    match &post.title {
        None if rules.title_required => out.push(problem("title", "is required on this platform")),
        Some(t)
            if rules.max_title_length > 0
                && t.chars().count() > rules.max_title_length as usize =>
        {
            out.push(problem(
                "title",
                format!(
                    "is {} characters long; the limit is {}",
                    t.chars().count(),
                    rules.max_title_length
                ),
            ))
        }
        _ => {}
    }
    if rules.media_required && post.media.is_empty() {
        out.push(problem(
            "media",
            "this platform cannot publish text alone; attach an image or video",
        ));
    }
    for (i, m) in post.media.iter().enumerate() {
        let field = format!("media[{i}]");
        let Some(rule) = rules.media.iter().find(|r| r.kind == m.kind) else {
            out.push(problem(
                &field,
                format!("{} attachments are not supported", kind_name(m.kind)),
            ));
            continue;
        };
        if rule.max_bytes > 0 && m.size > rule.max_bytes {
            out.push(problem(
                &field,
                format!(
                    "{} is {} bytes; the limit is {}",
                    m.file_name, m.size, rule.max_bytes
                ),
            ));
        }
        if !rule.mime_types.is_empty() && !rule.mime_types.iter().any(|t| t == &m.mime_type) {
            out.push(problem(
                &field,
                format!(
                    "type {} is not accepted (accepted: {})",
                    m.mime_type,
                    rule.mime_types.join(", ")
                ),
            ));
        }
        if rule.needs_public_url && m.public_url.is_none() {
            out.push(problem(
                &field,
                "this platform fetches media from a public URL: give this [[media]] entry `public_url = \"https://…\"`, or set `public_base_url` under [media] in the config so outreach serves the file while it is delivered",
            ));
        }
    }
    for rule in &rules.media {
        let n = post.media.iter().filter(|m| m.kind == rule.kind).count();
        if n > rule.max_count as usize {
            out.push(problem(
                "media",
                format!(
                    "has {n} {} attachments; the limit is {}",
                    kind_name(rule.kind),
                    rule.max_count
                ),
            ));
        }
    }
    if post.reply_to.is_some() && !rules.threads {
        out.push(problem("thread", "this platform does not support threads"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CountRule, Media, MediaRule};

    fn post(text: &str) -> Post {
        Post {
            text: text.into(),
            title: None,
            link: None,
            media: vec![],
            reply_to: None,
            thread_root: None,
            extra: vec![],
            idempotency_key: "k".into(),
        }
    }

    fn media(kind: MediaKind, mime: &str, size: u64, public: bool) -> Media {
        Media {
            handle: 0,
            kind,
            mime_type: mime.into(),
            size,
            alt_text: None,
            public_url: public.then(|| "https://cdn.example/x".into()),
            file_name: "f".into(),
        }
    }

    fn fields(p: &[Problem]) -> Vec<&str> {
        p.iter().map(|p| p.field.as_str()).collect()
    }

    #[test]
    fn every_rule_names_its_field() {
        let rules = ContentRules {
            max_length: 10,
            counting: CountRule::Chars,
            title_required: true,
            max_title_length: 5,
            media_required: true,
            media: vec![MediaRule {
                kind: MediaKind::Image,
                max_count: 1,
                max_bytes: 100,
                mime_types: vec!["image/jpeg".into()],
                needs_public_url: true,
            }],
            ..Default::default()
        };
        // Too long, no title, no media.
        let p = check_content(&rules, &post("12345678901"), None);
        assert_eq!(fields(&p), ["text", "title", "media"]);
        // Title too long; media of the wrong type, too big, without a public
        // URL, of an unsupported kind, and too many.
        let mut q = post("ok");
        q.title = Some("toolong".into());
        q.media = vec![
            media(MediaKind::Image, "image/png", 200, false),
            media(MediaKind::Image, "image/jpeg", 50, true),
            media(MediaKind::Video, "video/mp4", 50, true),
        ];
        let p = check_content(&rules, &q, None);
        assert_eq!(
            fields(&p),
            [
                "title", "media[0]", "media[0]", "media[0]", "media[2]", "media"
            ],
            "{p:?}"
        );
        // Threads on a platform without them.
        let mut r = post("ok");
        r.title = Some("t".into());
        r.media = vec![media(MediaKind::Image, "image/jpeg", 1, true)];
        r.reply_to = Some("1".into());
        assert_eq!(fields(&check_content(&rules, &r, None)), ["thread"]);
    }

    #[test]
    fn lengths_are_explained_in_words_not_rust_names() {
        for counting in [
            CountRule::Chars,
            CountRule::Graphemes,
            CountRule::XWeighted,
            CountRule::Utf16,
            CountRule::Bytes,
        ] {
            let rules = ContentRules {
                max_length: 3,
                counting,
                ..Default::default()
            };
            let p = check_content(&rules, &post("too long"), None);
            let m = &p[0].message;
            assert!(m.contains("long; the limit is 3"), "{m}");
            assert!(!m.contains("CountRule") && !m.contains("::"), "{m}");
        }
    }

    #[test]
    fn an_account_setting_can_raise_the_length_limit() {
        let rules = ContentRules {
            max_length: 5,
            max_length_setting: Some("max_characters".into()),
            ..Default::default()
        };
        let account = crate::Account {
            name: "a".into(),
            settings: vec![crate::pair("max_characters", "20")],
            user_id: None,
            handle: None,
        };
        assert!(check_content(&rules, &post("0123456789"), Some(&account)).is_empty());
        assert_eq!(check_content(&rules, &post("0123456789"), None).len(), 1);
    }
}
