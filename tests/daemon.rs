//! The daemon end to end: the real `outreach daemon` process, its control
//! API, hot reload of plugins, post files and config, and shutdown —
//! against the local fakes.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::daemon::{Daemon, start_daemon, wait_exit};
use support::*;

const DAEMON_CONFIG: &str =
    "\n[daemon]\nlisten = \"127.0.0.1:0\"\ndebounce_ms = 50\ndue_check_secs = 1\ngrace_secs = 20\n";

impl Daemon {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.try_call(method, path, body)
            .await
            .expect("the control API answers")
    }

    async fn get(&self, path: &str) -> Value {
        let (code, v) = self.call("GET", path, None).await;
        assert_eq!(code, 200, "GET {path}: {v}");
        v
    }

    /// Poll `GET path` until `ok` holds (10 s at most).
    async fn wait_for(&self, path: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = self.get(path).await;
            if ok(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last {path}: {v}\nlog:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn daemon_world() -> World {
    let mut w = World::new().with_accounts();
    w.home.extra_config.push_str(DAEMON_CONFIG);
    std::fs::create_dir_all(w.home.path().join("posts")).unwrap();
    w
}

/// Put `bytes` into `dir/name` the way a careful user does: write a hidden
/// temporary file, then rename it into place.
fn drop_file(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.part"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

fn plugin_sha(platforms: &Value, id: &str) -> Option<String> {
    platforms["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id)
        .map(|p| p["sha256"].as_str().unwrap().to_string())
}

fn toot(id: &str) -> Value {
    json!({ "id": id, "text": format!("toot {id}"), "to": ["mastodon/social"] })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_api_needs_its_token_and_stays_on_loopback() {
    let mut w = daemon_world();
    let events = w.home.path().join("events.log");
    w.home.extra_config.push_str(&format!(
        "\n[notify]\ncommand = \"echo $OUTREACH_EVENT $OUTREACH_STATE $OUTREACH_ACCOUNT $OUTREACH_POST >> {}\"\n",
        events.display()
    ));
    let d = start_daemon(&w.home);
    assert!(d.base.starts_with("http://127.0.0.1:"), "{}", d.base);
    let mode = std::fs::metadata(w.home.path().join("daemon.token"))
        .unwrap()
        .permissions();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.mode() & 0o777, 0o600);

    for (path, token) in [
        ("/health", None),
        ("/accounts", None),
        ("/health", Some("wrong")),
    ] {
        let mut req = d.http.get(format!("{}{path}", d.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "{path} without the token");
    }
    let (code, _) = d.call("POST", "/publish", Some(toot("sneaky"))).await;
    assert_eq!(code, 200);
    let r = d
        .http
        .post(format!("{}/publish", d.base))
        .body(toot("no-token").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(w.mastodon.posts().len(), 1, "only the authenticated post");

    let health = d.get("/health").await;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["plugins"], bundled_count());
    let platforms = d.get("/platforms").await;
    for id in ["x", "linkedin", "mastodon", "bluesky", "discord", "devto"] {
        assert!(plugin_sha(&platforms, id).is_some(), "{platforms}");
    }
    let accounts = d.get("/accounts").await;
    let accounts = accounts.as_array().unwrap();
    assert_eq!(accounts.len(), 3);
    assert!(
        accounts.iter().all(|a| a["connected"] == true),
        "{accounts:?}"
    );
    let m = accounts
        .iter()
        .find(|a| a["id"] == "mastodon/social")
        .unwrap();
    assert_eq!(m["last_post"]["state"], "published");
    assert_eq!(m["last_post"]["success"], true);
    assert_eq!(m["last_post"]["content"], "toot sneaky");
    assert!(m["token_health"]["is_valid"].as_bool().unwrap());
    assert!(!accounts.iter().any(|a| a.to_string().contains("PLANTED")));

    let (code, v) = d
        .call("POST", "/accounts/nope%2Fnobody/refresh", None)
        .await;
    assert_eq!(code, 404, "{v}");
    let (code, v) = d
        .call(
            "POST",
            "/publish",
            Some(json!({ "text": "hi", "to": ["x"], "colour": "red" })),
        )
        .await;
    assert_eq!(code, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("colour"), "{v}");

    let metrics = d
        .http
        .get(format!("{}/metrics", d.base))
        .bearer_auth(&d.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let loaded = format!("outreach_plugins_loaded {}", bundled_count());
    for want in [
        loaded.as_str(),
        "outreach_publishes_total{platform=\"mastodon\",outcome=\"published\"} 1",
        "outreach_plugin_call_seconds_bucket",
    ] {
        assert!(metrics.contains(want), "{want} missing from:\n{metrics}");
    }

    // The CLI's read commands go through the running daemon.
    let r = w.home.run(&["status", "--json"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["accounts"].as_array().unwrap().len(), 3);
    let r = w.home.run(&["posts"], None);
    assert!(r.stdout.contains("sneaky"), "{}", r.all());
    let r = w.home.run(&["accounts", "--json"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    let log = d.log();
    for path in ["/accounts", "/posts"] {
        assert!(
            log.contains(&format!("path={path}")) || log.contains(&format!("path: {path}")),
            "the CLI did not ask the daemon for {path}:\n{log}"
        );
    }

    // A publish that fails is announced once through the hook.
    w.x.set_mode(Mode::ServerError);
    let (code, v) = d
        .call(
            "POST",
            "/publish",
            Some(json!({"id": "doomed", "text": "doomed", "to": ["x"]})),
        )
        .await;
    assert_eq!(code, 502, "{v}");
    assert_eq!(v["results"][0]["ok"], false, "{v}");
    w.x.set_mode(Mode::Normal);
    let events = std::fs::read_to_string(&events).unwrap_or_default();
    let lines: Vec<&str> = events.lines().filter(|l| l.contains("doomed")).collect();
    assert_eq!(lines.len(), 1, "{events}");
    assert!(
        lines[0].starts_with("publish unknown x/default")
            || lines[0].starts_with("publish failed x/default"),
        "{events}"
    );

    // Shell completions.
    let r = w.home.run(&["completions", "bash"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("outreach") && r.stdout.contains("daemon"));

    // A second daemon on the same store is refused, clearly.
    let r = w.home.run(&["daemon", "--exit-after", "5"], None);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("already running"), "{}", r.stderr);
    assert!(r.stderr.contains(&d.child.id().to_string()), "{}", r.stderr);
    d.stop();

    // Not on a public address unless the config says so.
    let mut home = Home::new();
    home.extra_config
        .push_str("\n[daemon]\nlisten = \"0.0.0.0:0\"\n");
    let r = home.run(&["daemon", "--exit-after", "5"], None);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("not a loopback address"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_dropped_replaced_broken_and_removed_while_running() {
    let w = daemon_world();
    let plugins = w.home.plugins_dir();
    let mastodon = test_plugin("outreach-mastodon", None, "mastodon.wasm");
    let v1 = std::fs::read(&mastodon).unwrap();
    std::fs::remove_file(plugins.join("mastodon.wasm")).unwrap();
    let d = start_daemon(&w.home);

    // Without its plugin the account is shown, credential kept.
    let accounts = d.get("/accounts").await;
    let m = accounts
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == "mastodon/social")
        .unwrap()
        .clone();
    assert_eq!(m["plugin_missing"], true, "{m}");
    assert_eq!(m["connected"], false);

    // Dropped in: available without a restart.
    drop_file(&plugins, "mastodon.wasm", &v1);
    let p = d
        .wait_for("/platforms", "the mastodon plugin", |v| {
            plugin_sha(v, "mastodon").is_some()
        })
        .await;
    let sha1 = plugin_sha(&p, "mastodon").unwrap();
    let (code, v) = d.call("POST", "/publish", Some(toot("first"))).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(w.mastodon.posts().len(), 1);

    // Replaced during a stream of publishes: none fails.
    *w.mastodon.state.delay.lock().unwrap() = Duration::from_millis(20);
    let d = Arc::new(d);
    let stream = {
        let d = d.clone();
        tokio::spawn(async move {
            let mut failures = Vec::new();
            for i in 0..40 {
                let (code, v) = d
                    .call("POST", "/publish", Some(toot(&format!("stream-{i}"))))
                    .await;
                if code != 200 {
                    failures.push(format!("{i}: {code} {v}"));
                }
            }
            failures
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop_file(&plugins, "mastodon.wasm", &tagged(&v1, "v2"));
    let p = d
        .wait_for("/platforms", "version 2", |v| {
            plugin_sha(v, "mastodon").is_some_and(|s| s != sha1)
        })
        .await;
    let sha2 = plugin_sha(&p, "mastodon").unwrap();
    let failures = stream.await.unwrap();
    assert!(
        failures.is_empty(),
        "publishes failed during the swap: {failures:?}"
    );
    assert_eq!(w.mastodon.posts().len(), 41);
    *w.mastodon.state.delay.lock().unwrap() = Duration::ZERO;

    // A corrupt replacement: rejected, visible, the old one keeps serving.
    drop_file(
        &plugins,
        "mastodon.wasm",
        b"\0asm\x01\0\0\0 this is not a plugin",
    );
    let p = d
        .wait_for("/platforms", "the rejection", |v| {
            !v["rejected"].as_array().unwrap().is_empty()
        })
        .await;
    let rejected = &p["rejected"][0];
    assert!(
        rejected["path"]
            .as_str()
            .unwrap()
            .ends_with("mastodon.wasm"),
        "{p}"
    );
    assert!(rejected["serving"].as_str().unwrap().contains(&sha2), "{p}");
    assert_eq!(plugin_sha(&p, "mastodon").as_deref(), Some(sha2.as_str()));
    let (code, v) = d
        .call("POST", "/publish", Some(toot("after-corrupt")))
        .await;
    assert_eq!(code, 200, "{v}");
    let problems = d
        .wait_for("/problems", "the plugin problem", |v| {
            v.to_string().contains("mastodon.wasm")
        })
        .await;
    assert!(problems.to_string().contains("keeps serving"), "{problems}");

    // Removed: unloaded, its account shows `plugin missing`, the
    // credential stays.
    std::fs::remove_file(plugins.join("mastodon.wasm")).unwrap();
    d.wait_for("/platforms", "the unload", |v| {
        plugin_sha(v, "mastodon").is_none()
    })
    .await;
    let r = w.home.run(&["status"], None);
    assert!(r.stdout.contains("plugin-missing"), "{}", r.all());
    assert!(w.home.path().join("store/mastodon/social.age").exists());

    // Copied in place slowly (no rename): the half-written file is never
    // what serves; the whole one does, once it is complete.
    {
        use std::io::Write;
        let mut f = std::fs::File::create(plugins.join("mastodon.wasm")).unwrap();
        f.write_all(&v1[..v1.len() / 2]).unwrap();
        f.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        f.write_all(&v1[v1.len() / 2..]).unwrap();
    }
    let p = d
        .wait_for("/platforms", "the completed copy", |v| {
            plugin_sha(v, "mastodon").is_some() && v["rejected"].as_array().unwrap().is_empty()
        })
        .await;
    assert_eq!(plugin_sha(&p, "mastodon").as_deref(), Some(sha1.as_str()));

    let d = Arc::try_unwrap(d).ok().unwrap();
    let log = d.stop();
    assert!(log.contains("plugin loaded"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_files_and_config_changes_are_picked_up() {
    let mut w = daemon_world();
    let posts = w.home.path().join("posts");
    let d = start_daemon(&w.home);

    // A post scheduled two seconds ahead, dropped into the posts folder…
    let at = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    drop_file(
        &posts,
        "soon.toml",
        format!("text = \"soon from the daemon\"\nto = [\"x\", \"mastodon/social\"]\nschedule = \"{at}\"\n")
            .as_bytes(),
    );
    d.wait_for("/posts", "the queued post", |v| {
        v.to_string().contains("queued")
    })
    .await;
    // …survives a restart in the middle, and goes out once.
    d.stop();
    assert!(w.x.posts().is_empty(), "published before its time");
    let d = start_daemon(&w.home);
    d.wait_for("/posts", "the published post", |v| {
        let s = v.to_string();
        s.contains("published") && !s.contains("queued")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(w.x.posts().len(), 1);
    assert_eq!(w.mastodon.posts().len(), 1);

    // An invalid post file is reported, not dropped silently.
    drop_file(
        &posts,
        "broken.toml",
        b"text = \"no targets\"\ncolour = 1\n",
    );
    let problems = d
        .wait_for("/problems", "the broken post", |v| {
            v.to_string().contains("broken.toml")
        })
        .await;
    assert!(problems.to_string().contains("colour"), "{problems}");

    // An edited file whose post has not gone out is re-read.
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    drop_file(
        &posts,
        "later.toml",
        format!("text = \"first draft\"\nto = [\"x\"]\nschedule = \"{later}\"\n").as_bytes(),
    );
    d.wait_for("/posts", "the draft", |v| {
        v.to_string().contains("later.toml")
    })
    .await;
    drop_file(
        &posts,
        "later.toml",
        format!("text = \"second draft\"\nto = [\"mastodon/social\"]\nschedule = \"{later}\"\n")
            .as_bytes(),
    );
    d.wait_for("/posts", "the re-read draft", |v| {
        v.as_array().unwrap().iter().any(|p| {
            p["post"]["path"]
                .as_str()
                .unwrap_or("")
                .ends_with("later.toml")
                && p["deliveries"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|d| d["target"] == "mastodon/social" && d["state"] == "queued")
                && p["deliveries"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|d| d["target"] == "x/default" && d["state"] == "cancelled")
        })
    })
    .await;

    // An invalid config change is reported and ignored…
    let config = w.home.config_path();
    let good = std::fs::read_to_string(&config).unwrap();
    drop_file(
        config.parent().unwrap(),
        "outreach.toml",
        format!("{good}\n[publish]\nper_platform = \"many\"\n").as_bytes(),
    );
    d.wait_for("/problems", "the config problem", |v| {
        v.to_string().contains("per_platform")
    })
    .await;
    let (code, v) = d
        .call(
            "POST",
            "/publish",
            Some(json!({"id": "still-works", "text": "still works", "to": ["x"]})),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(w.x.posts().len(), 2);

    // …a valid one applies: X now goes to another endpoint.
    let x2 = fake_x();
    w.home
        .endpoints
        .retain(|(p, n, _)| !(p == "x" && n == "api"));
    w.home.endpoint("x", "api", &x2.url());
    w.home.config_path();
    d.wait_for("/problems", "the config problem to clear", |v| {
        !v.to_string().contains("per_platform")
    })
    .await;
    let (code, v) = d
        .call(
            "POST",
            "/publish",
            Some(json!({"id": "moved", "text": "to the new endpoint", "to": ["x"]})),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(x2.posts().len(), 1);
    assert_eq!(w.x.posts().len(), 2);
    let log = d.stop();
    assert!(log.contains("config reloaded"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_publishes_loses_and_duplicates_nothing() {
    let w = daemon_world();
    *w.x.state.delay.lock().unwrap() = Duration::from_millis(150);
    let d = Arc::new(start_daemon(&w.home));
    let post =
        |i: usize| json!({ "id": format!("burst-{i}"), "text": format!("burst {i}"), "to": ["x"] });
    let mut calls = Vec::new();
    for i in 0..30 {
        let d = d.clone();
        calls.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20 * i as u64)).await;
            let r = d
                .http
                .post(format!("{}/publish", d.base))
                .bearer_auth(&d.token)
                .header("content-type", "application/json")
                .body(post(i).to_string())
                .send()
                .await;
            match r {
                Ok(r) => r.status().as_u16(),
                Err(_) => 0, // refused: the daemon was already closing
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(250)).await;
    d.signal("TERM");
    let mut codes = Vec::new();
    for c in calls {
        codes.push(c.await.unwrap());
    }
    let mut d = Arc::try_unwrap(d).ok().unwrap();
    assert_eq!(
        wait_exit(&mut d.child, Duration::from_secs(30)),
        Some(0),
        "{}",
        d.log()
    );
    let texts = |fake: &Fake| -> Vec<String> {
        fake.posts()
            .iter()
            .map(|(_, b)| b["text"].as_str().unwrap().to_string())
            .collect()
    };
    let published = texts(&w.x);
    for (i, code) in codes.iter().enumerate() {
        let n = published
            .iter()
            .filter(|t| **t == format!("burst {i}"))
            .count();
        match code {
            200 => assert_eq!(n, 1, "post {i} was accepted: it must exist once"),
            503 | 0 => assert_eq!(n, 0, "post {i} was refused: it must not exist"),
            other => panic!("post {i}: unexpected status {other}\n{}", d.log()),
        }
    }
    assert!(
        codes.contains(&200),
        "nothing went out before the signal: {codes:?}"
    );
    assert!(
        codes.iter().any(|c| *c != 200),
        "the signal came after everything: {codes:?}"
    );
    drop(d);

    // After a restart, sending everything again publishes each post once.
    *w.x.state.delay.lock().unwrap() = Duration::ZERO;
    let d = start_daemon(&w.home);
    for i in 0..30 {
        let (code, v) = d.call("POST", "/publish", Some(post(i))).await;
        assert_eq!(code, 200, "{v}");
    }
    let published = texts(&w.x);
    for i in 0..30 {
        let n = published
            .iter()
            .filter(|t| **t == format!("burst {i}"))
            .count();
        assert_eq!(n, 1, "burst {i} exists {n} times");
    }
    d.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once_and_corrupts_nothing() {
    let w = daemon_world();
    *w.x.state.delay.lock().unwrap() = Duration::from_secs(3);
    let mut d = start_daemon(&w.home);
    let (base, token) = (d.base.clone(), d.token.clone());
    let call = tokio::spawn(async move {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .post(format!("{base}/publish"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(json!({"id": "cut-short", "text": "cut short", "to": ["x"]}).to_string())
            .send()
            .await
    });
    // Wait until the request is at the fake, then signal twice.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !w.x.seen().iter().any(|s| s.method == "POST") {
        assert!(
            Instant::now() < deadline,
            "the publish never reached the fake"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    d.signal("TERM");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    d.signal("TERM");
    let code = wait_exit(&mut d.child, Duration::from_secs(10));
    assert_eq!(code, Some(130), "{}", d.log());
    assert!(started.elapsed() < Duration::from_secs(2));
    let _ = call.await;
    drop(d);

    // Everything still opens; the cut-short delivery is reported unknown.
    *w.x.state.delay.lock().unwrap() = Duration::ZERO;
    let r = w.home.run(&["posts", "--json"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v[0]["deliveries"][0]["state"], "unknown", "{v}");
    let r = w.home.run(&["status"], None);
    assert_eq!(r.code, 0, "{}", r.all());
}

/// Through the control API: a post whose fields hold credential
/// placeholders reaches each platform as text — Discord too, whose plugin
/// (contract 0.2.0) marks its webhook URL as a credential by structure, so
/// the same text in a post is only text — no answer, journal entry or log
/// line shows a credential or a webhook's id,
/// and a client secret pasted into the config is refused without being
/// echoed in `GET /problems` or the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_posts_and_config_never_carry_or_echo_credentials() {
    let mut w = daemon_world();
    let discord = fake_discord();
    w.home
        .endpoint("discord", "api", &format!("{}/api/v10", discord.url()));
    let hook = format!(
        "{}/api/webhooks/{DISCORD_WEBHOOK_ID}/{DISCORD_WEBHOOK_TOKEN}",
        discord.url()
    );
    let r = w.home.run(&["accounts", "add", "discord"], Some(&hook));
    assert_eq!(r.code, 0, "{}", r.all());
    let d = start_daemon(&w.home);

    let post = json!({
        "id": "hostile-api",
        "title": "{{access_token}}",
        "text": "a {{access_token}} b {{ refresh_token }}",
        "link": "https://example.org/{{access_token}}",
        "to": ["mastodon/social", "x", "discord"],
        "override": {"mastodon": {"spoiler_text": "{{access_token}}"}},
    });
    let (code, answer) = d.call("POST", "/publish", Some(post)).await;
    assert_eq!(code, 200, "{answer}");
    let results = answer["results"].as_array().unwrap();
    let by = |t: &str| results.iter().find(|r| r["target"] == t).unwrap().clone();
    assert_eq!(by("mastodon/social")["ok"], true, "{answer}");
    assert_eq!(by("x/default")["ok"], true, "{answer}");
    assert_eq!(by("discord/default")["ok"], true, "{answer}");
    let shown = d.get("/posts/hostile-api").await;
    for v in [&answer, &shown] {
        let text = v.to_string();
        assert!(!text.contains("PLANTED"), "{text}");
        assert!(!text.contains(DISCORD_WEBHOOK_ID), "{text}");
    }
    let message = &discord.posts()[0].1;
    assert!(
        message.to_string().contains("a {{access_token}} b"),
        "{message}"
    );
    let toot = &w.mastodon.posts()[0].1;
    assert!(toot.to_string().contains("a {{access_token}} b"), "{toot}");
    for (fake, name) in [
        (&w.mastodon, "mastodon"),
        (&w.x, "x"),
        (&discord, "discord"),
    ] {
        for s in fake.seen() {
            // Discord's path holds the webhook (the credential itself).
            let path = if name == "discord" {
                ""
            } else {
                s.path.as_str()
            };
            let outside = format!("{path} {} {}", s.query, s.body);
            assert!(!outside.contains("PLANTED"), "{name}: {outside}");
        }
    }
    // A media path in an API post stays inside the posts folder.
    let (code, v) = d
        .call(
            "POST",
            "/publish",
            Some(json!({"text": "t", "to": ["x"], "media": [{"path": "../outreach.toml"}]})),
        )
        .await;
    assert_eq!(code, 400, "{v}");
    assert!(v.to_string().contains("outside the folders"), "{v}");
    assert!(
        !v.to_string().contains(".json"),
        "no invented file name: {v}"
    );

    // A client secret pasted into the config: refused, never echoed.
    let config = w.home.config_path();
    let good = std::fs::read_to_string(&config).unwrap();
    drop_file(
        config.parent().unwrap(),
        "outreach.toml",
        format!("{good}\n[platforms.x]\nclient_id = \"abc\"\nclient_secret = \"sk-PLANTED-pasted-9a1f\"\n")
            .as_bytes(),
    );
    let problems = d
        .wait_for("/problems", "the config problem", |v| {
            v.to_string().contains("client_secret_env")
        })
        .await;
    assert!(!problems.to_string().contains("PLANTED"), "{problems}");
    d.stop();
}

// --------------------------- final deliveries across re-reads, and retry

/// A fake X that refuses every post (403 with a reason) until its mode is
/// `Mode::Normal`.
fn x_refusing_posts() -> Fake {
    let fake = start(
        |st, seen| match (seen.method.as_str(), seen.path.as_str()) {
            ("GET", "/2/users/me") => json_response(
                200,
                &[],
                json!({"data": {"id": "2244994945", "name": "X Dev", "username": "xdevelopers"}}),
            ),
            ("POST", "/2/tweets") if *st.mode.lock().unwrap() == Mode::Normal => {
                let body: Value = serde_json::from_str(&seen.body).unwrap_or_default();
                let mut posts = st.posts.lock().unwrap();
                let id = format!("18{:017}", posts.len() + 1);
                posts.push((id.clone(), body.clone()));
                json_response(201, &[], json!({"data": {"id": id, "text": body["text"]}}))
            }
            ("POST", "/2/tweets") => json_response(
                403,
                &[],
                json!({"title": "Forbidden", "type": "about:blank", "status": 403, "detail": "You are not allowed to create a Tweet with duplicate content."}),
            ),
            _ => json_response(404, &[], json!({"title": "Not Found Error"})),
        },
    );
    fake.set_mode(Mode::ServerError);
    fake
}

/// Requests to create a post with `text` that `fake` received.
fn tweets_with(fake: &Fake, text: &str) -> usize {
    fake.seen()
        .iter()
        .filter(|s| s.method == "POST" && s.path == "/2/tweets" && s.body.contains(text))
        .count()
}

/// One post in `GET /posts`.
fn listed<'a>(posts: &'a Value, id: &str) -> Option<&'a Value> {
    posts.as_array()?.iter().find(|p| p["post"]["id"] == id)
}

/// Wait until the daemon has read the post file `name` (registering a post
/// records the file it came from): a count, not a timer.
async fn wait_read(d: &Daemon, id: &str, name: &str) {
    d.wait_for("/posts", &format!("{name} to be read"), |v| {
        listed(v, id).is_some_and(|p| {
            p["post"]["path"]
                .as_str()
                .unwrap_or("")
                .ends_with(&format!("/{name}"))
                && p["deliveries"][0]["state"] != "sending"
                && p["deliveries"][0]["state"] != "pending"
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_post_is_sent_once_however_often_the_daemon_reads_it() {
    let mut w = daemon_world();
    let x = x_refusing_posts();
    w.home
        .endpoints
        .retain(|(p, n, _)| !(p == "x" && n == "api"));
    w.home.endpoint("x", "api", &x.url());
    let posts = w.home.path().join("posts");
    let d = start_daemon(&w.home);

    let text = "id = \"refused\"\ntext = \"file words again\"\nto = [\"x\"]\n";
    drop_file(&posts, "refused.toml", text.as_bytes());
    wait_read(&d, "refused", "refused.toml").await;
    assert_eq!(tweets_with(&x, "file words again"), 1);

    // The same post read again and again — copies under other names, the
    // file touched — is never sent again.
    for i in 1..=3 {
        let name = format!("refused-{i}.toml");
        drop_file(&posts, &name, text.as_bytes());
        wait_read(&d, "refused", &name).await;
        let f = std::fs::File::options()
            .write(true)
            .open(posts.join("refused.toml"))
            .unwrap();
        f.set_modified(std::time::SystemTime::now()).unwrap();
    }
    // Edited, it is refused until it is published as a new post.
    drop_file(
        &posts,
        "refused.toml",
        format!("{text}# edited\n").as_bytes(),
    );
    let problems = d
        .wait_for("/problems", "the edited file to be refused", |v| {
            v.to_string().contains("--new")
        })
        .await;
    assert!(problems.to_string().contains("rejected"), "{problems}");
    assert_eq!(tweets_with(&x, "file words again"), 1, "{}", d.log());

    // The same post sent to the API again and again: sent once.
    let api_post = json!({"id": "api-refused", "text": "api words again", "to": ["x"]});
    for i in 0..3 {
        let (code, v) = d.call("POST", "/publish", Some(api_post.clone())).await;
        assert_eq!(code, 502, "{v}");
        assert_eq!(v["results"][0]["error_kind"], "rejected", "{v}");
        if i > 0 {
            assert!(
                v["results"][0]["error"]
                    .as_str()
                    .unwrap()
                    .contains("not sent again"),
                "{v}"
            );
        }
    }
    assert_eq!(tweets_with(&x, "api words again"), 1);
    let v = d.get("/posts/refused").await;
    assert_eq!(v["deliveries"][0]["final"], true, "{v}");

    // The user asks: through the API, with its token.
    let r = d
        .http
        .post(format!("{}/posts/refused/retry", d.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let (code, v) = d
        .call("POST", "/posts/refused/retry/x%2Fdefault", None)
        .await;
    assert_eq!(code, 502, "{v}");
    assert_eq!(v["reopened"][0]["from"], "failed", "{v}");
    assert_eq!(v["results"][0]["error_kind"], "rejected", "{v}");
    assert_eq!(tweets_with(&x, "file words again"), 2);
    x.set_mode(Mode::Normal);
    let (code, v) = d.call("POST", "/posts/refused/retry/x/default", None).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["results"][0]["state"], "published", "{v}");
    assert_eq!(tweets_with(&x, "file words again"), 3);
    let (code, v) = d.call("POST", "/posts/api-refused/retry", None).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(tweets_with(&x, "api words again"), 2);

    // Nothing more to retry; unknown posts and targets are 404s.
    let (code, v) = d.call("POST", "/posts/refused/retry", None).await;
    assert_eq!(code, 409, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("already published"),
        "{v}"
    );
    let (code, v) = d.call("POST", "/posts/no-such-post/retry", None).await;
    assert_eq!(code, 404, "{v}");
    let (code, v) = d.call("POST", "/posts/refused/retry/mastodon", None).await;
    assert_eq!(code, 404, "{v}");
    assert!(v["error"].as_str().unwrap().contains("x/default"), "{v}");

    // The history shows the user's retries.
    let v = d.get("/posts/refused").await;
    let asked: Vec<Option<&str>> = v["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["user_retry"].as_str())
        .collect();
    assert_eq!(asked, [None, Some("failed"), Some("failed")], "{v}");
    assert_eq!(v["deliveries"][0]["user_retries"], 2, "{v}");

    // Published now: reading it again sends nothing.
    drop_file(&posts, "refused-4.toml", text.as_bytes());
    wait_read(&d, "refused", "refused-4.toml").await;
    assert_eq!(tweets_with(&x, "file words again"), 3);
    d.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_post_stays_cancelled_when_read_or_sent_again() {
    let w = daemon_world();
    let posts = w.home.path().join("posts");
    let d = start_daemon(&w.home);

    // Scheduled through the API, cancelled, sent again: still cancelled.
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let api_post =
        json!({"id": "cancel-api", "text": "not tomorrow", "to": ["x"], "schedule": later});
    let (code, v) = d.call("POST", "/publish", Some(api_post.clone())).await;
    assert_eq!(code, 200, "{v}");
    let r = w.home.run(&["posts", "cancel", "cancel-api"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    for _ in 0..2 {
        let (code, v) = d.call("POST", "/publish", Some(api_post.clone())).await;
        assert_eq!(code, 200, "{v}");
        assert_eq!(v["results"][0]["state"], "cancelled", "{v}");
    }
    let v = d.get("/posts/cancel-api").await;
    assert_eq!(v["deliveries"][0]["state"], "cancelled", "{v}");

    // Due now, failed on a server error (nothing posted), cancelled:
    // reading the file again once Mastodon is back does not send it.
    w.mastodon.set_mode(Mode::ServerError);
    let text = "id = \"cancel-file\"\ntext = \"never mind\"\nto = [\"mastodon/social\"]\n";
    drop_file(&posts, "cancel.toml", text.as_bytes());
    d.wait_for("/posts", "the rate-limited post", |v| {
        listed(v, "cancel-file").is_some_and(|p| p["deliveries"][0]["state"] == "failed")
    })
    .await;
    let r = w.home.run(&["posts", "cancel", "cancel-file"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    w.mastodon.set_mode(Mode::Normal);
    for i in 1..=2 {
        let name = format!("cancel-{i}.toml");
        drop_file(&posts, &name, text.as_bytes());
        wait_read(&d, "cancel-file", &name).await;
    }
    let v = d.get("/posts/cancel-file").await;
    assert_eq!(v["deliveries"][0]["state"], "cancelled", "{v}");
    assert!(w.mastodon.posts().is_empty(), "a cancelled post went out");
    assert!(w.x.posts().is_empty(), "a cancelled post went out");

    // A retry brings them back: the scheduled one queued for its time,
    // the other sent now, once.
    let (code, v) = d.call("POST", "/posts/cancel-api/retry", None).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["results"][0]["state"], "queued", "{v}");
    let (code, v) = d
        .call("POST", "/posts/cancel-file/retry/mastodon", None)
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["results"][0]["state"], "published", "{v}");
    assert_eq!(w.mastodon.posts().len(), 1);
    assert!(w.x.posts().is_empty());
    let v = d.get("/posts/cancel-file").await;
    assert_eq!(
        v["attempts"].as_array().unwrap().last().unwrap()["user_retry"],
        "cancelled",
        "{v}"
    );
    d.stop();
}

// ------------------------------------------------ the watcher, by counts

/// The daemon's `GET /metrics`, as `name{labels}` → value.
async fn metrics(d: &Daemon) -> std::collections::HashMap<String, f64> {
    let text = d
        .http
        .get(format!("{}/metrics", d.base))
        .bearer_auth(&d.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// One counter from [`metrics`]; a series not (yet) exported reads 0.
fn count(m: &std::collections::HashMap<String, f64>, name: &str) -> f64 {
    m.get(name).copied().unwrap_or(0.0)
}

const PLUGIN_LOADS: &str = "outreach_plugin_loads_total";
const READS_IGNORED: &str = "outreach_watch_events_total{action=\"ignored\"}";

fn reloads(kind: &str) -> String {
    format!("outreach_reloads_total{{kind=\"{kind}\"}}")
}

fn unchanged(kind: &str) -> String {
    format!("outreach_reloads_unchanged_total{{kind=\"{kind}\"}}")
}

/// Poll `GET /metrics` until `ok` holds (10 s at most).
async fn wait_metrics(
    d: &Daemon,
    what: &str,
    ok: impl Fn(&std::collections::HashMap<String, f64>) -> bool,
) -> std::collections::HashMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = metrics(d).await;
        if ok(&m) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; metrics: {m:?}\nlog:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Drop a post file the daemon must act on, written after everything
/// before it, and wait until it has: file events reach the daemon in the
/// order they happened, so by then it has seen every earlier one.
async fn sentinel(d: &Daemon, posts: &Path, n: usize) {
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    drop_file(
        posts,
        &format!("sentinel-{n}.toml"),
        format!(
            "id = \"sentinel-{n}\"\ntext = \"sentinel {n}\"\nto = [\"x\"]\nschedule = \"{later}\"\n"
        )
        .as_bytes(),
    );
    let id = format!("sentinel-{n}");
    d.wait_for("/posts", &format!("{id} to be queued"), |v| {
        v.as_array().unwrap().iter().any(|p| p["post"]["id"] == id)
    })
    .await;
}

/// Log lines (after `from`) that say the watcher did something, other than
/// about the sentinel post files.
fn watcher_lines(log: &str, from: usize) -> Vec<String> {
    log[from..]
        .lines()
        .filter(|l| !l.contains("sentinel"))
        .filter(|l| {
            [
                "config reloaded",
                "plugin loaded",
                "plugin ready",
                "plugin unloaded",
                "plugin file",
                "post file",
                "post queued",
                "previous configuration",
                "still changing",
            ]
            .iter()
            .any(|w| l.contains(w))
        })
        .map(str::to_string)
        .collect()
}

/// Item 7: reading what the daemon watches — every read-only command, a
/// `cat` of the config, the post files and the plugins, the daemon's own
/// reads of a plugin it loads — makes it reload nothing, load no plugin
/// and log nothing about it; a write that leaves a file as it was does
/// nothing either; a real change is acted on once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_watched_files_reloads_nothing() {
    let w = daemon_world();
    let posts = w.home.path().join("posts");
    let plugins = w.home.plugins_dir();
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let post = format!(
        "id = \"later\"\ntext = \"later on\"\nto = [\"x\", \"mastodon/social\"]\nschedule = \"{later}\"\n"
    );
    drop_file(&posts, "later.toml", post.as_bytes());
    let d = start_daemon(&w.home);
    d.wait_for("/posts", "the queued post", |v| {
        v.as_array()
            .unwrap()
            .iter()
            .any(|p| p["post"]["id"] == "later")
    })
    .await;
    sentinel(&d, &posts, 0).await;
    let before = metrics(&d).await;
    let from = d.log().len();

    // Every read-only command, against the live daemon.
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["accounts"],
        &["accounts", "--json"],
        &["plugins"],
        &["plugins", "--json"],
        &["plugins", "show", "mastodon", "--json"],
        &["plugins", "show", "x"],
        &["posts"],
        &["posts", "--json"],
        &["posts", "show", "later"],
    ] {
        let r = run_as_is(&w.home, args);
        assert_eq!(r.code, 0, "{args:?}: {}", r.all());
    }
    // A `cat` of every watched file.
    let config = w.home.path().join("outreach.toml");
    let mut files = vec![config.clone(), posts.join("later.toml")];
    for e in std::fs::read_dir(&plugins).unwrap() {
        files.push(e.unwrap().path());
    }
    for f in &files {
        let ok = std::process::Command::new("cat")
            .arg(f)
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "cat {}", f.display());
    }
    sentinel(&d, &posts, 1).await;
    let lines = watcher_lines(&d.log(), from);
    assert!(
        lines.is_empty(),
        "the reads were acted on:\n{}",
        lines.join("\n")
    );
    // The reads reached the daemon, and it let them be.
    let after = metrics(&d).await;
    assert!(
        count(&after, READS_IGNORED) > count(&before, READS_IGNORED),
        "{after:?}"
    );
    assert_eq!(
        count(&after, PLUGIN_LOADS),
        count(&before, PLUGIN_LOADS),
        "plugins were loaded\n{}",
        d.log()
    );
    for kind in ["config", "plugin"] {
        assert_eq!(
            count(&after, &reloads(kind)),
            count(&before, &reloads(kind)),
            "{kind} reloaded\n{}",
            d.log()
        );
        assert_eq!(
            count(&after, &unchanged(kind)),
            count(&before, &unchanged(kind)),
            "{kind}"
        );
    }
    assert_eq!(
        count(&after, &reloads("post")),
        count(&before, &reloads("post")) + 1.0,
        "only the sentinel\n{}",
        d.log()
    );

    // Written again with the same bytes: nothing is reloaded or logged.
    let from = d.log().len();
    let same_config = std::fs::read(&config).unwrap();
    drop_file(config.parent().unwrap(), "outreach.toml", &same_config);
    drop_file(&posts, "later.toml", post.as_bytes());
    let mastodon = std::fs::read(plugins.join("mastodon.wasm")).unwrap();
    drop_file(&plugins, "mastodon.wasm", &mastodon);
    let m = wait_metrics(&d, "the unchanged writes", |m| {
        ["config", "post", "plugin"]
            .iter()
            .all(|k| count(m, &unchanged(k)) > count(&after, &unchanged(k)))
    })
    .await;
    assert_eq!(count(&m, PLUGIN_LOADS), count(&before, PLUGIN_LOADS));
    for kind in ["config", "plugin", "post"] {
        assert_eq!(
            count(&m, &reloads(kind)),
            count(&after, &reloads(kind)),
            "{kind}"
        );
    }
    let lines = watcher_lines(&d.log(), from);
    assert!(
        lines.is_empty(),
        "unchanged files were acted on:\n{}",
        lines.join("\n")
    );

    // A real change is loaded once; the daemon's own reads of the file it
    // loads start nothing more.
    let from = d.log().len();
    drop_file(&plugins, "mastodon.wasm", &tagged(&mastodon, "v2"));
    d.wait_for("/platforms", "version 2 serving", |v| {
        plugin_sha(v, "mastodon").is_some_and(|s| s == sha256_hex(&tagged(&mastodon, "v2")))
    })
    .await;
    sentinel(&d, &posts, 2).await;
    let end = metrics(&d).await;
    assert_eq!(
        count(&end, PLUGIN_LOADS),
        count(&before, PLUGIN_LOADS) + 1.0,
        "{}",
        d.log()
    );
    assert_eq!(
        count(&end, &reloads("plugin")),
        count(&before, &reloads("plugin")) + 1.0,
        "{}",
        d.log()
    );
    assert_eq!(
        count(&end, &reloads("config")),
        count(&before, &reloads("config")),
        "{}",
        d.log()
    );
    let loaded = d.log()[from..].matches("plugin loaded").count();
    assert_eq!(loaded, 1, "{}", &d.log()[from..]);
    // The counters count: the bundled plugins were loaded at start.
    assert_eq!(
        count(&before, PLUGIN_LOADS),
        bundled_count() as f64,
        "{before:?}"
    );
    d.stop();
}

/// The real binary with `home`'s config as it is on disk (`Home::run`
/// rewrites the config when its rendering differs, and it renders endpoint
/// sections in no fixed order).
fn run_as_is(home: &Home, args: &[&str]) -> Run {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_outreach"))
        .arg("--config")
        .arg(home.path().join("outreach.toml"))
        .args(args)
        .env("RUST_LOG", "debug")
        .env_remove("OUTREACH_CONFIG")
        .envs(home.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    run.assert_no_secrets();
    run
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn mkfifo(path: &Path) {
    let ok = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mkfifo {}", path.display());
}

/// Item 8: a FIFO named like a plugin or a post file — there at start or
/// made while running, or a link to one — is skipped with a warning and
/// never opened; the daemon starts, answers and keeps loading real files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifos_in_watched_folders_block_nothing() {
    let w = daemon_world();
    let plugins = w.home.plugins_dir();
    let posts = w.home.path().join("posts");
    let mastodon = std::fs::read(plugins.join("mastodon.wasm")).unwrap();
    std::fs::remove_file(plugins.join("mastodon.wasm")).unwrap();
    mkfifo(&plugins.join("early.wasm"));
    mkfifo(&posts.join("early.toml"));
    let d = start_daemon(&w.home);
    let health = d.get("/health").await;
    assert_eq!(health["plugins"], bundled_count() - 1, "{health}");
    let log = d.log();
    assert!(
        log.lines()
            .any(|l| l.contains("early.wasm") && l.contains("is a FIFO") && l.contains("skipped")),
        "{log}"
    );

    // Made while it runs, as a plugin, a link to a FIFO and a post file.
    mkfifo(&plugins.join("late.wasm"));
    std::os::unix::fs::symlink(plugins.join("late.wasm"), plugins.join("link.wasm")).unwrap();
    mkfifo(&posts.join("late.toml"));
    // A real plugin dropped after them is served: nothing waits on a FIFO.
    drop_file(&plugins, "mastodon.wasm", &mastodon);
    d.wait_for("/platforms", "mastodon", |v| {
        plugin_sha(v, "mastodon").is_some()
    })
    .await;
    let problems = d
        .wait_for("/problems", "the FIFOs", |v| {
            ["late.wasm", "link.wasm", "late.toml", "early.toml"]
                .iter()
                .all(|f| v.to_string().contains(f))
        })
        .await;
    assert!(problems.to_string().contains("FIFO"), "{problems}");
    let platforms = d.get("/platforms").await;
    assert_eq!(
        platforms["plugins"].as_array().unwrap().len(),
        bundled_count(),
        "{platforms}"
    );
    // And a post written now goes through.
    let (code, v) = d.call("POST", "/publish", Some(toot("after-fifos"))).await;
    assert_eq!(code, 200, "{v}");
    let r = w.home.run(&["status"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    d.stop();
}

/// A component that passes every check made from its bytes — it imports
/// nothing and exports the world's function names — but whose core module
/// has `funcs` functions of real code, so compiling it takes a while; its
/// functions have the wrong types, so it is refused after compiling.
fn slow_component(funcs: usize) -> Vec<u8> {
    let mut body = String::new();
    for i in 0..funcs {
        body.push_str(&format!(
            "(func (export \"f{i}\") (param i32 i32) (result i32)"
        ));
        for k in 0..60 {
            body.push_str(&format!(
                " local.get 0 local.get 1 i32.const {k} i32.mul i32.add i32.const {i} i32.xor local.set 0 (if (i32.eqz (local.get 0)) (then (local.set 1 (i32.const {k}))))"
            ));
        }
        body.push_str(" local.get 0)\n");
    }
    let exports: String = ["describe", "validate", "publish", "profile", "find-post"]
        .iter()
        .map(|e| format!("(export \"{e}\" (func $f))\n"))
        .collect();
    wat::parse_str(format!(
        r#"(component
             (core module $m
               (func (export "main") (result i32) i32.const 7)
               {body})
             (core instance $i (instantiate $m))
             (func $f (result u32) (canon lift (core func $i "main")))
             {exports})"#
    ))
    .unwrap()
}

/// Item 9: a plugin that takes long to compile delays no other file: one
/// dropped right after it is serving while it still compiles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_plugin_delays_no_other_file() {
    let w = daemon_world();
    let plugins = w.home.plugins_dir();
    let mastodon = std::fs::read(plugins.join("mastodon.wasm")).unwrap();
    std::fs::remove_file(plugins.join("mastodon.wasm")).unwrap();
    let slow = slow_component(SLOW_FUNCS);
    let d = start_daemon(&w.home);
    let t0 = Instant::now();
    drop_file(&plugins, "slow.wasm", &slow);
    // Let the daemon take up slow.wasm first (a few debounce periods; its
    // compile takes seconds), then give it another file.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop_file(&plugins, "mastodon.wasm", &mastodon);
    let p = d
        .wait_for("/platforms", "mastodon", |v| {
            plugin_sha(v, "mastodon").is_some()
        })
        .await;
    let served = t0.elapsed();
    assert_eq!(
        p["rejected"],
        json!([]),
        "mastodon waited for slow.wasm to compile ({served:?})\n{}",
        d.log()
    );
    // The slow one is refused once compiled (no sooner: nothing in its
    // bytes says it will be).
    let deadline = Instant::now() + Duration::from_secs(180);
    let p = loop {
        let p = d.get("/platforms").await;
        if !p["rejected"].as_array().unwrap().is_empty() {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "slow.wasm never finished\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "mastodon served after {served:?}, slow.wasm refused after {:?}",
        t0.elapsed()
    );
    let why = p["rejected"][0]["error"].as_str().unwrap();
    assert!(
        p["rejected"][0]["path"]
            .as_str()
            .unwrap()
            .ends_with("/slow.wasm"),
        "{p}"
    );
    assert!(why.contains("plugin` world"), "{why}");
    d.stop();
}

/// About two seconds of compiling on a small machine.
const SLOW_FUNCS: usize = 600;

/// Issue 11: the control API takes its token whatever the case of the
/// `Bearer` scheme (RFC 9110: authentication schemes are case-insensitive)
/// and with more than one space after it; another scheme, or the right
/// token without a scheme, is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_api_takes_bearer_in_any_case() {
    let w = daemon_world();
    let d = start_daemon(&w.home);
    let status = |value: String| {
        let req = d
            .http
            .get(format!("{}/health", d.base))
            .header("authorization", value);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        assert_eq!(
            status(format!("{scheme} {}", d.token)).await,
            200,
            "{scheme}"
        );
    }
    assert_eq!(status(format!("bearer   {}", d.token)).await, 200);
    for (i, refused) in [
        format!("Basic {}", d.token),
        d.token.clone(),
        "bearer".to_string(),
        format!("bearer {}x", d.token),
    ]
    .into_iter()
    .enumerate()
    {
        assert_eq!(status(refused).await, 401, "refused value {i}");
    }
    d.stop();
}

/// A post the platform accepted but is still processing outlives the
/// `publish` that sent it: the journal keeps it `processing` (a re-run does
/// not send it again), and a daemon started afterwards asks the platform
/// until it is published.
#[test]
fn a_post_still_processing_is_settled_by_the_daemon_after_publish_exits() {
    let mut home = Home::new();
    let (hostile, _) = hostile_plugins();
    std::fs::copy(&hostile, home.plugins_dir().join("hostile.wasm")).unwrap();
    home.extra_config
        .push_str("\n[publish]\npending_wait_secs = 2\n");
    let r = home.run(
        &["accounts", "add", "hostile"],
        Some("h-PLANTED-processing"),
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let post = home.post(
        "slow.toml",
        "id = \"slow\"\ntext = \"slow:6000\"\nto = [\"hostile\"]\n",
    );
    let r = home.run(&["publish", post.to_str().unwrap()], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("accepted as slow-") && r.stdout.contains("the daemon keeps asking"),
        "{}",
        r.stdout
    );
    let state = |home: &Home| -> (String, String) {
        let v: Value =
            serde_json::from_str(&home.run(&["posts", "show", "slow", "--json"], None).stdout)
                .unwrap();
        (
            v["deliveries"][0]["state"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            v["deliveries"][0]["platform_id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )
    };
    assert_eq!(state(&home).0, "processing");
    // A re-run sends nothing: it is the platform's to finish.
    let r = home.run(&["publish", post.to_str().unwrap()], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("still processing"), "{}", r.stdout);
    let v: Value =
        serde_json::from_str(&home.run(&["posts", "show", "slow", "--json"], None).stdout).unwrap();
    assert_eq!(v["attempts"].as_array().unwrap().len(), 1, "{v}");

    let daemon = start_daemon(&home);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (s, id) = state(&home);
        if s == "published" {
            assert!(id.starts_with("post-of-slow-"), "{id}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {s} after a minute:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let log = daemon.stop();
    assert!(
        log.contains("a post the platform was processing settled"),
        "{log}"
    );
}

/// A plugin replaced while the daemon runs, declaring a new host: `GET
/// /platforms` shows the host awaiting approval and the accounts it
/// concerns, and `POST /platforms/{id}/approve` approves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_shows_and_approves_hosts_a_hot_reloaded_plugin_added() {
    let mut home = Home::new();
    home.extra_config.push_str(DAEMON_CONFIG);
    let (hostile, _) = hostile_plugins();
    let installed = home.plugins_dir().join("hostile.wasm");
    std::fs::copy(&hostile, &installed).unwrap();
    let r = home.run(
        &["accounts", "add", "hostile"],
        Some("h-PLANTED-api-approve"),
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let d = start_daemon(&home);
    let awaiting = |v: &Value| -> Value {
        v["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == "hostile")
            .map(|p| p["awaiting_approval"].clone())
            .unwrap_or(Value::Null)
    };
    assert_eq!(awaiting(&d.get("/platforms").await), json!([]));

    let patched = hostile_with_extra_endpoint(&hostile, "https://new-host.invalid");
    let tmp = home.path().join("hostile.wasm.new");
    std::fs::write(&tmp, &patched).unwrap();
    std::fs::rename(&tmp, &installed).unwrap();

    let v = d
        .wait_for("/platforms", "the new host awaiting approval", |v| {
            awaiting(v) == json!(["https://new-host.invalid:443"])
        })
        .await;
    let row = v["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "hostile")
        .unwrap()
        .clone();
    assert_eq!(
        row["awaiting_accounts"],
        json!(["hostile/default"]),
        "{row}"
    );
    let accounts = d.get("/accounts").await;
    assert_eq!(
        accounts[0]["token_health"]["awaiting_approval"],
        json!(["https://new-host.invalid:443"]),
        "{accounts}"
    );
    let (code, v) = d.call("POST", "/platforms/hostile/approve", None).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["hosts"], json!(["https://new-host.invalid:443"]), "{v}");
    assert_eq!(awaiting(&d.get("/platforms").await), json!([]));
    let (code, _) = d.call("POST", "/platforms/nope/approve", None).await;
    assert_eq!(code, 404);
    d.stop();
}

/// Connecting through the control API: `POST /connect` answers with the
/// platform's authorize address; the browser comes back to the daemon's
/// loopback listener; `GET /connect/{id}` says which accounts were stored.
/// Credentials that are typed or pasted are not taken over the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_connect_through_the_control_api() {
    let x = fake_x();
    let mut home = Home::new();
    home.extra_config.push_str(DAEMON_CONFIG);
    home.endpoint("x", "api", &x.url())
        .endpoint("x", "authorize", &format!("{}/i/oauth2/authorize", x.url()))
        .endpoint("x", "token", &format!("{}/2/oauth2/token", x.url()));
    home.extra_config.push_str(&format!(
        "\n[platforms.x]\nclient_id = \"{}\"\nclient_secret_env = \"OUTREACH_TEST_X_SECRET\"\n",
        support::oauth::CLIENT_ID
    ));
    home.env.push((
        "OUTREACH_TEST_X_SECRET".into(),
        support::oauth::CLIENT_SECRET.into(),
    ));
    let d = start_daemon(&home);
    let (code, v) = d
        .call(
            "POST",
            "/connect",
            Some(json!({"platform": "x", "account": "api"})),
        )
        .await;
    assert_eq!(code, 202, "{v}");
    let url = v["authorize_url"].as_str().unwrap().to_string();
    let id = v["connect"].as_str().unwrap().to_string();
    let page = reqwest::Client::new()
        .get(&url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("outreach is connected"), "{page}");
    let v = d
        .wait_for(&format!("/connect/{id}"), "the connection settled", |v| {
            v["state"] != "waiting"
        })
        .await;
    assert_eq!(v["state"], "connected", "{v}");
    assert_eq!(v["accounts"], json!(["x/api"]), "{v}");
    let accounts = d.get("/accounts").await;
    assert!(accounts.to_string().contains("x/api"), "{accounts}");

    let (code, v) = d
        .call("POST", "/connect", Some(json!({"platform": "devto"})))
        .await;
    assert_eq!(code, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("outreach accounts add devto"),
        "{v}"
    );
    let (code, _) = d.call("GET", "/connect/nope", None).await;
    assert_eq!(code, 404);
    d.stop();
}

/// The daemon's media listener (`[media]`), probed with a real HTTP
/// client while Instagram holds its answer to the container that fetched a
/// photo from it: the file answers GET, HEAD and byte ranges with its type
/// and length; a wrong token, another name, a path around the share, the
/// control API's routes and other methods do not; the address stops
/// working when its time is up, and once the delivery has settled.
#[test]
fn the_media_listener_serves_only_shared_files_while_they_are_needed() {
    use support::meta::{fetch, request};
    let ig = support::meta::fake_instagram();
    let (mut home, base) = support::meta::meta_home("instagram", &ig);
    home.extra_config.push_str("ttl_secs = 2\n");
    home.limits = vec![("http_timeout_ms", 10_000), ("publish_timeout_ms", 30_000)];
    let photo = support::meta::jpeg("served photo");
    let posts = home.path().join("posts");
    std::fs::create_dir_all(&posts).unwrap();
    std::fs::write(posts.join("shop.jpg"), &photo).unwrap();
    std::fs::write(home.path().join("secret.txt"), "PLANTED not for the world").unwrap();
    ig.expect_media("shop.jpg", &photo);
    ig.kv_set("hold_ms", json!(3000));
    let d = start_daemon(&home);
    std::fs::write(
        posts.join("shop.toml"),
        "text = \"The shop\"\nto = [\"instagram\"]\n[[media]]\npath = \"shop.jpg\"\n",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let url = loop {
        if let Some(u) = ig.kv("held_url") {
            break u.as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "no container\n{}", d.log());
        std::thread::sleep(Duration::from_millis(20));
    };
    let seen_at = Instant::now();
    assert!(url.starts_with(&format!("{base}/")), "{url}");
    let (status, headers, body) = fetch(&url, &[]).unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, photo);
    assert_eq!(headers["content-type"], "image/jpeg");
    assert_eq!(headers["content-length"], photo.len().to_string());
    let (status, headers, body) = request("HEAD", &url, &[]).unwrap();
    assert_eq!((status, body.len()), (200, 0));
    assert_eq!(headers["content-length"], photo.len().to_string());
    let (status, headers, body) = fetch(&url, &[("Range", "bytes=2-5")]).unwrap();
    assert_eq!(status, 206);
    assert_eq!(body, photo[2..6]);
    assert_eq!(
        headers["content-range"],
        format!("bytes 2-5/{}", photo.len())
    );
    let (status, _, _) = fetch(&url, &[("Range", "bytes=99999-")]).unwrap();
    assert_eq!(status, 416);
    let (status, _, _) = request("POST", &url, &[]).unwrap();
    assert_eq!(status, 405);
    let (dir, name) = url.rsplit_once('/').unwrap();
    let (root, token) = dir.rsplit_once('/').unwrap();
    let origin = base.trim_end_matches("/media");
    let wrong = format!("{root}/{}/{name}", "f".repeat(token.len()));
    let others = [
        wrong,
        format!("{dir}/secret.txt"),
        format!("{dir}/..%2F..%2Fsecret.txt"),
        format!("{dir}/../shop.jpg"),
        format!("{root}/{token}"),
        format!("{root}/"),
        format!("{origin}/"),
        format!("{origin}/status"),
        format!("{origin}/accounts"),
        format!("{origin}/posts"),
        format!("{origin}/metrics"),
        format!("{origin}/platforms"),
    ];
    for other in &others {
        let (status, _, body) = fetch(other, &[]).unwrap();
        assert_eq!(status, 404, "{other}");
        assert!(body.is_empty(), "{other}");
    }
    // The same routes answer on the control API (with a token required).
    let (status, _, _) = fetch(&format!("{}/status", d.base), &[]).unwrap();
    assert_eq!(status, 401);
    // Its time is up while the delivery still runs: gone.
    std::thread::sleep(Duration::from_millis(2200).saturating_sub(seen_at.elapsed()));
    let (status, _, _) = fetch(&url, &[]).unwrap();
    assert_eq!(status, 404);
    // The post went out with the photo Instagram fetched.
    while ig.posts().is_empty() {
        assert!(Instant::now() < deadline, "not published\n{}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        ig.fetches().iter().all(|f| f["ok"] == true),
        "{:?}",
        ig.fetches()
    );
    let log = d.stop();
    assert!(!log.contains(token), "the share's token is not logged");
}

/// A long upload through the daemon: its progress shows in `GET
/// /posts/{id}` and the metrics while it runs; the daemon is killed in the
/// middle; `outreach posts retry` then resumes the same YouTube session
/// where YouTube says it stopped — no second session, no byte sent from
/// zero — and the session URL (a capability) shows nowhere.
#[test]
fn a_killed_upload_resumes_where_the_platform_says_it_stopped() {
    let yt = support::video::fake_youtube();
    let home = support::video::youtube_home(&yt);
    let posts = home.path().join("posts");
    std::fs::create_dir_all(&posts).unwrap();
    let size: u64 = 160 << 20;
    let hash = support::video::write_video(&posts.join("long.mp4"), size);
    yt.kv_set("chunk_delay_ms", json!(150));
    let mut d = start_daemon(&home);
    std::fs::write(
        posts.join("long.toml"),
        "id = \"long\"\ntitle = \"The long one\"\ntext = \"All of it\"\nto = [\"youtube\"]\n[[media]]\npath = \"long.mp4\"\n",
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let progress = loop {
        let (code, v) = rt.block_on(d.try_call("GET", "/posts/long", None)).unwrap();
        if code == 200
            && v["uploads"]["youtube/default"]["sent_bytes"]
                .as_u64()
                .unwrap_or(0)
                > 0
        {
            break v["uploads"]["youtube/default"].clone();
        }
        assert!(Instant::now() < deadline, "no progress shown\n{}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(progress["total_bytes"], size, "{progress}");
    assert!(
        progress["sent_bytes"].as_u64().unwrap() < size,
        "{progress}"
    );
    let (_, metrics) = rt.block_on(d.try_call("GET", "/metrics", None)).unwrap();
    assert!(
        metrics
            .as_str()
            .unwrap_or("")
            .contains("outreach_uploaded_bytes_total{platform=\"youtube\"}"),
        "{metrics}"
    );
    // Killed with some 48 MiB up.
    while yt.upload("yt-session-PLANTED-1").map_or(0, |u| u.0) < 48 << 20 {
        assert!(Instant::now() < deadline, "the upload stalled\n{}", d.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    d.child.kill().unwrap();
    d.child.wait().unwrap();
    let log = d.log();
    assert!(!log.contains("PLANTED"), "a capability leaked:\n{log}");
    let before = yt.upload("yt-session-PLANTED-1").unwrap().0;
    assert!(before < size);
    yt.kv_set("chunk_delay_ms", json!(0));
    let r = home.run(&["posts", "retry", "long"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("watch?v=vid1"), "{}", r.stdout);
    let (received, fnv, _) = yt.upload("yt-session-PLANTED-1").unwrap();
    assert_eq!(
        (received, fnv),
        (size, hash),
        "the whole file, once, in order"
    );
    assert_eq!(
        yt.kv("sessions"),
        Some(json!(1)),
        "the same session resumed"
    );
    assert!(yt.kv("status_queries").and_then(|v| v.as_u64()) >= Some(1));
    // Settled: nothing left to resume.
    let aux = home.path().join("store/.aux");
    let left: Vec<_> = std::fs::read_dir(&aux)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        !left
            .iter()
            .any(|n| n.to_string_lossy().starts_with("checkpoint-")),
        "{left:?}"
    );
    let shown = home.run(&["posts", "show", "long", "--json"], None);
    assert_eq!(shown.code, 0, "{}", shown.all());
}

// ------------------------------------------------------------- the web UI

/// A browser's view of the web UI: cookies kept by hand, redirects not
/// followed, so every answer can be checked.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookie: Option<String>,
}

struct Page {
    code: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Browser {
    fn new(base: &str) -> Self {
        Browser {
            http: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: base.to_string(),
            cookie: None,
        }
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> Page {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        };
        let mut req = self.http.request(method.parse().unwrap(), url);
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let r = req.send().await.expect("the daemon answers");
        Page {
            code: r.status().as_u16(),
            headers: r.headers().clone(),
            body: r.text().await.unwrap_or_default(),
        }
    }

    async fn get(&self, path: &str) -> Page {
        self.send("GET", path, &[], None).await
    }

    /// A form post from the daemon's own page, with the session's token.
    async fn form(&self, path: &str, csrf: &str, fields: &[(&str, &str)]) -> Page {
        let mut body = url::form_urlencoded::Serializer::new(String::new());
        body.append_pair("_csrf", csrf);
        for (k, v) in fields {
            body.append_pair(k, v);
        }
        let origin = self.base.clone();
        self.send(
            "POST",
            path,
            &[
                ("origin", &origin),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            Some(body.finish()),
        )
        .await
    }

    async fn json(&self, path: &str, csrf: &str, v: &Value) -> (u16, Value) {
        let origin = self.base.clone();
        let p = self
            .send(
                "POST",
                path,
                &[
                    ("origin", &origin),
                    ("x-csrf-token", csrf),
                    ("content-type", "application/json"),
                ],
                Some(v.to_string()),
            )
            .await;
        (
            p.code,
            serde_json::from_str(&p.body).unwrap_or(Value::String(p.body)),
        )
    }
}

fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"csrf-token\" content=\"")
        .expect("a csrf meta tag");
    let rest = &html[at + "name=\"csrf-token\" content=\"".len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

/// A browser signed in through `outreach ui`'s one-time link.
async fn signed_in(d: &Daemon, home: &Home) -> Browser {
    let mut b = Browser::new(&d.base);
    let p = b.get(&ui_link(home)).await;
    let set = p.headers["set-cookie"].to_str().unwrap();
    b.cookie = Some(set.split(';').next().unwrap().to_string());
    b
}

fn ui_link(home: &Home) -> String {
    let r = home.run(&["ui", "--no-browser"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    r.stdout.trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_ui_signs_in_once_and_refuses_forged_requests() {
    let mut w = daemon_world();
    w.home.extra_config.push_str("signin_link_secs = 2\n");
    let d = start_daemon(&w.home);
    let b0 = Browser::new(&d.base);

    // Nothing without a session; the JSON API keeps its bearer token.
    let p = b0.get("/ui/").await;
    assert_eq!(p.code, 401, "{}", p.body);
    assert!(p.body.contains("outreach ui"), "{}", p.body);
    let (code, _) = d.call("GET", "/accounts", None).await;
    assert_eq!(code, 200);
    let p = b0.send("POST", "/signin-links", &[], None).await;
    assert_eq!(p.code, 401, "minting a link needs the bearer token");

    // The link signs in once.
    let link = ui_link(&w.home);
    assert!(
        link.starts_with(&format!("{}/ui/signin/", d.base)),
        "{link}"
    );
    let p = b0.get(&link).await;
    assert_eq!(p.code, 303);
    assert_eq!(p.headers["location"], "/ui/");
    let set = p.headers["set-cookie"].to_str().unwrap().to_string();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(flag), "{set}");
    }
    assert!(!set.contains("Secure"), "plain http on loopback: {set}");
    let p = b0.get(&link).await;
    assert_eq!(p.code, 401, "a link works once");
    let mut b = Browser::new(&d.base);
    b.cookie = Some(set.split(';').next().unwrap().to_string());

    // A link past its time signs nobody in.
    let late = ui_link(&w.home);
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert_eq!(b0.get(&late).await.code, 401, "an expired link");

    // Every page: the security headers, the accounts, no secret.
    let dash = b.get("/ui/").await;
    assert_eq!(dash.code, 200, "{}", dash.body);
    for id in ["x/default", "linkedin/default", "mastodon/social"] {
        assert!(
            dash.body.contains(&format!("data-account=\"{id}\"")),
            "{id}: {}",
            dash.body
        );
    }
    let csrf = csrf_of(&dash.body);
    for path in [
        "/ui/",
        "/ui/connect",
        "/ui/compose",
        "/ui/posts",
        "/ui/calendar",
        "/ui/calendar?view=week",
        "/ui/live/accounts",
        "/ui/accounts/x/default/disconnect",
    ] {
        let p = b.get(path).await;
        assert_eq!(p.code, 200, "{path}: {}", p.body);
        let csp = p.headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(p.headers["x-frame-options"], "DENY");
        assert!(!p.body.contains("PLANTED"), "{path} shows a secret");
        assert!(!p.body.contains("<script>"), "{path}: inline script");
    }
    let asset = b0.get("/ui/assets/app.js").await;
    assert_eq!(asset.code, 200);
    assert!(
        asset.headers["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable")
    );

    // DNS rebinding: another name for this address is refused.
    let host = format!("evil.example:{}", d.base.rsplit(':').next().unwrap());
    let p = b.send("GET", "/ui/", &[("host", &host)], None).await;
    assert_eq!(p.code, 421, "{}", p.body);
    // Changes need this daemon's Origin and the session's CSRF token.
    let p = b
        .send(
            "POST",
            "/ui/accounts/x/default/refresh",
            &[
                ("origin", "http://evil.example"),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            Some(format!("_csrf={csrf}")),
        )
        .await;
    assert_eq!(p.code, 403, "{}", p.body);
    let p = b
        .form("/ui/accounts/x/default/refresh", "not-the-token", &[])
        .await;
    assert_eq!(p.code, 403, "{}", p.body);
    let p = b.form("/ui/accounts/x/default/refresh", &csrf, &[]).await;
    assert_eq!(p.code, 303, "{}", p.body);

    // The composer's check counts by each platform's rule: X weighs a URL
    // as 23, whatever its length.
    let text = format!("{} https://example.org/{}", "a".repeat(257), "p".repeat(60));
    let (code, v) = b
        .json(
            "/ui/compose/check",
            &csrf,
            &json!({"text": text, "to": ["x", "mastodon/social"]}),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    let m = |t: &str| {
        v["measures"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["target"] == t)
            .unwrap()
            .clone()
    };
    assert_eq!(m("x/default")["items"][0]["count"], 281, "{v}");
    assert_eq!(m("x/default")["items"][0]["over"], true, "{v}");
    assert_eq!(m("x/default")["counting"], "x-weighted");
    assert_eq!(m("mastodon/social")["items"][0]["over"], false, "{v}");
    assert!(v["problems"].to_string().contains("x/default"), "{v}");
    let (_, v) = b
        .json(
            "/ui/compose/check",
            &csrf,
            &json!({"text": "a".repeat(280), "to": ["x"]}),
        )
        .await;
    assert_eq!(v["measures"][0]["items"][0]["over"], false, "{v}");
    assert_eq!(v["problems"], json!([]), "{v}");
    // Without the token the check is refused too.
    let (code, _) = b
        .json(
            "/ui/compose/check",
            "wrong",
            &json!({"text": "t", "to": ["x"]}),
        )
        .await;
    assert_eq!(code, 403);

    // A draft is a post file in the drafts folder; it is never published.
    let (code, v) = b
        .json(
            "/ui/compose/draft",
            &csrf,
            &json!({"text": "draft {{access_token}}", "to": ["x"], "draft": "launch"}),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    let saved = std::fs::read_to_string(w.home.path().join("drafts/launch.toml")).unwrap();
    assert!(saved.contains("draft {{access_token}}"), "{saved}");
    let (code, v) = b
        .json(
            "/ui/compose/draft",
            &csrf,
            &json!({"text": "t", "to": ["x"], "draft": "../escape"}),
        )
        .await;
    assert_eq!(code, 400, "{v}");
    let p = b.get("/ui/compose?draft=launch").await;
    assert_eq!(p.code, 200);
    assert!(
        p.body.contains("draft {{access_token}}"),
        "the draft loads into the composer"
    );

    // Uploads keep only a file name, inside the media folder.
    let p = b
        .send(
            "POST",
            "/ui/media",
            &[
                ("origin", &d.base.clone()),
                ("x-csrf-token", &csrf),
                ("x-file-name", "..%2F..%2Fevil.png"),
            ],
            Some(String::from_utf8_lossy(&png_bytes()).into_owned()),
        )
        .await;
    assert_eq!(p.code, 200, "{}", p.body);
    let v: Value = serde_json::from_str(&p.body).unwrap();
    let path = std::path::PathBuf::from(v["path"].as_str().unwrap());
    assert!(
        path.starts_with(w.home.path().join("posts/media")),
        "{path:?}"
    );
    assert!(
        path.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .ends_with("evil.png")
    );

    // Publish from the composer: the same journal as the CLI.
    let (code, v) = b
        .json(
            "/ui/compose/publish",
            &csrf,
            &json!({"text": "from the web", "to": ["x"]}),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["results"][0]["state"], "published", "{v}");
    assert_eq!(w.x.posts().len(), 1, "one tweet");
    // Publish pressed again: the same post, not sent twice.
    let (code, v) = b
        .json(
            "/ui/compose/publish",
            &csrf,
            &json!({"text": "from the web", "to": ["x"]}),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["results"][0]["already"], true, "{v}");
    assert_eq!(w.x.posts().len(), 1, "still one tweet");
    let posts = b.get("/ui/posts").await;
    assert!(posts.body.contains("from the web"), "{}", posts.body);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(w.x.posts().len(), 1, "the draft was not published");

    // Sign out ends the session.
    let p = b.form("/ui/signout", &csrf, &[]).await;
    assert_eq!(p.code, 200);
    assert!(
        p.headers["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    assert_eq!(b.get("/ui/").await.code, 401);
    let log = d.stop();
    assert!(!log.contains("/ui/signin/"), "the link is never logged");
}

/// Records written straight into the store with the library's API (what
/// 117 connects would leave): X accounts `acct-NNNN`, every tenth one's
/// grant gone, with an error that holds markup and a template.
fn seed_x_accounts(home: &Home, n: usize) {
    use outreach::secret::Secret;
    use outreach::store::{
        AccountId, AccountState, AgeDirStore, CredentialStore, Health, Identity, Profile, Record,
    };
    let identity = Identity::load_or_create(&home.path().join("identity.txt"), || None).unwrap();
    let store = AgeDirStore::open(&home.path().join("store"), identity).unwrap();
    let now = chrono::Utc::now();
    for i in 0..n {
        let gone = i % 10 == 0;
        store
            .save(&Record {
                version: Record::VERSION,
                id: AccountId::new("x", &format!("acct-{i:04}")).unwrap(),
                access_token: Secret::new(format!("dash-access-{i}-zq")),
                refresh_token: Some(Secret::new(format!("dash-refresh-{i}-zq"))),
                expires_in: Some(7200),
                expires_at: Some(now + chrono::Duration::minutes(90)),
                refresh_expires_at: None,
                scope: String::new(),
                profile: Profile {
                    id: format!("{}", 7_000_000 + i),
                    name: format!("Dash Person {i}"),
                    handle: Some(format!("dash_{i}")),
                    picture: None,
                    url: None,
                },
                created_at: now - chrono::Duration::days(3),
                last_refreshed: Some(now - chrono::Duration::minutes(30)),
                settings: Default::default(),
                health: Health {
                    state: if gone {
                        AccountState::NeedsReconnect
                    } else {
                        AccountState::Healthy
                    },
                    last_error: gone
                        .then(|| "<script>alert(1)</script> {{access_token}} revoked".to_string()),
                    failures: 0,
                    retry_at: None,
                },
                hosts: None,
                scopes_asked: None,
                saved_login: None,
            })
            .unwrap();
    }
}

fn cards(html: &str) -> Vec<(String, String)> {
    html.split("<article class=\"card\" data-account=\"")
        .skip(1)
        .map(|rest| {
            let id = rest[..rest.find('"').unwrap()].to_string();
            let h = rest.split("data-health=\"").nth(1).unwrap();
            (id, h[..h.find('"').unwrap()].to_string())
        })
        .collect()
}

/// 120 accounts: the dashboard counts them by health, shows 50 a page with
/// those needing the user first, filters by health, platform and name (in
/// the page and in its live part), clamps a page past the end, escapes what
/// it is given, and shows no token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_counts_filters_and_pages_many_accounts() {
    let w = daemon_world();
    seed_x_accounts(&w.home, 117);
    let d = start_daemon(&w.home);
    let b = signed_in(&d, &w.home).await;
    let leaks = |body: &str| body.contains("dash-access-") || body.contains("dash-refresh-");

    let dash = b.get("/ui/").await;
    assert_eq!(dash.code, 200);
    assert!(!leaks(&dash.body), "a token in the dashboard");
    let shown = cards(&dash.body);
    assert_eq!(shown.len(), 50, "50 accounts a page");
    assert!(dash.body.contains("120 of 120 accounts"), "{}", dash.body);
    assert!(dash.body.contains("page 1 of 3"));
    // The twelve whose grant is gone come first, in name order.
    for (i, (id, health)) in shown.iter().enumerate() {
        if i < 12 {
            assert_eq!(health, "needs-reconnect", "{id}");
            assert_eq!(id, &format!("x/acct-{:04}", i * 10));
        } else {
            assert_ne!(health, "needs-reconnect", "{id}");
        }
    }
    assert!(
        dash.body.contains(
            "data-health-count=\"needs-reconnect\">needs reconnect <span class=\"count\">12</span>"
        ),
        "the count of accounts needing a reconnect"
    );
    // The platform's error is shown as text, never as markup.
    assert!(!dash.body.contains("<script>alert"));
    assert!(
        dash.body
            .contains("&lt;script&gt;alert(1)&lt;/script&gt; {{access_token}} revoked")
    );

    let only = b.get("/ui/?health=needs-reconnect").await;
    let c = cards(&only.body);
    assert_eq!(c.len(), 12);
    assert!(c.iter().all(|(_, h)| h == "needs-reconnect"));
    assert!(
        only.body
            .contains("data-poll=\"/ui/live/accounts?health=needs-reconnect\""),
        "the live part keeps the filter"
    );
    let live = b.get("/ui/live/accounts?health=needs-reconnect").await;
    assert_eq!(cards(&live.body).len(), 12);
    assert!(!leaks(&live.body));

    let c = cards(&b.get("/ui/?platform=linkedin").await.body);
    assert_eq!(
        c,
        vec![("linkedin/default".to_string(), "valid".to_string())]
    );
    let c = cards(&b.get("/ui/?q=ACCT-0042").await.body);
    assert_eq!(c.len(), 1, "a name, in any case");
    assert_eq!(c[0].0, "x/acct-0042");
    let c = cards(&b.get("/ui/?q=dash+person+11").await.body);
    assert_eq!(c.len(), 8, "profile names: 11 and 110 to 116");

    let last = b.get("/ui/?page=3").await;
    assert_eq!(cards(&last.body).len(), 20);
    assert!(last.body.contains("rel=\"prev\""));
    let past = b.get("/ui/?page=999").await;
    assert_eq!(past.code, 200);
    assert_eq!(
        cards(&past.body).len(),
        20,
        "a page past the end shows the last"
    );

    // What the user typed comes back escaped, in the form and in the URLs.
    let hostile = b
        .get("/ui/?q=%22%3E%3Cscript%3E%7B%7Baccess_token%7D%7D&platform=..%2F..%2Fetc&health=%3Cb%3E")
        .await;
    assert_eq!(hostile.code, 200);
    assert!(cards(&hostile.body).is_empty());
    assert!(!hostile.body.contains("\"><script>"));
    assert!(hostile.body.contains("0 of 120 accounts"));
    assert!(!leaks(&hostile.body));
    let bad = b.get("/ui/?page=-1").await;
    assert_eq!(bad.code, 400, "a page that is not a number");
    d.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_ui_connects_by_oauth_and_by_key_and_disconnects_after_confirmation() {
    let x = fake_x();
    let devto = fake_devto();
    let mut home = Home::new();
    home.extra_config.push_str(DAEMON_CONFIG);
    home.endpoint("x", "api", &x.url())
        .endpoint("x", "authorize", &format!("{}/i/oauth2/authorize", x.url()))
        .endpoint("x", "token", &format!("{}/2/oauth2/token", x.url()))
        .endpoint("devto", "api", &devto.url());
    home.extra_config.push_str(&format!(
        "\n[platforms.x]\nclient_id = \"{}\"\nclient_secret_env = \"OUTREACH_TEST_X_SECRET\"\n",
        support::oauth::CLIENT_ID
    ));
    home.env.push((
        "OUTREACH_TEST_X_SECRET".into(),
        support::oauth::CLIENT_SECRET.into(),
    ));
    let d = start_daemon(&home);
    let b = signed_in(&d, &home).await;
    let page = b.get("/ui/connect").await;
    assert!(page.body.contains("data-connect=\"x\""), "{}", page.body);
    assert!(page.body.contains("data-connect=\"devto\""));
    let csrf = csrf_of(&page.body);

    // OAuth: the form sends the browser to the platform, which sends it
    // back to the daemon's own /callback; no cookie goes on that redirect.
    let p = b.form("/ui/connect/x", &csrf, &[("account", "web")]).await;
    assert_eq!(p.code, 303, "{}", p.body);
    let authorize = p.headers["location"].to_str().unwrap().to_string();
    assert!(authorize.starts_with(&x.url()), "{authorize}");
    let redirect = url::Url::parse(&authorize)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "redirect_uri")
        .unwrap()
        .1
        .into_owned();
    assert_eq!(redirect, format!("{}/callback", d.base));
    let landing = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(&authorize)
        .send()
        .await
        .unwrap();
    assert_eq!(landing.status().as_u16(), 200);
    let html = landing.text().await.unwrap();
    assert!(html.contains("outreach is connected"), "{html}");
    assert!(
        html.contains("/ui/"),
        "a link back to the dashboard: {html}"
    );
    assert!(!html.contains("PLANTED"));
    // The same state again, or a forged one: nothing waits for it.
    let p = b0_get(&d.base, "/callback?code=stolen&state=forged").await;
    assert_eq!(p, 400);
    let dash = b.get("/ui/").await;
    assert!(
        dash.body.contains("data-account=\"x/web\""),
        "{}",
        dash.body
    );

    // A key: checked with the platform, never shown again.
    let p = b
        .form(
            "/ui/connect/devto",
            &csrf,
            &[("account", "blog"), ("secret", "devkey-wrong")],
        )
        .await;
    assert_eq!(p.code, 303);
    let again = b.get(p.headers["location"].to_str().unwrap()).await;
    assert!(
        again.body.contains("flash bad"),
        "a refused key is reported: {}",
        again.body
    );
    assert!(
        !again.body.contains("devkey-wrong"),
        "the secret is never echoed"
    );
    let p = b
        .form(
            "/ui/connect/devto",
            &csrf,
            &[("account", "blog"), ("secret", DEVTO_KEY)],
        )
        .await;
    assert_eq!(p.code, 303);
    if p.headers["location"] != "/ui/" {
        let why = b.get(p.headers["location"].to_str().unwrap()).await;
        let at = why.body.find("flash").unwrap_or(0);
        panic!(
            "not connected: {}",
            &why.body[at..(at + 600).min(why.body.len())]
        );
    }
    let dash = b.get("/ui/").await;
    assert!(
        dash.body.contains("data-account=\"devto/blog\""),
        "{}",
        dash.body
    );
    assert!(dash.body.contains("connected devto/blog"), "{}", dash.body);
    assert!(!dash.body.contains("PLANTED"));

    // The dashboard's live part: unchanged is 304, a change shows.
    let live = b.get("/ui/live/accounts").await;
    let etag = live.headers["etag"].to_str().unwrap().to_string();
    let p = b
        .send(
            "GET",
            "/ui/live/accounts",
            &[("if-none-match", &etag)],
            None,
        )
        .await;
    assert_eq!(p.code, 304);

    // Disconnect asks first; the account goes only on the confirmation.
    let confirm = b.get("/ui/accounts/devto/blog/disconnect").await;
    assert!(
        confirm.body.contains("confirm-disconnect"),
        "{}",
        confirm.body
    );
    assert!(b.get("/ui/").await.body.contains("devto/blog"));
    let p = b
        .form("/ui/accounts/devto/blog/disconnect", &csrf, &[])
        .await;
    assert_eq!(p.code, 303);
    let dash = b.get("/ui/").await;
    assert!(
        !dash.body.contains("data-account=\"devto/blog\""),
        "{}",
        dash.body
    );
    assert!(dash.body.contains("removed devto/blog"), "{}", dash.body);
    let p = b
        .send(
            "GET",
            "/ui/live/accounts",
            &[("if-none-match", &etag)],
            None,
        )
        .await;
    assert_eq!(p.code, 200, "the change shows in the live part");
    assert!(!p.body.contains("devto/blog"), "{}", p.body);
    d.stop();
}

async fn b0_get(base: &str, path: &str) -> u16 {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{base}{path}"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}
