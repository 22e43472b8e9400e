//! `cargo bench --bench crosspost`: one post to Discord, `outreach
//! publish` against `crosspost --discord-webhook` (the npm package
//! `@humanwhocodes/crosspost`, installed into `target/bench-npm` on first
//! use), both to the same loopback Discord webhook fake in this process.
//!
//! Each tool runs `CROSSPOST_BENCH_RUNS` times (default 20, after one
//! warm-up each), alternating; every run posts a new message. Reported per
//! tool: median and mean wall time, mean CPU (user + system, from the
//! child's `rusage`) and the largest peak resident memory (`ru_maxrss`),
//! and the ratios crosspost / outreach. Needs `node` and `npm` (skipped,
//! saying so, without them).

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::response::IntoResponse;

const EXE: &str = env!("CARGO_BIN_EXE_outreach");
const HOOK_ID: &str = "1187223344556677889";
const HOOK_TOKEN: &str = "bench-webhook-token";

/// The webhook: its description (`GET`) and messages (`POST ?wait=true`).
async fn webhook(
    State(count): State<Arc<AtomicU64>>,
    method: axum::http::Method,
    UrlPath((id, token)): UrlPath<(String, String)>,
) -> axum::response::Response {
    if id != HOOK_ID || token != HOOK_TOKEN {
        return (
            axum::http::StatusCode::UNAUTHORIZED,
            "{\"message\": \"Invalid Webhook Token\", \"code\": 50027}",
        )
            .into_response();
    }
    let json = [("content-type", "application/json")];
    if method == axum::http::Method::GET {
        return (json, format!("{{\"type\":1,\"id\":\"{HOOK_ID}\",\"name\":\"Bench\",\"channel_id\":\"555\",\"guild_id\":\"777\"}}")).into_response();
    }
    let n = count.fetch_add(1, Ordering::SeqCst) + 1;
    (
        json,
        format!("{{\"id\":\"90000{n}\",\"type\":0,\"channel_id\":\"555\",\"content\":\"ok\"}}"),
    )
        .into_response()
}

struct Usage {
    wall: Duration,
    cpu: Duration,
    max_rss_kib: u64,
}

/// Run `cmd` to the end; its wall time, CPU and peak memory.
fn measure(cmd: &mut Command) -> Usage {
    let start = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: `rusage` is plain data; wait4 fills it for our own child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let wall = start.elapsed();
    assert_eq!(r, pid, "wait4 failed");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{cmd:?} failed"
    );
    std::mem::forget(child);
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Usage {
        wall,
        cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
        max_rss_kib: ru.ru_maxrss as u64,
    }
}

fn crosspost_bin(repo: &Path) -> Option<std::path::PathBuf> {
    let dir = repo.join("target/bench-npm");
    let bin = dir.join("node_modules/.bin/crosspost");
    if !bin.exists() {
        std::fs::create_dir_all(&dir).ok()?;
        let ok = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .arg("@humanwhocodes/crosspost")
            .status()
            .ok()?
            .success();
        if !ok {
            return None;
        }
    }
    bin.exists().then_some(bin)
}

fn main() {
    let runs: usize = std::env::var("CROSSPOST_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let Some(crosspost) = crosspost_bin(repo) else {
        println!("crosspost benchmark skipped: node/npm or @humanwhocodes/crosspost unavailable");
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route(
            "/api/webhooks/{id}/{token}",
            axum::routing::get(webhook).post(webhook),
        )
        .with_state(count.clone());
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    let hook = format!("{base}/api/webhooks/{HOOK_ID}/{HOOK_TOKEN}");

    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join("outreach.toml"),
        format!(
            "[paths]\nplugins = \"plugins\"\nstore = \"store\"\nidentity = \"id.txt\"\ncache = \"cache\"\n\n[platforms.discord.endpoints]\napi = \"{base}/api/v10\"\n"
        ),
    )
    .unwrap();
    let outreach = |args: &[&str]| {
        let mut c = Command::new(EXE);
        c.arg("--config")
            .arg(home.path().join("outreach.toml"))
            .args(args)
            .env("HOME", home.path());
        c
    };
    let mut add = outreach(&["accounts", "add", "discord"]);
    let mut child = add.stdin(Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), hook.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());

    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for i in 0..=runs {
        let post = home.path().join(format!("p{i}.toml"));
        std::fs::write(
            &post,
            format!("text = \"bench message {i}\"\nto = [\"discord\"]\n"),
        )
        .unwrap();
        let o = measure(&mut outreach(&["publish", post.to_str().unwrap()]));
        let t = measure(
            Command::new(&crosspost)
                .arg("--discord-webhook")
                .arg(format!("bench message {i}"))
                .env("DISCORD_WEBHOOK_URL", &hook)
                .current_dir(home.path()),
        );
        // The first of each is a warm-up.
        if i > 0 {
            ours.push(o);
            theirs.push(t);
        }
    }
    assert_eq!(
        count.load(Ordering::SeqCst),
        2 * (runs as u64 + 1),
        "every run posted"
    );
    let summary = |name: &str, u: &mut Vec<Usage>| {
        u.sort_by_key(|x| x.wall);
        let median = u[u.len() / 2].wall;
        let mean = u.iter().map(|x| x.wall).sum::<Duration>() / u.len() as u32;
        let cpu = u.iter().map(|x| x.cpu).sum::<Duration>() / u.len() as u32;
        let rss = u.iter().map(|x| x.max_rss_kib).max().unwrap_or(0);
        println!(
            "  {name:<26} median {:>7.1} ms  mean {:>7.1} ms  CPU {:>7.1} ms  peak RSS {:>6.1} MiB",
            median.as_secs_f64() * 1e3,
            mean.as_secs_f64() * 1e3,
            cpu.as_secs_f64() * 1e3,
            rss as f64 / 1024.0
        );
        (median, cpu, rss)
    };
    println!("one post to a loopback Discord webhook, {runs} runs each:");
    let (om, oc, or) = summary("outreach publish", &mut ours);
    let (tm, tc, tr) = summary("crosspost --discord-webhook", &mut theirs);
    println!(
        "  crosspost / outreach: wall {:.1}x, CPU {:.1}x, peak memory {:.1}x  (aim: 40x faster, 6x less memory)",
        tm.as_secs_f64() / om.as_secs_f64(),
        tc.as_secs_f64() / oc.as_secs_f64().max(1e-9),
        tr as f64 / or.max(1) as f64
    );
}
