//! Checks for a plugin's platform fields — the keys of a post's
//! `[override.PLATFORM]` table other than `text`, `title` and `link` — and
//! for account settings, so that a value the platform would refuse (or
//! silently ignore) is reported by `publish --check` before anything is
//! sent. Until manifests can declare post fields, a plugin lists the fields
//! it reads in its `validate`:
//!
//! ```text
//! fn validate(post: &Post, account: Option<&Account>) -> Vec<Problem> {
//!     let mut problems = check_content(&Self::manifest().content, post, account);
//!     let mut f = Fields::new("mastodon", post, account, &["visibility", "language"]);
//!     f.check("visibility", fields::one_of(&["public", "unlisted", "private", "direct"]));
//!     f.check("language", fields::shape("an ISO 639 code such as en", fields::is_iso639));
//!     problems.extend(f.finish());
//!     problems
//! }
//! ```
//!
//! A problem names the field as the user wrote it
//! (`override.mastodon.visibility`, or `account setting thread_id`), what
//! was given, and what is allowed.

use crate::{Account, Post, Problem};

/// A rule for one value: `Err` says, for people, what is wrong or what is
/// allowed (it follows `is "VALUE"; `).
pub type Rule<'r> = Box<dyn Fn(&str) -> Result<(), String> + 'r>;

/// The values a field may take, exactly (case matters: platforms compare
/// them exactly).
pub fn one_of<'r>(allowed: &'r [&'r str]) -> Rule<'r> {
    Box::new(move |value| {
        if allowed.contains(&value) {
            return Ok(());
        }
        let near = allowed
            .iter()
            .find(|a| a.eq_ignore_ascii_case(value))
            .map(|a| format!(" (write it as {a})"))
            .unwrap_or_default();
        Err(format!("allowed: {}{near}", allowed.join(", ")))
    })
}

/// A value of a certain shape: `ok` decides, `expected` describes it
/// ("digits only", "an https:// URL").
pub fn shape<'r>(expected: &'r str, ok: fn(&str) -> bool) -> Rule<'r> {
    Box::new(move |value| match ok(value) {
        true => Ok(()),
        false => Err(format!("expected {expected}")),
    })
}

/// Checks one post's platform fields and the account's settings; collects
/// the problems for [`Fields::finish`].
pub struct Fields<'a> {
    platform: &'a str,
    post: &'a Post,
    account: Option<&'a Account>,
    problems: Vec<Problem>,
}

impl<'a> Fields<'a> {
    /// Start checking `post` for platform `platform` (its id, as in
    /// `[override.ID]`), whose plugin reads the fields `known`. Any other
    /// key is reported at once, with the fields the platform does know
    /// (and the nearest one, for a typo).
    pub fn new(
        platform: &'a str,
        post: &'a Post,
        account: Option<&'a Account>,
        known: &[&str],
    ) -> Self {
        let mut fields = Fields {
            platform,
            post,
            account,
            problems: Vec::new(),
        };
        for extra in &post.extra {
            if known.contains(&extra.name.as_str()) {
                continue;
            }
            let table = format!("[override.{platform}]");
            let takes = if known.is_empty() {
                format!("{table} takes only text, title and link")
            } else {
                format!(
                    "{table} takes {} (besides text, title and link)",
                    known.join(", ")
                )
            };
            let message = match nearest(&extra.name, known) {
                Some(near) => format!("is unknown (did you mean {near}?); {takes}"),
                None => format!("is unknown; {takes}"),
            };
            let field = fields.path(&extra.name);
            fields.push(field, message);
        }
        fields
    }

    /// How the user wrote post field `name`: `override.mastodon.visibility`.
    pub fn path(&self, name: &str) -> String {
        format!("override.{}.{name}", self.platform)
    }

    /// The value of post field `name`, if the post gives one.
    pub fn value(&self, name: &str) -> Option<&'a str> {
        self.post.extra(name)
    }

    /// Post field `name`, if given, follows `rule`.
    pub fn check(&mut self, name: &str, rule: Rule<'_>) -> &mut Self {
        if let Some(value) = self.value(name)
            && let Err(why) = rule(value)
        {
            self.push(self.path(name), format!("is {}; {why}", quote(value)));
        }
        self
    }

    /// Account setting `name`, if set, follows `rule`.
    pub fn check_setting(&mut self, name: &str, rule: Rule<'_>) -> &mut Self {
        if let Some(value) = self.account.and_then(|a| a.setting(name))
            && let Err(why) = rule(value)
        {
            self.push(
                format!("account setting {name}"),
                format!(
                    "is {}; {why}; add the account again with --set {name}=…",
                    quote(value)
                ),
            );
        }
        self
    }

    /// The value that will be used — post field `name`, or else account
    /// setting `name` — follows `rule`.
    pub fn check_or_setting(&mut self, name: &str, rule: Rule<'_>) -> &mut Self {
        match self.value(name) {
            Some(_) => self.check(name, rule),
            None => self.check_setting(name, rule),
        }
    }

    /// A problem with post field `name` the plugin found itself; `message`
    /// follows the field's name ("is 40 characters; …").
    pub fn problem(&mut self, name: &str, message: impl Into<String>) -> &mut Self {
        let field = self.path(name);
        self.push(field, message.into());
        self
    }

    /// Every problem found.
    pub fn finish(self) -> Vec<Problem> {
        self.problems
    }

    fn push(&mut self, field: String, message: String) {
        self.problems.push(Problem { field, message });
    }
}

/// `value` in quotes for a message, shortened if long.
pub fn quote(value: &str) -> String {
    const MAX: usize = 60;
    if value.chars().count() <= MAX {
        return format!("{value:?}");
    }
    let head: String = value.chars().take(MAX).collect();
    format!("{:?}", format!("{head}…"))
}

/// The known field closest to `name` when it looks like a typo of it (a
/// different case, or up to two letters off).
fn nearest<'k>(name: &str, known: &[&'k str]) -> Option<&'k str> {
    let lower = name.to_lowercase();
    known
        .iter()
        .map(|k| (edit_distance(&lower, k), *k))
        .filter(|(d, k)| *d <= 2 && *d < k.chars().count())
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != *cb))
                .min(above + 1)
                .min(row[j] + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

/// One or more ASCII digits that fit in 64 bits (ids such as Discord's
/// snowflakes and DEV's organization ids).
pub fn is_digits(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) && value.parse::<u64>().is_ok()
}

/// A whole number above zero.
pub fn is_positive_number(value: &str) -> bool {
    is_digits(value) && value.parse::<u64>().is_ok_and(|n| n > 0)
}

/// An `https://` URL with a host and no spaces.
pub fn is_https_url(value: &str) -> bool {
    let Some(rest) = value.strip_prefix("https://") else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = host.rsplit('@').next().unwrap_or_default();
    let name = host.split(':').next().unwrap_or_default();
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '.' || c == '-')
        && !value.chars().any(char::is_whitespace)
}

/// An ISO 639 language code: two or three lowercase letters (`en`, `ast`).
pub fn is_iso639(value: &str) -> bool {
    (2..=3).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_lowercase())
}

/// A BCP 47 language tag by its shape: a language of 2–3 (or 5–8) letters,
/// then subtags of 1–8 letters or digits (`en`, `pt-BR`, `zh-Hant-TW`,
/// `sr-Latn`), or a private-use `x-…` tag. Whether the subtags are
/// registered is not checked.
pub fn is_bcp47(value: &str) -> bool {
    let mut parts = value.split('-');
    let first = parts.next().unwrap_or_default();
    let rest: Vec<&str> = parts.collect();
    let letters = |s: &str| s.bytes().all(|b| b.is_ascii_alphabetic());
    let subtag =
        |s: &&str| (1..=8).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric());
    let language = match first.len() {
        1 => first.eq_ignore_ascii_case("x") || first.eq_ignore_ascii_case("i"),
        2 | 3 | 5..=8 => letters(first),
        _ => false,
    };
    language && rest.iter().all(subtag) && (first.len() > 1 || !rest.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pair;

    fn post(extra: &[(&str, &str)]) -> Post {
        Post {
            text: "hello".into(),
            title: None,
            link: None,
            media: vec![],
            reply_to: None,
            thread_root: None,
            extra: extra.iter().map(|(n, v)| pair(*n, *v)).collect(),
            idempotency_key: "k".into(),
        }
    }

    fn account(settings: &[(&str, &str)]) -> Account {
        Account {
            name: "team".into(),
            settings: settings.iter().map(|(n, v)| pair(*n, *v)).collect(),
            user_id: None,
            handle: None,
        }
    }

    const VISIBILITY: &[&str] = &["public", "unlisted", "private", "direct"];

    #[test]
    fn a_value_outside_the_list_names_field_value_and_choices() {
        let p = post(&[("visibility", "friends-only")]);
        let mut f = Fields::new("mastodon", &p, None, &["visibility"]);
        f.check("visibility", one_of(VISIBILITY));
        let problems = f.finish();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].field, "override.mastodon.visibility");
        assert_eq!(
            problems[0].message,
            r#"is "friends-only"; allowed: public, unlisted, private, direct"#
        );

        let p = post(&[("visibility", "Public")]);
        let mut f = Fields::new("mastodon", &p, None, &["visibility"]);
        f.check("visibility", one_of(VISIBILITY));
        assert!(f.finish()[0].message.ends_with("(write it as public)"));

        let p = post(&[("visibility", "unlisted")]);
        let mut f = Fields::new("mastodon", &p, None, &["visibility"]);
        f.check("visibility", one_of(VISIBILITY));
        assert!(f.finish().is_empty());
    }

    #[test]
    fn unknown_keys_name_the_known_fields_and_the_likely_one() {
        let p = post(&[("visiblity", "public"), ("colour", "red")]);
        let f = Fields::new("mastodon", &p, None, &["visibility", "language"]);
        let problems = f.finish();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(problems[0].field, "override.mastodon.visiblity");
        assert_eq!(
            problems[0].message,
            "is unknown (did you mean visibility?); [override.mastodon] takes visibility, language (besides text, title and link)"
        );
        assert!(!problems[1].message.contains("did you mean"));

        let p = post(&[("visibility", "public")]);
        let problems = Fields::new("x", &p, None, &[]).finish();
        assert_eq!(
            problems[0].message,
            "is unknown; [override.x] takes only text, title and link"
        );
    }

    #[test]
    fn a_setting_is_checked_unless_the_post_overrides_it() {
        let digits = || shape("digits only (a thread id)", is_digits);
        let team = account(&[("thread_id", "general")]);
        let p = post(&[]);
        let mut f = Fields::new("discord", &p, Some(&team), &["thread_id"]);
        f.check_or_setting("thread_id", digits());
        let problems = f.finish();
        assert_eq!(problems[0].field, "account setting thread_id");
        assert_eq!(
            problems[0].message,
            r#"is "general"; expected digits only (a thread id); add the account again with --set thread_id=…"#
        );

        let p = post(&[("thread_id", "1187")]);
        let mut f = Fields::new("discord", &p, Some(&team), &["thread_id"]);
        f.check_or_setting("thread_id", digits());
        assert!(f.finish().is_empty());

        let p = post(&[("thread_id", "x1187")]);
        let mut f = Fields::new("discord", &p, None, &["thread_id"]);
        f.check_or_setting("thread_id", digits());
        assert_eq!(f.finish()[0].field, "override.discord.thread_id");
    }

    #[test]
    fn long_values_are_shortened_in_messages() {
        let long = "a".repeat(100);
        assert_eq!(quote(&long), format!("\"{}…\"", "a".repeat(60)));
        assert_eq!(quote("say \"hi\""), r#""say \"hi\"""#);
    }

    #[test]
    fn shapes() {
        assert!(is_digits("1187223344556677889"));
        for bad in ["", "12a", "-1", "1 2", "99999999999999999999999"] {
            assert!(!is_digits(bad), "{bad}");
        }
        assert!(is_positive_number("500") && !is_positive_number("0"));
        assert!(is_https_url("https://cdn.example/a.png?x=1"));
        assert!(is_https_url("https://cdn.example:8443/a.png"));
        for bad in [
            "http://cdn.example/a.png",
            "https://",
            "https:///a",
            "https://a b/c",
            "cdn.example/a.png",
        ] {
            assert!(!is_https_url(bad), "{bad}");
        }
        for good in ["en", "ast", "de"] {
            assert!(is_iso639(good), "{good}");
        }
        for bad in ["english", "EN", "e", "en-GB", "e1"] {
            assert!(!is_iso639(bad), "{bad}");
        }
        for good in [
            "en",
            "pt-BR",
            "zh-Hant-TW",
            "sr-Latn",
            "es-419",
            "x-klingon",
            "i-navajo",
        ] {
            assert!(is_bcp47(good), "{good}");
        }
        for bad in [
            "",
            "english-",
            "e",
            "x",
            "en_GB",
            "en--GB",
            "en-toolongsubtag",
            "1en",
        ] {
            assert!(!is_bcp47(bad), "{bad}");
        }
    }

    #[test]
    fn typo_distance() {
        assert_eq!(edit_distance("visiblity", "visibility"), 1);
        assert_eq!(nearest("Visibility", &["visibility"]), Some("visibility"));
        assert_eq!(nearest("lang", &["language"]), None);
        assert_eq!(nearest("tag", &["tags"]), Some("tags"));
    }
}
