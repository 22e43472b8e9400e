//! Fan-out through the outbox: N post files (default 1,000), each to X,
//! LinkedIn and Mastodon on loopback fakes with no rate limit, published
//! through outreach (validation, refresh check, outbox journal with its
//! fsyncs, plugin calls, broker) — against a baseline that sends the same
//! three requests per post directly with reqwest, in the same run.
//!
//! Reports posts per second and outreach's CPU time per post for both, and
//! the ratio. The fakes run in a child process so their CPU is not counted.
//!
//! Run: `cargo bench --bench publish` (PUBLISH_POSTS overrides N).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use outreach::app::App;
use outreach::config::Loaded;
use outreach::publish::{Options, publish_file};
use outreach::secret::Secret;
use outreach::store::{AccountId, AgeDirStore, CredentialStore, Health, Identity, Profile, Record};

/// Minimal loopback stand-ins answering like each platform's publish call.
fn serve_fakes(port_file: &Path) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        use axum::routing::post;
        use std::sync::atomic::{AtomicU64, Ordering};
        let n = Arc::new(AtomicU64::new(0));
        let (n1, n2, n3) = (n.clone(), n.clone(), n.clone());
        let app = axum::Router::new()
            .route(
                "/2/tweets",
                post(move || {
                    let id = n1.fetch_add(1, Ordering::Relaxed);
                    async move {
                        (
                            axum::http::StatusCode::CREATED,
                            [("content-type", "application/json")],
                            format!(r#"{{"data":{{"id":"{id}","text":"t","edit_history_post_ids":["{id}"]}}}}"#),
                        )
                    }
                }),
            )
            .route(
                "/rest/posts",
                post(move || {
                    let id = n2.fetch_add(1, Ordering::Relaxed);
                    async move { (axum::http::StatusCode::CREATED, [("x-restli-id", format!("urn:li:share:{id}"))], "") }
                }),
            )
            .route(
                "/api/v1/statuses",
                post(move || {
                    let id = n3.fetch_add(1, Ordering::Relaxed);
                    async move {
                        (
                            [("content-type", "application/json")],
                            format!(r#"{{"id":"{id}","url":"http://127.0.0.1/@a/{id}"}}"#),
                        )
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        std::fs::write(port_file, listener.local_addr().unwrap().port().to_string()).unwrap();
        axum::serve(listener, app).await.unwrap();
    });
}

fn record(platform: &str, account: &str, settings: BTreeMap<String, String>) -> Record {
    Record {
        version: Record::VERSION,
        id: AccountId::new(platform, account).unwrap(),
        access_token: Secret::new("bench-token"),
        refresh_token: None,
        expires_in: None,
        expires_at: None,
        refresh_expires_at: None,
        scope: String::new(),
        profile: Profile {
            id: "sub".into(),
            name: "Bench".into(),
            handle: Some("bench".into()),
            picture: None,
            url: None,
        },
        created_at: chrono::Utc::now(),
        last_refreshed: None,
        settings,
        health: Health::default(),
        hosts: None,
        saved_login: None,
        scopes_asked: None,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--fake") {
        serve_fakes(Path::new(&args[i + 1]));
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let n: usize = std::env::var("PUBLISH_POSTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let dir = tempfile::tempdir().unwrap();
    let (_fake, url) = common::spawn_fake(dir.path());
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins");
    let cfg_path = dir.path().join("bench.toml");
    std::fs::write(
        &cfg_path,
        format!(
            "[paths]\nplugins = {:?}\nstore = \"store\"\nidentity = \"id.txt\"\ncache = \"cache\"\n\n\
             [platforms.x]\ndeclared_limits = false\n[platforms.x.endpoints]\napi = \"{url}\"\n\
             [platforms.mastodon]\ndeclared_limits = false\n[platforms.linkedin.endpoints]\napi = \"{url}\"\n",
            plugins.display().to_string()
        ),
    )
    .unwrap();
    let ident = Identity::load_or_create(&dir.path().join("id.txt"), || None).unwrap();
    let store = AgeDirStore::open(&dir.path().join("store"), ident).unwrap();
    store
        .save(&record("x", "default", BTreeMap::new()))
        .unwrap();
    store
        .save(&record("linkedin", "default", BTreeMap::new()))
        .unwrap();
    store
        .save(&record(
            "mastodon",
            "default",
            BTreeMap::from([("instance".to_string(), url.clone())]),
        ))
        .unwrap();
    let posts: Vec<_> = (0..n)
        .map(|i| {
            let p = dir.path().join(format!("post{i:04}.toml"));
            std::fs::write(
                &p,
                format!("text = \"bench post {i}\"\nto = [\"x\", \"linkedin\", \"mastodon\"]\n"),
            )
            .unwrap();
            p
        })
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let app = rt.block_on(async {
        Arc::new(
            App::new(Loaded::load(Some(&cfg_path)).unwrap())
                .await
                .unwrap(),
        )
    });

    // Baseline: the same three requests per post, straight from reqwest.
    let client = reqwest::Client::new();
    let (c0, t0) = (common::cpu_secs(), Instant::now());
    rt.block_on(async {
        for i in 0..n {
            let text = format!("bench post {i}");
            let x = client
                .post(format!("{url}/2/tweets"))
                .header("authorization", "Bearer bench-token")
                .header("content-type", "application/json")
                .body(format!(r#"{{"text":"{text}"}}"#))
                .send();
            let li = client
                .post(format!("{url}/rest/posts"))
                .header("authorization", "Bearer bench-token")
                .header("linkedin-version", "202601")
                .header("x-restli-protocol-version", "2.0.0")
                .header("content-type", "application/json")
                .body(format!(r#"{{"author":"urn:li:person:sub","commentary":"{text}","visibility":"PUBLIC","lifecycleState":"PUBLISHED"}}"#))
                .send();
            let md = client
                .post(format!("{url}/api/v1/statuses"))
                .header("authorization", "Bearer bench-token")
                .header("idempotency-key", format!("{i:032}"))
                .header("content-type", "application/json")
                .body(format!(r#"{{"status":"{text}","visibility":"public"}}"#))
                .send();
            let (a, b, c) = tokio::join!(x, li, md);
            for r in [a, b, c] {
                r.unwrap().bytes().await.unwrap();
            }
        }
    });
    let (base_cpu, base_wall) = (common::cpu_secs() - c0, t0.elapsed());

    let (c0, t0) = (common::cpu_secs(), Instant::now());
    rt.block_on(async {
        for p in &posts {
            let report = publish_file(app.services(), p, Options::default())
                .await
                .unwrap()
                .unwrap();
            assert!(report.results.iter().all(|r| r.ok), "{report:?}");
        }
    });
    let (cpu, wall) = (common::cpu_secs() - c0, t0.elapsed());

    // Where outreach's time goes: validation alone (read the file, resolve
    // targets, read records, three plugin validations), and the journal
    // alone (register, claim three, settle three) — same run.
    let c0 = common::cpu_secs();
    rt.block_on(async {
        for p in &posts {
            outreach::publish::check_file(&app, p)
                .await
                .unwrap()
                .unwrap();
        }
    });
    let check_cpu = common::cpu_secs() - c0;
    let journal = dir.path().join("journal.sqlite");
    let mut ob = outreach::outbox::Outbox::open(&journal).unwrap();
    let targets = ["x/default", "linkedin/default", "mastodon/default"];
    let c0 = common::cpu_secs();
    for i in 0..n {
        let id = format!("p{i}");
        let row = outreach::outbox::PostRow {
            id: id.clone(),
            path: id.clone(),
            content_hash: String::new(),
            source: String::new(),
            scheduled_at: None,
            created_at: chrono::Utc::now(),
        };
        let items: Vec<(String, u32)> = targets.iter().map(|t| (t.to_string(), 0)).collect();
        ob.register(&row, &items).unwrap();
        let claims: Vec<_> = targets
            .iter()
            .map(|t| (t.to_string(), 0, vec![outreach::outbox::State::Pending]))
            .collect();
        let ids = ob.begin_many(&id, &claims).unwrap();
        for (t, a) in targets.iter().zip(ids) {
            let state = outreach::outbox::State::Published;
            ob.finish(a.unwrap(), &id, t, 0, state, Some("1"), None, None, None)
                .unwrap();
        }
    }
    let journal_cpu = common::cpu_secs() - c0;
    println!(
        "breakdown per post: validation {:.0} µs CPU, journal {:.0} µs CPU (1 fsync: the claim of all three targets), the rest (three plugin publish calls, broker, HTTP) {:.0} µs",
        check_cpu * 1e6 / n as f64,
        journal_cpu * 1e6 / n as f64,
        (cpu - check_cpu - journal_cpu) * 1e6 / n as f64
    );
    println!(
        "publish fan-out, {n} posts x 3 platforms: outreach {:.0} posts/s, {:.0} µs CPU per post; direct reqwest {:.0} posts/s, {:.0} µs CPU per post; wall ratio {:.2}, CPU ratio {:.2}",
        n as f64 / wall.as_secs_f64(),
        cpu * 1e6 / n as f64,
        n as f64 / base_wall.as_secs_f64(),
        base_cpu * 1e6 / n as f64,
        wall.as_secs_f64() / base_wall.as_secs_f64(),
        cpu / base_cpu.max(1e-9),
    );
}
