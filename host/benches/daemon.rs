//! `cargo bench --bench daemon`: what running `outreach daemon` costs.
//!
//! - Hot reload latency: from the rename of a `.wasm` into the plugins
//!   folder to the first successful call of the new version (a validation
//!   through `POST /publish?check=true` once `GET /platforms` shows the new
//!   file's hash), with the compile cache warm and cold. Baseline in the
//!   same run: loading the same bytes with `Host::load_file` in-process (no
//!   watcher, no debounce, no API).
//! - Start to ready (all bundled plugins, cache warm): from spawning the
//!   daemon to its first `GET /health` answer; baseline `outreach --version`.
//! - Resident memory of an idle daemon with all plugins loaded, and with
//!   none (same run).
//!
//! Reload latency includes `daemon.debounce_ms` (50 ms here, the default).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use outreach::config::Loaded;
use outreach::plugin::Host;
use outreach::secret::Secret;
use outreach::store::AccountId;

#[allow(dead_code)]
mod common;
#[path = "../../tests/support/wasm_tag.rs"]
mod wasm_tag;
use wasm_tag::tagged;

const EXE: &str = env!("CARGO_BIN_EXE_outreach");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A home with the bundled plugins (or none) and a daemon config.
fn home(dir: &Path, plugins: bool) -> PathBuf {
    std::fs::create_dir_all(dir.join("plugins")).unwrap();
    if plugins {
        for e in std::fs::read_dir(repo().join("target/plugins")).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "wasm") {
                std::fs::copy(&p, dir.join("plugins").join(p.file_name().unwrap())).unwrap();
            }
        }
    }
    let config = dir.join("outreach.toml");
    std::fs::write(
        &config,
        "[paths]\nplugins = \"plugins\"\nstore = \"store\"\nidentity = \"identity.txt\"\ncache = \"cache\"\nposts = \"posts\"\n\n[daemon]\nlisten = \"127.0.0.1:0\"\nlog_level = \"warn\"\n",
    )
    .unwrap();
    config
}

struct Daemon {
    _child: common::Child,
    pid: u32,
    base: String,
    token: String,
}

fn start(dir: &Path, config: &Path) -> (Daemon, Duration) {
    let state = dir.join("store.daemon.json");
    let _ = std::fs::remove_file(&state);
    let t0 = Instant::now();
    let child = Command::new(EXE)
        .arg("--config")
        .arg(config)
        .arg("daemon")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let child = common::Child(child);
    let address = loop {
        if let Ok(s) = std::fs::read_to_string(&state)
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&s)
        {
            break v["address"].as_str().unwrap().to_string();
        }
        std::thread::sleep(Duration::from_micros(500));
    };
    let token = std::fs::read_to_string(dir.join("daemon.token"))
        .unwrap()
        .trim()
        .to_string();
    let d = Daemon {
        _child: child,
        pid,
        base: format!("http://{address}"),
        token,
    };
    while d.get("/health").is_none() {
        std::thread::sleep(Duration::from_micros(500));
    }
    (d, t0.elapsed())
}

impl Daemon {
    fn request(&self, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
        // A blocking client keeps the measurement free of a second runtime.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let c = reqwest::Client::builder().no_proxy().build().unwrap();
            let r = c
                .request(method.parse().unwrap(), format!("{}{path}", self.base))
                .bearer_auth(&self.token)
                .body(body.to_string())
                .send()
                .await
                .ok()?;
            let code = r.status().as_u16();
            Some((code, r.text().await.ok()?))
        })
    }

    fn get(&self, path: &str) -> Option<serde_json::Value> {
        let (code, text) = self.request("GET", path, "")?;
        (code == 200).then(|| serde_json::from_str(&text).ok())?
    }

    fn rss_kib(&self) -> (u64, u64) {
        let status = format!("/proc/{}/status", self.pid);
        (
            common::proc_field(&status, "VmRSS:"),
            common::proc_field(&status, "VmHWM:"),
        )
    }
}

fn sha(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Rename `bytes` into the plugins folder; time until the new version has
/// answered one validation.
fn reload(d: &Daemon, plugins: &Path, bytes: &[u8]) -> Duration {
    let want = sha(bytes);
    let tmp = plugins.join(".mastodon.wasm.part");
    std::fs::write(&tmp, bytes).unwrap();
    let check = serde_json::json!({ "text": "bench", "to": ["mastodon/bench"] }).to_string();
    let t0 = Instant::now();
    std::fs::rename(&tmp, plugins.join("mastodon.wasm")).unwrap();
    loop {
        let p = d.get("/platforms").unwrap();
        let serving = p["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["id"] == "mastodon" && p["sha256"] == want.as_str());
        if serving {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the new version never served: {p}"
        );
        // Poll gently: on 2 cores a busy poller slows the compile it waits for.
        std::thread::sleep(Duration::from_millis(2));
    }
    let (code, text) = d.request("POST", "/publish?check=true", &check).unwrap();
    assert_eq!(code, 200, "{text}");
    t0.elapsed()
}

/// In-process baseline: `Host::load_file` of the same bytes.
fn load_in_process(
    rt: &tokio::runtime::Runtime,
    cfg: &Loaded,
    dir: &Path,
    bytes: &[u8],
) -> Duration {
    let host = Host::new(cfg).unwrap();
    let path = dir.join("mastodon.wasm");
    std::fs::write(&path, bytes).unwrap();
    let t0 = Instant::now();
    rt.block_on(host.load_file(&path)).unwrap();
    t0.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// The mastodon plugin built without optimisation: the largest real plugin
/// code we have (compile time grows with code size).
fn big_plugin() -> Vec<u8> {
    let root = repo();
    let status = Command::new(env!("CARGO"))
        .current_dir(&root)
        .args([
            "build",
            "--quiet",
            "--target",
            "wasm32-unknown-unknown",
            "-p",
            "outreach-mastodon",
            "--target-dir",
        ])
        .arg(root.join("target/wasm-big"))
        .env("CARGO_PROFILE_DEV_DEBUG", "0")
        .env("CARGO_PROFILE_DEV_OPT_LEVEL", "0")
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read(root.join("target/wasm-big/wasm32-unknown-unknown/debug/outreach_mastodon.wasm"))
        .unwrap()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("home");
    let config = home(&dir, true);
    let cfg = Loaded::load(Some(&config)).unwrap();

    // An account for the validation calls (no network needed).
    {
        let app = rt.block_on(outreach::app::App::new(cfg.clone())).unwrap();
        let settings = [("instance".to_string(), "http://127.0.0.1:9".to_string())].into();
        let rec = outreach::auth::new_record(
            AccountId::new("mastodon", "bench").unwrap(),
            outreach::auth::Tokens {
                access: Secret::new("bench-token"),
                refresh: None,
                expires_in: None,
                expires_at: None,
                refresh_expires_at: None,
                scope: None,
            },
            settings,
        );
        app.store().unwrap().save(&rec).unwrap();
    }

    // Start to ready, cache warm (the first start above warmed it).
    let bare: Vec<Duration> = (0..10)
        .map(|_| {
            let t0 = Instant::now();
            Command::new(EXE)
                .arg("--version")
                .stdout(Stdio::null())
                .status()
                .unwrap();
            t0.elapsed()
        })
        .collect();
    let mut ready = Vec::new();
    for _ in 0..10 {
        let (d, t) = start(&dir, &config);
        ready.push(t);
        drop(d);
    }
    let (bare, ready) = (median(bare), median(ready));
    println!(
        "start to ready ({} plugins, cache warm), median of 10: {}  |  bare `outreach --version`: {}  |  ratio {:.1}",
        bundled(),
        ms(ready),
        ms(bare),
        ready.as_secs_f64() / bare.as_secs_f64()
    );

    // Idle memory, with all plugins and with none.
    let (d, _) = start(&dir, &config);
    std::thread::sleep(Duration::from_secs(3));
    let (rss, hwm) = d.rss_kib();
    let empty_dir = tmp.path().join("empty");
    let empty_config = home(&empty_dir, false);
    let (e, _) = start(&empty_dir, &empty_config);
    std::thread::sleep(Duration::from_secs(3));
    let (rss0, _) = e.rss_kib();
    drop(e);
    println!(
        "idle resident memory: {:.1} MiB with {} plugins (peak {:.1} MiB)  |  {:.1} MiB with none  |  ratio {:.2}",
        rss as f64 / 1024.0,
        bundled(),
        hwm as f64 / 1024.0,
        rss0 as f64 / 1024.0,
        rss as f64 / rss0 as f64
    );

    // Hot reload.
    let plugins = dir.join("plugins");
    let v1 = std::fs::read(repo().join("target/plugins/mastodon.wasm")).unwrap();
    let scratch = tmp.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let n = 15;
    let cold: Vec<Duration> = (0..n)
        .map(|i| reload(&d, &plugins, &tagged(&v1, &format!("cold-{i}"))))
        .collect();
    let (a, b) = (tagged(&v1, "warm-a"), tagged(&v1, "warm-b"));
    reload(&d, &plugins, &a);
    reload(&d, &plugins, &b);
    let warm: Vec<Duration> = (0..n)
        .map(|i| reload(&d, &plugins, if i % 2 == 0 { &a } else { &b }))
        .collect();
    let base_cold: Vec<Duration> = (0..n)
        .map(|i| load_in_process(&rt, &cfg, &scratch, &tagged(&v1, &format!("base-{i}"))))
        .collect();
    let base_warm: Vec<Duration> = (0..n)
        .map(|_| load_in_process(&rt, &cfg, &scratch, &a))
        .collect();
    let (cold, warm, base_cold, base_warm) = (
        median(cold),
        median(warm),
        median(base_cold),
        median(base_warm),
    );
    println!(
        "hot reload, {} KiB plugin, median of {n}: cached {} (in-process load {}; ratio {:.1})  |  uncached {} (in-process {}; ratio {:.2})",
        v1.len() / 1024,
        ms(warm),
        ms(base_warm),
        warm.as_secs_f64() / base_warm.as_secs_f64(),
        ms(cold),
        ms(base_cold),
        cold.as_secs_f64() / base_cold.as_secs_f64()
    );

    let big = big_plugin();
    let big_cold: Vec<Duration> = (0..5)
        .map(|i| reload(&d, &plugins, &tagged(&big, &format!("big-{i}"))))
        .collect();
    let big_base: Vec<Duration> = (0..5)
        .map(|i| load_in_process(&rt, &cfg, &scratch, &tagged(&big, &format!("big-base-{i}"))))
        .collect();
    let (big_cold, big_base) = (median(big_cold), median(big_base));
    println!(
        "hot reload, {} KiB unoptimised plugin, uncached, median of 5: {} (in-process {}; ratio {:.2}); scaled linearly to 1 MiB: {}",
        big.len() / 1024,
        ms(big_cold),
        ms(big_base),
        big_cold.as_secs_f64() / big_base.as_secs_f64(),
        ms(big_cold.mul_f64(1024.0 * 1024.0 / big.len() as f64))
    );
    drop(d);
}

/// How many bundled plugins the measurement loads.
fn bundled() -> usize {
    std::fs::read_dir(repo().join("target/plugins"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "wasm"))
                .count()
        })
        .unwrap_or(0)
}
