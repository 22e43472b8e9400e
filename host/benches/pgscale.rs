//! PostgreSQL at scale (issue 18): PG_ACCOUNTS accounts (default 100,000)
//! on the X plugin in the PostgreSQL store, their tokens living
//! PG_LIFETIME seconds (default 900) and expiring evenly from PG_WARMUP
//! seconds (default 90) after the start, refreshed by real `outreach
//! daemon` processes against a loopback fake token endpoint that rotates
//! refresh tokens.
//!
//! Phases: one daemon for PG_SECS (default 120, after its start-up), then
//! a second daemon joins on the same database and, after a minute, both
//! run for PG_SECS. Each phase reports refreshes per second; late
//! refreshes (the token had expired first: must be 0) and refresh tokens
//! presented twice (must be 0); outreach's CPU per refresh (the daemons
//! and their escrow helpers); the server's CPU per refresh (every process
//! of the cluster); and database transactions per refresh
//! (`pg_stat_database`; each statement outside a transaction is one, so
//! this is a floor on round trips).
//!
//! Then publishing: PG_POSTS posts (default 1,000), each to three X
//! accounts, published by one `outreach publish` on the files backend and
//! then on PostgreSQL (with the accounts above in the same database):
//! posts per second of each, and their ratio.
//!
//! Run: `cargo bench --bench pgscale` (needs Debian's `postgresql`; the
//! server runs in a throwaway cluster, as in the tests). The fake runs in
//! a child process so its CPU is counted as nobody's.

mod common;
#[allow(dead_code)]
#[path = "../../tests/support/pg.rs"]
mod pg;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use outreach::config::{StoreBackend, StoreConfig};
use outreach::secret::Secret;
use outreach::store::{AccountId, CredentialStore, Health, PgStore, Profile, Record};

const URL_VAR: &str = "PGSCALE_DATABASE_URL";

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Default)]
struct FakeState {
    /// Current refresh token → (account, expiry of its access token).
    live: HashMap<String, (String, Instant)>,
    /// Refresh tokens already exchanged.
    spent: HashSet<String>,
    refreshes: u64,
    late: u64,
    reused: u64,
    tweets: u64,
    /// (account's token, post text) seen, to count duplicates.
    texts: HashMap<String, u64>,
}

/// The fake: X's token endpoint (any `r0-<account>` works once, then
/// rotation) and its post endpoint.
fn serve_fake(port_file: &Path, lifetime: Duration) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        use axum::routing::{get, post};
        let st = Arc::new(Mutex::new(FakeState::default()));
        let (s1, s2, s3) = (st.clone(), st.clone(), st.clone());
        let app = axum::Router::new()
            .route(
                "/2/oauth2/token",
                post(move |body: String| {
                    let st = s1.clone();
                    async move {
                        let form: HashMap<String, String> =
                            url::form_urlencoded::parse(body.as_bytes()).into_owned().collect();
                        let presented = form.get("refresh_token").cloned().unwrap_or_default();
                        let mut s = st.lock().unwrap();
                        let now = Instant::now();
                        let account = match s.live.remove(&presented) {
                            Some((acct, expiry)) => {
                                if now > expiry {
                                    s.late += 1;
                                }
                                acct
                            }
                            None if s.spent.contains(&presented) => {
                                s.reused += 1;
                                return (
                                    axum::http::StatusCode::BAD_REQUEST,
                                    r#"{"error":"invalid_grant","error_description":"Value passed for the token was invalid."}"#.to_string(),
                                );
                            }
                            None => match presented.strip_prefix("r0-") {
                                Some(acct) => acct.to_string(),
                                None => {
                                    return (
                                        axum::http::StatusCode::BAD_REQUEST,
                                        r#"{"error":"invalid_grant","error_description":"Value passed for the token was invalid."}"#.to_string(),
                                    );
                                }
                            },
                        };
                        s.spent.insert(presented);
                        s.refreshes += 1;
                        let n = s.refreshes;
                        let refresh = format!("r{n}-{account}");
                        s.live.insert(refresh.clone(), (account, now + lifetime));
                        (
                            axum::http::StatusCode::OK,
                            format!(
                                r#"{{"token_type":"bearer","access_token":"a{n}","refresh_token":"{refresh}","expires_in":{},"scope":"tweet.read tweet.write offline.access"}}"#,
                                lifetime.as_secs()
                            ),
                        )
                    }
                }),
            )
            .route(
                "/2/tweets",
                post(move |headers: axum::http::HeaderMap, body: String| {
                    let st = s3.clone();
                    async move {
                        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                        let text = v["text"].as_str().unwrap_or_default().to_string();
                        let who = headers
                            .get("authorization")
                            .and_then(|h| h.to_str().ok())
                            .unwrap_or_default()
                            .to_string();
                        let mut s = st.lock().unwrap();
                        s.tweets += 1;
                        let n = s.tweets;
                        *s.texts.entry(format!("{who} {text}")).or_default() += 1;
                        (
                            axum::http::StatusCode::CREATED,
                            format!(r#"{{"data":{{"id":"{n}","text":{}}}}}"#, serde_json::Value::String(text)),
                        )
                    }
                }),
            )
            .route(
                "/stats",
                get(move || {
                    let st = s2.clone();
                    async move {
                        let s = st.lock().unwrap();
                        let twice = s.texts.values().filter(|n| **n > 1).count();
                        format!(
                            r#"{{"refreshes":{},"late":{},"reused":{},"tweets":{},"posted_twice":{twice}}}"#,
                            s.refreshes, s.late, s.reused, s.tweets
                        )
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        std::fs::write(port_file, listener.local_addr().unwrap().port().to_string()).unwrap();
        axum::serve(listener, app).await.unwrap();
    });
}

fn stats(url: &str) -> serde_json::Value {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://");
    let mut c = std::net::TcpStream::connect(addr).expect("the fake");
    write!(
        c,
        "GET /stats HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    c.read_to_string(&mut text).unwrap();
    let body = text.split("\r\n\r\n").nth(1).expect("a body");
    serde_json::from_str(body).expect("stats")
}

/// CPU seconds of process `pid` and its reaped children, and of its live
/// children whose command line says `escrow`.
fn tree_cpu(pid: u32) -> f64 {
    let fields = |p: &Path| -> Option<Vec<String>> {
        let stat = std::fs::read_to_string(p.join("stat")).ok()?;
        let close = stat.rfind(')')?;
        Some(
            stat[close + 2..]
                .split_whitespace()
                .map(str::to_string)
                .collect(),
        )
    };
    let secs = |f: &[String], i: usize| {
        f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 100.0
    };
    let mut total = 0.0;
    if let Some(f) = fields(Path::new(&format!("/proc/{pid}"))) {
        total += secs(&f, 11) + secs(&f, 12) + secs(&f, 13) + secs(&f, 14);
    }
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Some(f) = fields(&e.path())
            && f.get(1).map(String::as_str) == Some(pid.to_string().as_str())
        {
            total += secs(&f, 11) + secs(&f, 12);
        }
    }
    total
}

/// CPU seconds of the cluster listening on `port`: the postmaster with
/// its reaped backends, and its live backends.
fn server_cpu(port: u16) -> f64 {
    let port = port.to_string();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        let is_postmaster = args.first().is_some_and(|a| a.ends_with(b"postgres"))
            && args
                .windows(2)
                .any(|w| w[0] == b"-p" && w[1] == port.as_bytes());
        if is_postmaster && let Some(pid) = e.file_name().to_str().and_then(|p| p.parse().ok()) {
            return tree_cpu(pid);
        }
    }
    0.0
}

struct Bench {
    dir: PathBuf,
    fake: String,
    plugins: PathBuf,
    cluster: &'static pg::Cluster,
    db: String,
}

impl Bench {
    /// A home for one outreach process: its config, on `backend`.
    fn home(&self, name: &str, backend: &str, daemon: bool) -> PathBuf {
        let home = self.dir.join(name);
        std::fs::create_dir_all(home.join("posts")).unwrap();
        let daemon = if daemon {
            "\n[daemon]\nlisten = \"127.0.0.1:0\"\nlog_level = \"warn\"\n"
        } else {
            ""
        };
        let cfg = home.join("outreach.toml");
        std::fs::write(
            &cfg,
            format!(
                "[paths]\nplugins = {plugins:?}\nstore = \"store\"\nidentity = {identity:?}\ncache = {cache:?}\nposts = \"posts\"\n\n[store]\nbackend = \"{backend}\"\nurl_env = \"{URL_VAR}\"\npool_size = 8\n\n[auth]\njitter = 0.05\n{daemon}\n[platforms.x]\ndeclared_limits = false\nclient_id = \"bench\"\nclient_secret_env = \"PGSCALE_SECRET\"\n[platforms.x.endpoints]\ntoken = \"{fake}/2/oauth2/token\"\napi = \"{fake}\"\n",
                plugins = self.plugins.display().to_string(),
                identity = self.dir.join("identity.txt").display().to_string(),
                cache = self.dir.join("cache").display().to_string(),
                fake = self.fake,
            ),
        )
        .unwrap();
        cfg
    }

    fn transactions(&self) -> u64 {
        self.cluster
            .psql(
                "postgres",
                &format!(
                    "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = '{}'",
                    self.db
                ),
            )
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

fn record(name: &str, expires_at: chrono::DateTime<chrono::Utc>, lifetime: Duration) -> Record {
    Record {
        version: Record::VERSION,
        id: AccountId::new("x", name).unwrap(),
        access_token: Secret::new("a0"),
        refresh_token: Some(Secret::new(format!("r0-{name}"))),
        expires_in: Some(lifetime.as_secs()),
        expires_at: Some(expires_at),
        refresh_expires_at: None,
        scope: "tweet.read tweet.write offline.access".into(),
        profile: Profile::default(),
        created_at: expires_at - chrono::Duration::from_std(lifetime).unwrap(),
        last_refreshed: None,
        settings: Default::default(),
        health: Health::default(),
        // Pinned to the X plugin's hosts, as an account connected by this
        // version is (an unpinned record is pinned, and saved again, when
        // a daemon first starts: a one-time upgrade step, not measured).
        hosts: Some(vec![
            "https://api.x.com:443".into(),
            "https://x.com:443".into(),
        ]),
        saved_login: None,
        scopes_asked: None,
    }
}

fn start_daemon(cfg: &Path, log: &Path) -> common::Child {
    common::Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_outreach"))
            .arg("--config")
            .arg(cfg)
            .arg("daemon")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

/// Measure the daemons in `pids` for `secs`.
fn phase(b: &Bench, name: &str, pids: &[u32], secs: u64, accounts: usize) {
    let (s0, cpu0, srv0, tx0) = (
        stats(&b.fake),
        pids.iter().map(|p| tree_cpu(*p)).sum::<f64>(),
        server_cpu(b.cluster.port),
        b.transactions(),
    );
    std::thread::sleep(Duration::from_secs(secs));
    let (s1, cpu1, srv1, tx1) = (
        stats(&b.fake),
        pids.iter().map(|p| tree_cpu(*p)).sum::<f64>(),
        server_cpu(b.cluster.port),
        b.transactions(),
    );
    let d = |k: &str| s1[k].as_u64().unwrap() - s0[k].as_u64().unwrap();
    let n = d("refreshes").max(1);
    println!(
        "pgscale ({name}): {accounts} accounts, {secs} s: {} refreshes ({:.1}/s); late {}; refresh tokens presented twice {}; outreach CPU {:.0} µs per refresh; server CPU {:.0} µs per refresh; {:.1} database transactions per refresh",
        d("refreshes"),
        d("refreshes") as f64 / secs as f64,
        d("late"),
        d("reused"),
        (cpu1 - cpu0) * 1e6 / n as f64,
        (srv1 - srv0) * 1e6 / n as f64,
        (tx1 - tx0) as f64 / n as f64,
    );
}

/// Publish `posts` posts to three accounts with one `outreach publish`;
/// posts per second.
fn fan_out(b: &Bench, cfg: &Path, tag: &str, posts: usize) -> f64 {
    let dir = b.dir.join(format!("posts-{tag}"));
    std::fs::create_dir_all(&dir).unwrap();
    let files: Vec<PathBuf> = (0..posts)
        .map(|i| {
            let p = dir.join(format!("p{i:04}.toml"));
            std::fs::write(
                &p,
                format!("id = \"{tag}-{i}\"\ntext = \"{tag} post {i}\"\nto = [\"x/f1\", \"x/f2\", \"x/f3\"]\n"),
            )
            .unwrap();
            p
        })
        .collect();
    let before = stats(&b.fake)["tweets"].as_u64().unwrap();
    let t = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_outreach"))
        .arg("--config")
        .arg(cfg)
        .arg("publish")
        .args(&files)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "publish on {tag} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = stats(&b.fake);
    assert_eq!(
        after["tweets"].as_u64().unwrap() - before,
        3 * posts as u64,
        "every post once to each account"
    );
    assert_eq!(after["posted_twice"], 0);
    posts as f64 / secs
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let lifetime = Duration::from_secs(env_num("PG_LIFETIME", 900));
    if let Some(i) = args.iter().position(|a| a == "--fake") {
        serve_fake(Path::new(&args[i + 1]), lifetime);
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let accounts = env_num("PG_ACCOUNTS", 100_000) as usize;
    let secs = env_num("PG_SECS", 120);
    let warmup = env_num("PG_WARMUP", 90);
    let posts = env_num("PG_POSTS", 1000) as usize;
    let cluster = pg::cluster().expect("install Debian's postgresql to run this benchmark");
    let db = "bench".to_string();
    cluster
        .psql("postgres", &format!("CREATE DATABASE {db}"))
        .unwrap();
    let url = format!(
        "postgres://{}:{}@127.0.0.1:{}/{db}",
        pg::USER,
        pg::PASSWORD,
        cluster.port
    );
    // SAFETY: set before this process starts any thread.
    unsafe {
        std::env::set_var(URL_VAR, &url);
        std::env::set_var("PGSCALE_SECRET", "bench-secret");
    }
    let dir = tempfile::tempdir().unwrap();
    let (_fake, fake) = common::spawn_fake(dir.path());
    let b = Bench {
        dir: dir.path().to_path_buf(),
        fake,
        plugins: Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins"),
        cluster,
        db,
    };

    // The accounts, written through the store (sealed with age as the
    // daemon writes them), two writers at once.
    let store_cfg = StoreConfig {
        backend: StoreBackend::Postgres,
        url_env: URL_VAR.into(),
        pool_size: 4,
        connect_retry_secs: 30,
    };
    let identity = b.dir.join("identity.txt");
    let store =
        Arc::new(PgStore::open(&store_cfg, &identity, &b.dir.join("none.txt"), || None).unwrap());
    let now = chrono::Utc::now();
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for part in 0..2 {
            let store = store.clone();
            s.spawn(move || {
                for i in (part..accounts).step_by(2) {
                    let left = warmup as i64 * 1000
                        + lifetime.as_millis() as i64 * i as i64 / accounts as i64;
                    let expires_at = now + chrono::Duration::milliseconds(left);
                    store
                        .save(&record(&format!("a{i:06}"), expires_at, lifetime))
                        .unwrap();
                }
            });
        }
    });
    println!(
        "pgscale: wrote {accounts} accounts in {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    // One daemon, then two (PG_SECS=0 skips them).
    if secs > 0 {
        refresh_phases(&b, accounts, secs, warmup);
    }
    fan_out_phase(&b, &store, &identity, now, posts);
}

fn refresh_phases(b: &Bench, accounts: usize, secs: u64, warmup: u64) {
    let cfg_a = b.home("daemon-a", "postgres", true);
    let cfg_b = b.home("daemon-b", "postgres", true);
    let t = Instant::now();
    let a = start_daemon(&cfg_a, &b.dir.join("daemon-a.log"));
    let until = Duration::from_secs(warmup);
    std::thread::sleep(until.saturating_sub(t.elapsed()));
    println!(
        "pgscale: the first daemon used {:.1} s of CPU in its first {warmup} s (start-up: every account loaded and scheduled, and those already due refreshed)",
        tree_cpu(a.0.id())
    );
    phase(b, "one daemon", &[a.0.id()], secs, accounts);
    let second = start_daemon(&cfg_b, &b.dir.join("daemon-b.log"));
    std::thread::sleep(Duration::from_secs(60));
    phase(b, "two daemons", &[a.0.id(), second.0.id()], secs, accounts);
    drop(second);
    drop(a);
    for log in ["daemon-a.log", "daemon-b.log"] {
        let text = std::fs::read_to_string(b.dir.join(log)).unwrap_or_default();
        let errors = text.lines().filter(|l| l.contains("ERROR")).count();
        if errors > 0 {
            println!(
                "pgscale: {log} has {errors} error lines, the first: {}",
                text.lines().find(|l| l.contains("ERROR")).unwrap_or("")
            );
        }
    }
}

/// Publishing: three accounts on each backend.
fn fan_out_phase(
    b: &Bench,
    store: &PgStore,
    identity: &Path,
    now: chrono::DateTime<chrono::Utc>,
    posts: usize,
) {
    let cfg_files = b.home("files", "files", false);
    let cfg_pg = b.home("pg", "postgres", false);
    let far = now + chrono::Duration::days(30);
    let files_store = outreach::store::AgeDirStore::open(
        &b.dir.join("files/store"),
        outreach::store::Identity::load_or_create(identity, || None).unwrap(),
    )
    .unwrap();
    for n in ["f1", "f2", "f3"] {
        let mut r = record(n, far, Duration::from_secs(30 * 86_400));
        r.access_token = Secret::new(format!("a-fan-out-{n}"));
        files_store.save(&r).unwrap();
        store.save(&r).unwrap();
    }
    let files_rate = fan_out(b, &cfg_files, "files", posts);
    let pg_rate = fan_out(b, &cfg_pg, "postgres", posts);
    println!(
        "pgscale (fan-out): {posts} posts to 3 accounts each: files {files_rate:.1} posts/s, PostgreSQL {pg_rate:.1} posts/s; PostgreSQL / files = {:.2}",
        pg_rate / files_rate
    );
}
