//! How long a post is on each of its targets, by each platform's own
//! counting rule: what the composer shows beside every target as the user
//! types (`POST /publish?check=true` and the web UI's check answer with it).
//!
//! Owns: the count of every item's text (the variant each platform gets,
//! overrides applied) under the rule the plugin's manifest declares, the
//! limit in effect for the account (a Mastodon instance's own limit from
//! its setting), and where the text would be cut to fit.
//!
//! Never: decides whether a post is valid — the plugin's `validate` does
//! ([`super::plan`]); this only measures, with the same counting code the
//! SDK gives plugins (`outreach_sdk::count`), so the two never disagree.

use serde::Serialize;

use super::ParsedPost;
use crate::contract::wit::types::CountRule;
use crate::services::Services;
use crate::store::AccountId;

/// One target's measures.
#[derive(Debug, Clone, Serialize)]
pub struct Measure {
    pub target: String,
    pub platform: String,
    /// The platform's name, for people.
    pub name: String,
    /// `chars`, `graphemes`, `x-weighted`, `utf16`, `bytes`.
    pub counting: &'static str,
    /// The post and each thread item, in order.
    pub items: Vec<ItemMeasure>,
    /// The title's length in characters and its limit (0: none), when the
    /// platform has titles.
    pub title: Option<(usize, u32)>,
    pub title_required: bool,
    pub media_required: bool,
    pub threads: bool,
}

/// One item's text on one target.
#[derive(Debug, Clone, Serialize)]
pub struct ItemMeasure {
    pub count: usize,
    /// 0: no limit.
    pub limit: u32,
    pub over: bool,
    /// The text this platform gets (after its override).
    pub text: String,
    /// Byte offset in `text` where it stops fitting (`None`: it fits):
    /// the preview shows what would be cut.
    pub fits_until: Option<usize>,
}

fn rule_name(r: CountRule) -> &'static str {
    match r {
        CountRule::Chars => "chars",
        CountRule::Graphemes => "graphemes",
        CountRule::XWeighted => "x-weighted",
        CountRule::Utf16 => "utf16",
        CountRule::Bytes => "bytes",
    }
}

fn sdk_rule(r: CountRule) -> outreach_sdk::CountRule {
    match r {
        CountRule::Chars => outreach_sdk::CountRule::Chars,
        CountRule::Graphemes => outreach_sdk::CountRule::Graphemes,
        CountRule::XWeighted => outreach_sdk::CountRule::XWeighted,
        CountRule::Utf16 => outreach_sdk::CountRule::Utf16,
        CountRule::Bytes => outreach_sdk::CountRule::Bytes,
    }
}

/// `text` under `rule`, as the plugin counts it.
pub fn count(text: &str, rule: CountRule) -> usize {
    outreach_sdk::count::count(text, sdk_rule(rule))
}

/// The longest prefix of `text`, cut at a character boundary, that counts
/// at most `limit`: its length in bytes. Counting is monotonic in the
/// prefix for every rule, so a binary search over boundaries finds it.
fn fits_until(text: &str, rule: CountRule, limit: usize) -> usize {
    let bounds: Vec<usize> = text
        .char_indices()
        .map(|(i, _)| i)
        .chain([text.len()])
        .collect();
    let (mut lo, mut hi) = (0usize, bounds.len() - 1);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if count(&text[..bounds[mid]], rule) <= limit {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    snap_out_of_url(text, bounds[lo])
}

/// A cut inside a web address moves to before it: half an address is
/// never what a reader should see kept.
fn snap_out_of_url(text: &str, cut: usize) -> usize {
    let mut from = 0;
    let next = |rest: &str| {
        [rest.find("https://"), rest.find("http://")]
            .into_iter()
            .flatten()
            .min()
    };
    while let Some(i) = next(&text[from..]) {
        let start = from + i;
        let end = text[start..]
            .find(char::is_whitespace)
            .map_or(text.len(), |n| start + n);
        if cut > start && cut < end {
            return start;
        }
        from = end;
        if from >= text.len() {
            break;
        }
    }
    cut
}

/// Measure every target of `post`. Targets that do not resolve, or whose
/// platform is not loaded, are left out (the check reports them).
pub fn measure(svc: &Services, post: &ParsedPost) -> Vec<Measure> {
    let Ok(store) = svc.store() else {
        return Vec::new();
    };
    let Ok(stored) = svc.stored_for(&post.file.to) else {
        return Vec::new();
    };
    let mut targets: Vec<AccountId> = Vec::new();
    for t in &post.file.to {
        for id in svc.resolve_target_in(t, &stored).unwrap_or_default() {
            if !targets.contains(&id) {
                targets.push(id);
            }
        }
    }
    let items = 1 + post.file.thread.len();
    let mut out = Vec::new();
    for id in targets {
        let Ok(plugin) = svc.host.get(&id.platform) else {
            continue;
        };
        let rules = &plugin.manifest.content;
        // The account's own limit, where the platform has one per account.
        let limit = rules
            .max_length_setting
            .as_deref()
            .and_then(|name| {
                let rec = store.load(&id).ok()?;
                rec.settings.get(name)?.parse::<u32>().ok()
            })
            .unwrap_or(rules.max_length);
        let mut measured = Vec::new();
        let mut title = None;
        for index in 0..items {
            let Ok(variant) = post.file.variant(&id.platform, index, "measure", &[]) else {
                continue;
            };
            let n = count(&variant.text, rules.counting);
            let over = limit > 0 && n > limit as usize;
            if index == 0 && (rules.title_required || rules.max_title_length > 0) {
                let t = variant.title.as_deref().unwrap_or("");
                title = Some((t.chars().count(), rules.max_title_length));
            }
            measured.push(ItemMeasure {
                count: n,
                limit,
                over,
                fits_until: over.then(|| fits_until(&variant.text, rules.counting, limit as usize)),
                text: variant.text,
            });
        }
        out.push(Measure {
            target: id.to_string(),
            platform: id.platform.clone(),
            name: plugin.manifest.name.clone(),
            counting: rule_name(rules.counting),
            items: measured,
            title,
            title_required: rules.title_required,
            media_required: rules.media_required,
            threads: rules.threads,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cut_is_the_longest_prefix_that_fits() {
        assert_eq!(fits_until("hello world", CountRule::Chars, 5), 5);
        assert_eq!(fits_until("héllo", CountRule::Bytes, 2), 1);
        // X: a URL counts 23 as a whole.
        let t = "ab https://example.org/long/path";
        let cut = fits_until(t, CountRule::XWeighted, 10);
        assert!(count(&t[..cut], CountRule::XWeighted) <= 10);
        assert_eq!(fits_until("", CountRule::Graphemes, 3), 0);
        // Never inside an address.
        let t = "read https://example.org/a/long/path now";
        assert_eq!(fits_until(t, CountRule::Chars, 12), 5);
        assert_eq!(fits_until(t, CountRule::Chars, 100), t.len());
    }
}
