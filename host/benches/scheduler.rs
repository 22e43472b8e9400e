//! The refresh scheduler at scale: N accounts (default 10,000) on the X
//! plugin whose tokens live 60 seconds, refreshed against a loopback fake
//! token endpoint (rotating refresh tokens) for a while (default 300 s).
//!
//! Reports: refreshes done, refreshes that came after the token had already
//! expired (must be 0: no token is used after its expiry), outreach's CPU
//! time per refresh, peak resident memory, and bytes written to disk per
//! refresh (must not grow with the number of accounts — run with a smaller
//! SCHED_ACCOUNTS to compare).
//!
//! A baseline phase (default 60 s, SCHED_BASELINE_SECS; 0 skips it) runs
//! the same scheduler with every token exchange sent in-process, before
//! the measured phase where rotating refreshes go through the escrow
//! helper; the ratio of CPU per refresh is printed.
//!
//! Run: `cargo bench --bench scheduler` (SCHED_ACCOUNTS, SCHED_SECS and
//! SCHED_LIFETIME override the defaults). The fake runs in a child process
//! so its CPU is not counted as outreach's.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use outreach::app::App;
use outreach::config::Loaded;
use outreach::schedule::{Refresher, run};
use outreach::secret::Secret;
use outreach::store::{AccountId, AgeDirStore, CredentialStore, Health, Identity, Profile, Record};

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
    refreshes: u64,
    late: u64,
}

/// The fake token endpoint: any `r0-<account>` works once, then rotation.
fn serve_fake(port_file: &Path, lifetime: Duration) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        use axum::routing::{get, post};
        let st = Arc::new(Mutex::new(FakeState::default()));
        let s1 = st.clone();
        let s2 = st.clone();
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
                            None => match presented.strip_prefix("r0-") {
                                Some(acct) if !s.live.values().any(|(a, _)| a == acct) => acct.to_string(),
                                _ => {
                                    return (
                                        axum::http::StatusCode::BAD_REQUEST,
                                        r#"{"error":"invalid_grant","error_description":"Value passed for the token was invalid."}"#.to_string(),
                                    );
                                }
                            },
                        };
                        s.refreshes += 1;
                        let n = s.refreshes;
                        let refresh = format!("r{n}-{account}");
                        s.live.insert(refresh.clone(), (account, now + lifetime));
                        (
                            axum::http::StatusCode::OK,
                            format!(
                                r#"{{"token_type":"bearer","access_token":"a{n}","refresh_token":"{refresh}","expires_in":{},"scope":"tweet.read"}}"#,
                                lifetime.as_secs()
                            ),
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
                        let now = Instant::now();
                        let expired = s.live.values().filter(|(_, e)| *e < now).count();
                        format!(r#"{{"refreshes":{},"late":{},"expired_now":{}}}"#, s.refreshes, s.late, expired)
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        std::fs::write(port_file, listener.local_addr().unwrap().port().to_string()).unwrap();
        axum::serve(listener, app).await.unwrap();
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let lifetime = Duration::from_secs(env_num("SCHED_LIFETIME", 60));
    if let Some(i) = args.iter().position(|a| a == "--fake") {
        serve_fake(Path::new(&args[i + 1]), lifetime);
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let accounts = env_num("SCHED_ACCOUNTS", 10_000) as usize;
    let secs = env_num("SCHED_SECS", 300);
    let base_secs = env_num("SCHED_BASELINE_SECS", 60);
    let dir = tempfile::tempdir().unwrap();
    let (_fake, fake_url) = common::spawn_fake(dir.path());
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins");
    let cfg_path = dir.path().join("bench.toml");
    std::fs::write(
        &cfg_path,
        format!(
            "[paths]\nplugins = {:?}\nstore = \"store\"\nidentity = \"id.txt\"\ncache = \"cache\"\n\n[auth]\njitter = 0.05\n\n[platforms.x]\nclient_id = \"bench\"\nclient_secret_env = \"SCHED_BENCH_SECRET\"\n[platforms.x.endpoints]\ntoken = \"{fake_url}/2/oauth2/token\"\n",
            plugins.display().to_string()
        ),
    )
    .unwrap();
    // SAFETY: set before any other thread of this process exists.
    unsafe { std::env::set_var("SCHED_BENCH_SECRET", "bench-secret") };

    // N accounts whose tokens expire evenly over the next lifetime.
    let ident = Identity::load_or_create(&dir.path().join("id.txt"), || None).unwrap();
    let store = AgeDirStore::open(&dir.path().join("store"), ident).unwrap();
    let now = chrono::Utc::now();
    let t0 = Instant::now();
    for i in 0..accounts {
        let name = format!("a{i:05}");
        let left = lifetime.as_millis() as i64 * (i as i64 + 1) / accounts as i64;
        let expires_at = now + chrono::Duration::milliseconds(left);
        store
            .save(&Record {
                version: Record::VERSION,
                id: AccountId::new("x", &name).unwrap(),
                access_token: Secret::new("a0"),
                refresh_token: Some(Secret::new(format!("r0-{name}"))),
                expires_in: Some(lifetime.as_secs()),
                expires_at: Some(expires_at),
                refresh_expires_at: None,
                scope: String::new(),
                profile: Profile::default(),
                created_at: expires_at - chrono::Duration::from_std(lifetime).unwrap(),
                last_refreshed: None,
                settings: Default::default(),
                health: Health::default(),
                hosts: None,
                saved_login: None,
                scopes_asked: None,
            })
            .unwrap();
    }
    eprintln!(
        "created {accounts} accounts in {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let stats = || -> serde_json::Value {
        rt.block_on(async {
            let body = reqwest::Client::new()
                .get(format!("{fake_url}/stats"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            serde_json::from_str(&body).unwrap()
        })
    };
    // Baseline first: the same scheduler with every exchange sent from
    // this process (no escrow helper); then the real thing, where rotating
    // refreshes go through the helper, a child process whose CPU, writes
    // and memory are counted too (read before it exits).
    let phases = [
        ("baseline, exchanges in-process", None, base_secs),
        (
            "escrow helper",
            Some(std::path::PathBuf::from(env!("CARGO_BIN_EXE_outreach"))),
            secs,
        ),
    ];
    let mut cpu_per = Vec::new();
    for (name, program, secs) in phases {
        if secs == 0 {
            continue;
        }
        let before = stats();
        let (cpu0, io0) = (
            common::cpu_secs(),
            common::proc_field("/proc/self/io", "write_bytes:"),
        );
        let helper = rt.block_on(async {
            let cfg = Loaded::load(Some(&cfg_path)).unwrap();
            let app = Arc::new(App::new(cfg).await.unwrap());
            app.escrow.set_program(program);
            let refresher = Arc::new(Refresher::new(app.services().clone()).unwrap());
            run(refresher, 32, tokio::time::sleep(Duration::from_secs(secs)))
                .await
                .unwrap();
            common::escrow_helpers()
        });
        let (cpu1, io1) = (
            common::cpu_secs() + helper.cpu_secs,
            common::proc_field("/proc/self/io", "write_bytes:") + helper.write_bytes,
        );
        let after = stats();
        let delta = |k: &str| after[k].as_u64().unwrap() - before[k].as_u64().unwrap();
        let refreshes = delta("refreshes").max(1);
        let cpu = (cpu1 - cpu0) * 1e6 / refreshes as f64;
        cpu_per.push(cpu);
        println!(
            "scheduler ({name}): {accounts} accounts, {}-s tokens, {secs} s: {refreshes} refreshes ({:.1}/s); late refreshes (token already expired) {}; tokens expired at the end {}; CPU {cpu:.0} µs per refresh (of which the escrow helper {:.0}); peak RSS {} MiB (+ helper {} MiB); {:.0} bytes written per refresh (of which the helper {:.0})",
            lifetime.as_secs(),
            refreshes as f64 / secs as f64,
            delta("late"),
            after["expired_now"],
            helper.cpu_secs * 1e6 / refreshes as f64,
            common::proc_field("/proc/self/status", "VmHWM:") / 1024,
            helper.peak_rss_kib / 1024,
            (io1 - io0) as f64 / refreshes as f64,
            helper.write_bytes as f64 / refreshes as f64,
        );
    }
    if let [base, escrow] = cpu_per[..] {
        println!(
            "scheduler: CPU per refresh with the escrow helper / baseline = {:.2}",
            escrow / base
        );
    }
}
