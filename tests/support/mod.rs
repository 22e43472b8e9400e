//! Shared test support: a throwaway outreach home, the real binary, the
//! built plugins, and local fakes of X, LinkedIn, Mastodon, Bluesky, Discord and DEV that follow
//! the wire formats in shared/reference/platform-apis.md (and, for X and
//! Mastodon, reject any request body the official spec does not allow).
#![allow(dead_code)]

pub mod browser;
pub mod daemon;
pub mod meta;
pub mod oauth;
pub mod pg;
pub mod video;
mod wasm_tag;

#[allow(unused_imports)]
pub use wasm_tag::tagged;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::{Value, json};

/// Secrets planted in tests; none may ever appear in any output.
pub const X_TOKEN: &str = "x-PLANTED-secret-token-7f3a9";
pub const LINKEDIN_TOKEN: &str = "li-PLANTED-secret-token-c41d";
pub const MASTODON_TOKEN: &str = "md-PLANTED-secret-token-9e2b";
pub const ALL_SECRETS: [&str; 3] = [X_TOKEN, LINKEDIN_TOKEN, MASTODON_TOKEN];

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The bundled plugins built by host/build.rs.
pub fn bundled_plugins() -> PathBuf {
    repo_root().join("target").join("plugins")
}

/// How many plugins the build bundles (every `.wasm` in
/// [`bundled_plugins`]).
pub fn bundled_count() -> usize {
    std::fs::read_dir(bundled_plugins())
        .expect("bundled plugins are built by host/build.rs")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "wasm"))
        })
        .count()
}

/// Build a test plugin crate once per test binary (per feature set) and
/// return the `.wasm` at `target/test-plugins/<name>`.
pub fn test_plugin(package: &str, features: Option<&str>, name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap();
    if let Some(p) = built.get(name) {
        return p.clone();
    }
    let root = repo_root();
    let target_dir = root.join("target").join("wasm");
    let out = root.join("target").join("test-plugins");
    std::fs::create_dir_all(&out).unwrap();
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(&root)
        .args([
            "build",
            "--quiet",
            "--profile",
            "plugin",
            "--target",
            "wasm32-unknown-unknown",
            "-p",
            package,
            "--target-dir",
        ])
        .arg(&target_dir);
    if let Some(f) = features {
        cmd.args(["--features", f]);
    }
    let status = cmd.status().expect("run cargo");
    assert!(
        status.success(),
        "building the test plugin {package} failed"
    );
    let dest = out.join(name);
    let artifact = format!("{}.wasm", package.replace('-', "_"));
    std::fs::copy(
        target_dir
            .join("wasm32-unknown-unknown/plugin")
            .join(artifact),
        &dest,
    )
    .unwrap();
    built.insert(name.to_string(), dest.clone());
    dest
}

/// The hostile test plugin, and its variant with an invalid manifest.
pub fn hostile_plugins() -> (PathBuf, PathBuf) {
    (
        test_plugin("outreach-hostile", None, "hostile.wasm"),
        test_plugin("outreach-hostile", Some("bad-manifest"), "hostile-bad.wasm"),
    )
}

/// The hostile plugin at `path` as an update would make it: its `extra`
/// endpoint (a padded slot in its bytes) moved to `url`, a host accounts
/// connected before never approved.
pub fn hostile_with_extra_endpoint(path: &Path, url: &str) -> Vec<u8> {
    let slot: &[u8] = b"https://extra-slot.hostile.invalid                              ";
    let mut bytes = std::fs::read(path).unwrap();
    let at = bytes
        .windows(slot.len())
        .position(|w| w == slot)
        .expect("the hostile plugin carries its endpoint slot");
    let mut new = url.as_bytes().to_vec();
    assert!(new.len() <= slot.len(), "{url} is longer than the slot");
    new.resize(slot.len(), b' ');
    bytes[at..at + slot.len()].copy_from_slice(&new);
    bytes
}

/// A throwaway outreach home: config, plugins folder, store, identity.
pub struct Home {
    pub dir: tempfile::TempDir,
    pub endpoints: Vec<(String, String, String)>,
    pub extra_config: String,
    /// Environment for every run (client secrets by variable name).
    pub env: Vec<(String, String)>,
    /// More `[paths]` keys (`media = "…"`).
    pub paths_extra: String,
    /// `[limits]` values instead of the test defaults (`http_timeout_ms`).
    pub limits: Vec<(&'static str, u64)>,
    /// Load the binary's built-in plugins too (off: the tests put the
    /// plugins they use in the folder).
    pub built_in: bool,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
    /// Assert that no planted secret appears anywhere in this run's output.
    pub fn assert_no_secrets(&self) {
        // Every secret planted by a test or minted by a fake contains
        // "PLANTED"; nothing else does.
        assert!(
            !self.all().contains("PLANTED"),
            "a planted secret leaked into output:\n{}",
            self.all()
        );
    }
}

impl Home {
    /// A home with the bundled plugins.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("plugins")).unwrap();
        for e in std::fs::read_dir(bundled_plugins())
            .expect("bundled plugins are built by host/build.rs")
        {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "wasm") {
                std::fs::copy(&p, dir.path().join("plugins").join(p.file_name().unwrap())).unwrap();
            }
        }
        Home {
            dir,
            endpoints: Vec::new(),
            extra_config: String::new(),
            env: Vec::new(),
            paths_extra: String::new(),
            limits: Vec::new(),
            built_in: false,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn plugins_dir(&self) -> PathBuf {
        self.path().join("plugins")
    }

    /// Point endpoint `name` of `platform` at `url` in the config.
    pub fn endpoint(&mut self, platform: &str, name: &str, url: &str) -> &mut Self {
        self.endpoints
            .push((platform.into(), name.into(), url.into()));
        self
    }

    /// Point the Bluesky plugin's endpoints at `fake`.
    pub fn bluesky(&mut self, fake: &Fake) -> &mut Self {
        for (name, path) in [
            ("api", ""),
            ("login", "/xrpc/com.atproto.server.createSession"),
            ("refresh", "/xrpc/com.atproto.server.refreshSession"),
        ] {
            self.endpoint("bluesky", name, &format!("{}{path}", fake.url()));
        }
        self
    }

    pub fn config_path(&self) -> PathBuf {
        let paths_extra = &self.paths_extra;
        let mut limits = vec![
            ("call_timeout_ms", 1000),
            ("publish_timeout_ms", 5000),
            ("http_timeout_ms", 2000),
            ("memory_mib", 32),
            ("max_response_bytes", 1_048_576),
        ];
        for (k, v) in &self.limits {
            match limits.iter_mut().find(|(d, _)| d == k) {
                Some(d) => d.1 = *v,
                None => limits.push((k, *v)),
            }
        }
        let limits: String = limits.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
        let mut text = format!(
            "[paths]\nplugins = \"plugins\"\nstore = \"store\"\nidentity = \"identity.txt\"\ncache = \"cache\"\nposts = \"posts\"\n{paths_extra}\n[limits]\n{limits}\n[plugins]\nbuilt_in = {}\n\n",
            self.built_in
        );
        // Ordered, so the same home always writes the same bytes.
        let mut by_platform: std::collections::BTreeMap<&str, Vec<(&str, &str)>> =
            Default::default();
        for (p, n, u) in &self.endpoints {
            by_platform.entry(p).or_default().push((n, u));
        }
        for (p, eps) in by_platform {
            text.push_str(&format!("[platforms.{p}.endpoints]\n"));
            for (n, u) in eps {
                text.push_str(&format!("{n} = \"{u}\"\n"));
            }
        }
        text.push_str(&self.extra_config);
        let path = self.path().join("outreach.toml");
        // Written atomically and only when it changes: processes started
        // earlier may be reading it right now.
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            let tmp = self.path().join(".outreach.toml.tmp");
            std::fs::write(&tmp, &text).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
        }
        path
    }

    /// Run the real `outreach` binary with this home's config.
    /// The real `outreach` binary with this home's config and environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_outreach"));
        cmd.arg("--config")
            .arg(self.config_path())
            .args(args)
            .env("RUST_LOG", "debug")
            .env_remove("OUTREACH_CONFIG");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start outreach");
        {
            use std::io::Write;
            let mut input = child.stdin.take().unwrap();
            if let Some(s) = stdin {
                input.write_all(s.as_bytes()).unwrap();
            }
        }
        let Output {
            status,
            stdout,
            stderr,
        } = child.wait_with_output().unwrap();
        let run = Run {
            code: status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        };
        run.assert_no_secrets();
        run
    }

    /// Write a post file into this home.
    pub fn post(&self, name: &str, toml: &str) -> PathBuf {
        let p = self.path().join(name);
        std::fs::write(&p, toml).unwrap();
        p
    }
}

/// How a fake answers its next requests.
#[derive(Clone, Debug, PartialEq)]
pub enum Mode {
    Normal,
    /// The token was revoked or expired.
    Expired,
    /// 429 with the platform's rate-limit headers.
    RateLimited,
    /// An HTML error page from a proxy.
    Html,
    /// 500 with the platform's error body.
    ServerError,
    /// The body is cut off mid-way.
    Truncated,
    /// One 429 with `Retry-After: 1`, then back to normal.
    RateLimitedOnce,
    /// The platform acts on the request, then the connection drops before
    /// the answer is complete (the outcome is unknown to the client).
    AcceptThenDrop,
    /// [`Mode::AcceptThenDrop`], and the next listing the client asks for
    /// fails (500) before the platform answers normally again.
    AcceptThenDropThenHide,
    /// The next listing fails once (set by `AcceptThenDropThenHide`).
    HideOnce,
}

/// One request a fake received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: HashMap<String, String>,
    pub body: String,
    pub at: std::time::Instant,
}

pub struct FakeState {
    pub mode: Mutex<Mode>,
    pub seen: Mutex<Vec<Seen>>,
    /// Posts the fake accepted (by its own id), with their JSON body.
    pub posts: Mutex<Vec<(String, Value)>>,
    /// Mastodon: idempotency key → status id.
    pub idempotency: Mutex<HashMap<String, String>>,
    pub base: Mutex<String>,
    pub oauth: Mutex<oauth::OAuth>,
    /// Uploaded media: id → polls left before processing completes.
    pub media: Mutex<HashMap<String, u32>>,
    /// Chunked uploads in progress: id → (total bytes, bytes received,
    /// next segment index, finalized).
    pub uploads: Mutex<HashMap<String, (u64, u64, u32, bool)>>,
    /// Added before every answer (requests stay concurrent).
    pub delay: Mutex<std::time::Duration>,
    /// Added after the platform acted, before its answer leaves (a token
    /// already rotated whose answer is still on the way).
    pub answer_delay: Mutex<std::time::Duration>,
    /// Whatever else a fake keeps (Meta's containers, quotas, fetches).
    pub kv: Mutex<HashMap<String, Value>>,
}

/// A running fake platform.
pub struct Fake {
    pub addr: SocketAddr,
    pub state: Arc<FakeState>,
}

impl Fake {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn set_mode(&self, m: Mode) {
        *self.state.mode.lock().unwrap() = m;
    }
    pub fn posts(&self) -> Vec<(String, Value)> {
        self.state.posts.lock().unwrap().clone()
    }
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }
}

type Handler = fn(&FakeState, &Seen) -> Response;

/// Start a fake on 127.0.0.1 on its own runtime thread.
pub fn start(handler: Handler) -> Fake {
    let state = Arc::new(FakeState {
        mode: Mutex::new(Mode::Normal),
        seen: Mutex::new(Vec::new()),
        posts: Mutex::new(Vec::new()),
        idempotency: Mutex::new(HashMap::new()),
        base: Mutex::new(String::new()),
        oauth: Mutex::new(oauth::OAuth::default()),
        media: Mutex::new(HashMap::new()),
        uploads: Mutex::new(HashMap::new()),
        delay: Mutex::new(std::time::Duration::ZERO),
        answer_delay: Mutex::new(std::time::Duration::ZERO),
        kv: Mutex::new(HashMap::new()),
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let st = state.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let app = Router::new().fallback(
                move |State(st): State<Arc<FakeState>>,
                      method: Method,
                      uri: Uri,
                      headers: HeaderMap,
                      body: Bytes| async move {
                    let seen = Seen {
                        method: method.to_string(),
                        path: uri.path().to_string(),
                        query: uri.query().unwrap_or("").to_string(),
                        headers: headers
                            .iter()
                            .map(|(k, v)| {
                                (k.as_str().to_string(), v.to_str().unwrap_or("").to_string())
                            })
                            .collect(),
                        body: String::from_utf8_lossy(&body).into_owned(),
                        at: std::time::Instant::now(),
                    };
                    st.seen.lock().unwrap().push(seen.clone());
                    let delay = *st.delay.lock().unwrap();
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    let answer = handler(&st, &seen);
                    let late = *st.answer_delay.lock().unwrap();
                    if !late.is_zero() {
                        tokio::time::sleep(late).await;
                    }
                    answer
                },
            );
            let app = app.layer(axum::extract::DefaultBodyLimit::disable());
            axum::serve(listener, app.with_state(st)).await.unwrap();
        });
    });
    let addr = rx.recv().unwrap();
    *state.base.lock().unwrap() = format!("http://{addr}");
    Fake { addr, state }
}

pub fn respond(status: u16, headers: &[(&str, &str)], body: impl Into<Body>) -> Response {
    let mut b = Response::builder().status(StatusCode::from_u16(status).unwrap());
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(body.into()).unwrap()
}

pub fn json_response(status: u16, headers: &[(&str, &str)], v: Value) -> Response {
    let mut h = headers.to_vec();
    h.push(("content-type", "application/json"));
    respond(status, &h, v.to_string())
}

/// The failure modes every fake shares; `None` means "answer normally".
fn common_failure(
    st: &FakeState,
    limit_headers: &[(&str, &str)],
    limit_body: Value,
    err500: Value,
) -> Option<Response> {
    let mode = st.mode.lock().unwrap().clone();
    match mode {
        Mode::RateLimited => Some(json_response(429, limit_headers, limit_body)),
        Mode::Html => Some(respond(
            502,
            &[("content-type", "text/html")],
            "<html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1></body></html>",
        )),
        Mode::ServerError => Some(json_response(500, &[], err500)),
        Mode::Truncated => Some(truncated()),
        Mode::RateLimitedOnce => {
            *st.mode.lock().unwrap() = Mode::Normal;
            let mut h = limit_headers.to_vec();
            h.push(("retry-after", "1"));
            Some(json_response(429, &h, limit_body))
        }
        Mode::Normal
        | Mode::Expired
        | Mode::AcceptThenDrop
        | Mode::AcceptThenDropThenHide
        | Mode::HideOnce => None,
    }
}

/// A 200 whose body is cut off mid-way by a dropped connection.
fn truncated() -> Response {
    let stream = futures::stream::iter(vec![
        Ok::<_, std::io::Error>(Bytes::from_static(b"{\"data\":{\"id\":\"12")),
        Err(std::io::Error::other("connection reset")),
    ]);
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header("content-length", "200")
        .body(Body::from_stream(stream))
        .unwrap()
}

fn bearer_ok(st: &FakeState, seen: &Seen, token: &str) -> bool {
    let presented = seen
        .headers
        .get("authorization")
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap_or("");
    *st.mode.lock().unwrap() != Mode::Expired
        && (presented == token || st.oauth.lock().unwrap().valid(presented))
}

fn validator(schema_file: &str) -> jsonschema::Validator {
    let text = std::fs::read_to_string(repo_root().join("tests/specs").join(schema_file)).unwrap();
    let schema: Value = serde_json::from_str(&text).unwrap();
    jsonschema::options()
        .should_validate_formats(false)
        .build(&schema)
        .expect("the spec excerpt is a valid schema")
}

/// Problems with `body` under the spec excerpt `schema_file`.
pub fn spec_errors(schema_file: &str, body: &Value) -> Vec<String> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<jsonschema::Validator>>>> = OnceLock::new();
    let v = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap()
        .entry(schema_file.to_string())
        .or_insert_with(|| Arc::new(validator(schema_file)))
        .clone();
    v.iter_errors(body)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

// ---------------------------------------------------------------- X

/// A fake of api.x.com: `GET /2/users/me`, `POST /2/tweets`.
pub fn fake_x() -> Fake {
    start(|st, seen| {
        if let Some(r) = oauth::route(st, seen, oauth::Flavor::X) {
            return r;
        }
        let reset = (chrono_now() + 900).to_string();
        let limit_headers = [
            ("x-rate-limit-limit", "100"),
            ("x-rate-limit-remaining", "0"),
            ("x-rate-limit-reset", reset.as_str()),
        ];
        if let Some(r) = common_failure(
            st,
            &limit_headers,
            json!({"title": "Too Many Requests", "detail": "Too Many Requests", "type": "about:blank", "status": 429}),
            json!({"title": "Internal Server Error", "type": "about:blank", "status": 500, "detail": "Internal Server Error"}),
        ) {
            return r;
        }
        if !bearer_ok(st, seen, X_TOKEN) {
            return json_response(
                401,
                &[],
                json!({"title": "Unauthorized", "type": "about:blank", "status": 401, "detail": "Unauthorized"}),
            );
        }
        match (seen.method.as_str(), seen.path.as_str()) {
            ("GET", "/2/users/me") => json_response(
                200,
                &[],
                json!({"data": {"id": "2244994945", "name": "X Dev", "username": "xdevelopers", "profile_image_url": "https://pbs.twimg.com/profile_images/1/a_normal.jpg"}}),
            ),
            ("POST", "/2/media/upload/initialize") => {
                let body: Value = serde_json::from_str(&seen.body).unwrap_or_default();
                let (Some(total), Some(_), Some("tweet_video")) = (
                    body["total_bytes"].as_u64(),
                    body["media_type"].as_str(),
                    body["media_category"].as_str(),
                ) else {
                    return json_response(
                        400,
                        &[],
                        json!({"title": "Invalid Request", "detail": "total_bytes, media_type and media_category are required", "type": "https://api.x.com/2/problems/invalid-request"}),
                    );
                };
                let mut uploads = st.uploads.lock().unwrap();
                let id = format!("189{:016}", uploads.len() + 1);
                uploads.insert(id.clone(), (total, 0, 0, false));
                json_response(
                    200,
                    &[],
                    json!({"data": {"id": id, "media_key": format!("7_{id}"), "expires_after_secs": 86399}}),
                )
            }
            ("POST", p) if p.starts_with("/2/media/upload/") && p.ends_with("/append") => {
                let id = p
                    .trim_start_matches("/2/media/upload/")
                    .trim_end_matches("/append")
                    .to_string();
                let parts = multipart(seen).unwrap_or_default();
                let segment = parts
                    .iter()
                    .find(|p| p.name == "segment_index")
                    .and_then(|p| p.data.parse::<u32>().ok());
                let chunk = parts
                    .iter()
                    .find(|p| p.name == "media")
                    .map(|p| p.data.len() as u64);
                let mut uploads = st.uploads.lock().unwrap();
                match (uploads.get_mut(&id), segment, chunk) {
                    (Some(u), Some(seg), Some(len)) if seg == u.2 && !u.3 => {
                        u.1 += len;
                        u.2 += 1;
                        json_response(200, &[], json!({"data": {"expires_at": 1_900_000_000}}))
                    }
                    _ => json_response(
                        400,
                        &[],
                        json!({"title": "Invalid Request", "detail": "unknown upload or out-of-order segment", "type": "https://api.x.com/2/problems/invalid-request"}),
                    ),
                }
            }
            ("POST", p) if p.starts_with("/2/media/upload/") && p.ends_with("/finalize") => {
                let id = p
                    .trim_start_matches("/2/media/upload/")
                    .trim_end_matches("/finalize")
                    .to_string();
                let mut uploads = st.uploads.lock().unwrap();
                match uploads.get_mut(&id) {
                    Some(u) if u.0 == u.1 => {
                        u.3 = true;
                        st.media.lock().unwrap().insert(id.clone(), 1);
                        json_response(
                            200,
                            &[],
                            json!({"data": {"id": id, "media_key": format!("7_{id}"), "size": u.0, "processing_info": {"state": "pending", "check_after_secs": 1}}}),
                        )
                    }
                    _ => json_response(
                        400,
                        &[],
                        json!({"title": "Invalid Request", "detail": "the upload is incomplete", "type": "https://api.x.com/2/problems/invalid-request"}),
                    ),
                }
            }
            ("GET", "/2/media/upload") => {
                let q: HashMap<String, String> = url::form_urlencoded::parse(seen.query.as_bytes())
                    .into_owned()
                    .collect();
                let id = q.get("media_id").cloned().unwrap_or_default();
                if q.get("command").map(String::as_str) != Some("STATUS") {
                    return json_response(
                        400,
                        &[],
                        json!({"title": "Invalid Request", "detail": "command must be STATUS", "type": "https://api.x.com/2/problems/invalid-request"}),
                    );
                }
                let mut media = st.media.lock().unwrap();
                match media.get_mut(&id) {
                    None => json_response(
                        404,
                        &[],
                        json!({"title": "Not Found Error", "type": "https://api.x.com/2/problems/resource-not-found"}),
                    ),
                    Some(left) if *left > 0 => {
                        *left -= 1;
                        json_response(
                            200,
                            &[],
                            json!({"data": {"id": id, "processing_info": {"state": "in_progress", "check_after_secs": 1, "progress_percent": 50}}}),
                        )
                    }
                    Some(_) => json_response(
                        200,
                        &[],
                        json!({"data": {"id": id, "processing_info": {"state": "succeeded", "progress_percent": 100}}}),
                    ),
                }
            }
            ("POST", "/2/media/upload") => {
                let Some(parts) = multipart(seen) else {
                    return json_response(
                        400,
                        &[],
                        json!({"title": "Invalid Request", "detail": "expected multipart/form-data", "type": "https://api.x.com/2/problems/invalid-request"}),
                    );
                };
                let category = parts
                    .iter()
                    .find(|p| p.name == "media_category")
                    .map(|p| p.data.clone());
                let file = parts
                    .iter()
                    .find(|p| p.name == "media" && p.filename.is_some());
                let allowed = [
                    "tweet_image",
                    "tweet_video",
                    "tweet_gif",
                    "dm_image",
                    "dm_video",
                    "dm_gif",
                    "subtitles",
                ];
                if file.is_none_or(|f| f.data.is_empty())
                    || !category.as_deref().is_some_and(|c| allowed.contains(&c))
                {
                    return json_response(
                        400,
                        &[],
                        json!({"title": "Invalid Request", "detail": "media and media_category are required", "type": "https://api.x.com/2/problems/invalid-request"}),
                    );
                }
                let mut media = st.media.lock().unwrap();
                let id = format!("188{:016}", media.len() + 1);
                media.insert(id.clone(), 0);
                json_response(
                    200,
                    &[],
                    json!({"data": {"id": id, "media_key": format!("3_{id}"), "size": file.unwrap().data.len(), "expires_after_secs": 86400}}),
                )
            }
            ("POST", "/2/tweets") => {
                let invalid = |detail: String| {
                    json_response(
                        400,
                        &[],
                        json!({"title": "Invalid Request", "detail": detail, "type": "https://api.x.com/2/problems/invalid-request"}),
                    )
                };
                if seen.headers.get("content-type").map(String::as_str) != Some("application/json")
                {
                    return invalid("Content-Type must be application/json".into());
                }
                let Ok(body) = serde_json::from_str::<Value>(&seen.body) else {
                    return invalid("body is not JSON".into());
                };
                let errors = spec_errors("x-create-post-request.json", &body);
                if !errors.is_empty() {
                    return invalid(errors.join("; "));
                }
                if let Some(ids) = body["media"]["media_ids"].as_array() {
                    let media = st.media.lock().unwrap();
                    if let Some(bad) = ids
                        .iter()
                        .find(|i| i.as_str().is_none_or(|i| media.get(i) != Some(&0)))
                    {
                        return invalid(format!("media id {bad} was not uploaded"));
                    }
                }
                let mut posts = st.posts.lock().unwrap();
                if let Some(parent) = body["reply"]["in_reply_to_tweet_id"].as_str()
                    && !posts.iter().any(|(id, _)| id == parent)
                {
                    return invalid(format!(
                        "reply.in_reply_to_tweet_id {parent} is not a Post that exists"
                    ));
                }
                let id = format!("18{:017}", posts.len() + 1);
                posts.push((id.clone(), body.clone()));
                json_response(
                    201,
                    &[],
                    json!({"data": {"id": id, "text": body["text"], "edit_history_post_ids": [id]}}),
                )
            }
            _ => json_response(
                404,
                &[],
                json!({"title": "Not Found Error", "type": "https://api.x.com/2/problems/resource-not-found"}),
            ),
        }
    })
}

fn chrono_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

// ---------------------------------------------------------------- LinkedIn

pub const LINKEDIN_SUB: &str = "782bbtaQ";

/// LinkedIn's video part size (4 MiB).
const LINKEDIN_PART: u64 = 4 << 20;

/// `PUT` of one video part: the bytes LinkedIn asked for, answered with an
/// ETag.
fn linkedin_video_part(st: &FakeState, seen: &Seen) -> Response {
    let rest = seen.path.trim_start_matches("/dms-uploads/video/");
    let Some((n, i)) = rest.split_once("/part/") else {
        return respond(404, &[], "");
    };
    let (n, i): (usize, u64) = (n.parse().unwrap_or(0), i.parse().unwrap_or(u64::MAX));
    let mut uploads = st.uploads.lock().unwrap();
    let Some(up) = uploads.get_mut(&format!("li-video:{n}")) else {
        return respond(404, &[], "");
    };
    let first = i * LINKEDIN_PART;
    let want = (first + LINKEDIN_PART).min(up.0).saturating_sub(first);
    if seen.headers.contains_key("authorization") {
        return respond(
            400,
            &[],
            "pre-signed upload URLs take no Authorization header",
        );
    }
    if want == 0 || seen.body.len() as u64 != want || up.2 as u64 != i {
        return respond(
            400,
            &[],
            format!("part {i}: {} bytes, expected {want}", seen.body.len()),
        );
    }
    up.1 += want;
    up.2 += 1;
    let etag = format!("\"li-{n}-{i}\"");
    respond(200, &[("etag", etag.as_str())], Body::empty())
}

/// A fake of api.linkedin.com: `GET /v2/userinfo`, `POST /rest/posts`.
pub fn fake_linkedin() -> Fake {
    start(|st, seen| {
        if let Some(r) = oauth::route(st, seen, oauth::Flavor::LinkedIn) {
            return r;
        }
        if let Some(r) = common_failure(
            st,
            &[],
            json!({"status": 429, "message": "Resource level throttle limit for calls to this resource is reached."}),
            json!({"status": 500, "message": "Internal Server Error"}),
        ) {
            return r;
        }
        // Video parts go to pre-signed URLs: no bearer token there.
        if seen.method == "PUT" && seen.path.starts_with("/dms-uploads/video/") {
            return linkedin_video_part(st, seen);
        }
        if !bearer_ok(st, seen, LINKEDIN_TOKEN) {
            return json_response(
                401,
                &[],
                json!({"serviceErrorCode": 65600, "message": "Invalid access token", "status": 401}),
            );
        }
        match (seen.method.as_str(), seen.path.as_str()) {
            ("POST", "/rest/videos") if seen.query == "action=initializeUpload" => {
                let body: Value = serde_json::from_str(&seen.body).unwrap_or_default();
                let req = &body["initializeUploadRequest"];
                let Some(size) = req["fileSizeBytes"].as_u64().filter(|s| *s > 0) else {
                    return json_response(
                        422,
                        &[],
                        json!({"status": 422, "message": "/initializeUploadRequest/fileSizeBytes :: field is required"}),
                    );
                };
                if req["owner"] != json!(format!("urn:li:person:{LINKEDIN_SUB}")) {
                    return json_response(
                        422,
                        &[],
                        json!({"status": 422, "message": "/initializeUploadRequest/owner :: invalid owner"}),
                    );
                }
                let mut uploads = st.uploads.lock().unwrap();
                let n = uploads.len() + 1;
                let parts = size.div_ceil(LINKEDIN_PART);
                uploads.insert(format!("li-video:{n}"), (size, 0, 0, false));
                let base = st.base.lock().unwrap().clone();
                let instructions: Vec<Value> = (0..parts)
                    .map(|i| {
                        let first = i * LINKEDIN_PART;
                        let last = (first + LINKEDIN_PART).min(size) - 1;
                        json!({"uploadUrl": format!("{base}/dms-uploads/video/{n}/part/{i}"), "firstByte": first, "lastByte": last})
                    })
                    .collect();
                json_response(
                    200,
                    &[],
                    json!({"value": {"uploadUrlsExpireAt": 1_900_000_000_000u64, "video": format!("urn:li:video:C5F10AQ{n:08}"), "uploadInstructions": instructions, "uploadToken": ""}}),
                )
            }
            ("POST", "/rest/videos") if seen.query == "action=finalizeUpload" => {
                let body: Value = serde_json::from_str(&seen.body).unwrap_or_default();
                let req = &body["finalizeUploadRequest"];
                let urn = req["video"].as_str().unwrap_or("");
                let n: usize = urn
                    .trim_start_matches("urn:li:video:C5F10AQ")
                    .parse()
                    .unwrap_or(0);
                let mut uploads = st.uploads.lock().unwrap();
                let Some(up) = uploads.get_mut(&format!("li-video:{n}")) else {
                    return json_response(
                        404,
                        &[],
                        json!({"status": 404, "message": "no such video"}),
                    );
                };
                let parts = up.0.div_ceil(LINKEDIN_PART);
                let expected: Vec<Value> = (0..parts)
                    .map(|i| json!(format!("\"li-{n}-{i}\"")))
                    .collect();
                if up.1 != up.0 || req["uploadedPartIds"] != json!(expected) {
                    return json_response(
                        400,
                        &[],
                        json!({"status": 400, "message": format!("uploadedPartIds do not match the uploaded parts ({} of {} bytes received)", up.1, up.0)}),
                    );
                }
                up.3 = true;
                st.media
                    .lock()
                    .unwrap()
                    .insert(format!("processing:{urn}"), 2);
                respond(200, &[], Body::empty())
            }
            ("GET", p) if p.starts_with("/rest/videos/") => {
                let urn = p
                    .trim_start_matches("/rest/videos/")
                    .replace("%3A", ":")
                    .replace("%3a", ":");
                if !urn.starts_with("urn:li:video:") {
                    return json_response(
                        400,
                        &[],
                        json!({"status": 400, "message": "the video URN must be URL-encoded"}),
                    );
                }
                let mut media = st.media.lock().unwrap();
                let key = format!("processing:{urn}");
                let status = match media.get(&key).copied() {
                    Some(0) => {
                        media.remove(&key);
                        media.insert(urn.clone(), 0);
                        "AVAILABLE"
                    }
                    Some(left) => {
                        media.insert(key, left - 1);
                        "PROCESSING"
                    }
                    None if media.contains_key(&urn) => "AVAILABLE",
                    None => "WAITING_UPLOAD",
                };
                json_response(
                    200,
                    &[],
                    json!({"id": urn, "status": status, "owner": format!("urn:li:person:{LINKEDIN_SUB}")}),
                )
            }
            ("GET", "/v2/userinfo") => json_response(
                200,
                &[],
                json!({"sub": LINKEDIN_SUB, "name": "John Doe", "given_name": "John", "family_name": "Doe", "picture": "https://media.licdn.com/dms/image/x", "locale": {"country": "US", "language": "en"}}),
            ),
            ("POST", "/rest/images") if seen.query == "action=initializeUpload" => {
                let body: Value = serde_json::from_str(&seen.body).unwrap_or_default();
                if body["initializeUploadRequest"]["owner"]
                    != json!(format!("urn:li:person:{LINKEDIN_SUB}"))
                {
                    return json_response(
                        422,
                        &[],
                        json!({"status": 422, "message": "/initializeUploadRequest/owner :: invalid owner"}),
                    );
                }
                let mut media = st.media.lock().unwrap();
                let n = media.len() + 1;
                media.insert(format!("pending:{n}"), 0);
                let base = st.base.lock().unwrap().clone();
                json_response(
                    200,
                    &[],
                    json!({"value": {"uploadUrlExpiresAt": 1_900_000_000_000u64, "uploadUrl": format!("{base}/dms-uploads/{n}"), "image": format!("urn:li:image:C4E10AQ{n:08}")}}),
                )
            }
            ("PUT", p) if p.starts_with("/dms-uploads/") => {
                let n: usize = p.trim_start_matches("/dms-uploads/").parse().unwrap_or(0);
                let mut media = st.media.lock().unwrap();
                if media.remove(&format!("pending:{n}")).is_none() || seen.body.is_empty() {
                    return respond(400, &[], "");
                }
                media.insert(format!("urn:li:image:C4E10AQ{n:08}"), 0);
                respond(201, &[], "")
            }
            ("POST", "/rest/posts") => {
                let version = seen
                    .headers
                    .get("linkedin-version")
                    .cloned()
                    .unwrap_or_default();
                if version.len() != 6 || !version.bytes().all(|b| b.is_ascii_digit()) {
                    return json_response(
                        400,
                        &[],
                        json!({"status": 400, "code": "VERSION_MISSING", "message": "A version must be present. Please specify a version by adding the LinkedIn-Version header."}),
                    );
                }
                if version.as_str() < "202501" {
                    return json_response(
                        426,
                        &[],
                        json!({"status": 426, "code": "NONEXISTENT_VERSION", "message": format!("Requested version {version}01 is not active")}),
                    );
                }
                if seen
                    .headers
                    .get("x-restli-protocol-version")
                    .map(String::as_str)
                    != Some("2.0.0")
                {
                    return json_response(
                        400,
                        &[],
                        json!({"status": 400, "message": "X-Restli-Protocol-Version 2.0.0 is required"}),
                    );
                }
                let Ok(body) = serde_json::from_str::<Value>(&seen.body) else {
                    return json_response(
                        400,
                        &[],
                        json!({"status": 400, "message": "Malformed JSON"}),
                    );
                };
                for field in [
                    "author",
                    "commentary",
                    "visibility",
                    "distribution",
                    "lifecycleState",
                ] {
                    if body.get(field).is_none() {
                        return json_response(
                            422,
                            &[],
                            json!({"status": 422, "message": format!("/{field} :: field is required but not found and has no default value")}),
                        );
                    }
                }
                let images: Vec<Value> = match (
                    body.pointer("/content/media/id"),
                    body.pointer("/content/multiImage/images"),
                ) {
                    (Some(id), _) => vec![id.clone()],
                    (None, Some(Value::Array(list))) => {
                        if !(2..=20).contains(&list.len()) {
                            return json_response(
                                422,
                                &[],
                                json!({"status": 422, "message": "/content/multiImage/images :: between 2 and 20 images"}),
                            );
                        }
                        list.iter().map(|i| i["id"].clone()).collect()
                    }
                    _ => vec![],
                };
                for image in images {
                    if !image
                        .as_str()
                        .is_some_and(|i| st.media.lock().unwrap().contains_key(i))
                    {
                        return json_response(
                            422,
                            &[],
                            json!({"status": 422, "message": format!("/content/media/id :: {image} has not been uploaded")}),
                        );
                    }
                }
                if body["author"] != json!(format!("urn:li:person:{LINKEDIN_SUB}")) {
                    return json_response(
                        403,
                        &[],
                        json!({"status": 403, "serviceErrorCode": 100, "message": "Not enough permissions to post as this author"}),
                    );
                }
                let mut posts = st.posts.lock().unwrap();
                let urn = format!("urn:li:share:7{:018}", posts.len() + 1);
                posts.push((urn.clone(), body));
                respond(201, &[("x-restli-id", urn.as_str())], Body::empty())
            }
            _ => json_response(404, &[], json!({"status": 404, "message": "Not Found"})),
        }
    })
}

// ---------------------------------------------------------------- Mastodon

/// A fake Mastodon instance: `verify_credentials`, `POST /api/v1/statuses`
/// with `Idempotency-Key` deduplication and the 500-character limit.
pub fn fake_mastodon() -> Fake {
    start(|st, seen| {
        if let Some(r) = oauth::route(st, seen, oauth::Flavor::Mastodon) {
            return r;
        }
        let reset = "2030-01-01T00:00:00.000Z";
        if let Some(r) = common_failure(
            st,
            &[
                ("x-ratelimit-limit", "300"),
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", reset),
            ],
            json!({"error": "Too many requests"}),
            json!({"error": "We're sorry, but something went wrong on our end."}),
        ) {
            return r;
        }
        if !bearer_ok(st, seen, MASTODON_TOKEN) {
            return json_response(401, &[], json!({"error": "The access token is invalid"}));
        }
        let base = st.base.lock().unwrap().clone();
        match (seen.method.as_str(), seen.path.as_str()) {
            ("GET", "/api/v1/accounts/verify_credentials") => json_response(
                200,
                &[],
                json!({"id": "14715", "username": "trwnh", "acct": "trwnh", "display_name": "infinite love ⴳ", "avatar": format!("{base}/avatars/original/missing.png"), "url": format!("{base}/@trwnh")}),
            ),
            ("POST", "/api/v2/media") => {
                let Some(parts) = multipart(seen) else {
                    return json_response(
                        422,
                        &[],
                        json!({"error": "Validation failed: File can't be blank"}),
                    );
                };
                let Some(file) = parts
                    .iter()
                    .find(|p| p.name == "file" && p.filename.is_some())
                else {
                    return json_response(
                        422,
                        &[],
                        json!({"error": "Validation failed: File can't be blank"}),
                    );
                };
                let video = file
                    .content_type
                    .as_deref()
                    .is_some_and(|t| t.starts_with("video/"));
                let mut media = st.media.lock().unwrap();
                let id = format!("22{:016}", media.len() + 1);
                // Video is processed asynchronously: 202, then 206 on the
                // first poll, then 200.
                media.insert(id.clone(), if video { 1 } else { 0 });
                let base = st.base.lock().unwrap().clone();
                let description = parts
                    .iter()
                    .find(|p| p.name == "description")
                    .map(|p| p.data.clone());
                let url = (!video).then(|| format!("{base}/media/{id}"));
                json_response(
                    if video { 202 } else { 200 },
                    &[],
                    json!({"id": id, "type": if video { "video" } else { "image" }, "url": url, "description": description}),
                )
            }
            ("GET", p) if p.starts_with("/api/v1/media/") => {
                let id = p.trim_start_matches("/api/v1/media/").to_string();
                let mut media = st.media.lock().unwrap();
                match media.get_mut(&id) {
                    None => json_response(404, &[], json!({"error": "Record not found"})),
                    Some(left) if *left > 0 => {
                        *left -= 1;
                        json_response(206, &[], json!({"id": id, "type": "video", "url": null}))
                    }
                    Some(_) => {
                        let base = st.base.lock().unwrap().clone();
                        json_response(
                            200,
                            &[],
                            json!({"id": id, "type": "video", "url": format!("{base}/media/{id}")}),
                        )
                    }
                }
            }
            ("POST", "/api/v1/statuses") => {
                let Ok(body) = serde_json::from_str::<Value>(&seen.body) else {
                    return json_response(
                        422,
                        &[],
                        json!({"error": "Validation failed: body is not JSON"}),
                    );
                };
                let errors = spec_errors("mastodon-create-status-request.json", &body);
                if !errors.is_empty() {
                    return json_response(
                        422,
                        &[],
                        json!({"error": format!("Validation failed: {}", errors.join("; "))}),
                    );
                }
                if let Some(ids) = body["media_ids"].as_array() {
                    let media = st.media.lock().unwrap();
                    if let Some(bad) = ids
                        .iter()
                        .find(|i| i.as_str().is_none_or(|i| media.get(i) != Some(&0)))
                    {
                        return json_response(
                            422,
                            &[],
                            json!({"error": format!("Validation failed: media {bad} is missing or still processing")}),
                        );
                    }
                }
                let text = body["status"].as_str().unwrap_or("");
                if text.chars().count() > 500 {
                    return json_response(
                        422,
                        &[],
                        json!({"error": "Validation failed: Text character limit of 500 exceeded"}),
                    );
                }
                let key = seen.headers.get("idempotency-key").cloned();
                let mut posts = st.posts.lock().unwrap();
                if let Some(parent) = body["in_reply_to_id"].as_str()
                    && !posts.iter().any(|(id, _)| id == parent)
                {
                    return json_response(404, &[], json!({"error": "Record not found"}));
                }
                let existing = key
                    .as_ref()
                    .and_then(|k| st.idempotency.lock().unwrap().get(k).cloned());
                let id = match existing {
                    Some(id) => id,
                    None => {
                        let id = format!("1093{:014}", posts.len() + 1);
                        posts.push((id.clone(), body.clone()));
                        if let Some(k) = key {
                            st.idempotency.lock().unwrap().insert(k, id.clone());
                        }
                        id
                    }
                };
                json_response(
                    200,
                    &[],
                    json!({"id": id, "uri": format!("{base}/users/trwnh/statuses/{id}"), "url": format!("{base}/@trwnh/{id}"), "created_at": "2026-11-26T07:00:00.000Z", "content": format!("<p>{text}</p>"), "visibility": body["visibility"], "account": {"id": "14715", "username": "trwnh", "acct": "trwnh"}}),
                )
            }
            _ => json_response(404, &[], json!({"error": "Record not found"})),
        }
    })
}

/// The DID and handle of the Bluesky fake's one account.
pub const BSKY_DID: &str = "did:plc:lab";

/// A fake Bluesky PDS: app-password sessions (see `oauth`), and the repo
/// API as the lexicons define it — an expired access token is HTTP 400
/// `ExpiredToken`, facets must use UTF-8 byte offsets that land on the
/// text they describe, replies need `{uri, cid}` of a real root and
/// parent, images must be blobs uploaded first (≤ 2,000,000 bytes) with
/// `alt` text, and `createdAt` is required.
pub fn fake_bluesky() -> Fake {
    start(|st, seen| {
        if let Some(r) = oauth::route(st, seen, oauth::Flavor::Bluesky) {
            return r;
        }
        let limits = [
            ("ratelimit-limit", "5000"),
            ("ratelimit-remaining", "0"),
            ("ratelimit-reset", "1900000000"),
            ("ratelimit-policy", "5000;w=3600"),
        ];
        if let Some(r) = common_failure(
            st,
            &limits,
            json!({"error": "RateLimitExceeded", "message": "Rate Limit Exceeded"}),
            json!({"error": "InternalServerError", "message": "Internal Server Error"}),
        ) {
            return r;
        }
        let invalid = |name: &str, message: &str| {
            json_response(400, &[], json!({"error": name, "message": message}))
        };
        let token = seen
            .headers
            .get("authorization")
            .and_then(|h| h.strip_prefix("Bearer "))
            .unwrap_or("");
        {
            let o = st.oauth.lock().unwrap();
            match o.access.get(token) {
                Some(exp) if *exp > std::time::Instant::now() => {}
                Some(_) => return invalid("ExpiredToken", "Token has expired"),
                None => return invalid("InvalidToken", "Token could not be verified"),
            }
        }
        let query: HashMap<String, String> = url::form_urlencoded::parse(seen.query.as_bytes())
            .into_owned()
            .collect();
        let body: Value = serde_json::from_str(&seen.body).unwrap_or_default();
        let cids = |uri: &str| st.idempotency.lock().unwrap().get(uri).cloned();
        match (seen.method.as_str(), seen.path.as_str()) {
            ("GET", "/xrpc/com.atproto.server.getSession") => json_response(
                200,
                &[],
                json!({"did": BSKY_DID, "handle": "alice.test", "active": true}),
            ),
            ("GET", "/xrpc/app.bsky.actor.getProfile") => {
                if query.get("actor").map(String::as_str) != Some(BSKY_DID) {
                    return invalid("InvalidRequest", "Profile not found");
                }
                json_response(
                    200,
                    &[],
                    json!({"did": BSKY_DID, "handle": "alice.test", "displayName": "Alice Lab",
                           "avatar": "https://cdn.bsky.example/alice.jpg"}),
                )
            }
            ("POST", "/xrpc/com.atproto.repo.uploadBlob") => {
                let mime = seen
                    .headers
                    .get("content-type")
                    .cloned()
                    .unwrap_or_default();
                let size: u64 = seen
                    .headers
                    .get("content-length")
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(0);
                if !mime.starts_with("image/") || size == 0 {
                    return invalid("InvalidRequest", "expected an image body with its type");
                }
                if size > 2_000_000 {
                    return invalid("BlobTooLarge", "This file is too large");
                }
                let mut media = st.media.lock().unwrap();
                let link = format!("bafkreiblob{}", media.len() + 1);
                media.insert(link.clone(), 0);
                json_response(
                    200,
                    &[],
                    json!({"blob": {"$type": "blob", "ref": {"$link": link}, "mimeType": mime, "size": size}}),
                )
            }
            ("POST", "/xrpc/com.atproto.repo.createRecord") => {
                if seen.headers.get("content-type").map(String::as_str) != Some("application/json")
                {
                    return invalid("InvalidRequest", "Expected application/json");
                }
                if body["repo"] != BSKY_DID || body["collection"] != "app.bsky.feed.post" {
                    return invalid("InvalidRequest", "wrong repo or collection");
                }
                let record = &body["record"];
                let text = record["text"].as_str().unwrap_or_default();
                let created = record["createdAt"].as_str().unwrap_or_default();
                if record["$type"] != "app.bsky.feed.post"
                    || chrono::DateTime::parse_from_rfc3339(created).is_err()
                {
                    return invalid("InvalidRecord", "Record/createdAt must be a valid datetime");
                }
                if text.chars().count() > 300 || text.len() > 3000 {
                    return invalid(
                        "InvalidRecord",
                        "Record/text must not be longer than 300 graphemes",
                    );
                }
                for f in record["facets"].as_array().into_iter().flatten() {
                    let (a, b) = (
                        f["index"]["byteStart"].as_u64().unwrap_or(u64::MAX) as usize,
                        f["index"]["byteEnd"].as_u64().unwrap_or(0) as usize,
                    );
                    let Some(span) = text.get(a..b) else {
                        return invalid("InvalidRecord", "facet index out of the text");
                    };
                    let feature = &f["features"][0];
                    let ok = match feature["$type"].as_str() {
                        Some("app.bsky.richtext.facet#link") => feature["uri"] == span,
                        Some("app.bsky.richtext.facet#tag") => {
                            span.strip_prefix('#') == feature["tag"].as_str()
                        }
                        _ => false,
                    };
                    if !ok {
                        return invalid(
                            "InvalidRecord",
                            &format!("facet {a}..{b} does not match {span:?}"),
                        );
                    }
                }
                if !record["reply"].is_null() {
                    for which in ["root", "parent"] {
                        let r = &record["reply"][which];
                        let uri = r["uri"].as_str().unwrap_or_default();
                        if cids(uri).is_none() || r["cid"].as_str() != cids(uri).as_deref() {
                            return invalid(
                                "InvalidRecord",
                                &format!("reply {which} is not a record"),
                            );
                        }
                    }
                }
                if let Some(images) = record["embed"]["images"].as_array() {
                    let media = st.media.lock().unwrap();
                    for i in images {
                        let link = i["image"]["ref"]["$link"].as_str().unwrap_or_default();
                        if !media.contains_key(link) || !i["alt"].is_string() || images.len() > 4 {
                            return invalid(
                                "InvalidRecord",
                                "embed images must be uploaded blobs with alt",
                            );
                        }
                    }
                }
                let mut posts = st.posts.lock().unwrap();
                let n = posts.len() + 1;
                let uri = format!("at://{BSKY_DID}/app.bsky.feed.post/3lab{n:04}");
                let cid = format!("bafyreipost{n}");
                posts.push((uri.clone(), record.clone()));
                st.idempotency
                    .lock()
                    .unwrap()
                    .insert(uri.clone(), cid.clone());
                json_response(
                    200,
                    &[("ratelimit-limit", "5000"), ("ratelimit-remaining", "4997")],
                    json!({"uri": uri, "cid": cid, "validationStatus": "valid",
                           "commit": {"cid": "bafyreicommit", "rev": "3lab"}}),
                )
            }
            ("GET", "/xrpc/com.atproto.repo.getRecord") => {
                let uri = format!(
                    "at://{}/{}/{}",
                    query.get("repo").cloned().unwrap_or_default(),
                    query.get("collection").cloned().unwrap_or_default(),
                    query.get("rkey").cloned().unwrap_or_default()
                );
                let posts = st.posts.lock().unwrap();
                match posts.iter().find(|(u, _)| *u == uri) {
                    Some((_, value)) => json_response(
                        200,
                        &[],
                        json!({"uri": uri, "cid": cids(&uri), "value": value}),
                    ),
                    None => invalid("RecordNotFound", &format!("Could not locate record: {uri}")),
                }
            }
            ("GET", "/xrpc/com.atproto.repo.listRecords") => {
                let posts = st.posts.lock().unwrap();
                let records: Vec<Value> = posts
                    .iter()
                    .rev()
                    .take(25)
                    .map(|(uri, value)| json!({"uri": uri, "cid": cids(uri), "value": value}))
                    .collect();
                json_response(200, &[], json!({"records": records}))
            }
            _ => json_response(
                501,
                &[],
                json!({"error": "MethodNotImplemented", "message": "Method Not Implemented"}),
            ),
        }
    })
}

/// The Discord fake's webhook: `{fake}/api/webhooks/{DISCORD_WEBHOOK_ID}/{DISCORD_WEBHOOK_TOKEN}`.
pub const DISCORD_WEBHOOK_ID: &str = "1187223344556677889";
pub const DISCORD_WEBHOOK_TOKEN: &str = "whtok-PLANTED-d15c0";

/// A fake Discord webhook (channel 555 of guild 777). As the real one: a
/// user agent other than `DiscordBot (…)` gets Cloudflare's HTML page;
/// `GET` the webhook describes it; `POST` answers 204 with no body unless
/// `?wait=true`; JSON needs its content type (else 50035); attachments come
/// as `multipart/form-data` with `payload_json` and `files[n]`; content is
/// at most 2000 characters; a bad token is 401 and, in [`Mode::Expired`],
/// the webhook is gone (404, code 10015).
pub fn fake_discord() -> Fake {
    start(|st, seen| {
        let limits = [
            ("x-ratelimit-limit", "5"),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset-after", "2"),
            ("retry-after", "2"),
        ];
        if *st.mode.lock().unwrap() == Mode::Expired {
            return json_response(
                404,
                &[],
                json!({"message": "Unknown Webhook", "code": 10015}),
            );
        }
        if let Some(r) = common_failure(
            st,
            &limits,
            json!({"message": "You are being rate limited.", "retry_after": 1.5, "global": false}),
            json!({"message": "500: Internal Server Error", "code": 0}),
        ) {
            return r;
        }
        if !seen
            .headers
            .get("user-agent")
            .is_some_and(|u| u.starts_with("DiscordBot ("))
        {
            return respond(
                403,
                &[("content-type", "text/html")],
                "<html><head><title>Access denied | discord.com used Cloudflare to restrict access</title></head></html>",
            );
        }
        let bad_body = |what: &str| {
            json_response(
                400,
                &[],
                json!({"code": 50035, "message": "Invalid Form Body", "errors": {"content": {"_errors": [{"code": "BASE_TYPE_BAD", "message": what}]}}}),
            )
        };
        let parts: Vec<&str> = seen.path.trim_start_matches('/').split('/').collect();
        let ["api", "webhooks", id, token] = parts[..] else {
            return json_response(404, &[], json!({"message": "404: Not Found", "code": 0}));
        };
        if id != DISCORD_WEBHOOK_ID {
            return json_response(
                404,
                &[],
                json!({"message": "Unknown Webhook", "code": 10015}),
            );
        }
        if token != DISCORD_WEBHOOK_TOKEN {
            return json_response(
                401,
                &[],
                json!({"message": "Invalid Webhook Token", "code": 50027}),
            );
        }
        let query: HashMap<String, String> = url::form_urlencoded::parse(seen.query.as_bytes())
            .into_owned()
            .collect();
        match seen.method.as_str() {
            "GET" => json_response(
                200,
                &[],
                json!({"id": DISCORD_WEBHOOK_ID, "type": 1, "name": "Release bot", "avatar": "a1b2c3",
                       "channel_id": "555", "guild_id": "777", "token": DISCORD_WEBHOOK_TOKEN}),
            ),
            "POST" => {
                let ct = seen
                    .headers
                    .get("content-type")
                    .cloned()
                    .unwrap_or_default();
                let (payload, files): (Value, Vec<Part>) = if ct == "application/json" {
                    (serde_json::from_str(&seen.body).unwrap_or_default(), vec![])
                } else if let Some(parts) = multipart(seen) {
                    let Some(json_part) = parts.iter().find(|p| p.name == "payload_json") else {
                        return bad_body("payload_json is required with files");
                    };
                    let payload = serde_json::from_str(&json_part.data).unwrap_or_default();
                    (
                        payload,
                        parts
                            .into_iter()
                            .filter(|p| p.name.starts_with("files["))
                            .collect(),
                    )
                } else {
                    return bad_body(
                        "Content-Type must be application/json or multipart/form-data",
                    );
                };
                let content = payload["content"].as_str().unwrap_or_default();
                if content.chars().count() > 2000 {
                    return bad_body("Must be 2000 or fewer in length.");
                }
                if content.is_empty() && files.is_empty() {
                    return json_response(
                        400,
                        &[],
                        json!({"code": 50006, "message": "Cannot send an empty message"}),
                    );
                }
                let mut posts = st.posts.lock().unwrap();
                let id = format!("90000{}", posts.len() + 1);
                let mut recorded = payload.clone();
                recorded["files"] = json!(files
                    .iter()
                    .map(|f| json!({"name": f.name, "filename": f.filename, "content_type": f.content_type, "size": f.data.len()}))
                    .collect::<Vec<_>>());
                recorded["query"] = json!(query);
                posts.push((id.clone(), recorded));
                let headers = [
                    ("x-ratelimit-limit", "5"),
                    ("x-ratelimit-remaining", "4"),
                    ("x-ratelimit-reset-after", "0.4"),
                ];
                if query.get("wait").map(String::as_str) != Some("true") {
                    return respond(204, &headers, "");
                }
                let channel = query
                    .get("thread_id")
                    .cloned()
                    .unwrap_or_else(|| "555".into());
                json_response(
                    200,
                    &headers,
                    json!({"id": id, "type": 0, "channel_id": channel, "content": content,
                           "webhook_id": DISCORD_WEBHOOK_ID, "attachments": [], "embeds": []}),
                )
            }
            _ => json_response(
                405,
                &[],
                json!({"message": "405: Method Not Allowed", "code": 0}),
            ),
        }
    })
}

/// The API key the DEV fake accepts.
pub const DEVTO_KEY: &str = "devkey-PLANTED-f0e1";

/// A fake DEV (Forem) API: the `api-key` header (every bad key is 401
/// `unauthorized`), the v1 `Accept` header, articles as
/// `{"article": {…}}` answered 201, a title of at most 128 characters, at
/// most four tags (a string or a list), and a canonical URL used once
/// (422 "Canonical url has already been taken").
pub fn fake_devto() -> Fake {
    start(|st, seen| {
        if let Some(r) = common_failure(
            st,
            &[("retry-after", "30")],
            json!({"error": "Rate limit reached, try again in 30 seconds", "status": 429}),
            json!({"error": "Internal Server Error", "status": 500}),
        ) {
            return r;
        }
        if seen.headers.get("api-key").map(String::as_str) != Some(DEVTO_KEY) {
            return json_response(401, &[], json!({"error": "unauthorized", "status": 401}));
        }
        if seen.headers.get("accept").map(String::as_str)
            != Some("application/vnd.forem.api-v1+json")
        {
            return json_response(
                400,
                &[],
                json!({"error": "the v1 API needs its Accept header", "status": 400}),
            );
        }
        let unprocessable =
            |error: &str| json_response(422, &[], json!({"error": error, "status": 422}));
        let base = st.base.lock().unwrap().clone();
        match (seen.method.as_str(), seen.path.as_str()) {
            ("GET", "/api/users/me") => json_response(
                200,
                &[],
                json!({"type_of": "user", "id": 4242, "username": "alice", "name": "Alice Dev",
                       "profile_image": "https://media.dev.example/alice.png"}),
            ),
            ("POST", "/api/articles") => {
                let body: Value = serde_json::from_str(&seen.body).unwrap_or_default();
                let a = &body["article"];
                let title = a["title"].as_str().unwrap_or_default();
                if title.is_empty() || title.chars().count() > 128 {
                    return unprocessable("Title can't be blank or longer than 128 characters");
                }
                let tags = match &a["tags"] {
                    Value::String(s) => s.split(',').filter(|t| !t.trim().is_empty()).count(),
                    Value::Array(list) => list.len(),
                    _ => 0,
                };
                if tags > 4 {
                    return unprocessable("Tag list exceed the maximum of 4 tags");
                }
                let mut posts = st.posts.lock().unwrap();
                if let Some(c) = a["canonical_url"].as_str()
                    && posts.iter().any(|(_, p)| p["canonical_url"] == c)
                {
                    return unprocessable("Canonical url has already been taken");
                }
                let id = 1000 + posts.len() as u64 + 1;
                let slug = format!("{}-{id}", title.to_lowercase().replace(' ', "-"));
                posts.push((id.to_string(), a.clone()));
                let mut mode = st.mode.lock().unwrap();
                match *mode {
                    Mode::AcceptThenDrop => {
                        *mode = Mode::Normal;
                        return truncated();
                    }
                    Mode::AcceptThenDropThenHide => {
                        *mode = Mode::HideOnce;
                        return truncated();
                    }
                    _ => {}
                }
                json_response(
                    201,
                    &[],
                    json!({"type_of": "article", "id": id, "title": title, "slug": slug,
                           "url": format!("{base}/alice/{slug}"), "published": a["published"],
                           "canonical_url": a["canonical_url"]}),
                )
            }
            ("GET", "/api/articles/me/all") => {
                if *st.mode.lock().unwrap() == Mode::HideOnce {
                    *st.mode.lock().unwrap() = Mode::Normal;
                    return json_response(
                        500,
                        &[],
                        json!({"error": "Internal Server Error", "status": 500}),
                    );
                }
                let posts = st.posts.lock().unwrap();
                let list: Vec<Value> = posts
                    .iter()
                    .rev()
                    .map(|(id, a)| json!({"id": id.parse::<u64>().unwrap(), "title": a["title"], "url": format!("{base}/alice/{id}")}))
                    .collect();
                json_response(200, &[], json!(list))
            }
            _ => json_response(404, &[], json!({"error": "not found", "status": 404})),
        }
    })
}

/// The Medium integration token the fake accepts.
pub const MEDIUM_TOKEN: &str = "medium-PLANTED-token-9a0b";

/// A fake of Medium's (frozen) API: `GET /v1/me`, posts under a user or a
/// publication, one image per `POST /v1/images` (multipart field `image`),
/// errors as `{"errors":[{"message","code"}]}`, 401 for a revoked token,
/// 403 for a publication the user cannot write to.
pub fn fake_medium() -> Fake {
    start(|st, seen| {
        if let Some(r) = common_failure(
            st,
            &[],
            json!({"errors": [{"message": "Too many requests", "code": 6029}]}),
            json!({"errors": [{"message": "Internal error", "code": 6000}]}),
        ) {
            return r;
        }
        let error = |status: u16, message: &str, code: u32| {
            json_response(
                status,
                &[],
                json!({"errors": [{"message": message, "code": code}]}),
            )
        };
        let auth = seen.headers.get("authorization").map(String::as_str);
        if *st.mode.lock().unwrap() == Mode::Expired
            || auth != Some(&format!("Bearer {MEDIUM_TOKEN}"))
        {
            return error(401, "Token was invalid.", 6003);
        }
        let base = st.base.lock().unwrap().clone();
        match (seen.method.as_str(), seen.path.as_str()) {
            ("GET", "/v1/me") => json_response(
                200,
                &[],
                json!({"data": {"id": "5303d74c64f66366f00cb9b2a94f3251bf5", "username": "majelbstoat",
                       "name": "Jamie Talbot", "url": "https://medium.com/@majelbstoat",
                       "imageUrl": "https://images.medium.com/0*fkfQiTzT7TlUGGyI.png"}}),
            ),
            ("POST", "/v1/images") => {
                let Some(parts) = multipart(seen) else {
                    return error(400, "Expected a multipart body", 6002);
                };
                if !parts.iter().any(|p| p.name == "image") {
                    return error(400, "Missing the image field", 6002);
                }
                let n = st.media.lock().unwrap().len();
                st.media.lock().unwrap().insert(format!("img{n}"), 0);
                json_response(
                    201,
                    &[],
                    json!({"data": {"url": format!("https://cdn-images-1.medium.com/max/800/img{n}.png"), "md5": "d41d8cd98f00b204e9800998ecf8427e"}}),
                )
            }
            ("POST", path) if path.ends_with("/posts") => {
                let owner = path
                    .strip_prefix("/v1/users/")
                    .or_else(|| path.strip_prefix("/v1/publications/"))
                    .and_then(|r| r.strip_suffix("/posts"))
                    .unwrap_or_default();
                if path.starts_with("/v1/users/") && owner != "5303d74c64f66366f00cb9b2a94f3251bf5"
                {
                    return error(403, "You may not publish as that user", 6027);
                }
                if path.starts_with("/v1/publications/") && owner != "b45573563f5a" {
                    return error(403, "You are not a writer of that publication", 6018);
                }
                let body: Value = serde_json::from_str(&seen.body).unwrap_or_default();
                let title = body["title"].as_str().unwrap_or_default();
                if title.is_empty()
                    || !matches!(body["contentFormat"].as_str(), Some("markdown" | "html"))
                {
                    return error(400, "Missing or invalid title or contentFormat", 6002);
                }
                let mut posts = st.posts.lock().unwrap();
                let id = format!("e6f36a{}", posts.len());
                posts.push((id.clone(), body.clone()));
                json_response(
                    201,
                    &[],
                    json!({"data": {"id": id, "title": title, "authorId": owner,
                           "url": format!("{base}/@majelbstoat/{id}"), "canonicalUrl": body["canonicalUrl"],
                           "publishStatus": body["publishStatus"], "tags": body["tags"]}}),
                )
            }
            _ => error(404, "Not found", 6004),
        }
    })
}

/// The password of `pg` on the Hacker News fake.
pub const HN_PASSWORD: &str = "hn-PLANTED-pw-77aa";

/// One item the Hacker News fake holds: (id, by, title, url, created,
/// visible in the read API from).
type HnItem = (
    u64,
    String,
    String,
    String,
    std::time::SystemTime,
    std::time::Instant,
);

/// Per Hacker News fake (by port): how long its read API lags, and its
/// items.
fn hn_sites() -> &'static Mutex<HashMap<u16, (Duration, Vec<HnItem>)>> {
    static SITES: OnceLock<Mutex<HashMap<u16, (Duration, Vec<HnItem>)>>> = OnceLock::new();
    SITES.get_or_init(Default::default)
}

/// Add an item to the site on `port`; its id.
fn hn_add(port: u16, by: &str, title: &str, url: &str) -> u64 {
    let mut sites = hn_sites().lock().unwrap();
    let (lag, items) = sites.entry(port).or_default();
    let id = 8_000_000 + items.len() as u64 + 1;
    let visible = std::time::Instant::now() + *lag;
    items.push((
        id,
        by.into(),
        title.into(),
        url.into(),
        std::time::SystemTime::now(),
        visible,
    ));
    id
}

/// A fake of Hacker News: the site (`/login`, `/submit` with its `fnid`,
/// `POST /r` answered `302 newest`, or `302 item?id=N` for a link posted
/// lately; "You're posting too fast" in `RateLimited` mode) under
/// `/site`, and the official read API under `/v0`, which shows a new item
/// only `lag` after it was made, as the real one lags.
pub struct HnFake {
    pub fake: Fake,
}

impl HnFake {
    /// What a user does in the browser on the submit page: the item
    /// exists (and shows in the read API after the lag).
    pub fn user_submits(&self, by: &str, title: &str, url: &str) -> u64 {
        hn_add(self.fake.addr.port(), by, title, url)
    }
}

pub fn fake_hackernews(lag: Duration) -> HnFake {
    fn cookie(seen: &Seen, name: &str) -> Option<String> {
        seen.headers.get("cookie")?.split(';').find_map(|c| {
            let (n, v) = c.trim().split_once('=')?;
            (n == name).then(|| v.to_string())
        })
    }
    fn handle(st: &FakeState, seen: &Seen) -> Response {
        let port: u16 = st
            .base
            .lock()
            .unwrap()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let visible = |i: &HnItem| i.5 <= std::time::Instant::now();
        let path = seen.path.as_str();
        if let Some(rest) = path.strip_prefix("/v0/") {
            let sites = hn_sites().lock().unwrap();
            let items: &[HnItem] = sites.get(&port).map(|s| s.1.as_slice()).unwrap_or(&[]);
            if let Some(user) = rest
                .strip_prefix("user/")
                .and_then(|r| r.strip_suffix(".json"))
            {
                if user != "pg" {
                    return json_response(200, &[], Value::Null);
                }
                let mut submitted: Vec<u64> = items
                    .iter()
                    .filter(|i| visible(i) && i.1 == "pg")
                    .map(|i| i.0)
                    .collect();
                submitted.reverse();
                return json_response(
                    200,
                    &[],
                    json!({"id": "pg", "created": 1160418092, "karma": 157236, "submitted": submitted}),
                );
            }
            if let Some(id) = rest
                .strip_prefix("item/")
                .and_then(|r| r.strip_suffix(".json"))
                .and_then(|r| r.parse::<u64>().ok())
            {
                return match items.iter().find(|i| i.0 == id && visible(i)) {
                    Some(i) => json_response(
                        200,
                        &[],
                        json!({"id": i.0, "by": i.1, "title": i.2, "url": i.3, "type": "story", "score": 1,
                               "time": i.4.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()}),
                    ),
                    None => json_response(200, &[], Value::Null),
                };
            }
            return json_response(200, &[], Value::Null);
        }
        let Some(page) = path.strip_prefix("/site") else {
            return respond(404, &[], "Unknown.");
        };
        let mut o = st.oauth.lock().unwrap();
        match (seen.method.as_str(), page) {
            ("POST", "/login") => {
                o.code_calls += 1;
                let f: HashMap<String, String> = url::form_urlencoded::parse(seen.body.as_bytes())
                    .into_owned()
                    .collect();
                if f.get("acct").map(String::as_str) != Some("pg")
                    || f.get("pw").map(String::as_str) != Some(HN_PASSWORD)
                {
                    return respond(
                        200,
                        &[("content-type", "text/html")],
                        "<html><body>Bad login.</body></html>",
                    );
                }
                let user = format!("pg&hn-PLANTED-session-{}", o.code_calls);
                o.access.insert(
                    user.clone(),
                    std::time::Instant::now() + Duration::from_secs(86_400),
                );
                let set = format!("user={user}; Path=/; HttpOnly; Secure");
                respond(
                    302,
                    &[("location", "news"), ("set-cookie", set.as_str())],
                    "",
                )
            }
            ("GET", "/submitlink") => respond(
                200,
                &[("content-type", "text/html")],
                "<html><body><form action=\"r\"></form></body></html>",
            ),
            _ if !cookie(seen, "user").is_some_and(|u| o.valid(&u)) => {
                respond(302, &[("location", "login?goto=submit")], "")
            }
            ("GET", "/submit") => {
                let n = st.media.lock().unwrap().len();
                let fnid = format!("fnid{n}");
                st.media.lock().unwrap().insert(fnid.clone(), 1);
                respond(
                    200,
                    &[("content-type", "text/html")],
                    format!(
                        "<form method=\"post\" action=\"r\"><input type=\"hidden\" name=\"fnid\" value=\"{fnid}\"><input type=\"hidden\" name=\"fnop\" value=\"submit-page\"></form>"
                    ),
                )
            }
            ("POST", "/r") => {
                if *st.mode.lock().unwrap() == Mode::RateLimited {
                    return respond(
                        200,
                        &[("content-type", "text/html")],
                        "<html><body>You're posting too fast. Please slow down. Thanks.</body></html>",
                    );
                }
                let f: HashMap<String, String> = url::form_urlencoded::parse(seen.body.as_bytes())
                    .into_owned()
                    .collect();
                let fnid = f.get("fnid").cloned().unwrap_or_default();
                if st.media.lock().unwrap().remove(&fnid).is_none()
                    || f.get("fnop").map(String::as_str) != Some("submit-page")
                {
                    return respond(
                        200,
                        &[("content-type", "text/html")],
                        "Unknown or expired link.",
                    );
                }
                let title = f.get("title").cloned().unwrap_or_default();
                if title.is_empty() || title.chars().count() > 80 {
                    return respond(
                        200,
                        &[("content-type", "text/html")],
                        "<html><body>Please make the title at most 80 characters.</body></html>",
                    );
                }
                let url = f.get("url").cloned().unwrap_or_default();
                drop(o);
                let dup = hn_sites().lock().unwrap().get(&port).and_then(|s| {
                    s.1.iter()
                        .find(|i| !url.is_empty() && i.3 == url)
                        .map(|i| i.0)
                });
                if let Some(dup) = dup {
                    let to = format!("item?id={dup}");
                    return respond(302, &[("location", to.as_str())], "");
                }
                let id = hn_add(port, "pg", &title, &url);
                st.posts.lock().unwrap().push((id.to_string(), json!(f)));
                respond(302, &[("location", "newest")], "")
            }
            _ => respond(404, &[], "Unknown."),
        }
    }
    let fake = start(handle);
    hn_sites()
        .lock()
        .unwrap()
        .entry(fake.addr.port())
        .or_default()
        .0 = lag;
    HnFake { fake }
}

/// The User-Agent the Reddit tests configure, in Reddit's required form.
pub const REDDIT_UA: &str = "outreach:outreach-test-client:0.1.0 (by /u/alice_dev)";

/// A fake of Reddit: its OAuth (HTTP Basic, `duration=permanent`, errors
/// as HTTP 200) and API — `/api/v1/me`, a subreddit's rules
/// (`r/rust` requires a flair and 5-character titles, `r/selfhosted`
/// nothing, others do not exist), `r/rust`'s flairs, `POST /api/submit`
/// (refusals as HTTP 200 with `json.errors`, `RATELIMIT` in `RateLimited`
/// mode, `validate_on_submit` refusals as HTTP 400 naming the field), the
/// user's submitted listing. Every request must carry a User-Agent in
/// Reddit's form, token requests included (403 "Blocked" otherwise); an
/// unknown token gets 401 with `www-authenticate`.
pub fn fake_reddit() -> Fake {
    start(|st, seen| {
        let ua = seen
            .headers
            .get("user-agent")
            .map(String::as_str)
            .unwrap_or("");
        // The authorize page is the user's browser's; everything else is
        // outreach's.
        if ua != REDDIT_UA && seen.path != "/api/v1/authorize" {
            return respond(
                403,
                &[("content-type", "text/html")],
                "<html><body><h1>Blocked</h1></body></html>",
            );
        }
        if let Some(r) = oauth::route(st, seen, oauth::Flavor::Reddit) {
            return r;
        }
        // The media lease's storage (S3 in real life): no bearer token.
        if seen.path == "/s3-upload" && seen.method == "POST" {
            let parts = multipart(seen).unwrap_or_default();
            let key = parts
                .iter()
                .find(|p| p.name == "key")
                .map(|p| p.data.clone());
            let has_file = parts.iter().any(|p| p.name == "file");
            if seen.headers.contains_key("authorization") || key.is_none() || !has_file {
                return respond(
                    400,
                    &[("content-type", "application/xml")],
                    "<Error><Code>InvalidArgument</Code></Error>",
                );
            }
            let base = st.base.lock().unwrap().clone();
            let location = format!("{base}/{}", key.unwrap().replace('/', "%2F"));
            return respond(
                201,
                &[("content-type", "application/xml")],
                format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><PostResponse><Location>{location}</Location><Key>k</Key></PostResponse>"
                ),
            );
        }
        let token = seen
            .headers
            .get("authorization")
            .and_then(|h| h.strip_prefix("Bearer "))
            .unwrap_or("");
        if !st.oauth.lock().unwrap().valid(token) {
            return respond(
                401,
                &[(
                    "www-authenticate",
                    "Bearer realm=\"reddit\", error=\"invalid_token\"",
                )],
                "<html><body>401 Unauthorized</body></html>",
            );
        }
        if *st.mode.lock().unwrap() == Mode::Html {
            return respond(
                502,
                &[("content-type", "text/html")],
                "<html><body><h1>502 Bad Gateway</h1></body></html>",
            );
        }
        let limits = [
            ("x-ratelimit-remaining", "595.0"),
            ("x-ratelimit-used", "5"),
            ("x-ratelimit-reset", "412.7"),
        ];
        let json_errors = |status: u16, errors: Value| {
            json_response(status, &limits, json!({"json": {"errors": errors}}))
        };
        let path = seen.path.as_str();
        match (seen.method.as_str(), path) {
            ("GET", "/api/v1/me") => json_response(
                200,
                &limits,
                json!({"name": "alice_dev", "id": "1w72", "icon_img": "https://styles.redditmedia.com/a.png?width=256&amp;s=9c"}),
            ),
            ("GET", "/api/v1/rust/post_requirements") => json_response(
                200,
                &limits,
                json!({"is_flair_required": true, "title_text_min_length": 5, "title_text_max_length": 300,
                       "body_restriction_policy": "none", "domain_blacklist": []}),
            ),
            ("GET", "/api/v1/selfhosted/post_requirements") => json_response(
                200,
                &limits,
                json!({"is_flair_required": false, "title_text_min_length": null, "title_text_max_length": null,
                       "body_restriction_policy": "none"}),
            ),
            ("GET", p) if p.ends_with("/post_requirements") => {
                json_response(404, &limits, json!({"message": "Not Found", "error": 404}))
            }
            ("POST", "/api/media/asset.json") => {
                let base = st.base.lock().unwrap().clone();
                let action = format!("{}/s3-upload", base.trim_start_matches("http:"));
                json_response(
                    200,
                    &limits,
                    json!({"args": {"action": action, "fields": [
                            {"name": "key", "value": "rte_images/lease-1.png"},
                            {"name": "x-amz-algorithm", "value": "AWS4-HMAC-SHA256"}]},
                           "asset": {"asset_id": "lease-1", "websocket_url": "wss://ws.redditmedia.example/lease-1"}}),
                )
            }
            ("GET", "/r/rust/api/link_flair_v2") => json_response(
                200,
                &limits,
                json!([{"id": "f1-discussion", "text": "Discussion", "text_editable": false},
                       {"id": "f2-project", "text": "Project", "text_editable": false}]),
            ),
            ("POST", "/api/submit") => {
                let f: HashMap<String, String> = url::form_urlencoded::parse(seen.body.as_bytes())
                    .into_owned()
                    .collect();
                let get = |k: &str| f.get(k).map(String::as_str).unwrap_or("");
                if get("api_type") != "json" {
                    return respond(200, &[], "<html>not json</html>");
                }
                if *st.mode.lock().unwrap() == Mode::RateLimited {
                    return json_errors(
                        200,
                        json!([[
                            "RATELIMIT",
                            "you are doing that too much. try again in 9 minutes.",
                            "ratelimit"
                        ]]),
                    );
                }
                if !matches!(get("sr"), "rust" | "selfhosted") {
                    return json_errors(
                        200,
                        json!([["SUBREDDIT_NOEXIST", "that subreddit doesn't exist", "sr"]]),
                    );
                }
                if get("validate_on_submit") == "true" && get("title").chars().count() < 5 {
                    return json_errors(
                        400,
                        json!([[
                            "SUBMIT_VALIDATION_TITLE_REQUIREMENT",
                            "Your title is too short",
                            "title"
                        ]]),
                    );
                }
                if get("sr") == "rust" && get("flair_id").is_empty() {
                    return json_errors(
                        200,
                        json!([[
                            "SUBMIT_VALIDATION_FLAIR_REQUIRED",
                            "Your post must contain post flair.",
                            "flair"
                        ]]),
                    );
                }
                let mut posts = st.posts.lock().unwrap();
                let id = format!("1h{}x", posts.len());
                let url = format!("https://www.reddit.com/r/{}/comments/{id}/post/", get("sr"));
                posts.push((id.clone(), json!(f)));
                // A media post: processed later, announced on a websocket.
                if get("kind") == "video" && get("video_poster_url").is_empty() {
                    return json_errors(
                        200,
                        json!([[
                            "NO_VIDEO_POSTER",
                            "a video needs a poster image",
                            "video_poster_url"
                        ]]),
                    );
                }
                if matches!(get("kind"), "image" | "video") {
                    return json_response(
                        200,
                        &limits,
                        json!({"json": {"errors": [], "data": {"user_submitted_page": "https://www.reddit.com/user/alice_dev/submitted/", "websocket_url": "wss://ws.redditmedia.example/x"}}}),
                    );
                }
                json_response(
                    200,
                    &limits,
                    json!({"json": {"errors": [], "data": {"url": url, "drafts_count": 0, "id": id, "name": format!("t3_{id}")}}}),
                )
            }
            ("GET", "/user/alice_dev/submitted") => {
                let posts = st.posts.lock().unwrap();
                let children: Vec<Value> = posts
                    .iter()
                    .rev()
                    .map(|(id, f)| json!({"kind": "t3", "data": {"id": id, "name": format!("t3_{id}"), "title": f["title"], "subreddit": f["sr"],
                                        "permalink": format!("/r/{}/comments/{id}/post/", f["sr"].as_str().unwrap_or(""))}}))
                    .collect();
                json_response(
                    200,
                    &limits,
                    json!({"kind": "Listing", "data": {"children": children, "after": null}}),
                )
            }
            _ => json_response(404, &limits, json!({"message": "Not Found", "error": 404})),
        }
    })
}

/// A fake of the lab plugins' platform (Reddit- or Instagram-like auth):
/// OAuth plus `GET /me`.
pub fn fake_lab(flavor: oauth::Flavor) -> Fake {
    fn handle(st: &FakeState, seen: &Seen, flavor: oauth::Flavor) -> Response {
        if let Some(r) = oauth::route(st, seen, flavor) {
            return r;
        }
        let token = match flavor {
            oauth::Flavor::Instagram => url::form_urlencoded::parse(seen.query.as_bytes())
                .find(|(k, _)| k == "access_token")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default(),
            _ => seen
                .headers
                .get("authorization")
                .and_then(|h| h.strip_prefix("Bearer "))
                .unwrap_or("")
                .to_string(),
        };
        if seen.path == "/me" && st.oauth.lock().unwrap().valid(&token) {
            return json_response(200, &[], json!({"id": "t2_lab", "name": "lab_user"}));
        }
        json_response(401, &[], json!({"message": "Unauthorized", "error": 401}))
    }
    match flavor {
        oauth::Flavor::Instagram => start(|st, seen| handle(st, seen, oauth::Flavor::Instagram)),
        _ => start(|st, seen| handle(st, seen, oauth::Flavor::Reddit)),
    }
}

/// A fake of Facebook's Graph API for the Facebook lab plugin: Facebook
/// Login (the lab's OAuth), `fb_exchange_token` for a long-lived user
/// token, `/me/accounts` listing two pages, a page token from
/// `/{page-id}?fields=access_token`, `/me` as the page. Every Graph call
/// must carry the `appsecret_proof` of its token, as an app that requires
/// it does.
pub fn fake_facebook() -> Fake {
    fn graph_error(message: &str, code: u32) -> Response {
        json_response(
            400,
            &[],
            json!({"error": {"message": message, "type": "OAuthException", "code": code}}),
        )
    }
    fn handle(st: &FakeState, seen: &Seen) -> Response {
        let q: HashMap<String, String> = url::form_urlencoded::parse(seen.query.as_bytes())
            .into_owned()
            .collect();
        let arg = |k: &str| q.get(k).cloned().unwrap_or_default();
        if seen.path == "/oauth/access_token" && seen.method == "GET" {
            let mut o = st.oauth.lock().unwrap();
            if arg("grant_type") != "fb_exchange_token"
                || arg("client_id") != oauth::CLIENT_ID
                || arg("client_secret") != oauth::CLIENT_SECRET
                || !o.valid(&arg("fb_exchange_token"))
            {
                return graph_error("Invalid OAuth access token", 190);
            }
            let long = format!("fb-long-user-PLANTED-{}", o.access.len());
            o.access.insert(
                long.clone(),
                std::time::Instant::now() + std::time::Duration::from_secs(5_184_000),
            );
            return json_response(
                200,
                &[],
                json!({"access_token": long, "token_type": "bearer", "expires_in": 5_183_944}),
            );
        }
        if let Some(r) = oauth::route(st, seen, oauth::Flavor::Instagram) {
            return r;
        }
        let token = arg("access_token");
        let proof = outreach::http::proof(
            &outreach::secret::Secret::new(oauth::CLIENT_SECRET),
            &outreach::secret::Secret::new(token.clone()),
        );
        if arg("appsecret_proof") != proof {
            return graph_error("Invalid appsecret_proof provided in the API argument", 100);
        }
        let o = st.oauth.lock().unwrap();
        if !o.valid(&token) || *st.mode.lock().unwrap() == Mode::Expired {
            return graph_error("Error validating access token: Session has expired", 190);
        }
        if *st.mode.lock().unwrap() == Mode::RateLimited {
            return graph_error("(#32) Page request limit reached", 32);
        }
        let page_of_token = o.issued_to.get(&token).cloned();
        drop(o);
        if let Some(r) = meta::facebook_page(st, seen, page_of_token.as_deref()) {
            return r;
        }
        let mut o = st.oauth.lock().unwrap();
        let pages = [("101", "Acme Bakery"), ("202", "Acme Books")];
        match seen.path.as_str() {
            "/me/accounts" if token.starts_with("fb-long-user") => json_response(
                200,
                &[],
                json!({"data": pages.iter().map(|(id, name)| json!({"id": id, "name": name, "category": "Shop"})).collect::<Vec<_>>(), "paging": {}}),
            ),
            "/me" => match o
                .issued_to
                .get(&token)
                .and_then(|page| pages.iter().find(|(id, _)| id == page))
            {
                Some((id, name)) => json_response(200, &[], json!({"id": id, "name": name})),
                None => graph_error("(#100) This call needs a page access token", 100),
            },
            path => match pages.iter().find(|(id, _)| path == format!("/{id}")) {
                Some((id, _))
                    if arg("fields") == "access_token" && token.starts_with("fb-long-user") =>
                {
                    let page_token = format!("page-{id}-PLANTED-{}", o.access.len());
                    o.access.insert(
                        page_token.clone(),
                        std::time::Instant::now()
                            + std::time::Duration::from_secs(10 * 365 * 86_400),
                    );
                    o.issued_to.insert(page_token.clone(), id.to_string());
                    json_response(200, &[], json!({"access_token": page_token, "id": id}))
                }
                _ => graph_error("Unsupported get request", 100),
            },
        }
    }
    start(handle)
}

/// The session lab's password for user `pg`.
pub const SESSION_PASSWORD: &str = "pw-PLANTED-session-5e1f";

/// A fake of a Hacker News-like site for the session lab plugin: `POST
/// /login` sets the `user` cookie (a wrong password gets 200 "Bad login."),
/// pages answer a missing or ended session with a redirect to the login,
/// `GET /submit` holds a one-time `fnid` and sets a `csrf` cookie that
/// `POST /r` needs, and a submit is answered `302 item?id=N`.
pub fn fake_session() -> Fake {
    fn cookie(seen: &Seen, name: &str) -> Option<String> {
        seen.headers.get("cookie")?.split(';').find_map(|c| {
            let (n, v) = c.trim().split_once('=')?;
            (n == name).then(|| v.to_string())
        })
    }
    fn handle(st: &FakeState, seen: &Seen) -> Response {
        let mut o = st.oauth.lock().unwrap();
        if seen.path == "/login" && seen.method == "POST" {
            o.code_calls += 1;
            let f: HashMap<String, String> = url::form_urlencoded::parse(seen.body.as_bytes())
                .into_owned()
                .collect();
            if f.get("acct").map(String::as_str) != Some("pg")
                || f.get("pw").map(String::as_str) != Some(SESSION_PASSWORD)
            {
                return respond(
                    200,
                    &[("content-type", "text/html")],
                    "<html><body>Bad login.<form action=\"login\"></form></body></html>",
                );
            }
            let user = format!("pg&user-PLANTED-{}", o.code_calls);
            o.access.insert(
                user.clone(),
                std::time::Instant::now() + std::time::Duration::from_secs(86_400),
            );
            let set = format!("user={user}; Path=/; HttpOnly; Secure");
            return respond(
                302,
                &[("location", "news"), ("set-cookie", set.as_str())],
                "",
            );
        }
        let logged_in = cookie(seen, "user").is_some_and(|u| o.valid(&u));
        if !logged_in {
            return respond(302, &[("location", "login?goto=submit")], "");
        }
        match (seen.method.as_str(), seen.path.as_str()) {
            ("GET", "/me") => json_response(200, &[], json!({"id": "pg", "name": "pg"})),
            ("GET", "/submit") => {
                let n = st.media.lock().unwrap().len();
                let fnid = format!("fn{n}");
                st.media.lock().unwrap().insert(fnid.clone(), 1);
                let set = format!("csrf=c{n}; Path=/");
                respond(
                    200,
                    &[("content-type", "text/html"), ("set-cookie", set.as_str())],
                    format!(
                        "<form method=\"post\" action=\"r\"><input type=\"hidden\" name=\"fnid\" value=\"{fnid}\"><input name=\"title\"></form>"
                    ),
                )
            }
            ("POST", "/r") => {
                let f: HashMap<String, String> = url::form_urlencoded::parse(seen.body.as_bytes())
                    .into_owned()
                    .collect();
                let fnid = f.get("fnid").cloned().unwrap_or_default();
                let known = st.media.lock().unwrap().remove(&fnid).is_some();
                if !known || cookie(seen, "csrf").is_none() {
                    return respond(
                        200,
                        &[("content-type", "text/html")],
                        "Unknown or expired link.",
                    );
                }
                let mut posts = st.posts.lock().unwrap();
                let id = format!("{}", 9000 + posts.len());
                posts.push((id.clone(), json!(f)));
                let to = format!("item?id={id}");
                respond(302, &[("location", to.as_str())], "")
            }
            _ => respond(404, &[], "Unknown."),
        }
    }
    start(handle)
}

/// A home with all three fakes wired in and one account on each.
pub struct World {
    pub home: Home,
    pub x: Fake,
    pub linkedin: Fake,
    pub mastodon: Fake,
}

impl World {
    pub fn new() -> Self {
        let (x, linkedin, mastodon) = (fake_x(), fake_linkedin(), fake_mastodon());
        let mut home = Home::new();
        home.endpoint("x", "api", &x.url());
        home.endpoint("linkedin", "api", &linkedin.url());
        home.endpoint(
            "linkedin",
            "userinfo",
            &format!("{}/v2/userinfo", linkedin.url()),
        );
        World {
            home,
            x,
            linkedin,
            mastodon,
        }
    }

    /// Add one account on each platform through the CLI.
    pub fn with_accounts(self) -> Self {
        let r = self.home.run(&["accounts", "add", "x"], Some(X_TOKEN));
        assert_eq!(r.code, 0, "{}", r.all());
        let r = self
            .home
            .run(&["accounts", "add", "linkedin"], Some(LINKEDIN_TOKEN));
        assert_eq!(r.code, 0, "{}", r.all());
        let set = format!("instance={}", self.mastodon.url());
        let r = self.home.run(
            &[
                "accounts",
                "add",
                "mastodon",
                "--account",
                "social",
                "--set",
                &set,
            ],
            Some(MASTODON_TOKEN),
        );
        assert_eq!(r.code, 0, "{}", r.all());
        self
    }
}

/// The smallest bytes a PNG is recognised by.
pub fn png_bytes() -> Vec<u8> {
    [&b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"[..], &[7u8; 64]].concat()
}

/// One part of a `multipart/form-data` body.
pub struct Part {
    pub name: String,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub data: String,
}

/// Parse a multipart body (lossily: file bytes become text, enough to
/// check framing, fields and sizes).
pub fn multipart(seen: &Seen) -> Option<Vec<Part>> {
    let ct = seen.headers.get("content-type")?;
    let boundary = ct.strip_prefix("multipart/form-data; boundary=")?;
    let delimiter = format!("--{boundary}");
    let body = &seen.body;
    if !body.trim_end().ends_with(&format!("{delimiter}--")) {
        return None;
    }
    let mut parts = Vec::new();
    for chunk in body.split(&delimiter).skip(1) {
        if chunk.starts_with("--") {
            break;
        }
        let chunk = chunk.strip_prefix("\r\n")?;
        let (head, data) = chunk.split_once("\r\n\r\n")?;
        let data = data.strip_suffix("\r\n").unwrap_or(data);
        let mut p = Part {
            name: String::new(),
            filename: None,
            content_type: None,
            data: data.to_string(),
        };
        for line in head.split("\r\n") {
            let (k, v) = line.split_once(':')?;
            match k.trim().to_ascii_lowercase().as_str() {
                "content-disposition" => {
                    for attr in v.split(';').skip(1) {
                        let (ak, av) = attr.trim().split_once('=')?;
                        let av = av.trim_matches('"').to_string();
                        match ak {
                            "name" => p.name = av,
                            "filename" => p.filename = Some(av),
                            _ => {}
                        }
                    }
                }
                "content-type" => p.content_type = Some(v.trim().to_string()),
                _ => {}
            }
        }
        parts.push(p);
    }
    Some(parts)
}
