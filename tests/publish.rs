//! Publishing end to end: the real `outreach` binary and the real built X,
//! LinkedIn and Mastodon plugins against local fakes of each platform.

mod support;

use serde_json::Value;
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
