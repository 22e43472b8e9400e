//! Who may use the web UI: one-time sign-in links, session cookies and
//! their CSRF tokens, and the origins the daemon answers as.
//!
//! Owns: minting a sign-in link (only through the control API, with its
//! bearer token: `outreach ui`), spending it once, the sessions it starts
//! (in memory: a restarted daemon signs everyone out), each session's
//! CSRF token, and the check that a request's `Host` and `Origin` are this
//! daemon's own (DNS rebinding).
//!
//! Never: keeps a link or session past its time, compares secrets with an
//! early exit, or keeps the raw link token (only its SHA-256).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

/// How long a session lasts without being used.
pub const SESSION_IDLE: Duration = Duration::from_secs(12 * 3600);

/// A signed-in browser.
#[derive(Clone)]
pub struct Session {
    pub csrf: String,
    pub last_seen: Instant,
    /// A message for the next page (what an action did).
    pub flash: Option<(bool, String)>,
}

/// Sign-in links and sessions.
pub struct Sessions {
    links: Mutex<HashMap<[u8; 32], Instant>>,
    sessions: Mutex<HashMap<[u8; 32], Session>>,
    /// The addresses the daemon answers as (`127.0.0.1:8717`,
    /// `localhost:8717`, a configured public host), for `Host`.
    pub hosts: Vec<String>,
    /// The same as origins (`http://127.0.0.1:8717`), for `Origin`.
    pub origins: Vec<String>,
    /// The session cookie's name: per port, since cookies are shared by
    /// every port of a host.
    pub cookie: String,
    /// Set `Secure` on the cookie (the UI is reached over https).
    pub secure: bool,
    /// The address links point at.
    pub base: String,
    /// How long a sign-in link works.
    pub link_ttl: Duration,
}

fn random_token() -> String {
    let mut b = [0u8; 32];
    getrandom(&mut b);
    hex::encode(b)
}

fn getrandom(b: &mut [u8]) {
    // uuid's v4 generator draws from the operating system's CSPRNG.
    for chunk in b.chunks_mut(16) {
        let u = uuid::Uuid::new_v4();
        chunk.copy_from_slice(&u.as_bytes()[..chunk.len()]);
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Equal without an early exit.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Sessions {
    /// For a daemon bound to `bound`, also reachable as `public` (an https
    /// address in front of it), if configured.
    pub fn new(bound: std::net::SocketAddr, public: Option<&url::Url>, link_ttl: Duration) -> Self {
        let port = bound.port();
        let mut hosts = vec![bound.to_string()];
        if bound.ip().is_loopback() {
            for h in ["127.0.0.1", "localhost", "[::1]"] {
                let h = format!("{h}:{port}");
                if !hosts.contains(&h) {
                    hosts.push(h);
                }
            }
        }
        let mut origins: Vec<String> = hosts.iter().map(|h| format!("http://{h}")).collect();
        let mut base = format!("http://{bound}");
        let mut secure = false;
        if let Some(u) = public {
            let host = match u.port() {
                Some(p) => format!("{}:{p}", u.host_str().unwrap_or_default()),
                None => u.host_str().unwrap_or_default().to_string(),
            };
            let origin = u.origin().ascii_serialization();
            hosts.push(host);
            origins.push(origin.clone());
            base = origin;
            secure = u.scheme() == "https";
        }
        Sessions {
            links: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            hosts,
            origins,
            cookie: format!("outreach_session_{port}"),
            secure,
            base,
            link_ttl,
        }
    }

    /// A new one-time sign-in link.
    pub fn link(&self) -> String {
        let token = random_token();
        let now = Instant::now();
        let mut links = self.links.lock().expect("links");
        links.retain(|_, t| now.duration_since(*t) < self.link_ttl);
        links.insert(digest(&token), now);
        format!("{}/ui/signin/{token}", self.base)
    }

    /// Spend a sign-in link's token: a new session's id, or `None` if the
    /// token is unknown, spent or expired.
    pub fn sign_in(&self, token: &str) -> Option<String> {
        let made = self.links.lock().expect("links").remove(&digest(token))?;
        if made.elapsed() >= self.link_ttl {
            return None;
        }
        let id = random_token();
        let mut sessions = self.sessions.lock().expect("sessions");
        let now = Instant::now();
        sessions.retain(|_, s| now.duration_since(s.last_seen) < SESSION_IDLE);
        sessions.insert(
            digest(&id),
            Session {
                csrf: random_token(),
                last_seen: now,
                flash: None,
            },
        );
        Some(id)
    }

    /// The session of a cookie value, touched.
    pub fn get(&self, id: &str) -> Option<Session> {
        let mut sessions = self.sessions.lock().expect("sessions");
        let key = digest(id);
        let s = sessions.get_mut(&key)?;
        if s.last_seen.elapsed() >= SESSION_IDLE {
            sessions.remove(&key);
            return None;
        }
        s.last_seen = Instant::now();
        Some(s.clone())
    }

    /// Take the session's flash message.
    pub fn take_flash(&self, id: &str) -> Option<(bool, String)> {
        self.sessions
            .lock()
            .expect("sessions")
            .get_mut(&digest(id))?
            .flash
            .take()
    }

    /// Leave a message for the session's next page.
    pub fn flash(&self, id: &str, ok: bool, message: String) {
        if let Some(s) = self.sessions.lock().expect("sessions").get_mut(&digest(id)) {
            s.flash = Some((ok, message));
        }
    }

    pub fn sign_out(&self, id: &str) {
        self.sessions.lock().expect("sessions").remove(&digest(id));
    }

    /// The `Set-Cookie` value that starts a session.
    pub fn set_cookie(&self, id: &str) -> String {
        format!(
            "{}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
            self.cookie,
            SESSION_IDLE.as_secs(),
            if self.secure { "; Secure" } else { "" }
        )
    }

    /// The `Set-Cookie` value that ends it.
    pub fn clear_cookie(&self) -> String {
        format!(
            "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
            self.cookie,
            if self.secure { "; Secure" } else { "" }
        )
    }

    /// The session cookie's value in a `Cookie` header (RFC 6265 §4.2:
    /// `name=value` pairs separated by `; `).
    pub fn cookie_of<'a>(&self, header: &'a str) -> Option<&'a str> {
        header.split(';').find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == self.cookie).then_some(value.trim_matches('"'))
        })
    }

    pub fn host_ok(&self, host: Option<&str>) -> bool {
        host.is_some_and(|h| self.hosts.iter().any(|a| a.eq_ignore_ascii_case(h)))
    }

    pub fn origin_ok(&self, origin: &str) -> bool {
        self.origins.iter().any(|o| o.eq_ignore_ascii_case(origin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_signs_in_once() {
        let s = Sessions::new(
            "127.0.0.1:8717".parse().unwrap(),
            None,
            Duration::from_secs(60),
        );
        let link = s.link();
        let token = link.rsplit('/').next().unwrap();
        let id = s.sign_in(token).expect("first use");
        assert!(s.sign_in(token).is_none(), "second use");
        assert!(s.get(&id).is_some());
        s.sign_out(&id);
        assert!(s.get(&id).is_none());
        assert!(s.host_ok(Some("localhost:8717")));
        assert!(!s.host_ok(Some("evil.example:8717")));
        assert!(!s.origin_ok("http://evil.example:8717"));
        let header = format!("a=b; {}={id}; c=d", s.cookie);
        assert_eq!(s.cookie_of(&header), Some(id.as_str()));
    }
}
