//! Long media uploads in pieces — YouTube's resumable sessions, TikTok's
//! numbered chunks — as the plugins share them: the `Content-Range` of a
//! piece, where a server says it stands, how a file splits into chunks,
//! and where an upload stands between attempts of the same delivery.
//!
//! Owns: the JSON object a plugin keeps with the host's [`checkpoint`]
//! (`{"size": N, …}` plus whatever the platform needs to carry on: a
//! session URL, an upload URL and the next chunk), and dropping it once it
//! can no longer help (the upload is done, or the platform refused it).
//!
//! Never: holds media bytes (every piece is a media slice the host reads
//! at send time, so memory stays at one request whatever the file's size),
//! counts bytes for progress (the host does), or decides what a platform's
//! answers mean (the plugin does).
//!
//! [`checkpoint`]: crate::checkpoint

use serde_json::Value;

use crate::{CallError, Request, Response};

/// A mebibyte, for chunk sizes.
pub const MIB: u64 = 1 << 20;

/// Where an upload of a file of `size` bytes stood when this delivery was
/// last attempted: the object [`save`] kept, if it was for a file of that
/// size (a different file means a different upload, which starts over).
pub fn resume(size: u64) -> Option<Value> {
    let saved: Value = serde_json::from_str(&crate::last_checkpoint()?).ok()?;
    (saved.is_object() && saved["size"].as_u64() == Some(size)).then_some(saved)
}

/// Remember `state` (an object: a session URL, the next chunk) for an
/// upload of a file of `size` bytes, so that a later attempt of this
/// delivery carries on from there ([`resume`]).
pub fn save(size: u64, mut state: Value) {
    state["size"] = size.into();
    crate::checkpoint(&state.to_string());
}

/// Forget where the upload stood: the next attempt starts over.
pub fn forget() {
    crate::checkpoint("");
}

/// An upload's outcome, with what it leaves for the next attempt settled:
/// done, or refused by the platform (retrying the same upload cannot
/// help), the saved state goes; a failure worth another attempt (a
/// dropped connection, a server error, a rate limit, an expired token)
/// keeps it, so the host's retry resumes where this one stopped.
pub fn settle<T>(outcome: Result<T, CallError>) -> Result<T, CallError> {
    if matches!(outcome, Ok(_) | Err(CallError::Rejected(_))) {
        forget();
    }
    outcome
}

/// Whether a send failed on the way — the connection broke, timed out or
/// never opened — rather than with an answer: a piece worth sending again.
pub fn lost(e: &CallError) -> bool {
    matches!(e, CallError::Transient(_) | CallError::OutcomeUnknown(_))
}

/// `Content-Range` of bytes `[start, start + len)` of a `total`-byte file:
/// `bytes 0-8388607/20000000` (the end is inclusive).
pub fn content_range(start: u64, len: u64, total: u64) -> String {
    format!("bytes {start}-{}/{total}", start + len.max(1) - 1)
}

/// `Content-Range` of a request that sends nothing and asks where an
/// upload of a `total`-byte file stands: `bytes */20000000`.
pub fn status_range(total: u64) -> String {
    format!("bytes */{total}")
}

/// How many bytes a server says it holds, from its `Range: bytes=0-K`
/// header (K + 1; no header: none yet). A header of another shape is
/// `None`.
pub fn received(res: &Response) -> Option<u64> {
    let Some(range) = res.header("range") else {
        return Some(0);
    };
    let (first, last) = range.trim().strip_prefix("bytes=")?.split_once('-')?;
    if first.trim() != "0" {
        return None;
    }
    last.trim().parse::<u64>().ok()?.checked_add(1)
}

/// A JSON body sent as `Content-Type: application/json; charset=UTF-8`,
/// the form YouTube and TikTok document.
pub fn json_utf8(req: Request, body: &Value) -> Request {
    req.header("content-type", "application/json; charset=UTF-8")
        .bytes(serde_json::to_vec(body).unwrap_or_default())
}

/// A file split into `count` chunks of `chunk_size` bytes, the last one
/// taking the remainder (so it may be up to twice as large); a file
/// smaller than one chunk is one chunk of its own size (TikTok's rule).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunks {
    pub size: u64,
    pub chunk_size: u64,
    pub count: u64,
}

impl Chunks {
    /// Split a `size`-byte file into chunks of `chunk_size` bytes.
    pub fn new(size: u64, chunk_size: u64) -> Self {
        let chunk_size = chunk_size.min(size).max(1);
        Chunks {
            size,
            chunk_size,
            count: (size / chunk_size).max(1),
        }
    }

    /// Where chunk `i` (from 0) starts and how long it is.
    pub fn piece(&self, i: u64) -> (u64, u64) {
        let start = i * self.chunk_size;
        let len = if i + 1 >= self.count {
            self.size.saturating_sub(start)
        } else {
            self.chunk_size
        };
        (start, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Pair;

    fn with_range(range: Option<&str>) -> Response {
        Response {
            status: 308,
            headers: range
                .map(|r| Pair {
                    name: "Range".into(),
                    value: r.into(),
                })
                .into_iter()
                .collect(),
            body: vec![],
            final_url: String::new(),
        }
    }

    #[test]
    fn chunks_give_the_remainder_to_the_last() {
        let c = Chunks::new(25 * MIB + 3, 10 * MIB);
        assert_eq!((c.chunk_size, c.count), (10 * MIB, 2));
        assert_eq!(c.piece(0), (0, 10 * MIB));
        assert_eq!(c.piece(1), (10 * MIB, 15 * MIB + 3));
        let small = Chunks::new(1000, 10 * MIB);
        assert_eq!((small.chunk_size, small.count), (1000, 1));
        assert_eq!(small.piece(0), (0, 1000));
        let exact = Chunks::new(20 * MIB, 10 * MIB);
        assert_eq!(exact.count, 2);
        assert_eq!(exact.piece(1), (10 * MIB, 10 * MIB));
    }

    #[test]
    fn ranges() {
        assert_eq!(content_range(0, 10, 25), "bytes 0-9/25");
        assert_eq!(content_range(10, 15, 25), "bytes 10-24/25");
        assert_eq!(status_range(25), "bytes */25");
        assert_eq!(
            received(&with_range(Some("bytes=0-8388607"))),
            Some(8 * MIB)
        );
        assert_eq!(received(&with_range(None)), Some(0));
        assert_eq!(received(&with_range(Some("bytes=5-9"))), None);
        assert_eq!(received(&with_range(Some("items 0-9"))), None);
    }
}
