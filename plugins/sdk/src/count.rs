//! Character counting by each platform's own rule.
//!
//! X's weighted count is implemented here from its published configuration
//! (twitter-text "v3": scale 100, default weight 200, weight 100 for the
//! ranges below, every URL counts 23, every emoji sequence counts 2). The
//! reference implementation is JavaScript/Java only, so it is hand-written.

use crate::CountRule;
use unicode_segmentation::UnicodeSegmentation;

/// Length of `text` under `rule`.
pub fn count(text: &str, rule: CountRule) -> usize {
    match rule {
        CountRule::Chars => text.chars().count(),
        CountRule::Graphemes => text.graphemes(true).count(),
        CountRule::XWeighted => x_weighted(text),
        CountRule::Utf16 => text.encode_utf16().count(),
        CountRule::Bytes => text.len(),
    }
}

/// The length every URL counts for on X.
pub const X_URL_LENGTH: usize = 23;

/// Code-point ranges that count 1 on X (weight 100); everything else counts 2.
const X_LIGHT_RANGES: [(u32, u32); 4] = [(0, 4351), (8192, 8205), (8208, 8223), (8242, 8247)];

/// X's weighted length: URLs count 23, emoji sequences 2, Latin and most
/// punctuation 1, CJK and other scripts 2.
pub fn x_weighted(text: &str) -> usize {
    let mut total = 0;
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(url_len) = url_at(rest) {
            total += X_URL_LENGTH;
            rest = &rest[url_len..];
            continue;
        }
        let g = rest.graphemes(true).next().unwrap_or(rest);
        total += if g.chars().any(is_emoji) {
            2
        } else {
            g.chars()
                .map(|c| {
                    let cp = c as u32;
                    if X_LIGHT_RANGES.iter().any(|&(lo, hi)| cp >= lo && cp <= hi) {
                        1
                    } else {
                        2
                    }
                })
                .sum()
        };
        rest = &rest[g.len()..];
    }
    total
}

/// If `s` starts with an http(s) URL (at a word boundary), its byte length.
fn url_at(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let starts = |p: &str| b.len() >= p.len() && b[..p.len()].eq_ignore_ascii_case(p.as_bytes());
    let scheme = if starts("https://") {
        8
    } else if starts("http://") {
        7
    } else {
        return None;
    };
    let mut end = scheme;
    for (i, c) in s[scheme..].char_indices() {
        if c.is_whitespace() {
            break;
        }
        end = scheme + i + c.len_utf8();
    }
    // Trailing punctuation is not part of the URL.
    while end > scheme && s[..end].ends_with(['.', ',', '!', '?', ')', ';', ':', '"', '\'']) {
        end -= 1;
    }
    (end > scheme).then_some(end)
}

fn is_emoji(c: char) -> bool {
    let cp = c as u32;
    matches!(cp,
        0x1F000..=0x1FAFF | 0x2600..=0x27BF | 0x2B00..=0x2BFF | 0xFE0F | 0x200D)
}

/// Whether `text` contains a URL, and the URLs it contains.
pub fn urls(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < text.len() {
        if (i == 0 || text[..i].ends_with(char::is_whitespace))
            && let Some(n) = url_at(&text[i..])
        {
            out.push(&text[i..i + n]);
            i += n;
            continue;
        }
        i += text[i..].chars().next().map_or(1, char::len_utf8);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latin_counts_one() {
        assert_eq!(x_weighted("hello"), 5);
    }

    #[test]
    fn every_url_counts_23() {
        assert_eq!(
            x_weighted("see https://example.com/a/very/long/path?x=1"),
            4 + 23
        );
        assert_eq!(x_weighted("http://a.co"), 23);
        assert_eq!(x_weighted("(https://a.co)."), 1 + 23 + 2);
    }

    #[test]
    fn cjk_and_emoji_count_two() {
        assert_eq!(x_weighted("日本"), 4);
        assert_eq!(x_weighted("👍"), 2);
        // A family emoji (ZWJ sequence) is one grapheme and counts 2.
        assert_eq!(x_weighted("👨\u{200d}👩\u{200d}👧"), 2);
    }

    #[test]
    fn rules() {
        assert_eq!(count("é👍", CountRule::Chars), 2);
        assert_eq!(count("é👍", CountRule::Utf16), 3);
        assert_eq!(count("é👍", CountRule::Bytes), 6);
        assert_eq!(count("e\u{301}", CountRule::Graphemes), 1);
    }

    #[test]
    fn finds_urls() {
        assert_eq!(
            urls("a https://x.y/z b http://q."),
            vec!["https://x.y/z", "http://q"]
        );
    }
}
