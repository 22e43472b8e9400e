//! The credentials lifecycle through the real binary against fake OAuth
//! servers that behave like X, Reddit, Mastodon and Instagram: connect
//! flows, refresh in every style, single-flight under concurrency, failure
//! classification and notifications, disconnect, import, rekey, crashes.

mod support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use support::oauth::{CLIENT_ID, CLIENT_SECRET, Flavor};
use support::*;

const SECRET_VAR: &str = "OUTREACH_TEST_CLIENT_SECRET";

/// A home whose `platform` uses the test OAuth client.
fn with_client(home: &mut Home, platform: &str) {
    home.extra_config.push_str(&format!(
        "\n[platforms.{platform}]\nclient_id = \"{CLIENT_ID}\"\nclient_secret_env = \"{SECRET_VAR}\"\n"
    ));
    if !home.env.iter().any(|(k, _)| k == SECRET_VAR) {
        home.env.push((SECRET_VAR.into(), CLIENT_SECRET.into()));
    }
}

fn x_home(x: &Fake) -> Home {
    let mut home = Home::new();
    home.endpoint("x", "api", &x.url());
    home.endpoint("x", "authorize", &format!("{}/i/oauth2/authorize", x.url()));
    home.endpoint("x", "token", &format!("{}/2/oauth2/token", x.url()));
    home.endpoint("x", "revoke", &format!("{}/2/oauth2/revoke", x.url()));
    with_client(&mut home, "x");
    home
}

/// Run `outreach connect …`, play the browser: follow the printed address
/// through the fake's authorize redirect to outreach's loopback listener.
fn connect(home: &Home, args: &[&str]) -> Run {
    let (run, page) = connect_playing(home, args, browse);
    assert!(page.contains("outreach is connected"), "{page}");
    run
}

/// Read `connect`'s standard error (kept in `seen`) up to the address it
/// prints; `None` if it ends first.
fn printed_address(stderr: &mut impl BufRead, seen: &mut String) -> Option<String> {
    loop {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            return None;
        }
        seen.push_str(&line);
        if let Some(u) = line.trim().strip_prefix("http") {
            return Some(format!("http{u}"));
        }
    }
}

/// GET `url`, following redirects, like a browser would.
fn browse(url: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        reqwest::Client::new()
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    })
}

fn status(home: &Home) -> Value {
    let r = home.run(&["status", "--json"], None);
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.all()))
}

fn account<'a>(status: &'a Value, id: &str) -> &'a Value {
    let (p, a) = id.split_once('/').unwrap();
    status["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["platform"] == p && h["account"] == a)
        .unwrap_or_else(|| panic!("{id} not in {status}"))
}

#[test]
fn x_connects_with_pkce_and_refresh_tokens_rotate() {
    let x = fake_x();
    let home = x_home(&x);
    let r = connect(&home, &["x", "--account", "alice"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout
            .contains("connected x/alice as X Dev (@xdevelopers)"),
        "{}",
        r.stdout
    );

    let s = status(&home);
    let h = account(&s, "x/alice");
    assert_eq!(h["state"], "healthy");
    assert_eq!(h["is_valid"], true);
    assert_eq!(h["refreshable"], true);
    assert!(h["expires_in"].as_i64().unwrap() > 7000);
    assert_eq!(h["needs_refresh"], false);

    // Two refreshes: each returns a new single-use refresh token, which is
    // stored before the new access token is used.
    for _ in 0..2 {
        let r = home.run(&["refresh", "x/alice"], None);
        assert_eq!(r.code, 0, "{}", r.all());
    }
    let o = x.state.oauth.lock().unwrap();
    assert_eq!(o.refresh_calls, 2);
    assert_eq!(
        o.spent.len(),
        2,
        "each refresh spent the previous refresh token"
    );
    drop(o);
    // The account still works with what was stored last.
    let post = home.post("p.toml", "text = \"after rotation\"\nto = [\"x/alice\"]\n");
    let r = home.run(&["publish", post.to_str().unwrap()], None);
    assert_eq!(r.code, 0, "{}", r.all());

    // Disconnect revokes at the platform, then forgets the account.
    let r = home.run(&["disconnect", "x/alice"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(x.state.oauth.lock().unwrap().revoked.len(), 1);
    assert!(!home.path().join("store/x/alice.age").exists());
}

#[test]
fn connect_refuses_a_forged_state_and_missing_client_config() {
    let x = fake_x();
    let mut home = x_home(&x);
    // No client secret in the environment: a clear error naming the variable.
    home.env.clear();
    let r = home.run(&["connect", "x", "--no-browser"], None);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains(SECRET_VAR), "{}", r.stderr);
}

#[test]
fn fifty_concurrent_publishes_on_an_expired_token_share_one_refresh() {
    let x = fake_x();
    let home = x_home(&x);
    x.state.oauth.lock().unwrap().lifetime = Duration::from_secs(2);
    let r = connect(&home, &["x"]);
    assert_eq!(r.code, 0, "{}", r.all());
    x.state.oauth.lock().unwrap().lifetime = Duration::from_secs(7200);
    // Warm the compile cache so 50 processes start quickly.
    home.run(&["plugins"], None);
    std::thread::sleep(Duration::from_millis(2100));
    let s = status(&home);
    assert_eq!(
        account(&s, "x/default")["is_valid"],
        false,
        "the token should have expired"
    );

    let posts: Vec<_> = (0..50)
        .map(|i| {
            home.post(
                &format!("p{i}.toml"),
                &format!("text = \"post {i}\"\nto = [\"x\"]\n"),
            )
        })
        .collect();
    let children: Vec<_> = posts
        .iter()
        .map(|p| {
            home.command(&["publish", p.to_str().unwrap()])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{all}");
        assert!(
            !all.contains("PLANTED") && !all.contains("invalid_grant"),
            "{all}"
        );
    }
    let o = x.state.oauth.lock().unwrap();
    assert_eq!(o.refresh_calls, 1, "exactly one refresh for 50 publishes");
    drop(o);
    assert_eq!(x.posts().len(), 50);
}

#[test]
fn only_an_invalid_grant_needs_reconnect_and_each_change_is_announced_once() {
    let x = fake_x();
    let mut home = x_home(&x);
    let log = home.path().join("notifications.log");
    let hook = start(|_, _| respond(204, &[], ""));
    home.extra_config.push_str(&format!(
        "\n[notify]\ncommand = 'echo \"$OUTREACH_ACCOUNT $OUTREACH_PREVIOUS_STATE -> $OUTREACH_STATE\" >> {}'\nwebhook = \"{}/hook\"\n",
        log.display(),
        hook.url()
    ));
    assert_eq!(connect(&home, &["x"]).code, 0);

    for mode in [Mode::ServerError, Mode::RateLimited, Mode::ServerError] {
        x.state.oauth.lock().unwrap().token_mode = mode;
        let r = home.run(&["refresh", "x"], None);
        assert_eq!(r.code, 1, "{}", r.all());
        assert!(r.stdout.contains("failed for now"), "{}", r.stdout);
        let s = status(&home);
        let h = account(&s, "x/default");
        assert_eq!(h["state"], "failing", "{h}");
        assert!(h["next_refresh"].is_string(), "a retry is scheduled: {h}");
    }
    x.state.oauth.lock().unwrap().token_mode = Mode::Normal;
    assert_eq!(home.run(&["refresh", "x"], None).code, 0);
    assert_eq!(account(&status(&home), "x/default")["state"], "healthy");

    // The platform forgets the grant: needs reconnect at once, announced once.
    x.state.oauth.lock().unwrap().refresh.clear();
    for _ in 0..3 {
        let r = home.run(&["refresh", "x"], None);
        assert_eq!(r.code, 1);
        assert!(r.stdout.contains("needs to be reconnected"), "{}", r.stdout);
    }
    let s = status(&home);
    let h = account(&s, "x/default");
    assert_eq!(h["state"], "needs-reconnect");
    assert_eq!(h["is_valid"], false);
    assert!(
        h["error"].as_str().unwrap().contains("invalid_grant"),
        "{h}"
    );

    let lines: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(
        lines,
        [
            "x/default healthy -> failing",
            "x/default failing -> healthy",
            "x/default healthy -> needs reconnect",
        ]
    );
    // The webhook got the same three changes, as JSON.
    let states: Vec<String> = hook
        .seen()
        .iter()
        .map(|h| {
            assert_eq!(h.method, "POST");
            let v: Value = serde_json::from_str(&h.body).unwrap();
            assert_eq!(v["account"], "x/default");
            v["state"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(states, ["failing", "healthy", "needs reconnect"]);
}

#[test]
fn reddit_style_basic_auth_and_errors_inside_http_200() {
    let reddit = fake_lab(Flavor::Reddit);
    let mut home = Home::new();
    std::fs::copy(
        test_plugin("outreach-oauth-lab", Some("reddit"), "reddit.wasm"),
        home.plugins_dir().join("reddit.wasm"),
    )
    .unwrap();
    for (name, path) in [
        ("authorize", "/api/v1/authorize"),
        ("token", "/api/v1/access_token"),
        ("api", ""),
    ] {
        home.endpoint("reddit", name, &format!("{}{path}", reddit.url()));
    }
    with_client(&mut home, "reddit");
    let r = connect(&home, &["reddit"]);
    assert_eq!(r.code, 0, "{}", r.all());
    // Reddit keeps the refresh token and leaves it out of refresh answers:
    // the stored one must survive.
    assert_eq!(home.run(&["refresh", "reddit"], None).code, 0);
    assert_eq!(home.run(&["refresh", "reddit"], None).code, 0);
    assert_eq!(reddit.state.oauth.lock().unwrap().refresh_calls, 2);
    // An error arrives as HTTP 200 with an error body.
    reddit.state.oauth.lock().unwrap().refresh.clear();
    let r = home.run(&["refresh", "reddit"], None);
    assert_eq!(r.code, 1);
    assert_eq!(
        account(&status(&home), "reddit/default")["state"],
        "needs-reconnect"
    );
}

/// A home with the Instagram lab plugin pointed at `ig` and an OAuth client.
fn instagram_home(ig: &Fake) -> Home {
    let mut home = Home::new();
    std::fs::copy(
        test_plugin("outreach-oauth-lab", Some("instagram"), "instagram.wasm"),
        home.plugins_dir().join("instagram.wasm"),
    )
    .unwrap();
    for (name, path) in [
        ("authorize", "/oauth/authorize"),
        ("token", "/oauth/access_token"),
        ("refresh", "/refresh_access_token"),
        ("exchange", "/access_token"),
        ("api", ""),
    ] {
        home.endpoint("instagram", name, &format!("{}{path}", ig.url()));
    }
    with_client(&mut home, "instagram");
    home
}

/// The step after connect traded the short-lived token for a long-lived
/// one, once, with the app secret the plugin never saw.
fn assert_long_lived_after_connect(ig: &Fake) {
    let exchanges: Vec<_> = ig
        .seen()
        .into_iter()
        .filter(|s| s.path == "/access_token")
        .collect();
    assert_eq!(exchanges.len(), 1);
    assert!(
        exchanges[0]
            .query
            .starts_with("grant_type=ig_exchange_token&client_secret="),
        "{}",
        exchanges[0].query
    );
}

#[test]
fn instagram_style_tokens_are_renewed_with_a_get_of_the_token_itself() {
    let ig = fake_lab(Flavor::Instagram);
    let home = instagram_home(&ig);
    let r = connect(&home, &["instagram"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_long_lived_after_connect(&ig);
    for _ in 0..2 {
        let r = home.run(&["refresh", "instagram"], None);
        assert_eq!(r.code, 0, "{}", r.all());
    }
    let refreshes: Vec<_> = ig
        .seen()
        .into_iter()
        .filter(|s| s.path == "/refresh_access_token")
        .collect();
    assert_eq!(refreshes.len(), 2);
    for r in &refreshes {
        assert_eq!(r.method, "GET");
        assert!(
            r.query
                .starts_with("grant_type=ig_refresh_token&access_token="),
            "{}",
            r.query
        );
    }
    // The first renewal presented the long-lived token, the second the
    // token the first one returned.
    assert!(
        refreshes[0].query.contains("ig-long-"),
        "{}",
        refreshes[0].query
    );
    assert_ne!(refreshes[0].query, refreshes[1].query);
    assert!(
        refreshes[1].query.contains("ig-access-"),
        "{}",
        refreshes[1].query
    );
    assert_eq!(
        account(&status(&home), "instagram/default")["state"],
        "healthy"
    );
}

#[test]
fn mastodon_registers_once_per_instance_and_tokens_do_not_expire() {
    let md = fake_mastodon();
    let mut home = Home::new();
    home.extra_config.push_str("\n[auth]\nredirect_port = 0\n");
    let set = format!("instance={}", md.url());
    for account in ["one", "two"] {
        let r = connect(&home, &["mastodon", "--account", account, "--set", &set]);
        assert_eq!(r.code, 0, "{}", r.all());
    }
    // One registration per instance, whatever port each run listens on.
    let regs = md.state.oauth.lock().unwrap().registrations;
    assert_eq!(regs, 1);
    home.extra_config = format!("\n[auth]\nredirect_port = {}\n", free_port());
    for account in ["three", "four"] {
        assert_eq!(
            connect(&home, &["mastodon", "--account", account, "--set", &set]).code,
            0
        );
    }
    // A fixed port other than the registered one: still the same app (a
    // loopback redirect matches on any port, RFC 8252 §7.3).
    assert_eq!(
        md.state.oauth.lock().unwrap().registrations,
        regs,
        "one app per instance"
    );
    let s = status(&home);
    let h = account(&s, "mastodon/three");
    assert!(h["expires_in"].is_null());
    assert_eq!(h["is_valid"], true);
    assert_eq!(h["refreshable"], false);
    let r = home.run(&["disconnect", "mastodon/three"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(md.state.oauth.lock().unwrap().revoked.len(), 1);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn disconnect_keeps_the_account_when_revocation_fails_unless_forced() {
    let w = World::new().with_accounts();
    let mut home = w.home;
    home.endpoint("mastodon", "revoke", "http://127.0.0.1:9/oauth/revoke");
    let r = home.run(&["disconnect", "mastodon/social"], None);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("could not revoke"), "{}", r.stderr);
    assert!(home.path().join("store/mastodon/social.age").exists());
    let r = home.run(&["disconnect", "mastodon/social", "--force"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(!home.path().join("store/mastodon/social.age").exists());
}

#[test]
fn import_reads_the_seed_tokens_file_and_never_deletes_it() {
    let home = Home::new();
    // A platform without a plugin here is skipped, naming it.
    std::fs::remove_file(home.plugins_dir().join("instagram.wasm")).unwrap();
    let seed = home.path().join(".tokens.json");
    let text = r#"{
      "linkedin": {"accessToken": "li-import-PLANTED-1", "expiresIn": 5184000, "scope": "openid profile w_member_social",
                   "profile": {"sub": "abc", "name": "Ada"}, "createdAt": "2026-11-01T10:00:00Z"},
      "twitter": {"accessToken": "x-import-PLANTED-2", "refreshToken": "x-import-refresh-PLANTED-3", "expiresIn": 7200,
                  "scope": "tweet.read tweet.write", "profile": {"id": "42", "username": "ada"}, "createdAt": "2026-11-25T10:00:00Z",
                  "lastRefreshed": "2026-11-26T06:00:00Z"},
      "instagram": {"accessToken": "ig-import-PLANTED-4", "expiresIn": 5184000, "scope": "", "profile": {}, "createdAt": "2026-11-01T10:00:00Z"}
    }"#;
    std::fs::write(&seed, text).unwrap();
    let r = home.run(&["import", seed.to_str().unwrap()], None);
    assert_eq!(r.code, 1, "one platform was skipped: {}", r.all());
    assert!(
        r.stdout.contains("imported linkedin/default"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("imported x/default"), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("skipped instagram: no `instagram` plugin is loaded"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("delete it"), "{}", r.stdout);
    assert_eq!(std::fs::read_to_string(&seed).unwrap(), text);
    let list: Value =
        serde_json::from_str(&home.run(&["accounts", "--json"], None).stdout).unwrap();
    let x = list
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == "x/default")
        .unwrap();
    assert_eq!(x["profile"]["handle"], "ada");
    assert_eq!(x["has_refresh_token"], true);
    assert_eq!(x["expires_at"], "2026-11-26T08:00:00Z");
}

#[test]
fn rekey_moves_every_record_to_a_new_identity_and_can_add_recipients() {
    let w = World::new().with_accounts();
    let home = &w.home;
    let old_identity = std::fs::read_to_string(home.path().join("identity.txt")).unwrap();
    let r = home.run(&["store", "rekey"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("re-encrypted 3 records"), "{}", r.stdout);
    let new_identity = std::fs::read_to_string(home.path().join("identity.txt")).unwrap();
    assert_ne!(old_identity, new_identity);
    let retired: Vec<_> = std::fs::read_dir(home.path())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("identity.txt.retired-")
        })
        .collect();
    assert_eq!(retired.len(), 1);
    // Records open with the new identity…
    let r = home.run(&["accounts", "--json"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    // …and no longer with the old one.
    std::fs::write(home.path().join("identity.txt"), &old_identity).unwrap();
    let r = home.run(&["accounts"], None);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("wrong key?"), "{}", r.stdout);
    std::fs::write(home.path().join("identity.txt"), &new_identity).unwrap();

    // A second recipient (a backup key) can read every record too.
    let backup = age::x25519::Identity::generate();
    let recipient = backup.to_public().to_string();
    let r = home.run(&["store", "rekey", "--add-recipient", &recipient], None);
    assert_eq!(r.code, 0, "{}", r.all());
    use age::secrecy::ExposeSecret;
    std::fs::write(
        home.path().join("backup.txt"),
        format!("{}\n", backup.to_string().expose_secret()),
    )
    .unwrap();
    let ident = outreach::store::Identity::load_or_create(&home.path().join("backup.txt"), || None)
        .unwrap();
    let store = outreach::store::AgeDirStore::open(&home.path().join("store"), ident).unwrap();
    use outreach::store::CredentialStore;
    for id in store.list().unwrap() {
        store.load(&id).unwrap();
    }
    // New writes keep the extra recipient.
    let r = home.run(
        &["accounts", "add", "x", "--account", "later"],
        Some(X_TOKEN),
    );
    assert_eq!(r.code, 0, "{}", r.all());
    store
        .load(&outreach::store::AccountId::new("x", "later").unwrap())
        .unwrap();
}

/// SIGKILL at random points during 500 rotating-token refreshes: every
/// record stays decryptable and every account stays refreshable. X's
/// refresh tokens are strictly single use, so a kill after X rotated a
/// token and before the new one reached the disk would lose the grant;
/// the escrow helper (which outlives the killed process and seals X's
/// answer) closes that window, and the next run applies the answer.
#[test]
fn crashes_during_rotating_refreshes_lose_no_account() {
    let x = fake_x();
    let home = x_home(&x);
    let accounts = ["a", "b", "c", "d"];
    for a in accounts {
        assert_eq!(connect(&home, &["x", "--account", a]).code, 0);
    }
    home.run(&["plugins"], None);
    let mut kills = 0;
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    while x.state.oauth.lock().unwrap().refresh_calls < 500 {
        let mut child = home
            .command(&["refresh", "x"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_micros(seed % 60_000));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            kills += 1;
        }
        child.wait().unwrap();
    }
    assert!(
        kills > 10,
        "the test should really interrupt refreshes ({kills} kills)"
    );
    // Every record decrypts and parses.
    let r = home.run(&["accounts", "--json"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    // Every account refreshes.
    let r = home.run(&["refresh", "x"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    let s = status(&home);
    for a in accounts {
        let h = account(&s, &format!("x/{a}"));
        assert_eq!(h["state"], "healthy", "x/{a}: {h}");
        assert_eq!(h["is_valid"], true, "x/{a}: {h}");
    }
    let o = x.state.oauth.lock().unwrap();
    assert_eq!(o.reused, 0, "a spent refresh token was sent again");
    eprintln!("{kills} kills during {} refreshes", o.refresh_calls);
}

/// The worst moment, made certain: X has rotated the token and its answer
/// is still on the way when outreach is killed. The answer is sealed in
/// the store (encrypted, never in the clear) and the next run applies it
/// instead of presenting the spent token — also after a store rekey.
#[test]
fn a_kill_after_the_platform_rotated_the_token_loses_nothing() {
    let x = fake_x();
    let home = x_home(&x);
    assert_eq!(connect(&home, &["x", "--account", "a"]).code, 0);
    *x.state.answer_delay.lock().unwrap() = Duration::from_millis(1000);
    let mut child = home
        .command(&["refresh", "x/a"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while x.state.oauth.lock().unwrap().refresh_calls == 0 {
        assert!(std::time::Instant::now() < deadline, "no refresh was sent");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    *x.state.answer_delay.lock().unwrap() = Duration::ZERO;
    // The helper seals X's answer once it arrives.
    let answer = home.dir.path().join("store/x/.a.answer");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !answer.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the answer was not kept"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let sealed = std::fs::read(&answer).unwrap();
    assert!(sealed.starts_with(b"age-encryption.org/"));
    assert!(!String::from_utf8_lossy(&sealed).contains("PLANTED"));
    // A new identity while the answer waits: the answer moves with it.
    let r = home.run(&["store", "rekey"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_ne!(std::fs::read(&answer).unwrap(), sealed);
    let r = home.run(&["refresh", "x/a"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    let h = account(&status(&home), "x/a").clone();
    assert_eq!(h["state"], "healthy", "{h}");
    assert_eq!(h["is_valid"], true, "{h}");
    let o = x.state.oauth.lock().unwrap();
    assert_eq!(o.reused, 0, "the spent refresh token was sent again");
    assert_eq!(o.refresh_calls, 2);
    drop(o);
    assert!(!answer.exists(), "an applied answer is removed");
}

/// The escrow helper on its own (`outreach escrow`, driven as outreach
/// drives it): an exchange whose sender gave up frees its lock; one whose
/// sender never confirmed it is never sent;
/// a confirmed one is sent and its answer sealed even when the sender is
/// already gone.
#[test]
fn the_escrow_helper_sends_only_confirmed_exchanges_and_outlives_its_sender() {
    use base64::Engine;
    use std::io::Write;
    let x = fake_x();
    let home = x_home(&x);
    assert_eq!(connect(&home, &["x", "--account", "a"]).code, 0);
    let identity = std::fs::read_to_string(home.dir.path().join("identity.txt")).unwrap();
    let public = identity
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .unwrap()
        .to_string();
    let store = home.dir.path().join("store/x");
    let slot = serde_json::json!({
        "lock": store.join(".a.exchange"),
        "answer": store.join(".a.answer"),
        "recipients": [public],
    });
    let helper = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_outreach"))
            .args(["escrow", "--user-agent", "test", "--timeout-ms", "5000"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let lock = |h: &mut std::process::Child, n: u64| {
        let line = serde_json::json!({"t": "lock", "n": n, "slot": slot});
        writeln!(h.stdin.as_mut().unwrap(), "{line}").unwrap();
        let mut reply = String::new();
        BufReader::new(h.stdout.as_mut().unwrap())
            .read_line(&mut reply)
            .unwrap();
        let v: Value = serde_json::from_str(&reply).unwrap();
        assert_eq!(v["t"], "locked", "{reply}");
        assert_eq!(v["n"], n, "{reply}");
    };
    // Locked, then released by a sender that gave up: the lock is free
    // again; locked, then the sender is gone: nothing is sent.
    let mut h = helper();
    lock(&mut h, 6);
    writeln!(h.stdin.as_mut().unwrap(), r#"{{"t":"release","n":6}}"#).unwrap();
    lock(&mut h, 7);
    drop(h.stdin.take());
    assert!(h.wait().unwrap().success());
    assert_eq!(x.state.oauth.lock().unwrap().refresh_calls, 0);
    // Confirmed, and the sender is gone at once: sent, answer sealed.
    let refresh = x
        .state
        .oauth
        .lock()
        .unwrap()
        .refresh
        .iter()
        .next()
        .unwrap()
        .clone();
    let b64 = base64::engine::general_purpose::STANDARD;
    let send = serde_json::json!({"t": "send", "n": 7, "exchange": {
        "method": "POST",
        "url": format!("{}/2/oauth2/token", x.url()),
        "headers": [
            ["content-type", "application/x-www-form-urlencoded"],
            ["authorization", format!("Basic {}", b64.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}")))],
        ],
        "body": b64.encode(format!("grant_type=refresh_token&refresh_token={refresh}")),
    }});
    let mut h = helper();
    lock(&mut h, 7);
    writeln!(h.stdin.as_mut().unwrap(), "{send}").unwrap();
    drop(h.stdin.take());
    drop(h.stdout.take());
    assert!(h.wait().unwrap().success());
    assert_eq!(x.state.oauth.lock().unwrap().refresh_calls, 1);
    assert!(store.join(".a.answer").exists());
    // outreach applies it: the account works with the rotated token.
    let r = home.run(&["refresh", "x/a"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(x.state.oauth.lock().unwrap().reused, 0);
    assert_eq!(account(&status(&home), "x/a")["state"], "healthy");
}

/// `outreach refresh --watch` runs the scheduler: tokens are refreshed at
/// `refresh_at` of their real lifetime, before they expire, and SIGTERM
/// stops it cleanly.
#[test]
fn the_scheduler_refreshes_before_expiry_and_stops_on_sigterm() {
    let x = fake_x();
    let mut home = x_home(&x);
    home.extra_config
        .push_str("\n[auth]\nrefresh_at = 0.5\njitter = 0.0\n");
    x.state.oauth.lock().unwrap().lifetime = Duration::from_secs(4);
    for a in ["a", "b"] {
        assert_eq!(connect(&home, &["x", "--account", a]).code, 0);
    }
    let child = home
        .command(&["refresh", "--watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Over ~7 s, with 4 s tokens refreshed at 2 s, every access token the
    // API sees must be live.
    for _ in 0..14 {
        std::thread::sleep(Duration::from_millis(500));
        let s = status(&home);
        for a in ["a", "b"] {
            let h = account(&s, &format!("x/{a}"));
            assert_eq!(
                h["is_valid"], true,
                "x/{a} expired under the scheduler: {h}"
            );
        }
    }
    let calls = x.state.oauth.lock().unwrap().refresh_calls;
    assert!(
        calls >= 4,
        "two accounts, ~3 refreshes each expected; saw {calls}"
    );
    unsafe { libc_kill(child.id() as i32, 15) };
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("refresh scheduler stopped"), "{log}");
    assert!(!log.contains("PLANTED"));
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// LinkedIn: OpenID Connect, client secret in the body, no refresh token.
/// The profile comes from the userinfo endpoint; outreach says the token
/// cannot be refreshed and warns once, ahead of expiry.
#[test]
fn linkedin_connects_with_oidc_and_warns_before_an_unrefreshable_expiry() {
    let li = fake_linkedin();
    let mut home = Home::new();
    for (name, path) in [
        ("authorize", "/oauth/v2/authorization"),
        ("token", "/oauth/v2/accessToken"),
        ("userinfo", "/v2/userinfo"),
        ("api", ""),
    ] {
        home.endpoint("linkedin", name, &format!("{}{path}", li.url()));
    }
    with_client(&mut home, "linkedin");
    let log = home.path().join("notifications.log");
    home.extra_config.push_str(&format!(
        "\n[auth]\nwarn_before_secs = 8\n\n[notify]\ncommand = 'echo \"$OUTREACH_ACCOUNT $OUTREACH_STATE $OUTREACH_MESSAGE\" >> {}'\n",
        log.display()
    ));
    li.state.oauth.lock().unwrap().lifetime = Duration::from_secs(10);
    let r = connect(&home, &["linkedin"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("connected linkedin/default as John Doe"),
        "{}",
        r.stdout
    );
    let seen = li.seen();
    let token_req = seen
        .iter()
        .find(|s| s.path == "/oauth/v2/accessToken")
        .unwrap();
    assert!(token_req.body.contains("client_id=") && token_req.body.contains("client_secret="));
    assert!(!token_req.headers.contains_key("authorization"));
    assert!(seen.iter().any(|s| s.path == "/v2/userinfo"));

    let h = account(&status(&home), "linkedin/default").clone();
    assert_eq!(h["refreshable"], false);
    let r = home.run(&["refresh", "linkedin"], None);
    assert!(r.stdout.contains("cannot be refreshed"), "{}", r.stdout);

    // The scheduler warns once when the token enters its last 8 seconds.
    let child = home
        .command(&["refresh", "--watch"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(4500));
    unsafe { libc_kill(child.id() as i32, 15) };
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let notes = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(notes.lines().count(), 1, "{notes}");
    assert!(
        notes.contains("linkedin/default expiring") && notes.contains("cannot be refreshed"),
        "{notes}"
    );
}

/// Bluesky (the bundled plugin): an app password (read from standard
/// input, never the command line) is exchanged for JWTs with a JSON login;
/// the refresh JWT is sent as a bearer token and rotates.
#[test]
fn app_passwords_log_in_and_session_tokens_rotate() {
    let bsky = fake_bluesky();
    let mut home = Home::new();
    home.bluesky(&bsky);
    let r = home.run(
        &["connect", "bluesky", "--username", "alice.test"],
        Some("wrong"),
    );
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("Invalid identifier or password"),
        "{}",
        r.stderr
    );
    assert!(!home.path().join("store/bluesky/default.age").exists());

    let r = home.run(
        &["connect", "bluesky", "--username", "alice.test"],
        Some(support::oauth::APP_PASSWORD),
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let h = account(&status(&home), "bluesky/default").clone();
    assert_eq!(h["refreshable"], true);
    assert!(h["expires_in"].as_i64().unwrap() > 7000, "{h}");
    for _ in 0..2 {
        assert_eq!(home.run(&["refresh", "bluesky"], None).code, 0);
    }
    assert_eq!(bsky.state.oauth.lock().unwrap().spent.len(), 2);
    // A revoked session: 400 ExpiredToken means reconnect.
    bsky.state.oauth.lock().unwrap().refresh.clear();
    assert_eq!(home.run(&["refresh", "bluesky"], None).code, 1);
    assert_eq!(
        account(&status(&home), "bluesky/default")["state"],
        "needs-reconnect"
    );
}

/// A rekey interrupted half-way (some records already under the new
/// identity) leaves every record readable, and running it again finishes.
#[test]
fn an_interrupted_rekey_is_resumed() {
    use outreach::store::{AgeDirStore, CredentialStore, Identity};
    let w = World::new().with_accounts();
    let home = &w.home;
    // Simulate the interruption: the next identity exists and one record
    // was already rewritten to it alone.
    let next = home.path().join("identity.txt.next");
    let key = age::x25519::Identity::generate();
    use age::secrecy::ExposeSecret;
    std::fs::write(&next, format!("{}\n", key.to_string().expose_secret())).unwrap();
    let old = Identity::load_or_create(&home.path().join("identity.txt"), || None).unwrap();
    let old_store = AgeDirStore::open(&home.path().join("store"), old).unwrap();
    let rec = old_store
        .load(&outreach::store::AccountId::new("x", "default").unwrap())
        .unwrap();
    let next_only = Identity::load_or_create(&next, || None).unwrap();
    AgeDirStore::open(&home.path().join("store"), next_only)
        .unwrap()
        .save(&rec)
        .unwrap();
    // Half-way, everything still opens.
    let r = home.run(&["accounts", "--json"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    // Resuming finishes the move to the next identity.
    let r = home.run(&["store", "rekey"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(!next.exists());
    assert_eq!(
        std::fs::read_to_string(home.path().join("identity.txt"))
            .unwrap()
            .trim(),
        key.to_string().expose_secret().trim()
    );
    let r = home.run(&["accounts", "--json"], None);
    assert_eq!(r.code, 0, "{}", r.all());
}

/// Send account announcements of `home` to a file (the `[notify]` command)
/// and to a fake webhook; the file's path and the webhook.
fn announce_to_file_and_hook(home: &mut Home) -> (std::path::PathBuf, Fake) {
    let log = home.path().join("announcements.log");
    let hook = start(|_, _| respond(204, &[], ""));
    home.extra_config.push_str(&format!(
        "\n[notify]\ncommand = 'echo \"$OUTREACH_ACCOUNT $OUTREACH_PREVIOUS_STATE -> $OUTREACH_STATE\" >> {}'\nwebhook = \"{}/hook\"\n",
        log.display(),
        hook.url()
    ));
    (log, hook)
}

fn announced(log: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn hook_states(hook: &Fake) -> Vec<String> {
    hook.seen()
        .iter()
        .map(|h| {
            let v: Value = serde_json::from_str(&h.body).unwrap();
            assert!(!h.body.contains("PLANTED"), "{}", h.body);
            v["state"].as_str().unwrap().to_string()
        })
        .collect()
}

/// Move `id`'s token expiry into the past, in the store itself.
fn expire_in_store(home: &Home, id: &str) {
    use outreach::store::{AccountId, AgeDirStore, CredentialStore, Identity};
    let identity = Identity::load_or_create(&home.path().join("identity.txt"), || None).unwrap();
    let store = AgeDirStore::open(&home.path().join("store"), identity).unwrap();
    let id = AccountId::parse(id).unwrap();
    let mut r = store.load(&id).unwrap();
    r.expires_at = Some(chrono::Utc::now() - chrono::Duration::seconds(60));
    store.save(&r).unwrap();
}

/// A pasted X token comes without a refresh token. `refresh` says it
/// cannot be refreshed and until when it is valid, and the account stays
/// healthy (no "next refresh" either); once the token has expired the
/// account needs reconnecting — in `status` (never "healthy … EXPIRED"),
/// in `refresh`, announced once.
#[test]
fn a_pasted_token_is_not_refreshed_and_stays_healthy_until_it_expires() {
    let x = fake_x();
    let mut home = x_home(&x);
    let (log, hook) = announce_to_file_and_hook(&mut home);
    let r = home.run(&["accounts", "add", "x"], Some(X_TOKEN));
    assert_eq!(r.code, 0, "{}", r.all());
    for _ in 0..2 {
        let r = home.run(&["refresh", "x"], None);
        assert_eq!(r.code, 0, "{}", r.all());
        assert!(r.stdout.contains("x/default"), "{}", r.stdout);
        assert!(r.stdout.contains("cannot be refreshed"), "{}", r.stdout);
        assert!(r.stdout.contains("no refresh token"), "{}", r.stdout);
        assert!(r.stdout.contains("stays valid until 20"), "{}", r.stdout);
        assert!(!r.stdout.contains("FAILED"), "{}", r.stdout);
    }
    assert_eq!(x.state.oauth.lock().unwrap().refresh_calls, 0);
    let s = status(&home);
    let h = account(&s, "x/default");
    assert_eq!(h["state"], "healthy", "{h}");
    assert_eq!(h["is_valid"], true, "{h}");
    assert_eq!(h["refreshable"], false, "{h}");
    assert!(h["next_refresh"].is_null(), "{h}");
    assert!(h["error"].is_null(), "{h}");
    let r = home.run(&["status"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("healthy"), "{}", r.stdout);
    assert!(!r.stdout.contains("next refresh"), "{}", r.stdout);
    assert!(r.stdout.contains("cannot be refreshed"), "{}", r.stdout);
    // It publishes as it is.
    let post = home.post("p.toml", "text = \"pasted\"\nto = [\"x\"]\n");
    let r = home.run(&["publish", post.to_str().unwrap()], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(announced(&log).is_empty(), "{:?}", announced(&log));

    // Its lifetime is over: it needs reconnecting, and says so everywhere.
    expire_in_store(&home, "x/default");
    let r = home.run(&["status"], None);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stdout.contains("needs reconnect") && r.stdout.contains("EXPIRED"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("healthy"), "{}", r.stdout);
    assert!(!r.stdout.contains("next refresh"), "{}", r.stdout);
    let s = status(&home);
    let h = account(&s, "x/default");
    assert_eq!(h["state"], "needs-reconnect", "{h}");
    assert_eq!(h["is_valid"], false, "{h}");
    assert!(h["next_refresh"].is_null(), "{h}");
    assert!(h["error"].as_str().unwrap().contains("expired"), "{h}");
    for _ in 0..2 {
        let r = home.run(&["refresh", "x"], None);
        assert_eq!(r.code, 1, "{}", r.all());
        assert!(r.stdout.contains("needs to be reconnected"), "{}", r.stdout);
        assert!(r.stdout.contains("expired"), "{}", r.stdout);
    }
    let post = home.post("q.toml", "text = \"too late\"\nto = [\"x\"]\n");
    let r = home.run(&["publish", post.to_str().unwrap()], None);
    assert_eq!(r.code, 1, "{}", r.all());
    assert_eq!(x.state.oauth.lock().unwrap().refresh_calls, 0);
    assert_eq!(x.posts().len(), 1);
    assert_eq!(announced(&log), ["x/default healthy -> needs reconnect"]);
    assert_eq!(hook_states(&hook), ["needs reconnect"]);
}

/// `accounts add` over an existing account is refused, naming it, since
/// when it exists and `--replace`, without asking the platform anything;
/// with `--replace`, a credential the platform refuses changes nothing, and
/// an accepted one replaces the record.
#[test]
fn accounts_add_replaces_an_existing_account_only_with_replace() {
    let x = fake_x();
    let home = x_home(&x);
    assert_eq!(connect(&home, &["x"]).code, 0);
    let file = home.path().join("store/x/default.age");
    let stored = std::fs::read(&file).unwrap();
    let profile_calls = || x.seen().iter().filter(|s| s.path == "/2/users/me").count();
    let has_refresh_token = || {
        let r = home.run(&["accounts", "--json"], None);
        let v: Value = serde_json::from_str(&r.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"] == "x/default")
            .unwrap()["has_refresh_token"]
            .as_bool()
            .unwrap()
    };
    let asked = profile_calls();

    let r = home.run(&["accounts", "add", "x"], Some(X_TOKEN));
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr
            .contains("x/default already exists as X Dev (@xdevelopers), since 20"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("--replace"), "{}", r.stderr);
    assert!(r.stderr.contains("nothing was changed"), "{}", r.stderr);
    assert_eq!(profile_calls(), asked, "nothing is verified for a refusal");
    assert_eq!(std::fs::read(&file).unwrap(), stored);

    // The platform refuses the new credential: the old record stays.
    let r = home.run(
        &["accounts", "add", "x", "--replace"],
        Some("wrong-PLANTED-token-0b1e"),
    );
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(r.stderr.contains("nothing was stored"), "{}", r.stderr);
    assert_eq!(std::fs::read(&file).unwrap(), stored);
    assert!(has_refresh_token());

    let r = home.run(&["accounts", "add", "x", "--replace"], Some(X_TOKEN));
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("replaced x/default"), "{}", r.stdout);
    assert_ne!(std::fs::read(&file).unwrap(), stored);
    assert!(
        !has_refresh_token(),
        "the pasted token replaced the OAuth one"
    );
    // A new account needs no flag.
    let r = home.run(&["accounts", "add", "x", "--account", "two"], Some(X_TOKEN));
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("added x/two"), "{}", r.stdout);
}

/// An account that comes back — reconnected in the browser, or replaced by
/// `accounts add --replace` — is announced healthy once, like the way
/// down; a reconnect of a healthy account announces nothing.
#[test]
fn a_reconnected_account_is_announced_healthy_once() {
    let x = fake_x();
    let mut home = x_home(&x);
    let (log, hook) = announce_to_file_and_hook(&mut home);
    assert_eq!(connect(&home, &["x"]).code, 0);
    x.state.oauth.lock().unwrap().refresh.clear();
    assert_eq!(home.run(&["refresh", "x"], None).code, 1);
    assert_eq!(
        account(&status(&home), "x/default")["state"],
        "needs-reconnect"
    );

    let r = connect(&home, &["x"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stderr.contains("account recovered: reconnected"),
        "{}",
        r.stderr
    );
    assert_eq!(account(&status(&home), "x/default")["state"], "healthy");
    // Healthy to healthy is no change.
    assert_eq!(connect(&home, &["x"]).code, 0);

    x.state.oauth.lock().unwrap().token_mode = Mode::ServerError;
    assert_eq!(home.run(&["refresh", "x"], None).code, 1);
    x.state.oauth.lock().unwrap().token_mode = Mode::Normal;
    let r = home.run(&["accounts", "add", "x", "--replace"], Some(X_TOKEN));
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stderr.contains("account recovered: reconnected"),
        "{}",
        r.stderr
    );
    assert_eq!(account(&status(&home), "x/default")["state"], "healthy");

    assert_eq!(
        announced(&log),
        [
            "x/default healthy -> needs reconnect",
            "x/default needs reconnect -> healthy",
            "x/default healthy -> failing",
            "x/default failing -> healthy",
        ]
    );
    assert_eq!(
        hook_states(&hook),
        ["needs reconnect", "healthy", "failing", "healthy"]
    );
}

/// The first retry after a temporary failure comes no earlier than
/// `auth.min_backoff_secs` (jitter only ever adds), and none later than
/// `auth.max_backoff_secs`.
#[test]
fn retries_after_a_temporary_failure_never_come_before_the_minimum_backoff() {
    let x = fake_x();
    let mut home = x_home(&x);
    home.extra_config
        .push_str("\n[auth]\nmin_backoff_secs = 3600\nmax_backoff_secs = 86400\n");
    let accounts = ["a", "b", "c"];
    for a in accounts {
        assert_eq!(connect(&home, &["x", "--account", a]).code, 0);
    }
    x.state.oauth.lock().unwrap().token_mode = Mode::ServerError;
    let min = chrono::Duration::seconds(3600);
    let max = chrono::Duration::seconds(86400);
    for a in accounts {
        let id = format!("x/{a}");
        for failure in 1..=2 {
            let before = chrono::Utc::now();
            let r = home.run(&["refresh", &id], None);
            assert_eq!(r.code, 1, "{}", r.all());
            let after = chrono::Utc::now();
            let s = status(&home);
            let h = account(&s, &id);
            assert_eq!(h["state"], "failing", "{h}");
            let next = chrono::DateTime::parse_from_rfc3339(h["next_refresh"].as_str().unwrap())
                .unwrap()
                .with_timezone(&chrono::Utc);
            assert!(
                next >= before + min,
                "{id}, failure {failure}: retry {} s after the attempt, under the minimum",
                (next - before).num_seconds()
            );
            assert!(next <= after + max, "{id}, failure {failure}: {h}");
        }
    }
    let attempts = x
        .seen()
        .iter()
        .filter(|s| s.path == "/2/oauth2/token" && s.body.contains("grant_type=refresh_token"))
        .count();
    assert_eq!(attempts, 6, "one attempt per refresh");
}

/// Short-lived tokens are not refreshed on every publish: "about to
/// expire" is a fraction of the token's lifetime, not a fixed 30 s.
#[test]
fn short_lived_tokens_are_not_refreshed_for_every_publish() {
    let x = fake_x();
    let home = x_home(&x);
    x.state.oauth.lock().unwrap().lifetime = Duration::from_secs(25);
    assert_eq!(connect(&home, &["x"]).code, 0);
    for i in 0..3 {
        let post = home.post(
            &format!("p{i}.toml"),
            &format!("text = \"short {i}\"\nto = [\"x\"]\n"),
        );
        let r = home.run(&["publish", post.to_str().unwrap()], None);
        assert_eq!(r.code, 0, "{}", r.all());
    }
    assert_eq!(x.posts().len(), 3);
    assert_eq!(
        x.state.oauth.lock().unwrap().refresh_calls,
        0,
        "a 25 s token, fresh, needs no refresh to publish"
    );
}

/// `refresh --watch` logs every refresh it does, at its default log level:
/// the account, the outcome and the next refresh — never a token.
#[test]
fn refresh_watch_logs_each_refresh() {
    let x = fake_x();
    let mut home = x_home(&x);
    home.extra_config
        .push_str("\n[auth]\nrefresh_at = 0.5\njitter = 0.0\n");
    x.state.oauth.lock().unwrap().lifetime = Duration::from_secs(3);
    assert_eq!(connect(&home, &["x", "--account", "a"]).code, 0);
    let child = home
        .command(&["refresh", "--watch"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while x.state.oauth.lock().unwrap().refresh_calls < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the scheduler did not refresh"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    unsafe { libc_kill(child.id() as i32, 15) };
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!log.contains("PLANTED"), "{log}");
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("refreshed x/a"))
        .collect();
    let calls = x.state.oauth.lock().unwrap().refresh_calls;
    assert_eq!(lines.len() as u64, calls, "one line per refresh:\n{log}");
    for l in lines {
        assert!(
            l.contains("next refresh at") && l.contains("outcome=\"refreshed\""),
            "{l}"
        );
    }
}

/// Run `outreach connect …` and play the browser with `browser`: it gets
/// the printed authorization address and returns the page outreach's
/// loopback listener answered with.
fn connect_playing(
    home: &Home,
    args: &[&str],
    browser: impl FnOnce(&str) -> String,
) -> (Run, String) {
    let mut full = vec!["connect"];
    full.extend_from_slice(args);
    full.push("--no-browser");
    let mut child = home
        .command(&full)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let Some(url) = printed_address(&mut stderr, &mut seen) else {
        let out = child.wait_with_output().unwrap();
        panic!(
            "connect ended without printing an address:\n{seen}\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    };
    let page = browser(&url);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: format!("{seen}{rest}"),
    };
    run.assert_no_secrets();
    assert!(!page.contains("PLANTED"), "a secret on the page:\n{page}");
    (run, page)
}

/// One query parameter of `url`.
fn query_param(url: &str, name: &str) -> String {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no {name} in {url}"))
}

/// What a page says, as text: no markup is trusted from the redirect.
fn assert_failure_page(page: &str, run: &Run, says: &str) {
    assert_ne!(run.code, 0, "{}", run.all());
    assert!(!page.contains("outreach is connected"), "{page}");
    assert!(page.contains("outreach could not connect"), "{page}");
    assert!(page.contains(says), "{page}");
    assert!(page.to_lowercase().contains("nothing was stored"), "{page}");
    assert!(run.stderr.contains("nothing was stored"), "{}", run.stderr);
    assert!(page.contains("outreach connect"), "{page}");
    assert!(run.stderr.contains(says), "{}", run.stderr);
}

/// The browser's page says "connected" only once the account is stored;
/// a forged or stale redirect, a refusal, a failed code exchange or a
/// token the platform then refuses each get a page that says what failed
/// and what to do — escaped, without the code or any secret — on every
/// platform.
#[test]
fn the_browser_page_says_connected_only_once_the_account_is_stored() {
    let x = fake_x();
    let home = x_home(&x);
    // A redirect with another state (a stale tab, or a page that forges
    // one), carrying a code that must not be shown back.
    let forged = |url: &str| {
        let redirect = query_param(url, "redirect_uri");
        browse(&format!(
            "{redirect}?state=forged-state&code=code-PLANTED-0d1e"
        ))
    };
    let (r, page) = connect_playing(&home, &["x", "--account", "alice"], forged);
    assert_failure_page(&page, &r, "state does not match");
    assert!(!home.path().join("store/x/alice.age").exists());

    // The platform's refusal, with markup in it: shown as text.
    let (r, page) = connect_playing(&home, &["x"], |url| {
        let redirect = query_param(url, "redirect_uri");
        let state = query_param(url, "state");
        let mut to = url::Url::parse(&redirect).unwrap();
        to.query_pairs_mut()
            .append_pair("state", &state)
            .append_pair("error", "access_denied")
            .append_pair("error_description", "<script>alert(1)</script> denied");
        browse(to.as_str())
    });
    assert_failure_page(&page, &r, "access_denied");
    assert!(!page.contains("<script>"), "{page}");
    assert!(page.contains("&lt;script&gt;"), "{page}");

    // The code exchange fails.
    x.state.oauth.lock().unwrap().token_mode = Mode::ServerError;
    let (r, page) = connect_playing(&home, &["x"], browse);
    assert_failure_page(&page, &r, "exchanging the authorization code");
    x.state.oauth.lock().unwrap().token_mode = Mode::Normal;

    // Tokens arrive, but the platform does not accept them: not stored.
    x.set_mode(Mode::Expired);
    let (r, page) = connect_playing(&home, &["x"], browse);
    assert_failure_page(&page, &r, "nothing was stored");
    assert!(!home.path().join("store/x/default.age").exists());
    x.set_mode(Mode::Normal);

    // The same truth on another flow (OpenID Connect, Mastodon's
    // registered client).
    let li = fake_linkedin();
    let mut home = Home::new();
    for (name, path) in [
        ("authorize", "/oauth/v2/authorization"),
        ("token", "/oauth/v2/accessToken"),
        ("userinfo", "/v2/userinfo"),
        ("api", ""),
    ] {
        home.endpoint("linkedin", name, &format!("{}{path}", li.url()));
    }
    with_client(&mut home, "linkedin");
    let (r, page) = connect_playing(&home, &["linkedin"], forged);
    assert_failure_page(&page, &r, "state does not match");
    let md = fake_mastodon();
    let set = format!("instance={}", md.url());
    let (r, page) = connect_playing(&home, &["mastodon", "--set", &set], forged);
    assert_failure_page(&page, &r, "state does not match");
    assert!(page.contains(&format!("--set {set}")), "{page}");
    // And success says so, after storing.
    let (r, page) = connect_playing(&home, &["mastodon", "--set", &set], browse);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(page.contains("outreach is connected"), "{page}");
    assert!(page.contains("mastodon/default is connected as"), "{page}");
    assert!(home.path().join("store/mastodon/default.age").exists());
}

/// RFC 6749 §7.1: a token of a type outreach does not understand is
/// refused, named; `bearer` is accepted in any case, and an answer without
/// `token_type` (Instagram's) is accepted too.
#[test]
fn tokens_of_a_type_other_than_bearer_are_refused_by_name() {
    let x = fake_x();
    let home = x_home(&x);
    x.state.oauth.lock().unwrap().token_type = Some("MAC".into());
    let (r, page) = connect_playing(&home, &["x"], browse);
    assert_failure_page(&page, &r, "token of type `MAC`");
    assert!(r.stderr.contains("bearer"), "{}", r.stderr);
    assert!(!home.path().join("store/x/default.age").exists());

    x.state.oauth.lock().unwrap().token_type = Some("BEARER".into());
    let r = connect(&home, &["x"]);
    assert_eq!(r.code, 0, "{}", r.all());

    let ig = fake_lab(Flavor::Instagram);
    let home = instagram_home(&ig);
    let r = connect(&home, &["instagram"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_long_lived_after_connect(&ig);
}

/// Mastodon with `redirect_port = 0`: one app per instance, whatever port
/// each connect listens on (the registered port when it is free, any other
/// when not: a loopback redirect matches on any port). `disconnect`
/// revokes with that app's credentials, which Mastodon requires.
#[test]
fn mastodon_keeps_one_app_per_instance_on_any_port_and_revokes_with_it() {
    let md = fake_mastodon();
    let mut home = Home::new();
    home.extra_config.push_str("\n[auth]\nredirect_port = 0\n");
    let set = format!("instance={}", md.url());
    assert_eq!(
        connect(&home, &["mastodon", "--account", "one", "--set", &set]).code,
        0
    );
    let registered = {
        let o = md.state.oauth.lock().unwrap();
        assert_eq!(o.registrations, 1);
        o.apps.values().next().unwrap().1.clone()
    };
    let port = url::Url::parse(&registered).unwrap().port().unwrap();
    assert_eq!(
        connect(&home, &["mastodon", "--account", "two", "--set", &set]).code,
        0
    );
    // The registered port is taken: another one serves, same app.
    let busy = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    assert_eq!(
        connect(&home, &["mastodon", "--account", "three", "--set", &set]).code,
        0
    );
    drop(busy);
    assert_eq!(md.state.oauth.lock().unwrap().registrations, 1);
    let ports: Vec<String> = md
        .seen()
        .iter()
        .filter(|s| s.path == "/oauth/authorize")
        .map(|s| {
            let redirect = query_param(&format!("http://h/?{}", s.query), "redirect_uri");
            url::Url::parse(&redirect)
                .unwrap()
                .port()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ports.len(), 3);
    assert_ne!(ports[2], port.to_string(), "{ports:?}");

    let r = home.run(&["disconnect", "mastodon/one"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("revoked mastodon/one"), "{}", r.stdout);
    let seen = md.seen();
    let revoke = seen.iter().find(|s| s.path == "/oauth/revoke").unwrap();
    assert!(
        revoke.body.contains("client_id=") && revoke.body.contains("client_secret="),
        "{}",
        revoke.body
    );
    assert_eq!(md.state.oauth.lock().unwrap().revoked.len(), 1);
    assert!(!home.path().join("store/mastodon/one.age").exists());
}

/// `import` takes `expiresAt` (seconds or milliseconds since the epoch)
/// besides `expiresIn`; an entry that is not one is refused by what is
/// wrong, in the user's words, without quoting it; platforms whose tokens
/// belong to one server are refused with the `--set` to use.
#[test]
fn import_reads_expires_at_and_refuses_entries_that_need_their_server() {
    let home = Home::new();
    let seed = home.path().join(".tokens.json");
    std::fs::write(
        &seed,
        r#"{
      "linkedin": {"accessToken": "li-import-PLANTED-5", "expiresAt": 1800000000000, "profile": {"sub": "abc", "name": "Ada"}},
      "twitter": {"accessToken": "x-import-PLANTED-6", "refreshToken": "x-import-refresh-PLANTED-7",
                  "expiresAt": 1800000000, "createdAt": "2027-01-15T06:00:00Z"},
      "mastodon": {"accessToken": "md-import-PLANTED-8", "profile": {"username": "ada"}},
      "bluesky": {"accessToken": "bsky-import-PLANTED-9", "refreshToken": "bsky-import-refresh-PLANTED-a"},
      "discord": "https://discord.com/api/webhooks/1/whtok-PLANTED-b",
      "devto": {"accessToken": "dev-import-PLANTED-c", "expiresIn": "soon"}
    }"#,
    )
    .unwrap();
    let r = home.run(&["import", seed.to_str().unwrap()], None);
    assert_eq!(r.code, 1, "{}", r.all());
    let out = r.stdout.clone();
    assert!(out.contains("imported linkedin/default"), "{out}");
    assert!(out.contains("imported x/default"), "{out}");
    for rust in ["SeedTokens", "BaseTokens", "struct ", "expected "] {
        assert!(!out.contains(rust), "{out}");
    }
    let line = |key: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("skipped {key}:")))
            .unwrap_or_else(|| panic!("{key} was not skipped: {out}"))
            .to_string()
    };
    assert!(line("mastodon").contains("--set instance="), "{out}");
    assert!(
        line("mastodon").contains("outreach connect mastodon"),
        "{out}"
    );
    assert!(line("bluesky").contains("--set pds="), "{out}");
    assert!(line("discord").contains("not a JSON object"), "{out}");
    assert!(line("devto").contains("`expiresIn`"), "{out}");
    for platform in ["mastodon", "bluesky", "discord", "devto"] {
        assert!(
            !home
                .path()
                .join(format!("store/{platform}/default.age"))
                .exists(),
            "{platform} was imported"
        );
    }
    let list: Value =
        serde_json::from_str(&home.run(&["accounts", "--json"], None).stdout).unwrap();
    let expires = |id: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"] == id)
            .unwrap_or_else(|| panic!("{id} not in {list}"))["expires_at"]
            .clone()
    };
    // 1800000000 s and 1800000000000 ms are the same instant.
    assert_eq!(expires("linkedin/default"), "2027-01-15T08:00:00Z");
    assert_eq!(expires("x/default"), "2027-01-15T08:00:00Z");
}

/// The pid of the running child of `parent` whose command line has `word`.
fn child_with(parent: u32, word: &str) -> Option<u32> {
    for e in std::fs::read_dir("/proc").ok()? {
        let Ok(pid) = e.unwrap().file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let ppid: u32 = after.split_whitespace().nth(1).unwrap().parse().unwrap();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if ppid == parent && String::from_utf8_lossy(&cmdline).contains(word) {
            return Some(pid);
        }
    }
    None
}

/// `pid`'s state letter (`Z` for a zombie), or `None` once it is gone.
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].chars().next()
}

/// Wait up to `limit` for `pid` to be gone (exited and reaped); its last
/// state if it is not.
fn gone_within(pid: u32, limit: Duration) -> Result<(), char> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        match process_state(pid) {
            None => return Ok(()),
            Some(s) if std::time::Instant::now() > deadline => return Err(s),
            Some(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Issue 11: the escrow helper (`outreach escrow`) is reaped — when it
/// dies while the daemon runs, and when the daemon exits: the daemon closes
/// its input and waits for it, so nothing is left behind, not even a
/// zombie for an init that never reaps (as in many containers; this test
/// process stands in for one).
#[test]
fn the_escrow_helper_is_reaped_while_the_daemon_runs_and_when_it_exits() {
    // Orphans of this process's descendants come to it and, never waited
    // for, stay as zombies: what a helper outliving its parent would be.
    unsafe extern "C" {
        fn prctl(option: i32, arg2: u64, arg3: u64, arg4: u64, arg5: u64) -> i32;
    }
    const PR_SET_CHILD_SUBREAPER: i32 = 36;
    assert_eq!(unsafe { prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) }, 0);

    let x = fake_x();
    let mut home = x_home(&x);
    home.extra_config
        .push_str("\n[daemon]\nlisten = \"127.0.0.1:0\"\ngrace_secs = 10\n");
    assert_eq!(connect(&home, &["x", "--account", "a"]).code, 0);
    /// Stopped (and waited for) however the test ends.
    struct Stopped(std::process::Child);
    impl Drop for Stopped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut daemon = Stopped(
        home.command(&["daemon"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let state = home.path().join("store.daemon.json");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let base = loop {
        if let Ok(s) = std::fs::read_to_string(&state)
            && let Ok(v) = serde_json::from_str::<Value>(&s)
        {
            break format!("http://{}", v["address"].as_str().unwrap());
        }
        assert!(daemon.0.try_wait().unwrap().is_none(), "the daemon exited");
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let token = std::fs::read_to_string(home.path().join("daemon.token")).unwrap();
    let refresh = || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            reqwest::Client::builder()
                .no_proxy()
                .build()
                .unwrap()
                .post(format!("{base}/accounts/x/a/refresh"))
                .bearer_auth(token.trim())
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    let helper_of = |daemon: u32| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(pid) = child_with(daemon, "escrow") {
                return pid;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no escrow helper was started"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    // X's refresh tokens are single use: the refresh goes through the helper.
    assert_eq!(refresh(), 200);
    let first = helper_of(daemon.0.id());
    // It dies while the daemon runs: the daemon reaps it.
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &first.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert_eq!(
        gone_within(first, Duration::from_secs(5)),
        Ok(()),
        "the killed helper {first} was not reaped by the running daemon"
    );
    // The next exchange starts another, and it still works.
    assert_eq!(refresh(), 200);
    let second = helper_of(daemon.0.id());
    assert_ne!(second, first);
    assert_eq!(x.state.oauth.lock().unwrap().refresh_calls, 2);

    // The daemon stops: the helper is gone with it, not left to an init.
    let stopped = std::process::Command::new("kill")
        .args(["-TERM", &daemon.0.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let status = daemon.0.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(
        gone_within(second, Duration::from_secs(2)),
        Ok(()),
        "the helper {second} outlived the daemon that started it"
    );
    assert_eq!(x.state.oauth.lock().unwrap().reused, 0);
}

/// Reconnecting an account whose plugin now asks for scopes the account
/// was not granted is refused, naming them, until the user grants them
/// with `--approve-scopes`.
#[test]
fn reconnecting_with_new_scopes_needs_the_users_approval() {
    let x = fake_x();
    let home = x_home(&x);
    let seed = home.path().join(".tokens.json");
    std::fs::write(
        &seed,
        r#"{"twitter": {"accessToken": "x-narrow-PLANTED-1", "expiresIn": 7200, "scope": "tweet.read",
             "profile": {"id": "42", "username": "ada"}, "createdAt": "2026-11-25T10:00:00Z"}}"#,
    )
    .unwrap();
    assert_eq!(home.run(&["import", seed.to_str().unwrap()], None).code, 0);
    let r = home.run(&["connect", "x", "--no-browser"], None);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("tweet.write")
            && r.stderr.contains("asked before: tweet.read")
            && r.stderr.contains("--approve-scopes"),
        "{}",
        r.stderr
    );
    assert!(
        !r.stderr.contains("authorize"),
        "no flow was started: {}",
        r.stderr
    );
    let r = connect(&home, &["x", "--approve-scopes"]);
    assert_eq!(r.code, 0, "{}", r.all());
    // Granted now: reconnecting asks nothing more.
    let r = connect(&home, &["x"]);
    assert_eq!(r.code, 0, "{}", r.all());
}

/// A home with one of the oauth-lab plugins (cargo feature `feature`,
/// platform id `id`) pointed at `fake` with the given endpoints.
fn lab_home(feature: &str, id: &str, fake: &Fake, endpoints: &[(&str, &str)]) -> Home {
    let mut home = Home::new();
    std::fs::copy(
        test_plugin("outreach-oauth-lab", Some(feature), &format!("{id}.wasm")),
        home.plugins_dir().join(format!("{id}.wasm")),
    )
    .unwrap();
    for (name, path) in endpoints {
        home.endpoint(id, name, &format!("{}{path}", fake.url()));
    }
    home
}

/// Facebook Pages: Facebook Login, `fb_exchange_token`, then the pages the
/// grant manages (`list-identities`); `--as` picks them, one account per
/// page, each with its own page token (which does not expire), every
/// Graph call carrying the host-computed `appsecret_proof`.
#[test]
fn a_grant_that_acts_as_pages_becomes_one_account_per_page_picked() {
    let fb = fake_facebook();
    let mut home = lab_home(
        "facebook",
        "facebook",
        &fb,
        &[
            ("authorize", "/oauth/authorize"),
            ("token", "/oauth/access_token"),
            ("exchange", "/oauth/access_token"),
            ("api", ""),
        ],
    );
    with_client(&mut home, "facebook");
    let r = connect(&home, &["facebook", "--as", "202"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout
            .contains("connected facebook/default as Acme Books"),
        "{}",
        r.stdout
    );
    let r = connect(&home, &["facebook", "--as", "101", "--as", "Acme Books"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout
            .contains("connected facebook/acme-bakery as Acme Bakery")
            && r.stdout
                .contains("connected facebook/acme-books as Acme Books"),
        "{}",
        r.stdout
    );
    let list: Value =
        serde_json::from_str(&home.run(&["accounts", "--json"], None).stdout).unwrap();
    let bakery = list
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == "facebook/acme-bakery")
        .unwrap();
    assert_eq!(bakery["settings"]["page_id"], "101", "{bakery}");
    assert!(
        bakery["expires_at"].is_null(),
        "page tokens do not expire: {bakery}"
    );
    // Each page account acts with its own page token.
    let seen = fb.seen();
    let me: Vec<&Seen> = seen.iter().filter(|s| s.path == "/me").collect();
    assert_eq!(me.len(), 3, "{me:?}");
    assert!(
        me.iter().all(|s| s.query.contains("access_token=page-")),
        "{me:?}"
    );
    // A page the grant cannot act as is refused, naming those it can.
    let (r, _) = connect_playing(&home, &["facebook", "--as", "999"], browse);
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(
        r.stderr.contains("cannot act as `999`") && r.stderr.contains("101 (Acme Bakery)"),
        "{}",
        r.stderr
    );
}

/// A session login (Hacker News): username and password become a cookie;
/// the plugin's requests carry it, cookies the site sets during a call go
/// back on that call's next request, and a session that ends is renewed by
/// logging in again with the password the user chose to keep. A wrong
/// password stores nothing and says what the page said.
#[test]
fn session_logins_use_cookies_and_log_in_again_when_the_session_ends() {
    let site = fake_session();
    let home = lab_home("session", "hn", &site, &[("login", "/login"), ("api", "")]);
    let r = home.run(
        &["connect", "hn", "--username", "pg"],
        Some("wrong-password"),
    );
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("the login was refused") && r.stderr.contains("Bad login."),
        "{}",
        r.stderr
    );
    assert!(
        home.run(&["accounts", "--json"], None)
            .stdout
            .contains("[]")
    );

    let r = home.run(
        &["connect", "hn", "--username", "pg", "--remember-password"],
        Some(SESSION_PASSWORD),
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("connected hn/default as pg"),
        "{}",
        r.stdout
    );
    let post = |name: &str| {
        home.post(
            &format!("{name}.toml"),
            &format!("id = \"{name}\"\ntitle = \"Show HN: {name}\"\nlink = \"https://example.org/{name}\"\ntext = \"\"\nto = [\"hn\"]\n"),
        )
    };
    let r = home.run(&["publish", post("one").to_str().unwrap()], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("item?id=9000"), "{}", r.stdout);
    let submit = site
        .seen()
        .into_iter()
        .find(|s| s.path == "/r")
        .expect("a submit");
    let cookie = &submit.headers["cookie"];
    assert!(
        cookie.contains("user=pg&user-PLANTED-") && cookie.contains("csrf=c0"),
        "{cookie}"
    );

    // The session ends; the next publish logs in again and goes out once.
    site.state.oauth.lock().unwrap().access.clear();
    let r = home.run(&["publish", post("two").to_str().unwrap()], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(
        site.state.oauth.lock().unwrap().code_calls,
        3,
        "three logins"
    );
    assert_eq!(site.posts().len(), 2);

    // Without a kept password, an ended session needs a reconnect.
    let r = home.run(
        &["connect", "hn", "--username", "pg"],
        Some(SESSION_PASSWORD),
    );
    assert_eq!(r.code, 0, "{}", r.all());
    site.state.oauth.lock().unwrap().access.clear();
    let r = home.run(&["publish", post("three").to_str().unwrap()], None);
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(r.all().contains("reconnect"), "{}", r.all());
    assert_eq!(site.posts().len(), 2);
}

/// A platform that needs no credential connects without asking for one,
/// and its posts are handed to the user with the page to finish them on.
#[test]
fn a_platform_without_credentials_connects_and_hands_posts_over() {
    let site = fake_session();
    let home = lab_home("anonymous", "anon", &site, &[("api", "")]);
    let r = home.run(&["connect", "anon"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("connected anon/default as Anonymous"),
        "{}",
        r.stdout
    );
    let p = home.post(
        "a.toml",
        "title = \"A title\"\nlink = \"https://example.org/a\"\ntext = \"\"\nto = [\"anon\"]\n",
    );
    let r = home.run(&["publish", p.to_str().unwrap()], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("handed to you")
            && r.stdout.contains(
                "https://lab.example/submitlink?t=A+title&u=https%3A%2F%2Fexample.org%2Fa"
            ),
        "{}",
        r.stdout
    );
    assert!(site.seen().is_empty());
}

/// Run `outreach connect ARGS --no-browser` with its standard input open;
/// `play` gets the printed address and returns what to type in.
fn connect_pasting(home: &Home, args: &[&str], play: impl FnOnce(&str) -> String) -> Run {
    use std::io::Write;
    let mut full = vec!["connect"];
    full.extend_from_slice(args);
    full.push("--no-browser");
    let mut child = home
        .command(&full)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let Some(url) = printed_address(&mut stderr, &mut seen) else {
        panic!("connect ended without printing an address:\n{seen}");
    };
    let typed = play(&url);
    {
        let mut input = child.stdin.take().unwrap();
        input.write_all(typed.as_bytes()).unwrap();
    }
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: format!("{seen}{rest}"),
    };
    run.assert_no_secrets();
    run
}

/// Where the platform's authorize page sends the browser (without
/// following it).
fn redirect_of(authorize: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .get(authorize)
            .send()
            .await
            .unwrap();
        r.headers()["location"].to_str().unwrap().to_string()
    })
}

/// A redirect URI that is not this machine (Meta wants an https page of
/// yours): `connect` listens for nothing and takes the address the browser
/// landed on; a forged one is refused and nothing is stored.
#[test]
fn connect_takes_the_pasted_address_when_the_redirect_is_elsewhere() {
    let x = fake_x();
    let mut home = x_home(&x);
    home.extra_config
        .push_str("redirect_uri = \"https://app.example/outreach/callback\"\n");
    let r = connect_pasting(&home, &["x"], |url| {
        assert!(
            url.contains("redirect_uri=https%3A%2F%2Fapp.example%2Foutreach%2Fcallback"),
            "{url}"
        );
        let landed = redirect_of(url);
        assert!(
            landed.starts_with("https://app.example/outreach/callback?"),
            "{landed}"
        );
        // What was forged: another state.
        let state = query_param(&landed, "state");
        landed.replace(&state, "forged")
    });
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(r.stderr.contains("state does not match"), "{}", r.stderr);
    assert!(
        home.run(&["accounts", "--json"], None)
            .stdout
            .contains("[]")
    );

    let r = connect_pasting(&home, &["x"], |url| format!("  {}\n", redirect_of(url)));
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("connected x/default"), "{}", r.stdout);
}

/// Platforms that accept only https redirects get a loopback listener
/// over TLS, with a certificate made once and kept in the store.
#[test]
fn the_loopback_redirect_can_be_https() {
    let x = fake_x();
    let mut home = x_home(&x);
    home.extra_config
        .push_str("\n[auth]\nredirect_tls = true\n");
    let (r, page) = connect_playing(&home, &["x"], |url| {
        let landed = redirect_of(url);
        assert!(landed.starts_with("https://localhost:"), "{landed}");
        let landed = landed.replacen("localhost", "127.0.0.1", 1);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            reqwest::Client::builder()
                .danger_accept_invalid_certs(true)
                .build()
                .unwrap()
                .get(&landed)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        })
    });
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(page.contains("outreach is connected"), "{page}");
    assert!(r.stderr.contains("certificate"), "{}", r.stderr);
    // Kept in the store, encrypted like everything in it.
    let kept = home.path().join("store/.aux/loopback-tls.age");
    let bytes = std::fs::read(&kept).unwrap();
    assert!(!String::from_utf8_lossy(&bytes).contains("PRIVATE KEY"));
}

/// Reddit: connect (HTTP Basic, `duration=permanent`), refresh, the
/// configured User-Agent on every request (token requests too), the
/// subreddit's rules checked before posting (a required flair, given by
/// its text), self and link posts, a subreddit that does not exist,
/// `RATELIMIT` inside an HTTP 200 as a rate limit, a `validate_on_submit`
/// refusal named by its field, and an expired token refreshed on the way.
#[test]
fn reddit_connects_and_submits_within_the_subreddits_rules() {
    let reddit = fake_reddit();
    let mut home = Home::new();
    for (name, path) in [
        ("authorize", "/api/v1/authorize"),
        ("token", "/api/v1/access_token"),
        ("api", ""),
    ] {
        home.endpoint("reddit", name, &format!("{}{path}", reddit.url()));
    }
    with_client(&mut home, "reddit");
    home.extra_config
        .push_str(&format!("user_agent = \"{REDDIT_UA}\"\n"));
    let r = connect(&home, &["reddit"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("connected reddit/default as alice_dev"),
        "{}",
        r.stdout
    );
    assert_eq!(home.run(&["refresh", "reddit"], None).code, 0);
    assert_eq!(reddit.state.oauth.lock().unwrap().refresh_calls, 1);

    let post = |name: &str, body: &str| home.post(&format!("{name}.toml"), body);
    let no_sr = post(
        "nosr",
        "title = \"Hello there\"\ntext = \"x\"\nto = [\"reddit\"]\n",
    );
    let r = home.run(&["publish", no_sr.to_str().unwrap(), "--check"], None);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.all().contains("subreddit"), "{}", r.all());

    let unflaired = post(
        "unflaired",
        "title = \"My new crate\"\ntext = \"It does things.\"\nto = [\"reddit\"]\n[override.reddit]\nsubreddit = \"rust\"\n",
    );
    let r = home.run(&["publish", unflaired.to_str().unwrap()], None);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.all().contains("r/rust requires a flair"), "{}", r.all());
    assert!(reddit.posts().is_empty());

    let flaired = post(
        "flaired",
        "title = \"My new crate\"\ntext = \"It does things.\"\nto = [\"reddit\"]\n[override.reddit]\nsubreddit = \"rust\"\nflair_text = \"Project\"\n",
    );
    let r = home.run(&["publish", flaired.to_str().unwrap()], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("/r/rust/comments/1h0x/"), "{}", r.stdout);
    let sent = &reddit.posts()[0].1;
    assert_eq!(sent["kind"], "self");
    assert_eq!(sent["flair_id"], "f2-project");
    assert_eq!(sent["validate_on_submit"], "true");
    assert_eq!(sent["sendreplies"], "true");

    let link = post(
        "link",
        "title = \"Self-hosting outreach\"\nlink = \"https://blog.example/outreach\"\ntext = \"\"\nto = [\"reddit\"]\n[override.reddit]\nsubreddit = \"selfhosted\"\nnsfw = \"false\"\n",
    );
    let r = home.run(&["publish", link.to_str().unwrap()], None);
    assert_eq!(r.code, 0, "{}", r.all());
    let sent = &reddit.posts()[1].1;
    assert_eq!(sent["kind"], "link");
    assert_eq!(sent["url"], "https://blog.example/outreach");

    // An image: uploaded through the lease (no token to the storage), and
    // pending until the submitted listing shows the post.
    std::fs::write(home.path().join("shot.png"), png_bytes()).unwrap();
    let image = post(
        "image",
        "title = \"Screenshot of the dashboard\"\ntext = \"\"\nto = [\"reddit\"]\n[[media]]\npath = \"shot.png\"\n[override.reddit]\nsubreddit = \"selfhosted\"\n",
    );
    let r = home.run(&["publish", image.to_str().unwrap()], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("published 1h2x"), "{}", r.stdout);
    let sent = &reddit.posts()[2].1;
    assert_eq!(sent["kind"], "image");
    assert!(
        sent["url"]
            .as_str()
            .unwrap()
            .ends_with("/rte_images/lease-1.png"),
        "{sent}"
    );

    // A video: its poster image is required, and both go up.
    std::fs::write(
        home.path().join("clip.mp4"),
        b"\0\0\0\x18ftypisom\0\0\x02\0isommp41",
    )
    .unwrap();
    let clip_only = post(
        "clip-only",
        "title = \"A short demo clip\"\ntext = \"\"\nto = [\"reddit\"]\n[[media]]\npath = \"clip.mp4\"\n[override.reddit]\nsubreddit = \"selfhosted\"\n",
    );
    let r = home.run(&["publish", clip_only.to_str().unwrap(), "--check"], None);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.all().contains("poster image"), "{}", r.all());
    let clip = post(
        "clip",
        "title = \"A short demo clip\"\ntext = \"\"\nto = [\"reddit\"]\n[[media]]\npath = \"clip.mp4\"\n[[media]]\npath = \"shot.png\"\n[override.reddit]\nsubreddit = \"selfhosted\"\n",
    );
    let r = home.run(&["publish", clip.to_str().unwrap()], None);
    assert_eq!(r.code, 0, "{}", r.all());
    let sent = &reddit.posts()[3].1;
    assert_eq!(sent["kind"], "video");
    assert!(
        sent["video_poster_url"]
            .as_str()
            .unwrap()
            .contains("rte_images"),
        "{sent}"
    );

    let nowhere = post(
        "nowhere",
        "title = \"Anyone here?\"\ntext = \"x\"\nto = [\"reddit\"]\n[override.reddit]\nsubreddit = \"doesnotexist\"\n",
    );
    let r = home.run(&["publish", nowhere.to_str().unwrap()], None);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.all().contains("r/doesnotexist does not exist"),
        "{}",
        r.all()
    );

    let short = post(
        "short",
        "title = \"Hi\"\ntext = \"x\"\nto = [\"reddit\"]\n[override.reddit]\nsubreddit = \"selfhosted\"\n",
    );
    let r = home.run(&["publish", short.to_str().unwrap()], None);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.all()
            .contains("title: Your title is too short (SUBMIT_VALIDATION_TITLE_REQUIREMENT)"),
        "{}",
        r.all()
    );

    reddit.set_mode(Mode::RateLimited);
    let busy = post(
        "busy",
        "title = \"Another post\"\ntext = \"x\"\nto = [\"reddit\"]\n[override.reddit]\nsubreddit = \"selfhosted\"\n",
    );
    let r = home.run(&["publish", busy.to_str().unwrap(), "--json"], None);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stdout.contains("rate-limited") && r.stdout.contains("9 minutes"),
        "{}",
        r.stdout
    );
    // A gateway's HTML page instead of JSON: a failure, said plainly.
    reddit.set_mode(Mode::Html);
    let r = home.run(&["publish", busy.to_str().unwrap()], None);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.all().contains("502"), "{}", r.all());
    reddit.set_mode(Mode::Normal);

    // The access token expires: refreshed, and the post goes out once.
    reddit.state.oauth.lock().unwrap().access.clear();
    let later = post(
        "later",
        "title = \"After the refresh\"\ntext = \"x\"\nto = [\"reddit\"]\n[override.reddit]\nsubreddit = \"selfhosted\"\n",
    );
    let r = home.run(&["publish", later.to_str().unwrap()], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(reddit.posts().len(), 5);
    // Every request carried the configured User-Agent (the fake blocks
    // others), the token requests included.
    assert!(
        reddit
            .seen()
            .iter()
            .any(|s| s.path == "/api/v1/access_token")
    );
}

/// Instagram and Threads (the bundled plugins): the code is traded for a
/// short-lived token, that for a long-lived one with the app secret (the
/// plugin never sees it), and the long-lived token itself is renewed —
/// only once it has lived the platform's minimum age (24 hours; shrunk
/// here with `refresh_min_age_secs`), which the fakes enforce as the real
/// platforms do. `outreach refresh` before then says when it can; the
/// daemon's scheduler waits for it and renews in time.
#[test]
fn instagram_and_threads_renew_long_lived_tokens_only_once_old_enough() {
    for (platform, fake, flavor_prefix) in [
        ("instagram", support::meta::fake_instagram(), "ig"),
        ("threads", support::meta::fake_threads(), "th"),
    ] {
        {
            let mut o = fake.state.oauth.lock().unwrap();
            o.lifetime = Duration::from_secs(12);
            o.min_age = Duration::from_secs(4);
        }
        let mut home = Home::new();
        for (name, path) in [
            ("authorize", "/oauth/authorize"),
            ("token", "/oauth/access_token"),
            ("exchange", "/access_token"),
            ("refresh", "/refresh_access_token"),
            ("api", ""),
        ] {
            home.endpoint(platform, name, &format!("{}{path}", fake.url()));
        }
        with_client(&mut home, platform);
        home.extra_config
            .push_str("refresh_min_age_secs = 4\nrefresh_at = 0.1\n");
        let r = connect(&home, &[platform]);
        assert_eq!(r.code, 0, "{platform}: {}", r.all());
        assert!(
            r.stdout.contains("as Acme Bakery"),
            "{platform}: {}",
            r.stdout
        );
        let exchanges: Vec<_> = fake
            .seen()
            .into_iter()
            .filter(|s| s.path == "/access_token")
            .collect();
        assert_eq!(exchanges.len(), 1, "{platform}");
        assert!(
            exchanges[0].query.starts_with(&format!(
                "grant_type={flavor_prefix}_exchange_token&client_secret="
            )),
            "{}",
            exchanges[0].query
        );
        // The account's id is the platform's user id, from the profile.
        let list: Value =
            serde_json::from_str(&home.run(&["accounts", "--json"], None).stdout).unwrap();
        assert_eq!(list[0]["profile"]["id"], support::meta::USER_ID, "{list}");

        // Too young: refused by outreach, not sent.
        let r = home.run(&["refresh", platform], None);
        assert_eq!(r.code, 0, "{}", r.all());
        assert!(
            r.stdout.contains("is not refreshed yet")
                && r.stdout.contains("only once it is 4 seconds old"),
            "{}",
            r.stdout
        );
        assert_eq!(fake.state.oauth.lock().unwrap().refresh_calls, 0);

        // The scheduler renews it once it may, before it expires.
        let d = support::daemon::start_daemon(&home);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while fake.state.oauth.lock().unwrap().refresh_calls < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "{platform}: no two renewals in time\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let log = d.stop();
        let o = fake.state.oauth.lock().unwrap();
        assert_eq!(o.too_young, 0, "{platform}: renewed too early\n{log}");
        drop(o);
        let refreshes: Vec<_> = fake
            .seen()
            .into_iter()
            .filter(|s| s.path == "/refresh_access_token")
            .collect();
        assert!(
            refreshes[0].query.starts_with(&format!(
                "grant_type={flavor_prefix}_refresh_token&access_token={flavor_prefix}-long-"
            )),
            "{}",
            refreshes[0].query
        );
        assert_eq!(
            account(&status(&home), &format!("{platform}/default"))["state"],
            "healthy"
        );
    }
}

/// The bundled Facebook Pages plugin end to end: Facebook Login, the
/// long-lived user token, the pages it manages, one account for the page
/// picked with its page token (never expiring), and a post that goes to
/// that page's feed with the page token and its `appsecret_proof`.
#[test]
fn facebook_connects_as_a_page_and_posts_to_it() {
    let fb = fake_facebook();
    let mut home = Home::new();
    for (name, path) in [
        ("authorize", "/oauth/authorize"),
        ("token", "/oauth/access_token"),
        ("exchange", "/oauth/access_token"),
        ("api", ""),
    ] {
        home.endpoint("facebook", name, &format!("{}{path}", fb.url()));
    }
    with_client(&mut home, "facebook");
    let (r, _) = connect_playing(&home, &["facebook"], browse);
    assert_ne!(r.code, 0, "without --as on no terminal: {}", r.all());
    assert!(
        r.stderr.contains("101 (Acme Bakery") && r.stderr.contains("--as"),
        "{}",
        r.stderr
    );
    let r = connect(&home, &["facebook", "--as", "Acme Bakery"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout
            .contains("connected facebook/default as Acme Bakery"),
        "{}",
        r.stdout
    );
    let s = status(&home);
    let h = account(&s, "facebook/default");
    assert_eq!(h["state"], "healthy");
    assert!(h["expires_in"].is_null(), "page tokens do not expire: {h}");
    let post = home.post("p.toml", "text = \"Open on Sunday\"\nto = [\"facebook\"]\n");
    let r = home.run(&["publish", post.to_str().unwrap()], None);
    assert_eq!(r.code, 0, "{}", r.all());
    let posts = fb.posts();
    assert_eq!(posts.len(), 1);
    assert!(posts[0].0.starts_with("101_"), "{posts:?}");
    let feed = fb
        .seen()
        .into_iter()
        .find(|s| s.method == "POST" && s.path.ends_with("/101/feed"))
        .unwrap();
    assert!(
        feed.query.contains("access_token=page-101-") && feed.query.contains("appsecret_proof="),
        "{}",
        feed.query
    );
}

/// YouTube and TikTok connect flows as their OAuth servers want them:
/// Google with `access_type=offline` and `prompt=consent` (a refresh token
/// every time; refreshes keep it); TikTok with `client_key`, a PKCE
/// challenge in hex (its desktop flow) and rotating refresh tokens whose
/// lifetimes come from each answer.
#[test]
fn youtube_and_tiktok_connect_and_refresh_their_way() {
    let yt = support::video::fake_youtube();
    let mut home = Home::new();
    for (name, path) in [
        ("authorize", "/o/oauth2/v2/auth"),
        ("token", "/token"),
        ("revoke", "/revoke"),
        ("api", "/youtube/v3"),
    ] {
        home.endpoint("youtube", name, &format!("{}{path}", yt.url()));
    }
    with_client(&mut home, "youtube");
    let r = connect(&home, &["youtube"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("as Acme Bakery"), "{}", r.stdout);
    let r = home.run(&["refresh", "youtube"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    let r = home.run(&["refresh", "youtube"], None);
    assert_eq!(r.code, 0, "the refresh token is kept: {}", r.all());
    assert_eq!(yt.state.oauth.lock().unwrap().refresh_calls, 2);

    let tt = support::video::fake_tiktok();
    for (name, path) in [
        ("authorize", "/v2/auth/authorize/"),
        ("token", "/v2/oauth/token/"),
        ("revoke", "/v2/oauth/revoke/"),
        ("api", "/v2"),
    ] {
        home.endpoint("tiktok", name, &format!("{}{path}", tt.url()));
    }
    with_client(&mut home, "tiktok");
    let r = connect(&home, &["tiktok"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("as Acme Bakery (@acmebakery)"),
        "{}",
        r.stdout
    );
    for _ in 0..2 {
        let r = home.run(&["refresh", "tiktok"], None);
        assert_eq!(r.code, 0, "{}", r.all());
    }
    let o = tt.state.oauth.lock().unwrap();
    assert_eq!(
        (o.refresh_calls, o.reused),
        (2, 0),
        "each refresh token used once"
    );
    drop(o);
    let list: Value =
        serde_json::from_str(&home.run(&["accounts", "--json"], None).stdout).unwrap();
    let t = list
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["platform"] == "tiktok")
        .unwrap();
    assert_eq!(t["has_refresh_token"], true, "{t}");
}
