//! Publishing end to end: the real `outreach` binary and the real built X,
//! LinkedIn, Mastodon, Bluesky, Discord and DEV plugins against local
//! fakes of each platform.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::meta::{jpeg, meta_home, mp4};
use support::video::youtube_home;
use support::*;

const HELLO: &str = r#"
text = "Hello (world) from outreach #rust_lang https://example.org/a/very/long/path/that/counts/as/twenty-three"
to = ["x", "linkedin", "mastodon/*"]
[override.mastodon]
visibility = "unlisted"
"#;

#[test]
fn publishes_one_file_to_three_platforms() {
    let w = World::new().with_accounts();
    let post = w.home.post("hello.toml", HELLO);
    let r = w
        .home
        .run(&["publish", post.to_str().unwrap(), "--json"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    let out: Value = serde_json::from_str(&r.stdout).unwrap();
    let results = out["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert!(results.iter().all(|t| t["ok"] == true), "{results:?}");

    // X: the spec-validated body, the receipt URL built from the handle.
    let x = w.x.posts();
    assert_eq!(x.len(), 1);
    assert!(
        x[0].1["text"]
            .as_str()
            .unwrap()
            .starts_with("Hello (world)")
    );
    let xr = results.iter().find(|t| t["target"] == "x/default").unwrap();
    assert_eq!(
        xr["url"],
        format!("https://x.com/xdevelopers/status/{}", x[0].0)
    );

    // LinkedIn: author from the OIDC `sub`, escaped commentary, URN from
    // the x-restli-id header.
    let li = w.linkedin.posts();
    assert_eq!(li.len(), 1);
    assert_eq!(li[0].1["author"], format!("urn:li:person:{LINKEDIN_SUB}"));
    assert!(
        li[0].1["commentary"]
            .as_str()
            .unwrap()
            .starts_with("Hello \\(world\\) from outreach \\#rust\\_lang")
    );
    let lr = results
        .iter()
        .find(|t| t["target"] == "linkedin/default")
        .unwrap();
    assert_eq!(lr["post_id"], li[0].0.as_str());
    assert_eq!(
        lr["url"],
        format!("https://www.linkedin.com/feed/update/{}/", li[0].0)
    );
    let seen = w.linkedin.seen();
    let post_req = seen.iter().find(|s| s.path == "/rest/posts").unwrap();
    assert_eq!(post_req.headers["x-restli-protocol-version"], "2.0.0");
    assert_eq!(post_req.headers["linkedin-version"], "202601");

    // Mastodon: the override applied, an idempotency key sent.
    let md = w.mastodon.posts();
    assert_eq!(md.len(), 1);
    assert_eq!(md[0].1["visibility"], "unlisted");
    let seen = w.mastodon.seen();
    let status_req = seen.iter().find(|s| s.path == "/api/v1/statuses").unwrap();
    assert_eq!(status_req.headers["idempotency-key"].len(), 36);
    let mr = results
        .iter()
        .find(|t| t["target"] == "mastodon/social")
        .unwrap();
    assert_eq!(
        mr["url"],
        format!("{}/@trwnh/{}", w.mastodon.url(), md[0].0)
    );

    // Every request carried the right bearer token, added by the host.
    assert!(
        w.x.seen()
            .iter()
            .all(|s| s.headers["authorization"] == format!("Bearer {X_TOKEN}"))
    );
    assert!(
        w.x.seen()
            .iter()
            .all(|s| s.headers["user-agent"].starts_with("outreach/"))
    );

    // The same file again: Mastodon's idempotency key suppresses a
    // duplicate on the platform side (the outbox of issue #4 will stop the
    // others from being re-sent at all).
    let again = w.home.run(&["publish", post.to_str().unwrap()], None);
    assert_eq!(again.code, 0, "{}", again.all());
    assert_eq!(w.mastodon.posts().len(), 1);
}

#[test]
fn accounts_are_listed_without_secrets_and_stored_encrypted() {
    let w = World::new().with_accounts();
    let r = w.home.run(&["accounts", "--json"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    let list: Value = serde_json::from_str(&r.stdout).unwrap();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["linkedin/default", "mastodon/social", "x/default"]);
    let md = list
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == "mastodon/social")
        .unwrap();
    assert_eq!(md["profile"]["handle"], "trwnh");
    assert_eq!(md["settings"]["instance"], w.mastodon.url());

    // On disk: one age file per account, 0600, no plaintext token.
    use std::os::unix::fs::PermissionsExt;
    for (file, secret) in [
        ("x/default.age", X_TOKEN),
        ("linkedin/default.age", LINKEDIN_TOKEN),
        ("mastodon/social.age", MASTODON_TOKEN),
    ] {
        let path = w.home.path().join("store").join(file);
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            bytes.starts_with(b"age-encryption.org/v1"),
            "{file} is not an age file"
        );
        assert!(!String::from_utf8_lossy(&bytes).contains(secret));
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let ident = w.home.path().join("identity.txt");
    assert_eq!(
        std::fs::metadata(&ident).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let r = w.home.run(&["accounts", "remove", "x"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    let r = w.home.run(&["accounts"], None);
    assert!(!r.stdout.contains("x/default"), "{}", r.stdout);
}

#[test]
fn a_rejected_credential_is_not_stored() {
    let w = World::new();
    let r = w
        .home
        .run(&["accounts", "add", "x"], Some("not-the-right-token"));
    assert_ne!(r.code, 0);
    assert!(
        r.stderr
            .contains("did not accept the credential for x/default"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("nothing was stored"), "{}", r.stderr);
    assert!(!w.home.path().join("store/x/default.age").exists());

    let r = w
        .home
        .run(&["accounts", "add", "mastodon"], Some(MASTODON_TOKEN));
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("needs setting `instance`"),
        "{}",
        r.stderr
    );
}

#[test]
fn dry_run_shows_requests_with_secrets_redacted_and_sends_nothing() {
    let w = World::new().with_accounts();
    let post = w.home.post("hello.toml", HELLO);
    let before = (
        w.x.seen().len(),
        w.linkedin.seen().len(),
        w.mastodon.seen().len(),
    );
    let r = w
        .home
        .run(&["publish", post.to_str().unwrap(), "--dry-run"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains(&format!("POST {}/2/tweets", w.x.url())),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("authorization: Bearer [redacted]"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("LinkedIn-Version: 202601"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("Idempotency-Key: "), "{}", r.stdout);
    assert_eq!(
        before,
        (
            w.x.seen().len(),
            w.linkedin.seen().len(),
            w.mastodon.seen().len()
        )
    );
}

#[test]
fn validation_stops_everything_before_sending() {
    let w = World::new().with_accounts();
    let long = "é".repeat(281);
    let post = w.home.post(
        "long.toml",
        &format!("text = \"{long}\"\nto = [\"x\", \"mastodon/social\"]\n[override.mastodon]\ntext = \"short\"\n"),
    );
    let r = w.home.run(&["publish", post.to_str().unwrap()], None);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr
            .contains("x/default: text: is 281 characters long; the limit is 280"),
        "{}",
        r.stderr
    );
    assert!(w.x.posts().is_empty() && w.mastodon.posts().is_empty());

    let r = w.home.run(
        &["publish", post.to_str().unwrap(), "--check", "--json"],
        None,
    );
    assert_eq!(r.code, 2);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["problems"][0]["target"], "x/default");
    assert_eq!(v["problems"][0]["field"], "text");

    // X counts every URL as 23: a long URL fits.
    let url_post = w.home.post(
        "url.toml",
        &format!(
            "text = \"{} https://example.org/{}\"\nto = [\"x\"]\n",
            "a".repeat(250),
            "p".repeat(200)
        ),
    );
    let r = w
        .home
        .run(&["publish", url_post.to_str().unwrap(), "--check"], None);
    assert_eq!(r.code, 0, "{}", r.all());
}

#[test]
fn one_failing_platform_does_not_stop_the_others() {
    let w = World::new().with_accounts();
    // A request that reached X and failed there may or may not have posted:
    // it is recorded `unknown` and never silently re-sent; a refusal or a
    // 429 means nothing was posted: `failed`, retried on the next run.
    for (i, (mode, state, kind, words)) in [
        (Mode::Expired, "failed", "auth-expired", "HTTP 401"),
        (Mode::RateLimited, "failed", "rate-limited", "retry in"),
        (Mode::ServerError, "unknown", "transient", "HTTP 500"),
        (
            Mode::Html,
            "unknown",
            "transient",
            "an HTML page titled \"502 Bad Gateway\"",
        ),
        (Mode::Truncated, "unknown", "outcome-unknown", "cut off"),
    ]
    .into_iter()
    .enumerate()
    {
        let post = w.home.post(&format!("p{i}.toml"), HELLO);
        w.x.set_mode(mode.clone());
        let r = w
            .home
            .run(&["publish", post.to_str().unwrap(), "--json"], None);
        assert_eq!(r.code, 1, "{mode:?}: {}", r.all());
        let v: Value = serde_json::from_str(&r.stdout).unwrap();
        let results = v["results"].as_array().unwrap();
        let x = results.iter().find(|t| t["target"] == "x/default").unwrap();
        assert_eq!(x["ok"], false);
        assert_eq!(x["state"], state, "{mode:?}: {x}");
        assert_eq!(x["error_kind"], kind, "{mode:?}: {x}");
        assert!(
            x["error"].as_str().unwrap().contains(words),
            "{mode:?}: {x}"
        );
        assert!(
            results
                .iter()
                .filter(|t| t["target"] != "x/default")
                .all(|t| t["ok"] == true),
            "{mode:?}: {results:?}"
        );
    }
    // Failed targets are retried by the next run; published ones are not.
    w.x.set_mode(Mode::Normal);
    let before = (w.linkedin.posts().len(), w.mastodon.posts().len());
    let r = w.home.run(
        &[
            "publish",
            w.home.path().join("p1.toml").to_str().unwrap(),
            "--json",
        ],
        None,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(before, (w.linkedin.posts().len(), w.mastodon.posts().len()));
    // An unknown outcome is reported again, not re-sent, on X.
    let x_before = w.x.posts().len();
    let r = w.home.run(
        &["publish", w.home.path().join("p2.toml").to_str().unwrap()],
        None,
    );
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stdout.contains("not re-sent"), "{}", r.stdout);
    assert_eq!(w.x.posts().len(), x_before);
}

#[test]
fn learned_rate_limit_holds_back_the_next_request() {
    let w = World::new().with_accounts();
    let post = w
        .home
        .post("m.toml", "text = \"hi\"\nto = [\"mastodon/social\"]\n");
    w.mastodon.set_mode(Mode::RateLimited);
    let r = w
        .home
        .run(&["publish", post.to_str().unwrap(), "--json"], None);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["results"][0]["error_kind"], "rate-limited", "{}", r.all());
    assert_eq!(w.mastodon.posts().len(), 0);
}

#[test]
fn bad_post_files_give_one_clear_error() {
    let w = World::new().with_accounts();
    let cases = [
        (
            "unknown-key.toml",
            "text = \"hi\"\nto = [\"x\"]\ncolour = \"red\"\n",
            "unknown field `colour`",
        ),
        (
            "unknown-platform.toml",
            "text = \"hi\"\nto = [\"myspace\"]\n",
            "no plugin provides platform `myspace`",
        ),
        (
            "missing-account.toml",
            "text = \"hi\"\nto = [\"x/bob\"]\n",
            "there is no account x/bob",
        ),
        (
            "no-targets.toml",
            "text = \"hi\"\nto = []\n",
            "has no targets",
        ),
        ("broken.toml", "text = \"hi\nto = [\"x\"]\n", "is not valid"),
    ];
    for (name, body, expect) in cases {
        let p = w.home.post(name, body);
        let r = w.home.run(&["publish", p.to_str().unwrap()], None);
        assert_ne!(r.code, 0, "{name}");
        assert!(r.stderr.contains(expect), "{name}: {}", r.stderr);
        assert!(
            r.stderr.contains(name) || expect.contains("platform") || expect.contains("account"),
            "{name}: {}",
            r.stderr
        );
        assert_eq!(
            r.stderr
                .trim()
                .lines()
                .filter(|l| l.starts_with("error"))
                .count(),
            1,
            "{name}: {}",
            r.stderr
        );
    }
    let line = w.home.run(
        &[
            "publish",
            w.home.path().join("unknown-key.toml").to_str().unwrap(),
        ],
        None,
    );
    assert!(line.stderr.contains("line 3"), "{}", line.stderr);
    assert!(w.x.posts().is_empty());
}

#[test]
fn malformed_config_is_reported_with_file_and_line() {
    let mut home = Home::new();
    home.extra_config = "\n[http]\nuser_agnt = \"me\"\n".into();
    let r = home.run(&["plugins"], None);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("outreach.toml is not valid"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("user_agnt"), "{}", r.stderr);
}

fn results(stdout: &str) -> Vec<Value> {
    let v: Value = serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    v["results"].as_array().unwrap().clone()
}

#[test]
fn threads_are_published_in_order_with_explicit_parents_and_only_once() {
    let w = World::new().with_accounts();
    let post = w.home.post(
        "thread.toml",
        r#"
id = "thread-1"
text = "1/3 the start"
to = ["x", "mastodon/social"]
[[thread]]
text = "2/3 the middle"
[[thread]]
text = "3/3 the end"
"#,
    );
    let r = w
        .home
        .run(&["publish", post.to_str().unwrap(), "--json"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    for (fake, parent_field) in [
        (&w.x, "/reply/in_reply_to_tweet_id"),
        (&w.mastodon, "/in_reply_to_id"),
    ] {
        let posts = fake.posts();
        assert_eq!(posts.len(), 3);
        assert!(posts[0].1.pointer(parent_field).is_none());
        assert_eq!(
            posts[1].1.pointer(parent_field).and_then(Value::as_str),
            Some(posts[0].0.as_str())
        );
        assert_eq!(
            posts[2].1.pointer(parent_field).and_then(Value::as_str),
            Some(posts[1].0.as_str())
        );
        let texts: Vec<&str> = posts
            .iter()
            .map(|(_, b)| {
                b.get("text")
                    .or(b.get("status"))
                    .and_then(Value::as_str)
                    .unwrap()
            })
            .collect();
        assert_eq!(texts, ["1/3 the start", "2/3 the middle", "3/3 the end"]);
    }
    let res = results(&r.stdout);
    let x = res.iter().find(|t| t["target"] == "x/default").unwrap();
    assert_eq!(x["thread"].as_array().unwrap().len(), 2);

    // Running the file again sends nothing: every item is already out.
    let again = w.home.run(&["publish", post.to_str().unwrap()], None);
    assert_eq!(again.code, 0, "{}", again.all());
    assert!(
        again.stdout.contains("already published"),
        "{}",
        again.stdout
    );
    assert_eq!((w.x.posts().len(), w.mastodon.posts().len()), (3, 3));

    // Changed content is a new post only when the user says so.
    std::fs::write(
        &post,
        std::fs::read_to_string(&post)
            .unwrap()
            .replace("the end", "the real end"),
    )
    .unwrap();
    let changed = w.home.run(&["publish", post.to_str().unwrap()], None);
    assert_eq!(changed.code, 2, "{}", changed.all());
    assert!(changed.stderr.contains("--new"), "{}", changed.stderr);
    assert_eq!(w.x.posts().len(), 3);
    let new = w
        .home
        .run(&["publish", post.to_str().unwrap(), "--new"], None);
    assert_eq!(new.code, 0, "{}", new.all());
    assert_eq!(w.x.posts().len(), 6);

    // History: every attempt with its outcome.
    let show = w.home.run(&["posts", "show", "thread-1", "--json"], None);
    assert_eq!(show.code, 0, "{}", show.all());
    let v: Value = serde_json::from_str(&show.stdout).unwrap();
    assert_eq!(v["deliveries"].as_array().unwrap().len(), 6);
    assert_eq!(v["attempts"].as_array().unwrap().len(), 6);
    assert!(
        v["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["outcome"] == "published")
    );

    // LinkedIn has no threads: validation says so before anything is sent.
    let li = w.home.post(
        "li-thread.toml",
        "text = \"a\"\nto = [\"linkedin\"]\n[[thread]]\ntext = \"b\"\n",
    );
    let r = w.home.run(&["publish", li.to_str().unwrap()], None);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("linkedin/default: thread[0].thread: this platform does not support threads"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_429_delays_only_that_platform() {
    let w = World::new().with_accounts();
    w.x.set_mode(Mode::RateLimitedOnce);
    let post = w.home.post("rl.toml", HELLO);
    let started = std::time::Instant::now();
    let r = w
        .home
        .run(&["publish", post.to_str().unwrap(), "--json"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(results(&r.stdout).iter().all(|t| t["ok"] == true));
    let x_seen: Vec<_> =
        w.x.seen()
            .into_iter()
            .filter(|s| s.path == "/2/tweets")
            .collect();
    assert_eq!(x_seen.len(), 2, "one 429, then the post");
    assert!(x_seen[1].at.duration_since(x_seen[0].at) >= std::time::Duration::from_millis(950));
    // The others did not wait for X.
    let li = w
        .linkedin
        .seen()
        .into_iter()
        .find(|s| s.path == "/rest/posts")
        .unwrap();
    let md = w
        .mastodon
        .seen()
        .into_iter()
        .find(|s| s.path == "/api/v1/statuses")
        .unwrap();
    assert!(li.at < x_seen[1].at && md.at < x_seen[1].at);
    assert!(started.elapsed() >= std::time::Duration::from_secs(1));
    assert_eq!(w.x.posts().len(), 1);
}

#[test]
fn scheduled_posts_wait_publish_once_and_can_be_cancelled() {
    let mut w = World::new().with_accounts();
    w.home
        .extra_config
        .push_str("\n[publish]\nlate_after_secs = 1\n");
    let at = |secs: i64| (chrono::Utc::now() + chrono::Duration::seconds(secs)).to_rfc3339();
    let soon = w.home.post(
        "soon.toml",
        &format!(
            "id = \"soon\"\ntext = \"later\"\nto = [\"mastodon/social\"]\nschedule = \"{}\"\n",
            at(2)
        ),
    );
    let r = w.home.run(&["publish", soon.to_str().unwrap()], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("queued for"), "{}", r.stdout);
    let cancel_me = w.home.post(
        "cancel.toml",
        &format!(
            "id = \"cancel-me\"\ntext = \"never\"\nto = [\"x\"]\nschedule = \"{}\"\n",
            at(1)
        ),
    );
    assert_eq!(
        w.home
            .run(&["publish", cancel_me.to_str().unwrap()], None)
            .code,
        0
    );
    assert_eq!(w.home.run(&["posts", "cancel", "cancel-me"], None).code, 0);

    let list: Value = serde_json::from_str(&w.home.run(&["posts", "--json"], None).stdout).unwrap();
    let states: Vec<(String, String)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["post"]["id"].as_str().unwrap().to_string(),
                p["deliveries"][0]["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        states.contains(&("soon".into(), "queued".into())),
        "{states:?}"
    );
    assert!(
        states.contains(&("cancel-me".into(), "cancelled".into())),
        "{states:?}"
    );

    // Not yet due: nothing happens.
    let r = w.home.run(&["posts", "due"], None);
    assert!(r.stdout.contains("no posts are due"), "{}", r.stdout);
    assert!(w.mastodon.posts().is_empty());
    // Due (and, with nothing running at the time, late): published once.
    std::thread::sleep(std::time::Duration::from_millis(3500));
    let r = w.home.run(&["posts", "due", "--json"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    let reports: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(reports.as_array().unwrap().len(), 1, "{reports}");
    assert_eq!(reports[0]["post"], "soon");
    assert_eq!(reports[0]["late"], true, "{reports}");
    assert_eq!(w.mastodon.posts().len(), 1);
    let r = w.home.run(&["posts", "due"], None);
    assert!(r.stdout.contains("no posts are due"), "{}", r.stdout);
    assert_eq!(w.mastodon.posts().len(), 1);
    assert!(w.x.posts().is_empty(), "the cancelled post never went out");
}

#[test]
fn content_rules_are_checked_per_platform_before_anything_is_sent() {
    let mut home = Home::new();
    let reddit = fake_lab(support::oauth::Flavor::Reddit);
    let ig = fake_lab(support::oauth::Flavor::Instagram);
    for (platform, feature) in [("reddit", "reddit"), ("instagram", "instagram")] {
        std::fs::copy(
            test_plugin(
                "outreach-oauth-lab",
                Some(feature),
                &format!("{platform}.wasm"),
            ),
            home.plugins_dir().join(format!("{platform}.wasm")),
        )
        .unwrap();
    }
    home.endpoint("reddit", "api", &reddit.url());
    home.endpoint("instagram", "api", &ig.url());
    for (fake, platform) in [(&reddit, "reddit"), (&ig, "instagram")] {
        let token = format!("{platform}-lab-PLANTED-token");
        fake.state.oauth.lock().unwrap().access.insert(
            token.clone(),
            std::time::Instant::now() + std::time::Duration::from_secs(600),
        );
        let r = home.run(&["accounts", "add", platform], Some(&token));
        assert_eq!(r.code, 0, "{}", r.all());
    }
    std::fs::write(home.path().join("photo.png"), png_bytes()).unwrap();
    let mut clip = vec![0u8; 2 << 20];
    clip[..MP4.len()].copy_from_slice(MP4);
    std::fs::write(home.path().join("clip.mp4"), clip).unwrap();
    let post = home.post(
        "rules.toml",
        r#"
text = "look"
to = ["reddit", "instagram"]
[[media]]
path = "photo.png"
[[media]]
path = "clip.mp4"
public_url = "https://cdn.example/clip.mp4"
"#,
    );
    let r = home.run(
        &["publish", post.to_str().unwrap(), "--check", "--json"],
        None,
    );
    assert_eq!(r.code, 2, "{}", r.all());
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    let got: Vec<String> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{} {} {}",
                p["target"].as_str().unwrap(),
                p["field"].as_str().unwrap(),
                p["message"].as_str().unwrap()
            )
        })
        .collect();
    let expect = [
        "reddit/default title is required",
        "reddit/default media[0] image attachments are not supported",
        "instagram/default media[0] type image/png is not accepted",
        "instagram/default media[0] this platform fetches media from a public URL",
        "instagram/default media[1] clip.mp4 is 2097152 bytes; the limit is 1048576",
    ];
    for e in expect {
        assert!(
            got.iter().any(|g| g.starts_with(e)),
            "missing {e:?} in {got:#?}"
        );
    }
    // Text alone is not enough for Instagram.
    let text_only = home.post(
        "text.toml",
        "text = \"hi\"\ntitle = \"t\"\nto = [\"instagram\"]\n",
    );
    let r = home.run(&["publish", text_only.to_str().unwrap(), "--check"], None);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("instagram/default: media: this platform cannot publish text alone"),
        "{}",
        r.stderr
    );
    // A missing media file: one clear error, nothing published.
    let missing = home.post(
        "missing.toml",
        "text = \"hi\"\nto = [\"reddit\"]\n[[media]]\npath = \"nope.jpg\"\n",
    );
    let r = home.run(&["publish", missing.to_str().unwrap()], None);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("media[0]") && r.stderr.contains("nope.jpg"),
        "{}",
        r.stderr
    );
    assert_eq!(
        r.stderr.lines().filter(|l| l.starts_with("error")).count(),
        1,
        "{}",
        r.stderr
    );
}

/// SIGKILL in the middle of publishing 100 posts to three platforms, then
/// the same command again: every post is on every platform exactly once,
/// or — where the platform has no idempotency key and the kill fell while a
/// request was in flight — reported `unknown`. Never twice.
#[test]
fn a_kill_during_a_fan_out_never_duplicates_a_post() {
    let w = World::new().with_accounts();
    let files: Vec<String> = (0..100)
        .map(|i| {
            w.home
                .post(&format!("bulk{i:03}.toml"), &format!("text = \"bulk post {i}\"\nto = [\"x\", \"linkedin\", \"mastodon/social\"]\n"))
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let mut args = vec!["publish"];
    args.extend(files.iter().map(String::as_str));
    w.home.run(&["plugins"], None);
    let mut child = w
        .home
        .command(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill once a good part of the work is done.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while w.mastodon.posts().len() < 40 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let mut args_json = args.clone();
    args_json.push("--json");
    let r = w.home.run(&args_json, None);
    // One JSON report per file on stdout.
    let mut unknown = std::collections::HashSet::new();
    for doc in serde_json::Deserializer::from_str(&r.stdout).into_iter::<Value>() {
        let doc = doc.unwrap();
        for t in doc["results"].as_array().unwrap() {
            if t["state"] == "unknown" {
                unknown.insert((
                    doc["post"].as_str().unwrap().to_string(),
                    t["target"].as_str().unwrap().to_string(),
                ));
            }
        }
    }
    for (fake, target, text_field) in [
        (&w.x, "x/default", "text"),
        (&w.linkedin, "linkedin/default", "commentary"),
        (&w.mastodon, "mastodon/social", "status"),
    ] {
        let posts = fake.posts();
        for (i, file) in files.iter().enumerate() {
            let text = format!("bulk post {i}");
            let n = posts
                .iter()
                .filter(|(_, b)| b[text_field].as_str() == Some(&text))
                .count();
            let post_id = std::fs::canonicalize(file).unwrap().display().to_string();
            assert!(n <= 1, "{target}: `{text}` was published {n} times");
            if n == 0 {
                assert!(
                    unknown.contains(&(post_id, target.to_string())),
                    "{target}: `{text}` is missing and not reported unknown"
                );
            }
        }
    }
    // Mastodon honours idempotency keys: nothing there may stay unknown.
    assert!(
        unknown.iter().all(|(_, t)| t != "mastodon/social"),
        "{unknown:?}"
    );
    assert_eq!(w.mastodon.posts().len(), 100);
}

#[test]
fn media_is_uploaded_the_way_each_platform_wants() {
    let w = World::new().with_accounts();
    // A tiny but real PNG header; the fakes only check the framing.
    let png: Vec<u8> = [&b"\x89PNG\r\n\x1a\n"[..], &[7u8; 64]].concat();
    std::fs::write(w.home.path().join("logo.png"), &png).unwrap();
    std::fs::write(w.home.path().join("clip.mp4"), [MP4, &[1u8; 276]].concat()).unwrap();
    let post = w.home.post(
        "media.toml",
        r#"
text = "with a picture"
to = ["x", "linkedin", "mastodon/social"]
[[media]]
path = "logo.png"
alt = "The outreach logo"
"#,
    );
    let r = w
        .home
        .run(&["publish", post.to_str().unwrap(), "--json"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        results(&r.stdout).iter().all(|t| t["ok"] == true),
        "{}",
        r.stdout
    );

    // X: the simple upload, then the media id on the post.
    let up =
        w.x.seen()
            .into_iter()
            .find(|s| s.path == "/2/media/upload")
            .unwrap();
    let parts = multipart(&up).unwrap();
    assert!(
        parts
            .iter()
            .any(|p| p.name == "media_category" && p.data == "tweet_image")
    );
    assert_eq!(
        parts.iter().find(|p| p.name == "media").unwrap().data.len(),
        String::from_utf8_lossy(&png).len()
    );
    assert_eq!(
        w.x.posts()[0].1["media"]["media_ids"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // LinkedIn: initializeUpload, the bytes PUT to the upload URL, the URN
    // and alt text on the post.
    let li = w.linkedin.seen();
    assert!(
        li.iter()
            .any(|s| s.method == "PUT" && s.path.starts_with("/dms-uploads/"))
    );
    let content = &w.linkedin.posts()[0].1["content"]["media"];
    assert!(content["id"].as_str().unwrap().starts_with("urn:li:image:"));
    assert_eq!(content["altText"], "The outreach logo");
    // Mastodon: the description rides along with the file.
    let up = w
        .mastodon
        .seen()
        .into_iter()
        .find(|s| s.path == "/api/v2/media")
        .unwrap();
    let parts = multipart(&up).unwrap();
    assert_eq!(
        parts.iter().find(|p| p.name == "description").unwrap().data,
        "The outreach logo"
    );
    assert_eq!(
        w.mastodon.posts()[0].1["media_ids"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Several images on LinkedIn go out as a multi-image post.
    std::fs::write(w.home.path().join("two.png"), &png).unwrap();
    let pair = w.home.post(
        "pair.toml",
        "text = \"two pictures\"\nto = [\"linkedin\"]\n[[media]]\npath = \"logo.png\"\n[[media]]\npath = \"two.png\"\nalt = \"Second\"\n",
    );
    let r = w.home.run(&["publish", pair.to_str().unwrap()], None);
    assert_eq!(r.code, 0, "{}", r.all());
    let images = w.linkedin.posts()[1].1["content"]["multiImage"]["images"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(images.len(), 2);
    assert_eq!(images[1]["altText"], "Second");

    // Video on Mastodon is processed asynchronously: 202, poll, then post.
    let video = w.home.post(
        "video.toml",
        "text = \"a clip\"\nto = [\"mastodon/social\"]\n[[media]]\npath = \"clip.mp4\"\n",
    );
    let r = w.home.run(&["publish", video.to_str().unwrap()], None);
    assert_eq!(r.code, 0, "{}", r.all());
    let polls = w
        .mastodon
        .seen()
        .into_iter()
        .filter(|s| s.path.starts_with("/api/v1/media/"))
        .count();
    assert_eq!(polls, 2, "one 206, then 200");
    assert_eq!(w.mastodon.posts().len(), 2);

    // Video on X: initialize, append in 4 MiB segments, finalize, poll
    // STATUS until processed, then post.
    let mut long = std::fs::File::create(w.home.path().join("long.mp4")).unwrap();
    std::io::Write::write_all(&mut long, MP4).unwrap();
    long.set_len(9 << 20).unwrap();
    let xv = w.home.post(
        "xvideo.toml",
        "text = \"a longer clip\"\nto = [\"x\"]\n[[media]]\npath = \"long.mp4\"\n",
    );
    let r = w.home.run(&["publish", xv.to_str().unwrap()], None);
    assert_eq!(r.code, 0, "{}", r.all());
    let seen = w.x.seen();
    assert_eq!(
        seen.iter().filter(|s| s.path.ends_with("/append")).count(),
        3
    );
    assert_eq!(
        seen.iter()
            .filter(|s| s.path == "/2/media/upload" && s.method == "GET")
            .count(),
        2
    );
    let last = w.x.posts().last().unwrap().1.clone();
    assert!(
        last["media"]["media_ids"][0]
            .as_str()
            .unwrap()
            .starts_with("189")
    );

    // Video on LinkedIn: initializeUpload, one PUT per 4 MiB part with the
    // ETags collected, finalizeUpload, poll until AVAILABLE, then post.
    let li = w.home.post(
        "livideo.toml",
        "text = \"a clip for LinkedIn\"\ntitle = \"Launch\"\nto = [\"linkedin\"]\n[[media]]\npath = \"long.mp4\"\n",
    );
    let r = w.home.run(&["publish", li.to_str().unwrap()], None);
    assert_eq!(r.code, 0, "{}", r.all());
    let seen = w.linkedin.seen();
    assert_eq!(
        seen.iter()
            .filter(|s| s.path.starts_with("/dms-uploads/video/"))
            .count(),
        3
    );
    assert_eq!(
        seen.iter()
            .filter(|s| s.path.starts_with("/rest/videos/urn%3Ali%3Avideo"))
            .count(),
        3,
        "two PROCESSING, then AVAILABLE"
    );
    let last = w.linkedin.posts().last().unwrap().1.clone();
    assert_eq!(
        last["content"]["media"]["id"],
        "urn:li:video:C5F10AQ00000001"
    );
    assert_eq!(last["content"]["media"]["title"], "Launch");
    // Images and a video together are refused up front.
    let mixed = w.home.post(
        "mixed.toml",
        "text = \"both\"\nto = [\"linkedin\"]\n[[media]]\npath = \"logo.png\"\n[[media]]\npath = \"clip.mp4\"\n",
    );
    let r = w
        .home
        .run(&["publish", mixed.to_str().unwrap(), "--check"], None);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.all().contains("either images or one video"),
        "{}",
        r.all()
    );

    // An oversized video is refused before anything is sent.
    let mut big = std::fs::File::create(w.home.path().join("big.mp4")).unwrap();
    std::io::Write::write_all(&mut big, MP4).unwrap();
    big.set_len(100 << 20).unwrap();
    let too_big = w.home.post(
        "big.toml",
        "text = \"big\"\nto = [\"mastodon/social\"]\n[[media]]\npath = \"big.mp4\"\n",
    );
    let before = (w.x.seen().len(), w.mastodon.seen().len());
    let r = w.home.run(&["publish", too_big.to_str().unwrap()], None);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains(
            "mastodon/social: media[0]: big.mp4 is 104857600 bytes; the limit is 103809024"
        ),
        "{}",
        r.stderr
    );
    assert_eq!(before, (w.x.seen().len(), w.mastodon.seen().len()));
}

/// A home with the Bluesky fake wired in and one account connected with an
/// app password read from standard input.
fn bluesky_home() -> (Fake, Home) {
    let bsky = fake_bluesky();
    let mut home = Home::new();
    home.bluesky(&bsky);
    let r = home.run(
        &["connect", "bluesky", "--username", "alice.test"],
        Some(support::oauth::APP_PASSWORD),
    );
    assert_eq!(r.code, 0, "{}", r.all());
    (bsky, home)
}

/// Bluesky through the real plugin: a thread whose replies reference the
/// root and parent records by uri and cid; links and hashtags become
/// facets at UTF-8 byte offsets (an emoji before them is 4 bytes, 1
/// grapheme); an image is uploaded as a blob and embedded with its alt
/// text; receipts link to bsky.app.
#[test]
fn bluesky_threads_carry_facets_images_and_strong_reply_refs() {
    let (bsky, home) = bluesky_home();
    let r = home.run(&["accounts", "--json"], None);
    assert!(r.stdout.contains("Alice Lab"), "{}", r.stdout);
    assert!(r.stdout.contains("alice.test"), "{}", r.stdout);
    let png: Vec<u8> = [&b"\x89PNG\r\n\x1a\n"[..], &[7u8; 64]].concat();
    std::fs::write(home.path().join("logo.png"), &png).unwrap();
    let first = "Launch day 🚀 https://example.org/launch?ref=bsky. Thanks #rustlang!";
    let post = home.post(
        "bsky.toml",
        &format!(
            r#"
text = "{first}"
to = ["bluesky"]
[[media]]
path = "logo.png"
alt = "The outreach logo"
[[thread]]
text = "2/3 details"
[[thread]]
text = "3/3 the end"
"#
        ),
    );
    let r = home.run(&["publish", post.to_str().unwrap(), "--json"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    let out: Vec<Value> = results(&r.stdout);
    assert!(out.iter().all(|t| t["ok"] == true), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("https://bsky.app/profile/alice.test/post/3lab0001"),
        "{}",
        r.stdout
    );
    let posts = bsky.posts();
    assert_eq!(posts.len(), 3);
    let (root_uri, root) = &posts[0];
    assert_eq!(root["text"], first);
    let facets = root["facets"].as_array().unwrap();
    let link_at = first.find("https://").unwrap();
    let link = "https://example.org/launch?ref=bsky";
    assert_eq!(facets[0]["index"]["byteStart"], link_at);
    assert_eq!(facets[0]["index"]["byteEnd"], link_at + link.len());
    assert_eq!(facets[0]["features"][0]["uri"], link);
    assert_eq!(facets[1]["features"][0]["tag"], "rustlang");
    assert_eq!(root["embed"]["images"][0]["alt"], "The outreach logo");
    assert!(root["reply"].is_null());
    for (i, (_, reply)) in posts.iter().enumerate().skip(1) {
        assert_eq!(reply["reply"]["root"]["uri"], root_uri.as_str());
        assert_eq!(reply["reply"]["parent"]["uri"], posts[i - 1].0.as_str());
        assert!(reply["reply"]["parent"]["cid"].is_string());
    }
    let upload = bsky
        .seen()
        .into_iter()
        .find(|s| s.path == "/xrpc/com.atproto.repo.uploadBlob")
        .unwrap();
    assert_eq!(upload.headers["content-type"], "image/png");
    assert_eq!(upload.headers["content-length"], png.len().to_string());
}

/// Bluesky's quirks: an expired access token is HTTP 400 `ExpiredToken`
/// (not 401) — the session is refreshed (the refresh JWT rotates) and the
/// post goes out once; 301 graphemes are refused before anything is sent,
/// while 300 emoji (1,200 bytes) are fine.
#[test]
fn bluesky_refreshes_an_expired_session_and_counts_graphemes() {
    let (bsky, home) = bluesky_home();
    {
        let mut o = bsky.state.oauth.lock().unwrap();
        let past = std::time::Instant::now() - std::time::Duration::from_secs(1);
        for exp in o.access.values_mut() {
            *exp = past;
        }
    }
    let post = home.post("one.toml", "text = \"still here\"\nto = [\"bluesky\"]\n");
    let r = home.run(&["publish", post.to_str().unwrap(), "--json"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(bsky.posts().len(), 1);
    let o = bsky.state.oauth.lock().unwrap();
    assert_eq!(o.refresh_calls, 1);
    assert_eq!(o.spent.len(), 1, "the refresh JWT rotated");
    drop(o);

    let seen_before = bsky.seen().len();
    let long = home.post(
        "long.toml",
        &format!("text = \"{}\"\nto = [\"bluesky\"]\n", "a".repeat(301)),
    );
    let r = home.run(&["publish", long.to_str().unwrap()], None);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("300"), "{}", r.stderr);
    assert_eq!(bsky.seen().len(), seen_before, "nothing was sent");
    let emoji = home.post(
        "emoji.toml",
        &format!("text = \"{}\"\nto = [\"bluesky\"]\n", "🦋".repeat(300)),
    );
    let r = home.run(&["publish", emoji.to_str().unwrap()], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(bsky.posts().len(), 2);
}

/// Discord through a webhook: the URL is read from standard input, checked
/// with the webhook's own GET and stored encrypted (a wrong one is refused
/// and nothing is stored); a post with a title, a link and an image goes
/// out as multipart with `payload_json`, mentions off, `?wait=true` (else
/// Discord returns no message id) and a `DiscordBot` user agent; the
/// receipt links to the message; the webhook URL appears in no output, not
/// even a dry run's; a deleted webhook asks for the account to be added
/// again.
#[test]
fn discord_webhooks_post_attachments_and_never_show_the_url() {
    let discord = fake_discord();
    let mut home = Home::new();
    home.endpoint("discord", "api", &format!("{}/api/v10", discord.url()));
    let base = format!("{}/api/webhooks/{DISCORD_WEBHOOK_ID}", discord.url());
    let add = ["accounts", "add", "discord", "--account", "team"];
    let r = home.run(&add, Some(&format!("{base}/not-the-token")));
    assert_ne!(r.code, 0);
    assert!(r.all().contains("Invalid Webhook Token"), "{}", r.all());
    assert!(!home.path().join("store/discord/team.age").exists());
    let r = home.run(&add, Some(&format!("{base}/{DISCORD_WEBHOOK_TOKEN}")));
    assert_eq!(r.code, 0, "{}", r.all());
    let r = home.run(&["accounts", "--json"], None);
    assert!(r.stdout.contains("Release bot"), "{}", r.stdout);

    let png: Vec<u8> = [&b"\x89PNG\r\n\x1a\n"[..], &[7u8; 64]].concat();
    std::fs::write(home.path().join("logo.png"), &png).unwrap();
    let post = home.post(
        "release.toml",
        r#"
title = "v1.2 is out"
text = "Changelog below, @everyone"
link = "https://example.org/v1.2"
to = ["discord/team"]
[[media]]
path = "logo.png"
alt = "The outreach logo"
"#,
    );
    let dry = home.run(&["publish", post.to_str().unwrap(), "--dry-run"], None);
    assert_eq!(dry.code, 0, "{}", dry.all());
    assert!(discord.posts().is_empty());
    let r = home.run(&["publish", post.to_str().unwrap(), "--json"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout
            .contains("https://discord.com/channels/777/555/900001"),
        "{}",
        r.stdout
    );
    for out in [&dry, &r] {
        assert!(!out.all().contains(DISCORD_WEBHOOK_TOKEN), "{}", out.all());
    }
    let posts = discord.posts();
    assert_eq!(posts.len(), 1);
    let sent = &posts[0].1;
    assert_eq!(
        sent["content"],
        "**v1.2 is out**\nChangelog below, @everyone\nhttps://example.org/v1.2"
    );
    assert_eq!(sent["allowed_mentions"]["parse"], serde_json::json!([]));
    assert_eq!(sent["attachments"][0]["description"], "The outreach logo");
    assert_eq!(sent["files"][0]["filename"], "logo.png");
    assert_eq!(sent["query"]["wait"], "true");

    discord.set_mode(Mode::Expired);
    let again = home.post(
        "gone.toml",
        "text = \"anyone there?\"\nto = [\"discord/team\"]\n",
    );
    let r = home.run(&["publish", again.to_str().unwrap()], None);
    assert_ne!(r.code, 0);
    assert!(
        r.all().contains("no longer knows this webhook"),
        "{}",
        r.all()
    );
    assert!(!r.all().contains(DISCORD_WEBHOOK_TOKEN), "{}", r.all());
}

/// DEV (Forem): the API key from standard input is checked with
/// `/api/users/me` before it is stored; an article goes out with the v1
/// `Accept` header, the title, the text as Markdown, the link as the
/// canonical URL and the post's tags; a second article with the same
/// canonical URL is refused with DEV's reason and not retried; a post
/// without a title never leaves; the key appears in no output.
#[test]
fn devto_articles_carry_title_markdown_canonical_url_and_tags() {
    let devto = fake_devto();
    let mut home = Home::new();
    home.endpoint("devto", "api", &devto.url());
    let add = ["accounts", "add", "devto"];
    let r = home.run(&add, Some("not-the-key"));
    assert_ne!(r.code, 0);
    assert!(r.all().contains("unauthorized"), "{}", r.all());
    let r = home.run(&add, Some(DEVTO_KEY));
    assert_eq!(r.code, 0, "{}", r.all());
    let r = home.run(&["accounts", "--json"], None);
    assert!(r.stdout.contains("Alice Dev"), "{}", r.stdout);

    let article = r##"
title = "Self-hosting outreach"
text = "# Why\n\nBecause **files** beat dashboards."
link = "https://blog.example/self-hosting"
to = ["devto"]
[override.devto]
tags = "rust, selfhosted"
published = "false"
"##;
    let post = home.post("article.toml", article);
    let r = home.run(&["publish", post.to_str().unwrap(), "--json"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("/alice/self-hosting-outreach-1001"),
        "{}",
        r.stdout
    );
    let sent = &devto.posts()[0].1;
    assert_eq!(sent["title"], "Self-hosting outreach");
    assert_eq!(
        sent["body_markdown"],
        "# Why\n\nBecause **files** beat dashboards."
    );
    assert_eq!(sent["canonical_url"], "https://blog.example/self-hosting");
    assert_eq!(sent["tags"], "rust, selfhosted");
    assert_eq!(sent["published"], false);

    let again = home.post(
        "again.toml",
        &article.replace("Self-hosting outreach", "Take two"),
    );
    let r = home.run(&["publish", again.to_str().unwrap(), "--json"], None);
    assert_ne!(r.code, 0);
    assert!(
        r.stdout.contains("Canonical url has already been taken"),
        "{}",
        r.stdout
    );
    let tries = devto
        .seen()
        .iter()
        .filter(|s| s.method == "POST" && s.path == "/api/articles")
        .count();
    assert_eq!(tries, 2, "a refused article is not retried");

    let untitled = home.post("untitled.toml", "text = \"no title\"\nto = [\"devto\"]\n");
    let r = home.run(&["publish", untitled.to_str().unwrap()], None);
    assert_ne!(r.code, 0);
    assert!(r.all().contains("title"), "{}", r.all());
    assert_eq!(devto.posts().len(), 1);
    assert!(!r.all().contains(DEVTO_KEY));
}

/// The start of an MP4 file (an `ftyp` box): outreach reads a file's type
/// from its contents, never its name.
const MP4: &[u8] = b"\0\0\0\x18ftypisom\0\0\x02\0isommp41";

/// Every post field, a thread item, a media file's name and alt text and
/// the platform fields hold credential placeholders; each bundled plugin
/// either sends them as text or refuses the post before anything leaves,
/// and no credential ever reaches a platform outside the place its plugin
/// puts it (the auth header, or Discord's webhook URL path).
#[test]
fn a_post_never_carries_a_credential_into_content() {
    let w = World::new().with_accounts();
    let bsky = fake_bluesky();
    let (discord, devto) = (fake_discord(), fake_devto());
    let mut home = w.home;
    home.bluesky(&bsky)
        .endpoint("discord", "api", &format!("{}/api/v10", discord.url()))
        .endpoint("devto", "api", &devto.url());
    let r = home.run(
        &["connect", "bluesky", "--username", "alice.test"],
        Some(support::oauth::APP_PASSWORD),
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let hook = format!(
        "{}/api/webhooks/{DISCORD_WEBHOOK_ID}/{DISCORD_WEBHOOK_TOKEN}",
        discord.url()
    );
    let r = home.run(&["accounts", "add", "discord"], Some(&hook));
    assert_eq!(r.code, 0, "{}", r.all());
    let r = home.run(&["accounts", "add", "devto"], Some(DEVTO_KEY));
    assert_eq!(r.code, 0, "{}", r.all());

    let named = home.path().join("{{access_token}}.png");
    std::fs::write(&named, png_bytes()).unwrap();
    let media = "[[media]]\npath = \"{{access_token}}.png\"\nalt = \"{{access_token}}\"\n";
    let thread = "[[thread]]\ntext = \"{{access_token}} again\"\n";
    let posts = [
        ("x", format!("[override.x]\ntext = \"{{{{access_token}}}} for X\"\n{media}{thread}")),
        ("linkedin", format!("[override.linkedin]\nvisibility = \"PUBLIC\"\n{media}")),
        (
            "mastodon/social",
            format!("[override.mastodon]\nspoiler_text = \"{{{{access_token}}}}\"\n{media}{thread}"),
        ),
        ("bluesky", format!("{media}{thread}")),
        (
            "discord",
            format!(
                "[override.discord]\nusername = \"{{{{refresh_token}}}}\"\n{media}"
            ),
        ),
        (
            "devto",
            "[override.devto]\ndescription = \"{{access_token}}\"\nseries = \"{{ access_token }}\"\n"
                .to_string(),
        ),
    ];
    for (i, (to, rest)) in posts.iter().enumerate() {
        let text = format!(
            "id = \"hostile-{i}\"\ntitle = \"{{{{access_token}}}}\"\ntext = \"a {{{{access_token}}}} b {{{{ refresh_token }}}}\"\nlink = \"https://example.org/{{{{access_token}}}}\"\nto = [\"{to}\"]\n{rest}"
        );
        let post = home.post(&format!("hostile-{i}.toml"), &text);
        let check = home.run(&["publish", post.to_str().unwrap(), "--check"], None);
        let dry = home.run(
            &["publish", post.to_str().unwrap(), "--dry-run", "--json"],
            None,
        );
        let real = home.run(&["publish", post.to_str().unwrap(), "--json"], None);
        for out in [&check, &dry, &real] {
            assert!(
                !out.all().contains(DISCORD_WEBHOOK_ID),
                "{to}: {}",
                out.all()
            );
        }
        // Discord's plugin marks its webhook URL as the credential by
        // structure (contract 0.2.0), so the same text in a post is text.
        assert_eq!(real.code, 0, "{to}: {}", real.all());
    }

    // What each platform received: the placeholders as text where content
    // goes, and no credential outside its own place.
    let platforms = [
        ("x", &w.x, "authorization"),
        ("linkedin", &w.linkedin, "authorization"),
        ("mastodon", &w.mastodon, "authorization"),
        ("bluesky", &bsky, "authorization"),
        ("discord", &discord, ""),
        ("devto", &devto, "api-key"),
    ];
    for (name, fake, auth_header) in platforms {
        let seen = fake.seen();
        // The host's own session exchange carries the app password by
        // design; every request a plugin built is checked.
        for s in seen.iter().filter(|s| !s.path.contains("Session")) {
            let mut outside = format!("{}\n{}", s.query, s.body);
            if name != "discord" {
                outside.push_str(&s.path);
            }
            for (h, v) in &s.headers {
                if h != auth_header {
                    outside.push_str(&format!("\n{h}: {v}"));
                }
            }
            let leaked = outside.contains("PLANTED")
                || (name != "discord" && outside.contains(DISCORD_WEBHOOK_ID));
            assert!(
                !leaked,
                "{name} received a credential outside its place: {} {}\n{outside}",
                s.method, s.path
            );
        }
        assert!(
            seen.iter()
                .any(|s| s.body.contains("{{access_token}}")
                    || s.body.contains("%7B%7Baccess_token")),
            "{name} never received the placeholder as text"
        );
    }
    // Discord got the placeholder as the text it is.
    let first = discord.posts()[0].1.to_string();
    assert!(first.contains("{{access_token}}"), "{first}");
    assert!(!first.contains("PLANTED"), "{first}");

    // A template's braces that name no credential go out as text, to
    // Discord too.
    let jinja = home.post(
        "jinja.toml",
        "text = \"Use {{ name }} in templates\"\nto = [\"discord\"]\n",
    );
    let r = home.run(&["publish", jinja.to_str().unwrap(), "--json"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(
        discord.posts().last().unwrap().1["content"],
        "Use {{ name }} in templates"
    );
}

/// A platform that echoes the request path back (raw, JSON-escaped,
/// percent-encoded, with its scheme and host in capitals) and, once, a
/// body that is not UTF-8: a webhook's id and token are scrubbed from every
/// form, in every output (`publish --json`, `posts show`, the journal, the
/// log, dry runs), also when the URL was pasted in capitals.
#[test]
fn a_url_credential_is_scrubbed_by_its_parts_in_every_form() {
    fn echo(_st: &FakeState, seen: &Seen) -> axum::response::Response {
        let path = seen.path.clone();
        if seen.method == "GET" {
            if seen.query.contains("fail") || path.ends_with("-nonutf8") {
                let mut body = b"\xff\xfe upstream said: ".to_vec();
                body.extend_from_slice(path.as_bytes());
                body.extend_from_slice(b" \xff");
                return respond(502, &[("content-type", "application/octet-stream")], body);
            }
            return json_response(
                200,
                &[],
                serde_json::json!({"id": DISCORD_WEBHOOK_ID, "type": 1, "name": "Echo", "channel_id": "555", "guild_id": "777"}),
            );
        }
        let encoded: String = url::form_urlencoded::byte_serialize(path.as_bytes()).collect();
        json_response(
            400,
            &[],
            serde_json::json!({"code": 50035, "message": "Invalid Form Body", "errors": {
                "raw": path,
                "escaped": path.replace('/', "\\/"),
                "encoded": encoded,
                "shouting": format!("HTTP://LOCALHOST{path}"),
            }}),
        )
    }
    let fake = support::start(echo);
    let mut home = Home::new();
    home.endpoint("discord", "api", &format!("{}/api/v10", fake.url()));
    let addr = fake.url().trim_start_matches("http://").to_string();
    let hook = format!("HTTP://{addr}/api/webhooks/{DISCORD_WEBHOOK_ID}/{DISCORD_WEBHOOK_TOKEN}");
    let r = home.run(
        &["accounts", "add", "discord", "--account", "loud"],
        Some(&hook),
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let bad =
        format!("http://{addr}/api/webhooks/{DISCORD_WEBHOOK_ID}/{DISCORD_WEBHOOK_TOKEN}-nonutf8");
    let r = home.run(
        &["accounts", "add", "discord", "--account", "broken"],
        Some(&bad),
    );
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(!r.all().contains(DISCORD_WEBHOOK_ID), "{}", r.all());

    let png: Vec<u8> = png_bytes();
    std::fs::write(home.path().join("a.png"), png).unwrap();
    let post = home.post(
        "echo.toml",
        "id = \"echo\"\ntext = \"hello\"\nto = [\"discord/loud\"]\n[[media]]\npath = \"a.png\"\n",
    );
    let dry = home.run(
        &["publish", post.to_str().unwrap(), "--dry-run", "--json"],
        None,
    );
    assert_eq!(dry.code, 0, "{}", dry.all());
    assert!(dry.stdout.contains("[redacted]"), "{}", dry.stdout);
    let r = home.run(&["publish", post.to_str().unwrap(), "--json"], None);
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("Invalid Form Body"), "{}", r.stdout);
    let show = home.run(&["posts", "show", "echo", "--json"], None);
    let list = home.run(&["posts", "--json"], None);
    for out in [&dry, &r, &show, &list] {
        assert!(!out.all().contains(DISCORD_WEBHOOK_ID), "{}", out.all());
        assert!(
            !out.all().to_ascii_uppercase().contains("PLANTED"),
            "{}",
            out.all()
        );
    }
    for entry in std::fs::read_dir(home.path().join("store"))
        .unwrap()
        .flatten()
    {
        let p = entry.path();
        if p.is_file() {
            let bytes = std::fs::read(&p).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                !text.contains(DISCORD_WEBHOOK_ID),
                "{} holds the webhook id",
                p.display()
            );
            assert!(
                !text.contains(DISCORD_WEBHOOK_TOKEN),
                "{} holds the webhook token",
                p.display()
            );
        }
    }
}

/// Media must be a regular, non-empty file inside the post file's folder
/// (or `paths.media`) once links are followed, and its type is read from
/// its bytes; a dry run shows a media body's size, never its bytes.
#[test]
fn media_is_confined_to_its_folder_and_known_by_its_bytes() {
    let discord = fake_discord();
    let mut home = Home::new();
    home.endpoint("discord", "api", &format!("{}/api/v10", discord.url()));
    let hook = format!(
        "{}/api/webhooks/{DISCORD_WEBHOOK_ID}/{DISCORD_WEBHOOK_TOKEN}",
        discord.url()
    );
    let r = home.run(&["accounts", "add", "discord"], Some(&hook));
    assert_eq!(r.code, 0, "{}", r.all());
    let posts = home.path().join("drafts");
    std::fs::create_dir_all(&posts).unwrap();
    let outside = home.path().join("outside-secret.txt");
    std::fs::write(&outside, "OUTSIDE-FILE-CONTENTS").unwrap();
    let outside_png = home.path().join("outside.png");
    std::fs::write(&outside_png, png_bytes()).unwrap();
    std::os::unix::fs::symlink(&outside, posts.join("x.png")).unwrap();
    std::os::unix::fs::symlink(&outside_png, posts.join("y.png")).unwrap();
    std::fs::write(posts.join("empty.png"), b"").unwrap();
    std::fs::write(posts.join("text.png"), b"just some words, not a picture").unwrap();
    std::fs::write(posts.join("real.png"), png_bytes()).unwrap();
    std::os::unix::fs::symlink(posts.join("real.png"), posts.join("link-inside.png")).unwrap();
    let fifo = posts.join("pipe.png");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let gif = [
        &b"GIF89a"[..],
        b"MEDIA-BYTES-MARKER plain ascii after the header",
    ]
    .concat();
    std::fs::write(posts.join("anim.gif"), gif).unwrap();
    // A JPEG named .png is a JPEG.
    std::fs::write(
        posts.join("photo.png"),
        [&b"\xff\xd8\xff\xe0\0\x10JFIF\0"[..], &[1u8; 40]].concat(),
    )
    .unwrap();

    let post = |name: &str, media: &str| {
        let p = posts.join(format!("{name}.toml"));
        std::fs::write(
            &p,
            format!("text = \"with media\"\nto = [\"discord\"]\n[[media]]\npath = \"{media}\"\n"),
        )
        .unwrap();
        p
    };
    for (media, expect) in [
        ("x.png", "outside the folders"),
        ("y.png", "outside the folders"),
        ("../outside.png", "outside the folders"),
        (outside_png.to_str().unwrap(), "outside the folders"),
        ("empty.png", "is empty"),
        ("text.png", "its contents are text"),
        ("pipe.png", "not a regular file"),
        ("missing.png", "does not exist"),
    ] {
        let p = post("bad", media);
        for mode in ["--check", "--dry-run"] {
            let r = home.run(&["publish", p.to_str().unwrap(), mode], None);
            assert_eq!(r.code, 2, "{media} {mode}: {}", r.all());
            assert!(r.all().contains(expect), "{media} {mode}: {}", r.all());
            assert!(!r.all().contains("OUTSIDE-FILE-CONTENTS"), "{}", r.all());
            assert!(!r.all().contains("os error"), "{}", r.all());
        }
    }
    assert!(
        discord.seen().iter().all(|s| s.method == "GET"),
        "nothing was posted"
    );

    // A link that stays inside the folder is fine, and so is a folder
    // named in paths.media.
    let r = home.run(
        &[
            "publish",
            post("ok", "link-inside.png").to_str().unwrap(),
            "--check",
        ],
        None,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let r = home.run(
        &[
            "publish",
            post("jpeg", "photo.png").to_str().unwrap(),
            "--check",
            "--json",
        ],
        None,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let shared = home.path().join("shared-media");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::write(shared.join("team.png"), png_bytes()).unwrap();
    let p = post("shared", shared.join("team.png").to_str().unwrap());
    let r = home.run(&["publish", p.to_str().unwrap(), "--check"], None);
    assert_eq!(r.code, 2, "{}", r.all());
    home.paths_extra = "media = \"shared-media\"\n".into();
    let r = home.run(&["publish", p.to_str().unwrap(), "--check"], None);
    assert_eq!(r.code, 0, "{}", r.all());

    // A dry run of a GIF whose bytes happen to be text shows its size.
    let r = home.run(
        &[
            "publish",
            post("gif", "anim.gif").to_str().unwrap(),
            "--dry-run",
            "--json",
        ],
        None,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(!r.all().contains("MEDIA-BYTES-MARKER"), "{}", r.all());
    assert!(r.stdout.contains("media attachment 0"), "{}", r.stdout);
}

// ------------------------------------------------- final deliveries, retry

/// A fake X that refuses every post (403 with a reason, as X does for
/// duplicate content) until its mode is set to `Mode::Normal`; any other
/// mode means "refuse".
fn refusing_x() -> Fake {
    let fake = start(
        |st, seen| match (seen.method.as_str(), seen.path.as_str()) {
            ("GET", "/2/users/me") => json_response(
                200,
                &[],
                serde_json::json!({"data": {"id": "2244994945", "name": "X Dev", "username": "xdevelopers"}}),
            ),
            ("POST", "/2/tweets") if *st.mode.lock().unwrap() == Mode::Normal => {
                let body: Value = serde_json::from_str(&seen.body).unwrap_or_default();
                let mut posts = st.posts.lock().unwrap();
                let id = format!("18{:017}", posts.len() + 1);
                posts.push((id.clone(), body.clone()));
                json_response(
                    201,
                    &[],
                    serde_json::json!({"data": {"id": id, "text": body["text"], "edit_history_post_ids": [id]}}),
                )
            }
            ("POST", "/2/tweets") => json_response(
                403,
                &[],
                serde_json::json!({"title": "Forbidden", "type": "about:blank", "status": 403, "detail": "You are not allowed to create a Tweet with duplicate content."}),
            ),
            _ => json_response(404, &[], serde_json::json!({"title": "Not Found Error"})),
        },
    );
    fake.set_mode(Mode::ServerError);
    fake
}

/// How many times a fake was asked to create a post.
fn post_requests(fake: &Fake) -> usize {
    fake.seen()
        .iter()
        .filter(|s| s.method == "POST" && s.path == "/2/tweets")
        .count()
}

/// A home whose X account talks to `x`.
fn home_with_x(x: &Fake) -> Home {
    let mut home = Home::new();
    home.endpoint("x", "api", &x.url());
    let r = home.run(&["accounts", "add", "x"], Some(X_TOKEN));
    assert_eq!(r.code, 0, "{}", r.all());
    home
}

fn show(home: &Home, id: &str) -> Value {
    let r = home.run(&["posts", "show", id, "--json"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    serde_json::from_str(&r.stdout).unwrap()
}

#[test]
fn a_rejected_post_is_sent_once_until_the_user_retries_it() {
    let x = refusing_x();
    let home = home_with_x(&x);
    let text = "id = \"refused\"\ntext = \"the same words again\"\nto = [\"x\"]\n";
    let post = home.post("refused.toml", text);
    let file = post.to_str().unwrap();

    let r = home.run(&["publish", file, "--json"], None);
    assert_eq!(r.code, 1, "{}", r.all());
    let res = results(&r.stdout);
    assert_eq!(res[0]["state"], "failed", "{res:?}");
    assert_eq!(res[0]["error_kind"], "rejected", "{res:?}");
    assert!(
        res[0]["error"]
            .as_str()
            .unwrap()
            .contains("duplicate content"),
        "{res:?}"
    );
    assert_eq!(post_requests(&x), 1);

    // Re-running it, rewriting it unchanged, `posts due`: nothing is sent,
    // and the answer says how to send it again.
    for _ in 0..3 {
        let r = home.run(&["publish", file, "--json"], None);
        assert_eq!(r.code, 1, "{}", r.all());
        let res = results(&r.stdout);
        assert_eq!(res[0]["state"], "failed", "{res:?}");
        assert_eq!(res[0]["error_kind"], "rejected", "{res:?}");
        let error = res[0]["error"].as_str().unwrap();
        assert!(error.contains("not sent again"), "{error}");
        assert!(
            error.contains("outreach posts retry refused/x/default"),
            "{error}"
        );
        std::fs::write(&post, text).unwrap();
    }
    let r = home.run(&["publish", file], None);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stdout.contains("posts retry refused/x/default"),
        "{}",
        r.stdout
    );
    let r = home.run(&["posts", "due"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(post_requests(&x), 1, "a rejected post was sent again");
    let v = show(&home, "refused");
    assert_eq!(v["deliveries"][0]["final"], true, "{v}");
    assert_eq!(v["attempts"].as_array().unwrap().len(), 1, "{v}");

    // Edited, it is a new post only with --new.
    std::fs::write(&post, text.replace("same words", "new words")).unwrap();
    let r = home.run(&["publish", file], None);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("--new") && r.stderr.contains("rejected"),
        "{}",
        r.stderr
    );
    assert_eq!(post_requests(&x), 1);

    // The user asks: sent again, exactly once (and refused again).
    let r = home.run(&["posts", "retry", "refused", "--json"], None);
    assert_eq!(r.code, 1, "{}", r.all());
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["reopened"][0]["from"], "failed", "{v}");
    assert_eq!(v["results"][0]["error_kind"], "rejected", "{v}");
    assert_eq!(post_requests(&x), 2);
    std::fs::write(&post, text).unwrap();
    let r = home.run(&["publish", file], None);
    assert_eq!(r.code, 1, "{}", r.all());
    assert_eq!(post_requests(&x), 2);

    // `publish --new` still publishes an edited post as a new one.
    x.set_mode(Mode::Normal);
    std::fs::write(&post, text.replace("same words", "new words")).unwrap();
    let r = home.run(&["publish", file, "--new", "--json"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(results(&r.stdout)[0]["state"], "published");
    assert_eq!(post_requests(&x), 3);
    assert_eq!(x.posts().len(), 1);
    assert_eq!(x.posts()[0].1["text"], "the new words again");

    // A retry of one target (by platform) goes out once; then there is
    // nothing left to retry, and re-running sends nothing.
    let r = home.run(&["posts", "retry", "refused/x"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("retrying x/default (was failed)"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("published"), "{}", r.stdout);
    assert_eq!(post_requests(&x), 4);
    assert_eq!(x.posts()[1].1["text"], "the same words again");
    let r = home.run(&["posts", "retry", "refused/x/default"], None);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("already published"), "{}", r.stderr);
    std::fs::write(&post, text).unwrap();
    let r = home.run(&["publish", file], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("already published"), "{}", r.stdout);
    assert_eq!(post_requests(&x), 4);

    // The history shows what the user asked for.
    let v = show(&home, "refused");
    let attempts = v["attempts"].as_array().unwrap();
    let outcomes: Vec<(&str, Option<&str>)> = attempts
        .iter()
        .map(|a| (a["outcome"].as_str().unwrap(), a["user_retry"].as_str()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("failed", None),
            ("failed", Some("failed")),
            ("published", Some("failed"))
        ],
        "{v}"
    );
    assert_eq!(v["deliveries"][0]["user_retries"], 2, "{v}");
    let r = home.run(&["posts", "show", "refused"], None);
    assert!(r.stdout.contains("retried by the user"), "{}", r.stdout);

    // Clear errors for what does not exist.
    let r = home.run(&["posts", "retry", "no-such-post"], None);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("there is no post `no-such-post`"),
        "{}",
        r.stderr
    );
    let r = home.run(&["posts", "retry", "refused/mastodon/social"], None);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("has no target `mastodon/social`") && r.stderr.contains("x/default"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_cancelled_post_stays_cancelled_when_published_again() {
    let w = World::new().with_accounts();
    // Due now, but X is rate limited for 15 minutes: failed, not posted…
    let text = "id = \"stop-it\"\ntext = \"never mind\"\nto = [\"x\"]\n";
    let post = w.home.post("stop.toml", text);
    let file = post.to_str().unwrap();
    w.x.set_mode(Mode::RateLimited);
    let r = w.home.run(&["publish", file], None);
    assert_eq!(r.code, 1, "{}", r.all());
    // …and cancelled by the user before X would take it.
    let r = w.home.run(&["posts", "cancel", "stop-it"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    w.x.set_mode(Mode::Normal);
    for _ in 0..3 {
        std::fs::write(&post, text).unwrap();
        let r = w.home.run(&["publish", file, "--json"], None);
        assert_eq!(r.code, 1, "{}", r.all());
        let res = results(&r.stdout);
        assert_eq!(res[0]["state"], "cancelled", "{res:?}");
        assert!(
            res[0]["error"]
                .as_str()
                .unwrap()
                .contains("posts retry stop-it/x/default"),
            "{res:?}"
        );
        let r = w.home.run(&["posts", "due"], None);
        assert_eq!(r.code, 0, "{}", r.all());
    }
    assert!(w.x.posts().is_empty(), "a cancelled post went out");
    let v = show(&w.home, "stop-it");
    assert_eq!(v["deliveries"][0]["state"], "cancelled", "{v}");

    // A scheduled post cancelled stays cancelled too, and a retry queues
    // it again for its time.
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let text = format!(
        "id = \"later\"\ntext = \"tomorrow\"\nto = [\"mastodon/social\"]\nschedule = \"{later}\"\n"
    );
    let post = w.home.post("later.toml", &text);
    let file = post.to_str().unwrap();
    assert_eq!(w.home.run(&["publish", file], None).code, 0);
    assert_eq!(w.home.run(&["posts", "cancel", "later"], None).code, 0);
    let r = w.home.run(&["publish", file], None);
    assert_eq!(
        show(&w.home, "later")["deliveries"][0]["state"],
        "cancelled",
        "{}",
        r.all()
    );
    let r = w.home.run(&["posts", "retry", "later", "--json"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["reopened"][0]["from"], "cancelled", "{v}");
    assert_eq!(v["reopened"][0]["to"], "queued", "{v}");
    assert_eq!(v["results"][0]["state"], "queued", "{v}");
    assert_eq!(show(&w.home, "later")["deliveries"][0]["state"], "queued");
    assert!(w.mastodon.posts().is_empty());

    // The user's retry sends the cancelled one, once.
    let r = w.home.run(&["posts", "retry", "stop-it/x/default"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("retrying x/default (was cancelled)"),
        "{}",
        r.stdout
    );
    assert_eq!(w.x.posts().len(), 1);
    let r = w.home.run(
        &["publish", w.home.path().join("stop.toml").to_str().unwrap()],
        None,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(w.x.posts().len(), 1);
}

#[test]
fn a_send_that_never_reaches_the_platform_is_tried_a_bounded_number_of_times() {
    // Nothing listens on X's address: every send fails before reaching it.
    let x = refusing_x();
    let mut home = home_with_x(&x);
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    home.endpoints.clear();
    home.endpoint("x", "api", &format!("http://{closed}"));
    home.extra_config.push_str("\n[publish]\nretries = 0\n");
    let post = home.post(
        "unreachable.toml",
        "id = \"unreachable\"\ntext = \"hello\"\nto = [\"x\"]\n",
    );
    let file = post.to_str().unwrap();
    for run in 1..=5 {
        let r = home.run(&["publish", file, "--json"], None);
        assert_eq!(r.code, 1, "{}", r.all());
        let res = results(&r.stdout);
        assert_eq!(res[0]["state"], "failed", "run {run}: {res:?}");
        if run > 3 {
            assert!(
                res[0]["error"]
                    .as_str()
                    .unwrap()
                    .contains("automatic attempts are used up"),
                "run {run}: {res:?}"
            );
        }
    }
    let v = show(&home, "unreachable");
    assert_eq!(v["attempts"].as_array().unwrap().len(), 3, "{v}");
    assert_eq!(v["deliveries"][0]["final"], true, "{v}");

    // Back online: only the user's retry sends it.
    home.endpoints.clear();
    home.endpoint("x", "api", &x.url());
    x.set_mode(Mode::Normal);
    let r = home.run(&["publish", file], None);
    assert_eq!(r.code, 1, "{}", r.all());
    assert_eq!(post_requests(&x), 0);
    let r = home.run(&["posts", "retry", "unreachable"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(x.posts().len(), 1);
}

#[test]
fn an_unknown_outcome_is_sent_again_only_when_forced() {
    let w = World::new().with_accounts();
    let post = w.home.post(
        "maybe.toml",
        "id = \"maybe\"\ntext = \"did it?\"\nto = [\"x\"]\n",
    );
    w.x.set_mode(Mode::ServerError);
    let r = w.home.run(&["publish", post.to_str().unwrap()], None);
    assert_eq!(r.code, 1, "{}", r.all());
    assert_eq!(show(&w.home, "maybe")["deliveries"][0]["state"], "unknown");
    w.x.set_mode(Mode::Normal);

    // Without --force: refused, with what to check and what --force risks.
    let r = w.home.run(&["posts", "retry", "maybe"], None);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("--force") && r.stderr.contains("twice"),
        "{}",
        r.stderr
    );
    assert!(w.x.posts().is_empty());

    let r = w.home.run(
        &["posts", "retry", "maybe/x/default", "--force", "--json"],
        None,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["reopened"][0]["from"], "unknown", "{v}");
    assert_eq!(v["results"][0]["state"], "published", "{v}");
    assert_eq!(w.x.posts().len(), 1);
    let attempts = show(&w.home, "maybe")["attempts"].clone();
    assert_eq!(attempts[1]["user_retry"], "unknown", "{attempts}");
}

/// Requests a fake got that would create something (a post, an upload),
/// leaving out Bluesky's session exchanges.
fn writes(fake: &Fake) -> usize {
    fake.seen()
        .iter()
        .filter(|s| s.method == "POST" && !s.path.contains("Session"))
        .count()
}

/// Every platform field a bundled plugin reads from `[override.PLATFORM]`,
/// and the account settings with a fixed shape, are checked by `--check`
/// and before a publish: each bad value is one problem naming the field,
/// the value and what is allowed (exit 2, nothing sent); a typo of a field
/// is caught with the fields the platform knows; good values go out.
#[test]
fn platform_fields_with_fixed_values_are_checked_before_anything_is_sent() {
    let w = World::new().with_accounts();
    let bsky = fake_bluesky();
    let (discord, devto) = (fake_discord(), fake_devto());
    let mut home = w.home;
    home.bluesky(&bsky)
        .endpoint("discord", "api", &format!("{}/api/v10", discord.url()))
        .endpoint("devto", "api", &devto.url());
    let r = home.run(
        &["connect", "bluesky", "--username", "alice.test"],
        Some(support::oauth::APP_PASSWORD),
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let hook = format!(
        "{}/api/webhooks/{DISCORD_WEBHOOK_ID}/{DISCORD_WEBHOOK_TOKEN}",
        discord.url()
    );
    for (account, set) in [
        ("team", "username=Release notes"),
        ("bad", "thread_id=general"),
    ] {
        let add = [
            "accounts",
            "add",
            "discord",
            "--account",
            account,
            "--set",
            set,
        ];
        let r = home.run(&add, Some(&hook));
        assert_eq!(r.code, 0, "{}", r.all());
    }
    let r = home.run(&["accounts", "add", "devto"], Some(DEVTO_KEY));
    assert_eq!(r.code, 0, "{}", r.all());
    let fakes = [
        ("x", &w.x),
        ("linkedin", &w.linkedin),
        ("mastodon", &w.mastodon),
        ("bluesky", &bsky),
        ("discord", &discord),
        ("devto", &devto),
    ];

    let warning = "w".repeat(490);
    let bad = home.post(
        "bad-fields.toml",
        &format!(
            r#"
title = "Fields"
text = "Checking fields"
to = ["x", "linkedin", "mastodon/social", "bluesky", "discord/team", "discord/bad", "devto"]
[override.x]
visibility = "public"
[override.linkedin]
visibility = "FRIENDS"
[override.mastodon]
visiblity = "unlisted"
visibility = "friends-only"
language = "english"
spoiler_text = "{warning}"
[override.bluesky]
language = "en_GB"
[override.discord]
mentions = "here"
username = "Discord Release Bot"
[override.devto]
published = "yes"
tags = "rust, web-dev"
organization_id = "acme"
main_image = "http://cdn.example/cover.png"
"#
        ),
    );
    // (target, field, what the message says)
    let expected = [
        (
            "x/default",
            "override.x.visibility",
            "is unknown; [override.x] takes only text, title and link",
        ),
        (
            "linkedin/default",
            "override.linkedin.visibility",
            r#"is "FRIENDS"; allowed: PUBLIC, CONNECTIONS, LOGGED_IN"#,
        ),
        (
            "mastodon/social",
            "override.mastodon.visiblity",
            "is unknown (did you mean visibility?); [override.mastodon] takes visibility, spoiler_text, language",
        ),
        (
            "mastodon/social",
            "override.mastodon.visibility",
            r#"is "friends-only"; allowed: public, unlisted, private, direct"#,
        ),
        (
            "mastodon/social",
            "override.mastodon.language",
            r#"is "english"; expected an ISO 639 language code"#,
        ),
        (
            "mastodon/social",
            "override.mastodon.spoiler_text",
            "is 490 characters long; Mastodon counts it with the text (15), 505 in all, and the limit is 500",
        ),
        (
            "bluesky/default",
            "override.bluesky.language",
            r#"is "en_GB"; expected a BCP 47 language tag"#,
        ),
        (
            "discord/team",
            "override.discord.mentions",
            r#"is "here"; allowed: none, users, roles, everyone, all"#,
        ),
        (
            "discord/team",
            "override.discord.username",
            r#"is "Discord Release Bot"; Discord refuses webhook names that contain "discord""#,
        ),
        ("discord/bad", "override.discord.mentions", r#"is "here""#),
        (
            "discord/bad",
            "override.discord.username",
            r#"is "Discord Release Bot""#,
        ),
        (
            "discord/bad",
            "account setting thread_id",
            r#"is "general"; expected a Discord thread id, digits only"#,
        ),
        (
            "devto/default",
            "override.devto.published",
            r#"is "yes"; allowed: true, false"#,
        ),
        (
            "devto/default",
            "override.devto.tags",
            r#"is "rust, web-dev"; the tag "web-dev" is not letters and digits only"#,
        ),
        (
            "devto/default",
            "override.devto.organization_id",
            r#"is "acme"; expected the organization's numeric id"#,
        ),
        (
            "devto/default",
            "override.devto.main_image",
            r#"is "http://cdn.example/cover.png"; expected the cover image's https:// URL"#,
        ),
    ];
    let file = bad.to_str().unwrap();
    let check = home.run(&["publish", file, "--check", "--json"], None);
    assert_eq!(check.code, 2, "{}", check.all());
    let v: Value = serde_json::from_str(&check.stdout).unwrap();
    let problems = v["problems"].as_array().unwrap();
    for (target, field, says) in expected {
        assert!(
            problems.iter().any(|p| p["target"] == target
                && p["field"] == field
                && p["message"].as_str().unwrap().starts_with(says)),
            "no problem {target} {field}: {says}…\n{v:#}"
        );
    }
    assert_eq!(problems.len(), expected.len(), "{v:#}");
    // For people: one line per problem, field then what is wrong.
    let human = home.run(&["publish", file, "--check"], None);
    assert_eq!(human.code, 2, "{}", human.all());
    assert!(
        human.stderr.contains(
            r#"mastodon/social: override.mastodon.visibility: is "friends-only"; allowed: public, unlisted, private, direct"#
        ),
        "{}",
        human.stderr
    );
    // A real publish (and a dry run) of the same file stops at the same
    // problems.
    for args in [&["publish", file][..], &["publish", file, "--dry-run"]] {
        let r = home.run(args, None);
        assert_eq!(r.code, 2, "{args:?}: {}", r.all());
        assert!(
            r.stderr.contains("override.devto.main_image"),
            "{}",
            r.all()
        );
    }
    // A thread item's fields are checked too, under its own name; a value
    // the plugin would have to send in a URL can never be a placeholder.
    let thread = home.post(
        "thread-fields.toml",
        "text = \"1/2\"\nto = [\"mastodon/social\", \"discord/team\"]\n[[thread]]\ntext = \"2/2\"\n[thread.override.mastodon]\nvisibility = \"secret\"\n",
    );
    let r = home.run(&["publish", thread.to_str().unwrap(), "--check"], None);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr
            .contains(r#"thread[0].override.mastodon.visibility: is "secret""#),
        "{}",
        r.stderr
    );
    let hostile = home.post(
        "placeholder-thread.toml",
        "text = \"hi\"\nto = [\"discord/team\"]\n[override.discord]\nthread_id = \"{{access_token}}\"\n",
    );
    let r = home.run(&["publish", hostile.to_str().unwrap()], None);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("override.discord.thread_id"),
        "{}",
        r.stderr
    );
    for (name, fake) in fakes {
        assert_eq!(writes(fake), 0, "{name} was sent something");
    }

    // Good values, in every form the user may write them, go out as given.
    let good = home.post(
        "good-fields.toml",
        r#"
title = "Fields"
text = "Checking fields"
to = ["x", "linkedin", "mastodon/social", "bluesky", "discord/team", "devto"]
[override.linkedin]
visibility = "CONNECTIONS"
[override.mastodon]
visibility = "unlisted"
language = "de"
spoiler_text = "cw"
[override.bluesky]
language = "pt-BR"
[override.discord]
mentions = "users"
thread_id = 1187223344556677000
[override.devto]
published = false
tags = "rust, webdev"
organization_id = 42
main_image = "https://cdn.example/cover.png"
description = "Why fields are checked"
series = "outreach"
"#,
    );
    let r = home.run(&["publish", good.to_str().unwrap(), "--check"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    let r = home.run(&["publish", good.to_str().unwrap(), "--json"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(w.linkedin.posts()[0].1["visibility"], "CONNECTIONS");
    let toot = &w.mastodon.posts()[0].1;
    assert_eq!(toot["visibility"], "unlisted");
    assert_eq!(toot["language"], "de");
    assert_eq!(toot["spoiler_text"], "cw");
    let record = &bsky.posts()[0].1;
    assert_eq!(record["langs"], serde_json::json!(["pt-BR"]), "{record}");
    let message = &discord.posts()[0].1;
    assert_eq!(
        message["allowed_mentions"]["parse"],
        serde_json::json!(["users"])
    );
    assert_eq!(message["query"]["thread_id"], "1187223344556677000");
    assert_eq!(
        message["username"], "Release notes",
        "the account's setting"
    );
    let article = &devto.posts()[0].1;
    assert_eq!(article["published"], false);
    assert_eq!(article["organization_id"], 42);
    assert_eq!(article["main_image"], "https://cdn.example/cover.png");
    assert_eq!(article["series"], "outreach");
}

// ------------------------------------------------ clear answers (issue 11)

/// The platform's JSON bodies a fake accepted, in order.
fn bodies(fake: &Fake) -> Vec<Value> {
    fake.posts().into_iter().map(|(_, b)| b).collect()
}

/// A thread item goes out with the platform fields of the post's
/// `[override.PLATFORM]` (an `unlisted` Mastodon thread is unlisted
/// throughout, its content warning on every reply) unless the item sets its
/// own; the post's `text` override stays with the post. A field the items
/// take from the post is checked for each of them, and reported once.
#[test]
fn thread_items_take_the_posts_platform_fields_unless_they_set_their_own() {
    let w = World::new().with_accounts();
    let post = w.home.post(
        "inherit.toml",
        r#"
id = "inherit-1"
text = "1/3 the start"
to = ["mastodon/social", "x"]
[override.mastodon]
text = "1/3 the start, for Mastodon"
visibility = "unlisted"
spoiler_text = "long thread"
language = "de"
[override.x]
text = "1/3 the start, for X"
[[thread]]
text = "2/3 the middle"
[[thread]]
text = "3/3 the end"
[thread.override.mastodon]
visibility = "public"
"#,
    );
    let check = w
        .home
        .run(&["publish", post.to_str().unwrap(), "--check"], None);
    assert_eq!(check.code, 0, "{}", check.all());
    let r = w
        .home
        .run(&["publish", post.to_str().unwrap(), "--json"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    let toots = bodies(&w.mastodon);
    assert_eq!(toots.len(), 3, "{toots:?}");
    let seen: Vec<(&str, &str, &str, &str)> = toots
        .iter()
        .map(|t| {
            (
                t["status"].as_str().unwrap(),
                t["visibility"].as_str().unwrap(),
                t["spoiler_text"].as_str().unwrap_or("(none)"),
                t["language"].as_str().unwrap_or("(none)"),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (
                "1/3 the start, for Mastodon",
                "unlisted",
                "long thread",
                "de"
            ),
            ("2/3 the middle", "unlisted", "long thread", "de"),
            ("3/3 the end", "public", "long thread", "de"),
        ]
    );
    let tweets: Vec<String> = bodies(&w.x)
        .iter()
        .map(|t| t["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        tweets,
        ["1/3 the start, for X", "2/3 the middle", "3/3 the end"]
    );

    // A bad value the items take from the post is one problem, at the
    // post; a value that is wrong only with an item's own text is that
    // item's, saying where it comes from.
    let bad = w.home.post(
        "inherit-bad.toml",
        &format!(
            r#"
text = "1/2"
to = ["mastodon/social"]
[override.mastodon]
visibility = "friends-only"
spoiler_text = "{}"
[[thread]]
text = "2/2 and a longer second thought"
"#,
            "w".repeat(480)
        ),
    );
    let r = w.home.run(
        &["publish", bad.to_str().unwrap(), "--check", "--json"],
        None,
    );
    assert_eq!(r.code, 2, "{}", r.all());
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    let problems: Vec<(String, String)> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["field"].as_str().unwrap().to_string(),
                p["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(problems.len(), 2, "{v:#}");
    assert_eq!(problems[0].0, "override.mastodon.visibility", "{v:#}");
    assert_eq!(
        problems[1].0, "thread[0].override.mastodon.spoiler_text",
        "{v:#}"
    );
    assert!(
        problems[1]
            .1
            .contains("thread[0] takes it from the post's [override.mastodon]"),
        "{v:#}"
    );
    assert_eq!(bodies(&w.mastodon).len(), 3, "nothing more was sent");
}

/// An `[override.PLATFORM]` table for a platform the post does not go to —
/// a typo, or a platform left out of `to` — is a problem that names the
/// platforms the post does go to, for the post and for a thread item;
/// nothing is sent.
#[test]
fn an_override_for_a_platform_the_post_does_not_go_to_is_a_problem() {
    let w = World::new().with_accounts();
    let post = w.home.post(
        "stray.toml",
        r#"
text = "Hello"
to = ["x", "mastodon/social"]
[override.mastodn]
visibility = "unlisted"
[override.linkedin]
visibility = "CONNECTIONS"
[[thread]]
text = "More"
[thread.override.mastdon]
visibility = "public"
[thread.override.mastodon]
visibility = "unlisted"
"#,
    );
    let file = post.to_str().unwrap();
    let r = w.home.run(&["publish", file, "--check", "--json"], None);
    assert_eq!(r.code, 2, "{}", r.all());
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    let problems = v["problems"].as_array().unwrap();
    let find = |field: &str| {
        problems
            .iter()
            .find(|p| p["field"] == field)
            .unwrap_or_else(|| panic!("no problem for {field}: {v:#}"))["message"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let typo = find("override.mastodn");
    assert!(
        typo.starts_with("there is no platform `mastodn` (did you mean `mastodon`?)"),
        "{typo}"
    );
    assert!(typo.contains("this post goes to x, mastodon"), "{typo}");
    let left_out = find("override.linkedin");
    assert!(
        left_out.starts_with("this post does not go to linkedin"),
        "{left_out}"
    );
    assert!(left_out.contains("it goes to x, mastodon"), "{left_out}");
    let item = find("thread[0].override.mastdon");
    assert!(item.contains("did you mean `mastodon`?"), "{item}");
    assert_eq!(problems.len(), 3, "{v:#}");
    assert!(problems.iter().all(|p| p["target"] == "post"), "{v:#}");

    // People see the same, and a real publish stops there.
    let r = w.home.run(&["publish", file], None);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr
            .contains("post: override.mastodn: there is no platform `mastodn`"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("nothing was published"), "{}", r.stderr);
    assert_eq!(w.x.posts().len() + w.mastodon.posts().len(), 0);
}

/// `--dry-run` shows every item of a thread (each item's first request),
/// with the id a reply needs from the platform's answer to its parent
/// marked as a stand-in, and says plainly what it cannot show and why: the
/// steps after a media upload, a reply a plugin cannot build without its
/// parent's real id. Nothing is sent, no secret is shown.
#[test]
fn a_dry_run_shows_every_item_and_says_what_it_cannot_show() {
    let w = World::new().with_accounts();
    let bsky = fake_bluesky();
    let mut home = w.home;
    home.bluesky(&bsky);
    let r = home.run(
        &["connect", "bluesky", "--username", "alice.test"],
        Some(support::oauth::APP_PASSWORD),
    );
    assert_eq!(r.code, 0, "{}", r.all());
    std::fs::write(home.path().join("logo.png"), png_bytes()).unwrap();
    let post = home.post(
        "dry-thread.toml",
        r#"
text = "1/3 with a picture"
to = ["mastodon/social", "x", "bluesky"]
[[media]]
path = "logo.png"
alt = "The logo"
[override.mastodon]
visibility = "unlisted"
[[thread]]
text = "2/3 a reply"
[[thread]]
text = "3/3 the end"
"#,
    );
    let fakes = [("x", &w.x), ("mastodon", &w.mastodon), ("bluesky", &bsky)];
    let before: Vec<usize> = fakes.iter().map(|(_, f)| f.seen().len()).collect();
    let r = home.run(
        &["publish", post.to_str().unwrap(), "--dry-run", "--json"],
        None,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let out = results(&r.stdout);
    let target = |t: &str| out.iter().find(|r| r["target"] == t).unwrap().clone();

    // Mastodon: the upload for the post, then each reply, built with a
    // marked stand-in for its parent's id and the post's visibility.
    let m = target("mastodon/social");
    let reqs = m["requests"].as_array().unwrap();
    assert_eq!(reqs.len(), 3, "{m:#}");
    assert_eq!(reqs[0]["item"], 0);
    assert!(
        reqs[0]["url"].as_str().unwrap().ends_with("/api/v2/media"),
        "{m:#}"
    );
    for (i, parent) in [(1, "the post"), (2, "thread[0]")] {
        let q = &reqs[i];
        assert_eq!(q["item"], i, "{m:#}");
        assert!(
            q["url"].as_str().unwrap().ends_with("/api/v1/statuses"),
            "{m:#}"
        );
        let body: Value = serde_json::from_str(q["body"].as_str().unwrap()).unwrap();
        let stand_in = format!("<id of {parent}, from Mastodon's answer>");
        assert_eq!(body["in_reply_to_id"], stand_in.as_str(), "{m:#}");
        assert_eq!(body["visibility"], "unlisted", "{m:#}");
        assert!(q["note"].as_str().unwrap().contains(&stand_in), "{m:#}");
    }
    let not_shown = m["not_shown"].as_array().unwrap();
    assert!(
        not_shown[0]
            .as_str()
            .unwrap()
            .starts_with("only the first request of each item is shown"),
        "{m:#}"
    );
    assert!(
        not_shown[0]
            .as_str()
            .unwrap()
            .contains("the rest of the upload and then the post itself"),
        "{m:#}"
    );

    // X: the same shape; the reply's parent is the stand-in.
    let x = target("x/default");
    let reqs = x["requests"].as_array().unwrap();
    assert_eq!(
        reqs.iter()
            .map(|q| q["item"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [0, 1, 2],
        "{x:#}"
    );
    assert!(
        reqs[1]["body"]
            .as_str()
            .unwrap()
            .contains("<id of the post, from X's answer>"),
        "{x:#}"
    );

    // Bluesky needs the parent's real record to build a reply: its
    // replies are named as not shown, and why.
    let b = target("bluesky/default");
    assert_eq!(b["ok"], true, "{b:#}");
    let reqs = b["requests"].as_array().unwrap();
    assert!(reqs.iter().all(|q| q["item"] == 0), "{b:#}");
    let said: Vec<&str> = b["not_shown"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    for item in ["thread[0]", "thread[1]"] {
        assert!(
            said.iter()
                .any(|n| n.starts_with(&format!("{item}: not shown: "))
                    && n.contains("a dry run gets no answer")),
            "{item}: {said:#?}"
        );
    }

    // For people: each item under its name, the stand-in explained, what
    // is not shown said.
    let r = home.run(&["publish", post.to_str().unwrap(), "--dry-run"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    for text in [
        "mastodon/social would send:",
        "  the post:\n",
        "  thread[0]:\n",
        "  thread[1]:\n",
        "stands for the id Mastodon gives the post when it is sent",
        "  not shown: only the first request of each item is shown",
        "  not shown: thread[0]: not shown: ",
        "authorization: Bearer [redacted]",
    ] {
        assert!(r.stdout.contains(text), "{text:?} missing:\n{}", r.stdout);
    }
    let after: Vec<usize> = fakes.iter().map(|(_, f)| f.seen().len()).collect();
    assert_eq!(before, after, "a dry run sent something");
}

/// One account whose record cannot be read — encrypted for another
/// identity, or corrupt — fails alone: the post goes to the other targets,
/// and that target is reported with which account, what is wrong and what
/// to do (exit 1), by `--check` and `--dry-run` too. Once the record is
/// back, publishing the file again sends only what had not gone out.
#[test]
fn an_unreadable_account_fails_alone_and_the_others_go_out() {
    let w = World::new().with_accounts();
    let store = w.home.path().join("store");
    let x_file = store.join("x").join("default.age");
    let md_file = store.join("mastodon").join("social.age");
    let md_good = std::fs::read(&md_file).unwrap();
    // X: a record made by another outreach (another identity).
    let mut other = Home::new();
    other.endpoint("x", "api", &w.x.url());
    let r = other.run(&["accounts", "add", "x"], Some(X_TOKEN));
    assert_eq!(r.code, 0, "{}", r.all());
    std::fs::copy(other.path().join("store/x/default.age"), &x_file).unwrap();
    // Mastodon: a truncated record.
    std::fs::write(&md_file, &md_good[..md_good.len() / 2]).unwrap();

    let post = w.home.post(
        "fan.toml",
        "id = \"fan-1\"\ntext = \"Hello, everyone\"\nto = [\"x\", \"linkedin\", \"mastodon/social\"]\n",
    );
    let file = post.to_str().unwrap();
    let check = w.home.run(&["publish", file, "--check"], None);
    assert_eq!(check.code, 1, "{}", check.all());
    assert!(
        check.stdout.contains("linkedin/default"),
        "{}",
        check.stdout
    );
    assert!(
        check
            .stdout
            .contains("x/default                FAILED nothing was sent to x/default"),
        "{}",
        check.stdout
    );
    let dry = w.home.run(&["publish", file, "--dry-run", "--json"], None);
    assert_eq!(dry.code, 1, "{}", dry.all());
    let dry = results(&dry.stdout);
    let li = dry
        .iter()
        .find(|r| r["target"] == "linkedin/default")
        .unwrap();
    assert_eq!(li["ok"], true, "{dry:#?}");

    let r = w.home.run(&["publish", file, "--json"], None);
    assert_eq!(r.code, 1, "{}", r.all());
    assert_eq!(w.linkedin.posts().len(), 1, "{}", r.all());
    assert!(w.x.posts().is_empty() && w.mastodon.posts().is_empty());
    let out = results(&r.stdout);
    let result = |t: &str| out.iter().find(|r| r["target"] == t).unwrap().clone();
    assert_eq!(result("linkedin/default")["state"], "published");
    let x = result("x/default");
    assert_eq!(
        (x["ok"].as_bool(), x["error_kind"].as_str()),
        (Some(false), Some("account-unreadable")),
        "{x:#}"
    );
    let says = x["error"].as_str().unwrap();
    for part in [
        "nothing was sent to x/default",
        "cannot be decrypted with the identity",
        "encrypted for another identity",
        "put back the identity file",
        "outreach accounts add x --account default --replace",
        "then publish the post again",
        "other targets are not held back",
    ] {
        assert!(says.contains(part), "{part:?} missing: {says}");
    }
    let md = result("mastodon/social");
    let says = md["error"].as_str().unwrap();
    for part in [
        "nothing was sent to mastodon/social",
        "is corrupt or truncated",
        md_file.to_str().unwrap(),
        "restore it from a backup",
    ] {
        assert!(says.contains(part), "{part:?} missing: {says}");
    }
    // The journal says why.
    let show = show(&w.home, "fan-1");
    let failed = show["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["state"] == "failed" && d["error_kind"] == "account-unreadable")
        .count();
    assert_eq!(failed, 2, "{show:#}");
    assert_eq!(show["attempts"].as_array().unwrap().len(), 3, "{show:#}");

    // People see which account and what to do.
    let human = w.home.run(&["publish", file], None);
    assert_eq!(human.code, 1, "{}", human.all());
    assert!(
        human
            .stdout
            .contains("mastodon/social          FAILED (account-unreadable) nothing was sent to mastodon/social"),
        "{}",
        human.stdout
    );
    assert_eq!(w.linkedin.posts().len(), 1, "published once");

    // As the messages say: X stored again, Mastodon's file restored from
    // a backup; the rest goes out, once.
    let r = w
        .home
        .run(&["accounts", "add", "x", "--replace"], Some(X_TOKEN));
    assert_eq!(r.code, 0, "{}", r.all());
    std::fs::write(&md_file, &md_good).unwrap();
    let r = w.home.run(&["publish", file, "--json"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(
        (
            w.x.posts().len(),
            w.linkedin.posts().len(),
            w.mastodon.posts().len()
        ),
        (1, 1, 1)
    );
}

/// Issue 11: a text that is too long says how the platform counts, in
/// words — not as the contract's Rust name (`CountRule::XWeighted`).
#[test]
fn a_length_problem_says_how_the_platform_counts_in_words() {
    let w = World::new().with_accounts();
    let post = w.home.post(
        "long-x.toml",
        &format!("text = \"{}\"\nto = [\"x\"]\n", "a".repeat(281)),
    );
    let r = w
        .home
        .run(&["publish", post.to_str().unwrap(), "--check"], None);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains(
            "x/default: text: is 281 characters long; the limit is 280 (counted the way X counts: every link as 23 characters"
        ),
        "{}",
        r.stderr
    );
    for rust in ["CountRule", "XWeighted"] {
        assert!(!r.all().contains(rust), "{rust}: {}", r.all());
    }
}

/// The journal of a test home.
fn journal_of(home: &Home) -> std::path::PathBuf {
    home.path().join("outbox.sqlite")
}

/// Issue 11: a journal that is not a SQLite database (or is damaged) is
/// named, left as it is, and the message says what to do — not SQLite's
/// `file is not a database: Error code 26`. Nothing is sent.
#[test]
fn a_damaged_journal_is_named_left_alone_and_explained() {
    let w = World::new().with_accounts();
    let journal = journal_of(&w.home);
    let garbage: Vec<u8> = (0..8192u32).map(|i| (i * 7919 % 251) as u8).collect();
    std::fs::write(&journal, &garbage).unwrap();
    let post = w.home.post("hello.toml", HELLO);
    for args in [
        vec!["posts"],
        vec!["posts", "--json"],
        vec!["publish", post.to_str().unwrap()],
    ] {
        let r = w.home.run(&args, None);
        assert_eq!(r.code, 2, "{args:?}: {}", r.all());
        let error = r
            .stderr
            .lines()
            .find(|l| l.starts_with("error:"))
            .unwrap_or("");
        for want in [
            format!("the outbox {}", journal.display()),
            "is not a SQLite database, or it is damaged".into(),
            "nothing was changed".into(),
            "outreach restore".into(),
            format!("mv {0} {0}.damaged", journal.display()),
        ] {
            assert!(error.contains(&want), "{args:?}: {want}:\n{}", r.stderr);
        }
        assert!(!r.stderr.contains("Error code"), "{}", r.stderr);
    }
    assert_eq!(
        std::fs::read(&journal).unwrap(),
        garbage,
        "the file changed"
    );
    assert!(
        w.x.posts().is_empty() && w.linkedin.posts().is_empty() && w.mastodon.posts().is_empty()
    );
}

/// Issue 11: a journal a newer outreach wrote (a higher format than this
/// version knows) is refused untouched, naming the version that wrote it —
/// not read as if it were this version's.
#[test]
fn a_journal_from_a_newer_version_is_refused_untouched() {
    let w = World::new().with_accounts();
    let post = w.home.post("hello.toml", HELLO);
    let r = w.home.run(&["publish", post.to_str().unwrap()], None);
    assert_eq!(r.code, 0, "{}", r.all());
    let journal = journal_of(&w.home);
    {
        let db = rusqlite::Connection::open(&journal).unwrap();
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             INSERT OR REPLACE INTO meta (key, value) VALUES ('writer', 'outreach 9.1.0');
             PRAGMA user_version = 99;",
        )
        .unwrap();
    }
    let before = std::fs::read(&journal).unwrap();
    let other = w
        .home
        .post("other.toml", "text = \"another\"\nto = [\"x\"]\n");
    for args in [
        vec!["posts"],
        vec!["posts", "show", "x"],
        vec!["publish", other.to_str().unwrap()],
    ] {
        let r = w.home.run(&args, None);
        assert_eq!(r.code, 2, "{args:?}: {}", r.all());
        for want in [
            format!("the outbox {}", journal.display()),
            "was written by outreach 9.1.0 (journal format 99)".into(),
            "left the journal untouched".into(),
        ] {
            assert!(r.stderr.contains(&want), "{args:?}: {want}:\n{}", r.stderr);
        }
    }
    assert_eq!(
        std::fs::read(&journal).unwrap(),
        before,
        "the journal changed"
    );
    assert_eq!(w.x.posts().len(), 1, "nothing more was sent");
}

/// Issue 11: a delivery state this version does not know (written by a
/// newer one) is an error that names it — never read as `cancelled`, and
/// never a reason to send again.
#[test]
fn an_unknown_delivery_state_is_an_error_not_a_guess() {
    let w = World::new().with_accounts();
    let post = w.home.post("hello.toml", HELLO);
    let r = w.home.run(&["publish", post.to_str().unwrap()], None);
    assert_eq!(r.code, 0, "{}", r.all());
    {
        let db = rusqlite::Connection::open(journal_of(&w.home)).unwrap();
        let n = db
            .execute(
                "UPDATE deliveries SET state = 'superseded' WHERE target = 'x/default'",
                [],
            )
            .unwrap();
        assert_eq!(n, 1);
    }
    for args in [
        vec!["posts"],
        vec!["posts", "--json"],
        vec!["publish", post.to_str().unwrap()],
    ] {
        let r = w.home.run(&args, None);
        // `posts` cannot list the journal; `publish` reports the target
        // (the other targets are already published).
        let code = if args[0] == "posts" { 2 } else { 1 };
        assert_eq!(r.code, code, "{args:?}: {}", r.all());
        for want in [
            "to x/default in state `superseded`",
            "which this version of outreach does not know",
            "nothing was changed",
        ] {
            assert!(r.all().contains(want), "{args:?}: {want}:\n{}", r.all());
        }
        assert!(!r.stdout.contains("cancelled"), "{}", r.stdout);
    }
    assert_eq!(w.x.posts().len(), 1, "sent once");
}

/// A platform that cannot be reached is named by its address, not by the
/// plugin's placeholder, and the credential's parts stay hidden.
#[test]
fn an_unreachable_platform_is_named_by_its_address() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Answer the one request `accounts add` makes, then stop listening.
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let _ = conn.read(&mut buf).unwrap();
        let body = format!(
            r#"{{"id": "{DISCORD_WEBHOOK_ID}", "type": 1, "name": "Gone soon", "channel_id": "555", "guild_id": "777"}}"#
        );
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        conn.write_all(answer.as_bytes()).unwrap();
    });
    let mut home = Home::new();
    let base = format!("http://127.0.0.1:{port}");
    home.endpoint("discord", "api", &format!("{base}/api/v10"));
    let hook = format!("{base}/api/webhooks/{DISCORD_WEBHOOK_ID}/{DISCORD_WEBHOOK_TOKEN}");
    let r = home.run(&["accounts", "add", "discord"], Some(&hook));
    assert_eq!(r.code, 0, "{}", r.all());
    server.join().unwrap();

    let post = home.post("gone.toml", "text = \"hello\"\nto = [\"discord\"]\n");
    let r = home.run(&["publish", post.to_str().unwrap(), "--json"], None);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stdout.contains(&format!("127.0.0.1:{port}")),
        "{}",
        r.stdout
    );
    assert!(!r.all().contains("{{access_token}}"), "{}", r.all());
    assert!(!r.all().contains(DISCORD_WEBHOOK_ID), "{}", r.all());
}

/// An attempt whose answer is lost (the platform created the article, then
/// the connection dropped) is not reported as unknown when the platform can
/// tell: the host asks the plugin's `find-post` and settles it as
/// published, with the platform's id, and a re-run sends nothing.
#[test]
fn an_unknown_outcome_is_settled_by_asking_the_platform() {
    let devto = fake_devto();
    let mut home = Home::new();
    home.endpoint("devto", "api", &devto.url());
    let r = home.run(&["accounts", "add", "devto"], Some(DEVTO_KEY));
    assert_eq!(r.code, 0, "{}", r.all());
    devto.set_mode(Mode::AcceptThenDrop);
    let post = home.post(
        "lost.toml",
        "title = \"Lost answer\"\ntext = \"body\"\nto = [\"devto\"]\n",
    );
    let r = home.run(&["publish", post.to_str().unwrap(), "--json"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["results"][0]["state"], "published", "{v}");
    assert_eq!(v["results"][0]["post_id"], "1001", "{v}");
    assert_eq!(devto.posts().len(), 1);
    let r = home.run(&["publish", post.to_str().unwrap(), "--json"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(devto.posts().len(), 1, "published once");
}

/// A delivery left `unknown` (the answer was lost and the platform could
/// not be asked at the time) is settled on the next run by asking the
/// platform again, not re-sent and not left unknown.
#[test]
fn an_unknown_outcome_left_by_an_earlier_run_is_settled_by_asking_again() {
    let devto = fake_devto();
    let mut home = Home::new();
    home.endpoint("devto", "api", &devto.url());
    let r = home.run(&["accounts", "add", "devto"], Some(DEVTO_KEY));
    assert_eq!(r.code, 0, "{}", r.all());
    devto.set_mode(Mode::AcceptThenDropThenHide);
    let post = home.post(
        "lost-twice.toml",
        "title = \"Lost twice\"\ntext = \"body\"\nto = [\"devto\"]\n",
    );
    let r = home.run(&["publish", post.to_str().unwrap(), "--json"], None);
    assert_ne!(r.code, 0, "{}", r.all());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["results"][0]["state"], "unknown", "{v}");
    let r = home.run(&["publish", post.to_str().unwrap(), "--json"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["results"][0]["state"], "published", "{v}");
    assert_eq!(v["results"][0]["post_id"], "1001", "{v}");
    assert_eq!(devto.posts().len(), 1, "never sent twice");
    let r = home.run(&["posts", "--json"], None);
    assert!(r.stdout.contains("\"published\""), "{}", r.stdout);
}

/// A plugin on contract 0.2.0 declares its post fields; the host checks
/// every `[override.PLATFORM]` field against them before anything is sent
/// (unknown names, values outside a choice) and `plugins show` lists them.
#[test]
fn declared_post_fields_are_checked_by_the_host_and_listed() {
    let mastodon = fake_mastodon();
    let home = Home::new();
    let r = home.run(&["plugins", "show", "mastodon"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("post_fields") || r.stdout.contains("post-fields"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("spoiler_text"), "{}", r.stdout);
    let r = home.run(
        &[
            "accounts",
            "add",
            "mastodon",
            "--set",
            &format!("instance={}", mastodon.url()),
        ],
        Some(MASTODON_TOKEN),
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let post = home.post(
        "fields.toml",
        "text = \"hi\"\nto = [\"mastodon\"]\n[override.mastodon]\nvisibility = \"everyone\"\nmood = \"sunny\"\n",
    );
    let r = home.run(&["publish", "--check", post.to_str().unwrap()], None);
    assert_eq!(r.code, 2, "{}", r.all());
    let out = r.all();
    assert!(out.contains("override.mastodon.visibility"), "{out}");
    assert!(out.contains("public, unlisted, private, direct"), "{out}");
    assert!(out.contains("override.mastodon.mood"), "{out}");
    assert!(out.contains("spoiler_text"), "{out}");
    assert!(mastodon.posts().is_empty());
}

/// Medium: a pasted integration token (checked with `GET /v1/me`), a post
/// with its title put into the content, tags, the canonical URL, the
/// publish status and an uploaded image; a publication; a token Medium
/// refuses says its API is closed to new integrations; a 429 and a
/// malformed answer are reported, never re-sent.
#[test]
fn medium_posts_with_images_tags_and_publications() {
    let medium = fake_medium();
    let mut home = Home::new();
    home.endpoint("medium", "api", &medium.url());
    let add = ["accounts", "add", "medium"];
    let r = home.run(&add, Some("medium-PLANTED-wrong"));
    assert_ne!(r.code, 0);
    assert!(
        r.all().contains("no longer supports its API"),
        "{}",
        r.all()
    );
    let r = home.run(&add, Some(MEDIUM_TOKEN));
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("Jamie Talbot"), "{}", r.stdout);
    let r = home.run(&["plugins", "show", "medium"], None);
    assert!(
        r.stdout.contains("API closed to new integrations"),
        "{}",
        r.stdout
    );

    // No title: refused before anything is sent.
    let untitled = home.post("untitled.toml", "text = \"hello\"\nto = [\"medium\"]\n");
    let r = home.run(&["publish", untitled.to_str().unwrap(), "--check"], None);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.all().contains("title"), "{}", r.all());

    std::fs::write(home.path().join("diagram.png"), png_bytes()).unwrap();
    let post = home.post(
        "essay.toml",
        r#"
title = "Files beat dashboards"
text = "Why **files** win."
link = "https://blog.example/files"
to = ["medium"]
[[media]]
path = "diagram.png"
alt = "the pipeline"
[override.medium]
tags = "selfhosted, rust"
status = "draft"
"#,
    );
    let r = home.run(&["publish", post.to_str().unwrap(), "--json"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("/@majelbstoat/e6f36a0"), "{}", r.stdout);
    let sent = &medium.posts()[0].1;
    assert_eq!(sent["title"], "Files beat dashboards");
    assert_eq!(sent["contentFormat"], "markdown");
    assert_eq!(sent["publishStatus"], "draft");
    assert_eq!(sent["canonicalUrl"], "https://blog.example/files");
    assert_eq!(sent["tags"], json!(["selfhosted", "rust"]));
    assert_eq!(sent["notifyFollowers"], false);
    let content = sent["content"].as_str().unwrap();
    assert!(
        content.starts_with("# Files beat dashboards\n\nWhy **files** win."),
        "{content}"
    );
    assert!(
        content.contains("![the pipeline](https://cdn-images-1.medium.com/max/800/img0.png)"),
        "{content}"
    );

    // Into a publication (a setting of the account, or per post).
    let r = home.run(
        &[
            "accounts",
            "add",
            "medium",
            "--account",
            "pub",
            "--set",
            "publication_id=b45573563f5a",
        ],
        Some(MEDIUM_TOKEN),
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let p = home.post(
        "pub.toml",
        "title = \"In the publication\"\ntext = \"x\"\nto = [\"medium/pub\"]\n",
    );
    let r = home.run(&["publish", p.to_str().unwrap()], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        medium
            .seen()
            .iter()
            .any(|s| s.path == "/v1/publications/b45573563f5a/posts"),
        "{:?}",
        medium.seen()
    );

    // A revoked token: needs reconnect, saying why no new one may come.
    medium.set_mode(Mode::Expired);
    let p = home.post(
        "late.toml",
        "title = \"Late\"\ntext = \"x\"\nto = [\"medium\"]\n",
    );
    let r = home.run(&["publish", p.to_str().unwrap()], None);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.all().contains("issues no new tokens"), "{}", r.all());
    // 429: a rate limit, reported; nothing was published.
    medium.set_mode(Mode::RateLimited);
    let p = home.post(
        "busy.toml",
        "title = \"Busy\"\ntext = \"x\"\nto = [\"medium\"]\n",
    );
    let r = home.run(&["publish", p.to_str().unwrap()], None);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.all().contains("rate"), "{}", r.all());
    medium.set_mode(Mode::Html);
    let p = home.post(
        "html.toml",
        "title = \"Html\"\ntext = \"x\"\nto = [\"medium\"]\n",
    );
    let r = home.run(&["publish", p.to_str().unwrap()], None);
    assert_eq!(r.code, 1, "{}", r.all());
    assert_eq!(medium.posts().len(), 2);
}

/// A home with the Hacker News plugin pointed at `hn`'s site and read API.
fn hn_home(hn: &HnFake) -> Home {
    let mut home = Home::new();
    home.endpoint("hackernews", "site", &format!("{}/site", hn.fake.url()))
        .endpoint("hackernews", "read", &format!("{}/v0", hn.fake.url()));
    home.extra_config
        .push_str("\n[daemon]\nlisten = \"127.0.0.1:0\"\ndue_check_secs = 1\n");
    home
}

/// Hacker News by default: nothing is logged in; a publish hands over the
/// prefilled submit page, and the daemon watches the read API (which lags)
/// until the user's submission appears, then records it as published with
/// its item's URL.
#[test]
fn hacker_news_hands_the_submit_page_over_and_settles_when_the_item_appears() {
    let hn = fake_hackernews(Duration::from_secs(2));
    let home = hn_home(&hn);
    let r = home.run(&["connect", "hackernews", "--set", "user=nobody"], None);
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(r.all().contains("has no user `nobody`"), "{}", r.all());
    let r = home.run(&["connect", "hackernews", "--set", "user=pg"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("connected hackernews/default as pg"),
        "{}",
        r.stdout
    );

    let untitled = home.post("untitled.toml", "text = \"hi\"\nto = [\"hackernews\"]\n");
    let r = home.run(&["publish", untitled.to_str().unwrap(), "--check"], None);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.all().contains("title"), "{}", r.all());

    let post = home.post(
        "show.toml",
        "id = \"show\"\ntitle = \"Show HN: outreach\"\nlink = \"https://example.org/outreach\"\ntext = \"\"\nto = [\"hackernews\"]\n",
    );
    let r = home.run(&["publish", post.to_str().unwrap()], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("handed to you")
            && r.stdout.contains(
                "/site/submitlink?u=https%3A%2F%2Fexample.org%2Foutreach&t=Show+HN%3A+outreach"
            ),
        "{}",
        r.stdout
    );
    let state = || -> Value {
        serde_json::from_str(&home.run(&["posts", "show", "show", "--json"], None).stdout).unwrap()
    };
    assert_eq!(state()["deliveries"][0]["state"], "processing");
    assert!(
        hn.fake.posts().is_empty(),
        "nothing was submitted by outreach"
    );

    let daemon = support::daemon::start_daemon(&home);
    let id = hn.user_submits("pg", "Show HN: outreach", "https://example.org/outreach");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let v = state();
        if v["deliveries"][0]["state"] == "published" {
            assert_eq!(v["deliveries"][0]["platform_id"], id.to_string(), "{v}");
            assert!(
                v["deliveries"][0]["url"]
                    .as_str()
                    .unwrap()
                    .ends_with(&format!("/site/item?id={id}")),
                "{v}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not settled:\n{v}\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    daemon.stop();
}

/// Hacker News in session mode (opt-in): a login form whose cookie is the
/// session, the submit form's one-time `fnid`, the item found through the
/// lagging read API, a link posted lately refused with its item, "posting
/// too fast" as a rate limit, and a session that ends renewed by logging
/// in again.
#[test]
fn hacker_news_session_mode_logs_in_submits_and_finds_the_item() {
    let hn = fake_hackernews(Duration::from_secs(1));
    let home = hn_home(&hn);
    let connect = [
        "connect",
        "hackernews",
        "--set",
        "user=pg",
        "--set",
        "mode=session",
        "--username",
        "pg",
        "--remember-password",
    ];
    let r = home.run(&connect, Some("wrong"));
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(r.all().contains("Bad login."), "{}", r.all());
    let r = home.run(&connect, Some(HN_PASSWORD));
    assert_eq!(r.code, 0, "{}", r.all());

    let post = |name: &str, link: &str| {
        home.post(
            &format!("{name}.toml"),
            &format!("title = \"{name}\"\nlink = \"{link}\"\ntext = \"\"\nto = [\"hackernews\"]\n"),
        )
    };
    let r = home.run(
        &[
            "publish",
            post("First", "https://example.org/1").to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("/site/item?id="), "{}", r.stdout);
    let sent = &hn.fake.posts()[0].1;
    assert_eq!(sent["fnop"], "submit-page");
    assert_eq!(sent["url"], "https://example.org/1");

    // The same link again: the site shows the existing item.
    let r = home.run(
        &[
            "publish",
            post("Again", "https://example.org/1").to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.all().contains("already has this link as item"),
        "{}",
        r.all()
    );

    hn.fake.set_mode(Mode::RateLimited);
    let r = home.run(
        &[
            "publish",
            post("Fast", "https://example.org/2").to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.all().contains("posting too fast"), "{}", r.all());
    hn.fake.set_mode(Mode::Normal);

    // The session ends: logged in again with the kept password.
    hn.fake.state.oauth.lock().unwrap().access.clear();
    let r = home.run(
        &[
            "publish",
            post("Later", "https://example.org/3").to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(
        hn.fake.state.oauth.lock().unwrap().code_calls,
        3,
        "three logins"
    );
    assert_eq!(hn.fake.posts().len(), 2);
}

// ------------------------------------------------------------ Meta

fn publish_json(home: &Home, name: &str, toml: &str) -> (Run, Value) {
    let post = home.post(name, toml);
    let r = home.run(&["publish", post.to_str().unwrap(), "--json"], None);
    let v = serde_json::from_str(&r.stdout).unwrap_or(Value::Null);
    (r, v)
}

/// Instagram: an image, a reel and a carousel, each a container that
/// Instagram fills by fetching the file itself — here from outreach's
/// media listener, whose bytes the fake compares with the file — polled
/// until FINISHED (a reel is IN_PROGRESS first), then published; the
/// permalink is the receipt's URL. A container that fails says why, the
/// 24-hour publishing limit is asked first, code 190 means reconnect and
/// code 4 is a rate limit. Nothing is served once a delivery is over.
#[test]
fn instagram_publishes_containers_fetched_from_the_media_listener() {
    let ig = support::meta::fake_instagram();
    let (home, base) = meta_home("instagram", &ig);
    let (a, b) = (jpeg("first photo"), jpeg("second photo"));
    let clip = mp4(300_000);
    std::fs::write(home.path().join("a.jpg"), &a).unwrap();
    std::fs::write(home.path().join("b.jpg"), &b).unwrap();
    std::fs::write(home.path().join("clip.mp4"), &clip).unwrap();
    ig.expect_media("a.jpg", &a);
    ig.expect_media("b.jpg", &b);
    ig.expect_media("clip.mp4", &clip);

    // One image with its alt text.
    let (r, v) = publish_json(
        &home,
        "one.toml",
        "text = \"Fresh bread #bakery\"\nto = [\"instagram\"]\n[[media]]\npath = \"a.jpg\"\nalt = \"a loaf\"\n",
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let res = &v["results"][0];
    assert!(
        res["url"]
            .as_str()
            .unwrap()
            .starts_with("https://www.instagram.com/p/"),
        "{v}"
    );
    let create = ig
        .seen()
        .into_iter()
        .find(|s| s.method == "POST" && s.path.ends_with("/media"))
        .unwrap();
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(create.body.as_bytes())
            .into_owned()
            .collect();
    assert_eq!(form["caption"], "Fresh bread #bakery");
    assert_eq!(form["alt_text"], "a loaf");
    let url = form["image_url"].clone();
    assert!(
        url.starts_with(&format!("{base}/")) && url.ends_with("/a.jpg"),
        "{url}"
    );
    assert!(
        ig.fetches().iter().all(|f| f["ok"] == true),
        "{:?}",
        ig.fetches()
    );
    // The delivery is over (and so is `outreach publish`, which served
    // it): the address no longer works.
    assert!(support::meta::fetch(&url, &[]).map_or(true, |(s, _, _)| s == 404));

    // A reel: processing, then finished.
    ig.kv_set("polls", json!(1));
    let (r, _) = publish_json(
        &home,
        "reel.toml",
        "text = \"Behind the counter\"\nto = [\"instagram\"]\n[[media]]\npath = \"clip.mp4\"\n",
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let posts = ig.posts();
    assert_eq!(posts.last().unwrap().1["media_type"], "REELS");
    let polls = ig
        .seen()
        .into_iter()
        .filter(|s| s.method == "GET" && s.query.contains("fields=status_code"))
        .count();
    assert!(polls >= 2, "polled until FINISHED: {polls}");
    ig.kv_set("polls", json!(0));

    // A carousel of two images and the video.
    let (r, _) = publish_json(
        &home,
        "carousel.toml",
        "text = \"Our week\"\nto = [\"instagram\"]\n[[media]]\npath = \"a.jpg\"\n[[media]]\npath = \"b.jpg\"\n[[media]]\npath = \"clip.mp4\"\n",
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let last = ig.posts().last().unwrap().1.clone();
    assert_eq!(last["media_type"], "CAROUSEL");
    assert_eq!(last["children"].as_array().unwrap().len(), 3, "{last}");
    assert!(
        ig.fetches().iter().all(|f| f["ok"] == true),
        "{:?}",
        ig.fetches()
    );
    let published = ig.posts().len();

    // A container Instagram could not process: its reason, nothing posted.
    ig.kv_set(
        "fail_next_container",
        json!("The media could not be fetched from the URL (2207052)"),
    );
    let (r, v) = publish_json(
        &home,
        "broken.toml",
        "text = \"Broken\"\nto = [\"instagram\"]\n[[media]]\npath = \"b.jpg\"\n",
    );
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(
        v["results"][0]["error"]
            .as_str()
            .unwrap_or("")
            .contains("could not be fetched from the URL (2207052)"),
        "{v}"
    );
    assert_eq!(ig.posts().len(), published);

    // The publishing limit is used up: asked first, nothing is created.
    ig.kv_set("quota_usage", json!(50));
    let creates = |ig: &Fake| {
        ig.seen()
            .iter()
            .filter(|s| s.method == "POST" && s.path.ends_with("/media"))
            .count()
    };
    let before = creates(&ig);
    let (r, v) = publish_json(
        &home,
        "quota.toml",
        "text = \"Too many\"\nto = [\"instagram\"]\n[[media]]\npath = \"a.jpg\"\n",
    );
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(
        v["results"][0]["error"]
            .as_str()
            .unwrap_or("")
            .contains("publishing limit"),
        "{v}"
    );
    assert_eq!(creates(&ig), before);
    ig.kv_set("quota_usage", json!(0));

    // Code 4: a rate limit, not an account problem.
    ig.set_mode(Mode::RateLimited);
    let (r, v) = publish_json(
        &home,
        "limited.toml",
        "text = \"Limited\"\nto = [\"instagram\"]\n[[media]]\npath = \"a.jpg\"\n",
    );
    assert_ne!(r.code, 0, "{}", r.all());
    assert_eq!(v["results"][0]["error_kind"], "rate-limited", "{v}");

    // Code 190: the token is gone; the account needs reconnecting.
    ig.set_mode(Mode::Expired);
    let (r, v) = publish_json(
        &home,
        "gone.toml",
        "text = \"Gone\"\nto = [\"instagram\"]\n[[media]]\npath = \"a.jpg\"\n",
    );
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(
        v["results"][0]["error_kind"]
            .as_str()
            .unwrap_or("")
            .contains("reconnect"),
        "{v}"
    );
    assert_eq!(ig.posts().len(), published);
}

/// Without `[media] public_base_url`, `--check` names each attachment
/// Instagram must fetch and the two ways to give it an address; a
/// `public_url` must be https; with one, it is used as it is.
#[test]
fn attachments_a_platform_fetches_need_a_public_address() {
    let ig = support::meta::fake_instagram();
    let mut home = Home::new();
    home.endpoint("instagram", "api", &ig.url());
    ig.grant("ig-check-PLANTED-token");
    let r = home.run(
        &["accounts", "add", "instagram"],
        Some("ig-check-PLANTED-token"),
    );
    assert_eq!(r.code, 0, "{}", r.all());
    std::fs::write(home.path().join("a.jpg"), jpeg("x")).unwrap();
    let post = home.post(
        "p.toml",
        "text = \"hi\"\nto = [\"instagram\"]\n[[media]]\npath = \"a.jpg\"\n",
    );
    let r = home.run(&["publish", post.to_str().unwrap(), "--check"], None);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("media[0]")
            && r.stderr.contains("public_url")
            && r.stderr.contains("public_base_url"),
        "{}",
        r.stderr
    );
    for bad in [
        "http://cdn.example/a.jpg",
        "file:///etc/passwd",
        "{{access_token}}",
    ] {
        let post = home.post(
            "bad.toml",
            &format!(
                "text = \"hi\"\nto = [\"instagram\"]\n[[media]]\npath = \"a.jpg\"\npublic_url = \"{bad}\"\n"
            ),
        );
        let r = home.run(&["publish", post.to_str().unwrap(), "--check"], None);
        assert_eq!(r.code, 2, "{bad}: {}", r.all());
        assert!(
            r.stderr.contains("public_url must be an https address"),
            "{}",
            r.stderr
        );
    }
    let post = home.post(
        "cdn.toml",
        "text = \"from a CDN\"\nto = [\"instagram\"]\n[[media]]\npath = \"a.jpg\"\npublic_url = \"https://cdn.example/a.jpg\"\n",
    );
    let r = home.run(&["publish", post.to_str().unwrap(), "--check"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    // Used as it is (the fake cannot reach cdn.example: the container
    // fails with Instagram's reason).
    let r = home.run(&["publish", post.to_str().unwrap()], None);
    assert_ne!(r.code, 0, "{}", r.all());
    let create = ig
        .seen()
        .into_iter()
        .find(|s| s.method == "POST" && s.path.ends_with("/media"))
        .unwrap();
    assert!(
        create
            .body
            .contains("image_url=https%3A%2F%2Fcdn.example%2Fa.jpg"),
        "{}",
        create.body
    );
    assert!(r.all().contains("could not"), "{}", r.all());
}

/// Threads: a post with an image and a thread of two replies, each reply
/// a container with `reply_to_id` of the one before; text over 500
/// characters is refused before anything is sent.
#[test]
fn threads_publishes_a_thread_of_three() {
    let th = support::meta::fake_threads();
    let (home, _) = meta_home("threads", &th);
    let photo = jpeg("thread photo");
    std::fs::write(home.path().join("p.jpg"), &photo).unwrap();
    th.expect_media("p.jpg", &photo);
    let (r, v) = publish_json(
        &home,
        "thread.toml",
        r#"
text = "1/ We opened a bakery"
to = ["threads"]
[[media]]
path = "p.jpg"
[[thread]]
text = "2/ It smells great"
[[thread]]
text = "3/ Come by"
"#,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let posts = th.posts();
    assert_eq!(posts.len(), 3, "{posts:?}");
    assert_eq!(posts[0].1["media_type"], "IMAGE");
    assert_eq!(posts[1].1["media_type"], "TEXT");
    assert_eq!(posts[1].1["reply_to"], json!(posts[0].0));
    assert_eq!(posts[2].1["reply_to"], json!(posts[1].0));
    assert!(
        v["results"][0]["url"]
            .as_str()
            .unwrap()
            .starts_with("https://www.threads.net/"),
        "{v}"
    );
    assert!(
        th.fetches().iter().all(|f| f["ok"] == true),
        "{:?}",
        th.fetches()
    );
    let long = "x".repeat(501);
    let post = home.post(
        "long.toml",
        &format!("text = \"{long}\"\nto = [\"threads\"]\n"),
    );
    let r = home.run(&["publish", post.to_str().unwrap(), "--check"], None);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("500"), "{}", r.stderr);
    assert_eq!(th.posts().len(), 3);
}

/// Facebook Pages: the page token in the query with its
/// `appsecret_proof` on every call; a text post with a link, one photo as
/// bytes, several photos attached to one feed post, and a video by the
/// resumable protocol in the chunks Facebook asks for.
#[test]
fn facebook_pages_publish_text_photos_and_resumable_video() {
    let fb = fake_facebook();
    let mut home = Home::new();
    home.endpoint("facebook", "api", &fb.url());
    home.endpoint("facebook", "video", &fb.url());
    home.extra_config.push_str(&format!(
        "\n[platforms.facebook]\nclient_id = \"{}\"\nclient_secret_env = \"FB_SECRET\"\n",
        support::oauth::CLIENT_ID
    ));
    home.env
        .push(("FB_SECRET".into(), support::oauth::CLIENT_SECRET.into()));
    let token = "page-101-PLANTED-pasted";
    fb.grant(token);
    fb.state
        .oauth
        .lock()
        .unwrap()
        .issued_to
        .insert(token.into(), "101".into());
    let r = home.run(
        &["accounts", "add", "facebook", "--set", "page_id=101"],
        Some(token),
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("Acme Bakery"), "{}", r.stdout);

    let (r, v) = publish_json(
        &home,
        "text.toml",
        "text = \"We are open\"\nlink = \"https://acme.example/\"\nto = [\"facebook\"]\n",
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        v["results"][0]["url"]
            .as_str()
            .unwrap()
            .starts_with("https://www.facebook.com/101/posts/"),
        "{v}"
    );
    assert_eq!(fb.posts()[0].1["extra"]["link"], "https://acme.example/");

    std::fs::write(home.path().join("a.jpg"), jpeg("a")).unwrap();
    std::fs::write(home.path().join("b.jpg"), jpeg("b")).unwrap();
    let (r, _) = publish_json(
        &home,
        "photo.toml",
        "text = \"A photo\"\nto = [\"facebook\"]\n[[media]]\npath = \"a.jpg\"\n",
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(fb.posts()[1].1["text"], "A photo");
    let (r, _) = publish_json(
        &home,
        "photos.toml",
        "text = \"Two photos\"\nto = [\"facebook\"]\n[[media]]\npath = \"a.jpg\"\n[[media]]\npath = \"b.jpg\"\n",
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let last = fb.posts().last().unwrap().1.clone();
    assert_eq!(
        last["extra"]["attached"].as_array().unwrap().len(),
        2,
        "{last}"
    );

    // A video of 2.5 chunks.
    fb.kv_set("video_chunk", json!(100_000));
    std::fs::write(home.path().join("v.mp4"), mp4(250_000)).unwrap();
    let (r, _) = publish_json(
        &home,
        "video.toml",
        "text = \"A tour\"\ntitle = \"Tour\"\nto = [\"facebook\"]\n[[media]]\npath = \"v.mp4\"\n",
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let last = fb.posts().last().unwrap().1.clone();
    assert_eq!(last["bytes"], 250_000, "{last}");
    assert_eq!(last["chunks"], 3, "{last}");
    assert_eq!(last["text"], "A tour");
    // Every call carried a valid proof (the fake refuses any other).
    assert!(
        fb.seen()
            .iter()
            .all(|s| s.query.contains("appsecret_proof=")),
        "every call carries the proof"
    );
}

// ------------------------------------------------------------ video

/// YouTube: the resumable protocol in 32 MiB pieces of a video read from
/// disk piece by piece; a connection cut in the middle of a piece is
/// followed by asking the session where it stopped (`bytes */N`) and
/// going on from there, in the same session; the video's fields reach
/// YouTube as its metadata (private unless said otherwise); the session
/// URL — a capability — never shows (the fake plants it like a secret).
/// The daily quota is a rate limit that resets at midnight Pacific time.
#[test]
fn youtube_uploads_resumably_and_goes_on_after_a_cut() {
    let yt = support::video::fake_youtube();
    let home = youtube_home(&yt);
    let size = 40 << 20;
    let hash = support::video::write_video(&home.path().join("tour.mp4"), size);
    yt.kv_set("cut_at", json!(12 << 20));
    let post = r#"
title = "A tour of the bakery"
text = "Flour, water, time."
to = ["youtube"]
[[media]]
path = "tour.mp4"
[override.youtube]
tags = "bread, bakery"
"#;
    let check = home.post("check.toml", post);
    let r = home.run(&["publish", check.to_str().unwrap(), "--check"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    let (r, v) = publish_json(&home, "tour.toml", post);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(
        v["results"][0]["url"], "https://www.youtube.com/watch?v=vid1",
        "{v}"
    );
    let (received, fnv, chunks) = yt.upload("yt-session-PLANTED-1").unwrap();
    assert_eq!(received, size);
    assert_eq!(fnv, hash, "the bytes YouTube has are the file's");
    assert!(
        chunks == 2,
        "40 MiB in 32 MiB pieces: the first cut at 12 MiB, then the other 28 from there: {chunks}"
    );
    assert_eq!(yt.kv("sessions"), Some(json!(1)), "one session throughout");
    assert!(
        yt.kv("status_queries").and_then(|v| v.as_u64()) >= Some(1),
        "asked where the upload stood after the cut"
    );
    let meta = &yt.posts()[0].1;
    assert_eq!(meta["status"]["privacyStatus"], "private");
    assert_eq!(meta["snippet"]["tags"], json!(["bread", "bakery"]));
    assert_eq!(meta["snippet"]["description"], "Flour, water, time.");
    let shown = home.run(
        &["posts", "show", v["post"].as_str().unwrap(), "--json"],
        None,
    );
    assert_eq!(shown.code, 0, "{}", shown.all());

    // No title: refused before anything is sent.
    let notitle = home.post(
        "notitle.toml",
        "text = \"x\"\nto = [\"youtube\"]\n[[media]]\npath = \"tour.mp4\"\n",
    );
    let r = home.run(&["publish", notitle.to_str().unwrap(), "--check"], None);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("title"), "{}", r.stderr);

    // The day's quota is used up: a rate limit until midnight Pacific time.
    yt.kv_set("quota_error", json!("quotaExceeded"));
    let (r, v) = publish_json(
        &home,
        "again.toml",
        &post.replace("A tour of the bakery", "Another tour"),
    );
    assert_ne!(r.code, 0, "{}", r.all());
    assert_eq!(v["results"][0]["error_kind"], "rate-limited", "{v}");
    assert!(
        v["results"][0]["error"]
            .as_str()
            .unwrap_or("")
            .contains("Pacific"),
        "{v}"
    );
    assert_eq!(yt.kv("sessions"), Some(json!(1)));
}

/// A home whose TikTok account (a pasted token) talks to `tt`.
fn tiktok_home(tt: &Fake) -> Home {
    let mut home = Home::new();
    home.endpoint("tiktok", "api", &format!("{}/v2", tt.url()));
    home.extra_config
        .push_str("\n[publish]\npending_wait_secs = 3\n");
    home.limits = vec![("publish_timeout_ms", 60_000), ("http_timeout_ms", 20_000)];
    tt.grant("tt-pasted-PLANTED-token");
    let r = home.run(
        &["accounts", "add", "tiktok"],
        Some("tt-pasted-PLANTED-token"),
    );
    assert_eq!(r.code, 0, "{}", r.all());
    home
}

/// TikTok: the creator's options first (a privacy level they may not use
/// is refused before any upload), then `video/init` with a chunk plan the
/// fake checks (10 MiB chunks, the last taking the remainder), each chunk
/// `PUT` with its `Content-Range`, then the status until
/// `PUBLISH_COMPLETE` with the public id; a post TikTok still moderates is
/// pending and settles later; `FAILED` gives TikTok's reason.
#[test]
fn tiktok_uploads_in_chunks_and_waits_for_the_public_id() {
    let tt = support::video::fake_tiktok();
    let home = tiktok_home(&tt);
    let size = 25 << 20;
    let hash = support::video::write_video(&home.path().join("clip.mp4"), size);
    let post = |privacy: &str| {
        format!(
            "text = \"Fresh out of the oven #bread\"\nto = [\"tiktok\"]\n[[media]]\npath = \"clip.mp4\"\n[override.tiktok]\nprivacy_level = \"{privacy}\"\n"
        )
    };
    // Unaudited: only SELF_ONLY.
    tt.kv_set("privacy_options", json!(["SELF_ONLY"]));
    let (r, v) = publish_json(&home, "public.toml", &post("PUBLIC_TO_EVERYONE"));
    assert_ne!(r.code, 0, "{}", r.all());
    let err = v["results"][0]["error"].as_str().unwrap_or("");
    assert!(err.contains("SELF_ONLY"), "{v}");
    assert!(tt.uploads().is_empty(), "nothing uploaded");

    // A private post is complete without a public id: published under its
    // publish id, linked to the profile.
    let (r, v) = publish_json(&home, "private.toml", &post("SELF_ONLY"));
    assert_eq!(r.code, 0, "{}", r.all());
    let res = &v["results"][0];
    assert_eq!(res["state"], "published", "{v}");
    assert_eq!(res["url"], "https://www.tiktok.com/@acmebakery", "{v}");
    // A public one waits for its public id.
    tt.kv_set(
        "privacy_options",
        json!(["PUBLIC_TO_EVERYONE", "SELF_ONLY"]),
    );
    let (r, v) = publish_json(
        &home,
        "public2.toml",
        &post("PUBLIC_TO_EVERYONE").replace("oven", "oven, for all"),
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let res = &v["results"][0];
    assert!(
        res["url"]
            .as_str()
            .unwrap_or("")
            .starts_with("https://www.tiktok.com/@acmebakery/video/730000000000000000"),
        "{v}"
    );
    let id = tt.uploads().pop().unwrap();
    let (received, fnv, chunks) = tt.upload(&id).unwrap();
    assert_eq!(
        (received, fnv, chunks),
        (size, hash, 2),
        "two chunks, the last with the rest"
    );

    // Moderation takes longer than publish waits: pending, then settled.
    tt.kv_set("moderation_polls", json!(1000));
    let (r, v) = publish_json(
        &home,
        "slow.toml",
        &post("SELF_ONLY").replace("oven", "oven again"),
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(v["results"][0]["state"], "processing", "{v}");

    // FAILED with TikTok's reason.
    tt.kv_set("moderation_polls", json!(0));
    tt.kv_set("fail_reason", json!("duration_check_failed"));
    let (r, v) = publish_json(
        &home,
        "fail.toml",
        &post("SELF_ONLY").replace("oven", "oven, once more"),
    );
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(
        v["results"][0]["error"]
            .as_str()
            .unwrap_or("")
            .contains("duration_check_failed"),
        "{v}"
    );
}

/// TikTok: a connection cut after a chunk has arrived is survived in the
/// same call (the chunk is not sent twice into the upload); photo posts
/// are pulled by TikTok from outreach's media listener.
#[test]
fn tiktok_survives_a_cut_chunk_and_pulls_photos() {
    let tt = support::video::fake_tiktok();
    let mut home = tiktok_home(&tt);
    let size = 22 << 20;
    let hash = support::video::write_video(&home.path().join("clip.mp4"), size);
    tt.kv_set("cut_after_chunk", json!(0));
    let (r, v) = publish_json(
        &home,
        "cut.toml",
        "text = \"cut\"\nto = [\"tiktok\"]\n[[media]]\npath = \"clip.mp4\"\n",
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(v["results"][0]["state"], "published", "{v}");
    let id = tt.uploads().pop().unwrap();
    let (received, fnv, _) = tt.upload(&id).unwrap();
    assert_eq!((received, fnv), (size, hash));

    let port = support::meta::free_port();
    home.extra_config.push_str(&format!(
        "\n[media]\npublic_base_url = \"http://127.0.0.1:{port}\"\nlisten = \"127.0.0.1:{port}\"\n"
    ));
    std::fs::write(home.path().join("a.jpg"), jpeg("tiktok a")).unwrap();
    std::fs::write(home.path().join("b.jpg"), jpeg("tiktok b")).unwrap();
    let (r, v) = publish_json(
        &home,
        "photos.toml",
        "text = \"two loaves\"\nto = [\"tiktok\"]\n[[media]]\npath = \"a.jpg\"\n[[media]]\npath = \"b.jpg\"\n",
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(v["results"][0]["state"], "published", "{v}");
    assert_eq!(
        tt.posts().last().unwrap().1["title"],
        json!(""),
        "{:?}",
        tt.posts()
    );
}

/// What an MCP client sees of one tool call: whether it is a tool error,
/// its text, its structured content.
struct ToolCall {
    error: bool,
    text: String,
    data: Value,
}

/// Call `name` with `args` over the client session; every text it
/// answers is also kept in `seen` (checked for secrets at the end).
async fn mcp_call(
    client: &rmcp::service::RunningService<rmcp::RoleClient, ()>,
    name: &'static str,
    args: Value,
    seen: &mut String,
) -> ToolCall {
    let params = rmcp::model::CallToolRequestParams::new(name)
        .with_arguments(args.as_object().expect("arguments are an object").clone());
    let r = client
        .call_tool(params)
        .await
        .unwrap_or_else(|e| panic!("{name}: the server did not answer the call: {e}"));
    let text: Vec<String> = r
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect();
    let text = text.join("\n");
    seen.push_str(&text);
    seen.push('\n');
    ToolCall {
        error: r.is_error == Some(true),
        text,
        data: r.structured_content.unwrap_or(Value::Null),
    }
}

/// Start `outreach mcp` on `home` as an MCP client does (a child process
/// on stdio), its standard error collected into `log`.
async fn mcp_session(
    home: &Home,
    log: &std::sync::Arc<std::sync::Mutex<String>>,
) -> (
    rmcp::service::RunningService<rmcp::RoleClient, ()>,
    tokio::task::JoinHandle<()>,
) {
    use rmcp::ServiceExt as _;
    use tokio::io::AsyncReadExt as _;
    let cmd = tokio::process::Command::from(home.command(&["mcp"]));
    let (transport, stderr) = rmcp::transport::TokioChildProcess::builder(cmd)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start outreach mcp");
    let mut stderr = stderr.expect("stderr is piped");
    let sink = log.clone();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 8192];
        while let Ok(n) = stderr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let client = ().serve(transport).await.unwrap_or_else(|e| {
        panic!(
            "the MCP handshake failed: {e}\n{}",
            log.lock().unwrap().clone()
        )
    });
    (client, reader)
}

/// Issue 17: `outreach mcp` is an MCP server on stdio. A real client
/// session against the real binary lists the seven tools, checks a post
/// too long for X (the limit named), publishes to the X fake exactly once
/// (the URL and id in the result; sent again, nothing is sent), lists and
/// shows it, schedules and cancels another, reads accounts and platforms
/// — and, with a daemon running, publishes through the daemon. No planted
/// secret appears in any answer or on standard error.
#[test]
fn mcp_session_checks_publishes_and_lists_posts() {
    let w = World::new().with_accounts();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let mut seen = String::new();
    rt.block_on(async {
        let (client, reader) = mcp_session(&w.home, &log).await;
        let info = client.peer_info().expect("the server introduced itself");
        assert_eq!(info.server_info.as_ref().unwrap().name, "outreach");

        let mut names: Vec<String> = client
            .list_all_tools()
            .await
            .unwrap()
            .iter()
            .map(|t| t.name.to_string())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "cancel_post",
                "check_post",
                "list_accounts",
                "list_platforms",
                "list_posts",
                "publish_post",
                "show_post"
            ]
        );

        // Too long for X: the problem, its limit, and nothing sent.
        let long = "a".repeat(300);
        let r = mcp_call(
            &client,
            "check_post",
            json!({ "text": long, "to": ["x"] }),
            &mut seen,
        )
        .await;
        assert_eq!(r.data["ok"], false, "{}", r.text);
        assert_eq!(r.data["problems"][0]["target"], "x/default", "{}", r.text);
        assert!(
            r.text
                .contains("x/default: text: is 300 characters long; the limit is 280"),
            "{}",
            r.text
        );
        // Publishing it is refused the same way, as a tool error.
        let r = mcp_call(
            &client,
            "publish_post",
            json!({ "text": long, "to": ["x"] }),
            &mut seen,
        )
        .await;
        assert!(r.error && r.text.contains("the limit is 280"), "{}", r.text);
        assert!(w.x.posts().is_empty());

        // Published once, with the platform's id and URL.
        let post = json!({ "id": "agent-hello", "text": "Hello from an agent", "to": ["x"] });
        let r = mcp_call(&client, "publish_post", post.clone(), &mut seen).await;
        assert!(!r.error, "{}", r.text);
        let x = w.x.posts();
        assert_eq!(x.len(), 1, "{x:?}");
        assert_eq!(x[0].1["text"], "Hello from an agent");
        let url = format!("https://x.com/xdevelopers/status/{}", x[0].0);
        let result = &r.data["results"][0];
        assert_eq!(result["target"], "x/default", "{}", r.data);
        assert_eq!(result["state"], "published", "{}", r.data);
        assert_eq!(result["post_id"], x[0].0.as_str(), "{}", r.data);
        assert_eq!(result["url"], url.as_str(), "{}", r.data);
        assert!(r.text.contains(&url), "{}", r.text);
        // The same post again: the journal has it, nothing is sent.
        let r = mcp_call(&client, "publish_post", post, &mut seen).await;
        assert!(!r.error, "{}", r.text);
        assert_eq!(r.data["results"][0]["already"], true, "{}", r.data);
        assert_eq!(w.x.posts().len(), 1);

        let r = mcp_call(&client, "list_posts", json!({}), &mut seen).await;
        assert!(!r.error, "{}", r.text);
        let posts = r.data["posts"].as_array().unwrap();
        let hello = posts
            .iter()
            .find(|p| p["post"]["id"] == "agent-hello")
            .unwrap_or_else(|| panic!("agent-hello is not listed: {}", r.data));
        assert_eq!(hello["deliveries"][0]["state"], "published");
        assert_eq!(hello["deliveries"][0]["url"], url.as_str());
        assert!(r.text.contains(&url), "{}", r.text);

        let r = mcp_call(&client, "show_post", json!({ "id": "agent-hello" }), &mut seen).await;
        assert!(!r.error && r.text.contains(&url), "{}", r.text);
        assert_eq!(r.data["attempts"].as_array().unwrap().len(), 1, "{}", r.data);
        let r = mcp_call(&client, "show_post", json!({ "id": "no-such" }), &mut seen).await;
        assert!(
            r.error && r.text.contains("there is no post `no-such`; list_posts lists them"),
            "{}",
            r.text
        );

        // Scheduled, with no daemon: queued, and said so; then cancelled.
        let r = mcp_call(
            &client,
            "publish_post",
            json!({ "id": "agent-later", "text": "Later", "to": ["x"], "schedule": "2099-01-01T09:00:00Z" }),
            &mut seen,
        )
        .await;
        assert!(!r.error, "{}", r.text);
        assert_eq!(r.data["results"][0]["state"], "queued", "{}", r.data);
        assert!(r.text.contains("No daemon runs"), "{}", r.text);
        let r = mcp_call(&client, "cancel_post", json!({ "id": "agent-later" }), &mut seen).await;
        assert!(!r.error, "{}", r.text);
        assert_eq!(r.data["cancelled"], 1, "{}", r.data);
        let r = mcp_call(&client, "show_post", json!({ "id": "agent-later" }), &mut seen).await;
        assert_eq!(r.data["deliveries"][0]["state"], "cancelled", "{}", r.data);
        assert_eq!(w.x.posts().len(), 1);

        let r = mcp_call(&client, "list_accounts", json!({}), &mut seen).await;
        assert!(!r.error, "{}", r.text);
        let ids: Vec<&str> = r.data["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| a["id"].as_str())
            .collect();
        assert_eq!(ids, ["linkedin/default", "mastodon/social", "x/default"]);
        assert!(r.text.contains("x/default"), "{}", r.text);

        let r = mcp_call(&client, "list_platforms", json!({}), &mut seen).await;
        assert!(!r.error, "{}", r.text);
        let x = r.data["platforms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == "x")
            .unwrap_or_else(|| panic!("x is not listed: {}", r.text));
        assert_eq!(x["max_length"], 280, "{x}");
        assert_eq!(x["content"]["threads"], true, "{x}");
        assert!(r.text.contains("x — X "), "{}", r.text);
        // A platform's own post fields, for `override`.
        assert!(
            r.text
                .contains("reddit — Reddit 0.1.0: text up to 40000 (chars); a title is required; post fields: subreddit (required), flair_id"),
            "{}",
            r.text
        );

        client.cancel().await.unwrap();
        tokio::time::timeout(Duration::from_secs(30), reader)
            .await
            .expect("outreach mcp exits when its client goes away")
            .unwrap();

        // With a daemon: the same tools go through its control API.
        let daemon = support::daemon::start_daemon(&w.home);
        let (client, reader) = mcp_session(&w.home, &log).await;
        let r = mcp_call(
            &client,
            "publish_post",
            json!({ "text": "Through the daemon", "to": ["x"] }),
            &mut seen,
        )
        .await;
        assert!(!r.error, "{}", r.text);
        let x = w.x.posts();
        assert_eq!(x.len(), 2, "{x:?}");
        assert_eq!(
            r.data["results"][0]["url"],
            format!("https://x.com/xdevelopers/status/{}", x[1].0),
            "{}",
            r.data
        );
        let r = mcp_call(&client, "list_posts", json!({}), &mut seen).await;
        assert_eq!(r.data["total"], 3, "{}", r.data);
        client.cancel().await.unwrap();
        tokio::time::timeout(Duration::from_secs(30), reader)
            .await
            .expect("outreach mcp exits when its client goes away")
            .unwrap();
        let daemon_log = daemon.stop();
        assert!(
            daemon_log.contains("path=/publish"),
            "the post did not go through the daemon:\n{daemon_log}"
        );
    });
    let stderr = log.lock().unwrap().clone();
    for secret in ALL_SECRETS {
        assert!(
            !seen.contains(secret),
            "a secret in a tool's answer:\n{seen}"
        );
        assert!(!stderr.contains(secret), "a secret on stderr:\n{stderr}");
    }
    assert!(!seen.contains("PLANTED"), "{seen}");
    assert!(!stderr.contains("PLANTED"), "{stderr}");
}
