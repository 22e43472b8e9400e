//! The plugin host's sandbox, proven with hostile plugins built in the test
//! suite: a plugin that traps, loops, hoards memory, calls an undeclared
//! host, returns malformed data, imports WASI or is not WebAssembly at all
//! costs one call (or its own load) and nothing else.

mod support;

use std::sync::Arc;

use outreach::config::Loaded;
use outreach::contract::wit::types::{Account, CallError, Context, Endpoint, Post};
use outreach::http::Credentials;
use outreach::plugin::{Host, PluginError};
use outreach::secret::Secret;
use support::*;

const SECRET: &str = "hostile-PLANTED-token-33aa";

fn post(text: &str) -> Post {
    Post::text(text, "k")
}

/// A host over a plugins folder holding the bundled plugins, the hostile
/// plugin and whatever `extra` files the test adds.
async fn host_with(extra: &[(&str, Vec<u8>)]) -> (Host, tempfile::TempDir) {
    let home = Home::new();
    let (hostile, hostile_bad) = hostile_plugins();
    std::fs::copy(&hostile, home.plugins_dir().join("hostile.wasm")).unwrap();
    std::fs::copy(&hostile_bad, home.plugins_dir().join("hostile-bad.wasm")).unwrap();
    for (name, bytes) in extra {
        std::fs::write(home.plugins_dir().join(name), bytes).unwrap();
    }
    let cfg = Loaded::load(Some(&home.config_path())).unwrap();
    let host = Host::new(&cfg).unwrap();
    host.load_dir(&cfg.plugins_dir).await.unwrap();
    let Home { dir, .. } = home;
    (host, dir)
}

fn rejected(host: &Host, file: &str) -> String {
    let all = host.rejected();
    all.iter()
        .find(|(p, _)| p.file_name().unwrap() == file)
        .map(|(_, e)| e.clone())
        .unwrap_or_else(|| panic!("{file} was not rejected: {all:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plugins_fail_one_call_and_the_rest_carry_on() {
    let (host, _dir) = host_with(&[]).await;
    let hostile = host.get("hostile").unwrap();
    let x = host.get("x").unwrap();

    for (text, expect) in [
        ("trap", "crashed"),
        ("loop", "deadline"),
        ("oom", "memory cap of 32 MiB"),
    ] {
        let started = std::time::Instant::now();
        let err = host
            .validate(&hostile, &post(text), None)
            .await
            .unwrap_err();
        assert!(matches!(err, PluginError::Call { .. }), "{text}: {err}");
        let msg = err.to_string();
        assert!(
            msg.contains("plugin `hostile`") && msg.contains(expect),
            "{text}: {msg}"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{text} was not stopped promptly"
        );
        // The same plugin still serves the next call, and so do the others.
        assert!(
            host.validate(&hostile, &post("fine"), None)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            host.validate(&x, &post("hello"), None)
                .await
                .unwrap()
                .is_empty()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeclared_hosts_are_denied_and_secrets_never_reach_the_plugin() {
    let (host, _dir) = host_with(&[]).await;
    let hostile = host.get("hostile").unwrap();
    // An echo server that reflects the request it got, headers included,
    // and redirects on request.
    let echo = start(|_, seen| match seen.path.as_str() {
        "/redirect-evil" => respond(302, &[("location", "https://evil.example/steal")], ""),
        "/redirect-home" => respond(307, &[("location", "/echo")], ""),
        "/big" => respond(200, &[], vec![b'a'; 2 << 20]),
        _ => {
            let auth = seen
                .headers
                .get("authorization")
                .cloned()
                .unwrap_or_default();
            respond(
                200,
                &[("x-echo", auth.as_str())],
                format!("you sent: {auth}"),
            )
        }
    });
    let endpoints = vec![Endpoint {
        name: "api".into(),
        url: echo.url(),
    }];
    let account = Account {
        name: "default".into(),
        settings: vec![],
        user_id: None,
        handle: None,
    };
    let creds = Arc::new(Credentials::new().with("access_token", Secret::new(SECRET)));
    let ctx = Context {
        account: account.clone(),
        endpoints: endpoints.clone(),
    };

    let scope = host.scope(
        &hostile,
        Some(&endpoints),
        Some(&account),
        Some(creds.clone()),
    );
    let out = host
        .publish(&hostile, scope, &ctx, &post("exfiltrate"))
        .await
        .unwrap();
    match out {
        Err(CallError::Rejected(m)) => {
            assert!(
                m.contains("request denied") && m.contains("evil.example"),
                "{m}"
            );
            assert!(!m.contains(SECRET), "{m}");
        }
        other => panic!("expected a denial, got {other:?}"),
    }

    let call = |text: &'static str| {
        let scope = host.scope(
            &hostile,
            Some(&endpoints),
            Some(&account),
            Some(creds.clone()),
        );
        let (host, hostile, ctx) = (&host, hostile.clone(), ctx.clone());
        async move {
            host.publish(&hostile, scope, &ctx, &post(text))
                .await
                .unwrap()
        }
    };
    let receipt = call("echo").await.unwrap();
    // The platform saw the real token; the plugin only saw it scrubbed.
    assert!(echo.seen()[0].headers["authorization"].ends_with(SECRET));
    assert_eq!(receipt.id, "you sent: Bearer [redacted]");

    // Redirects are followed by the host and every hop is re-checked.
    match call("get:/redirect-evil").await {
        Err(CallError::Rejected(m)) => assert!(m.contains("evil.example"), "{m}"),
        other => panic!("a redirect to an undeclared host must be denied, got {other:?}"),
    }
    assert_eq!(
        call("get:/redirect-home").await.unwrap().id,
        "200 you sent: Bearer [redacted]"
    );

    // Responses over the cap never reach the plugin.
    match call("get:/big").await {
        Err(CallError::Rejected(m)) => {
            assert!(
                m.contains("larger than the host's cap of 1048576 bytes"),
                "{m}"
            )
        }
        other => panic!("an oversized response must be refused, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_results_and_manifests_are_refused() {
    let (host, _dir) = host_with(&[]).await;
    let hostile = host.get("hostile").unwrap();
    let account = Account {
        name: "default".into(),
        settings: vec![],
        user_id: None,
        handle: None,
    };
    let ctx = Context {
        account: account.clone(),
        endpoints: vec![],
    };
    let scope = host.scope(&hostile, None, Some(&account), None);
    let err = host
        .publish(&hostile, scope, &ctx, &post("empty-id"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("returned malformed data: a receipt without a post id"),
        "{err}"
    );

    let why = rejected(&host, "hostile-bad.wasm");
    assert!(why.contains("invalid manifest"), "{why}");
    assert!(
        why.contains("`not a host!` is not a well-formed host name"),
        "{why}"
    );
    assert!(why.contains("rate limit for class `publish`"), "{why}");
    assert!(host.get("hostile-bad").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_files_are_rejected_at_load_with_the_reason() {
    // WASI 0.2's cli, io, clocks, random, filesystem, sockets and http
    // are linked (with no authority); anything else is refused by name.
    let wasi_importer = wat_component(
        r#"(component
             (import "wasi:keyvalue/store@0.2.0" (instance
               (export "open" (func (result (list u32)))))))"#,
    );
    let future_contract = wat_component(
        r#"(component
             (import "outreach:platform/host@9.0.0" (instance
               (export "now-millis" (func (result u64))))))"#,
    );
    let no_exports = wat_component("(component)");
    let (host, _dir) = host_with(&[
        ("corrupt.wasm", b"\0asm\x0d\0\x01\0garbage".to_vec()),
        ("text.wasm", b"this is not wasm".to_vec()),
        ("wasi.wasm", wasi_importer),
        ("future.wasm", future_contract),
        ("empty.wasm", no_exports),
    ])
    .await;
    assert!(rejected(&host, "text.wasm").contains("is not a WebAssembly file"));
    assert!(rejected(&host, "corrupt.wasm").contains("corrupt.wasm"));
    let why = rejected(&host, "wasi.wasm");
    assert!(
        why.contains("imports `wasi:keyvalue/store@0.2.0`, which outreach does not grant"),
        "{why}"
    );
    let why = rejected(&host, "future.wasm");
    assert!(
        why.contains("built against `outreach:platform/host@9.0.0`"),
        "{why}"
    );
    let why = rejected(&host, "empty.wasm");
    assert!(
        why.contains("does not export the outreach:platform@0.2.0 `plugin` world"),
        "{why}"
    );
    // The good plugins loaded regardless.
    for id in ["x", "linkedin", "mastodon", "hostile"] {
        assert!(host.get(id).is_ok(), "{id}");
    }
}

fn wat_component(text: &str) -> Vec<u8> {
    wat::parse_str(text).expect("valid component text")
}

#[test]
fn plugins_command_lists_manifests_and_rejections_and_uses_the_cache() {
    let home = Home::new();
    std::fs::write(home.plugins_dir().join("broken.wasm"), b"nope").unwrap();
    let cold = home.run(&["plugins", "--json"], None);
    assert_eq!(
        cold.code,
        1,
        "a rejected file makes the listing fail: {}",
        cold.all()
    );
    let v: serde_json::Value = serde_json::from_str(&cold.stdout).unwrap();
    let ids: Vec<&str> = v["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "bluesky",
            "devto",
            "discord",
            "facebook",
            "hackernews",
            "instagram",
            "linkedin",
            "mastodon",
            "medium",
            "reddit",
            "threads",
            "tiktok",
            "x",
            "youtube"
        ]
    );
    let x = v["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "x")
        .unwrap();
    assert_eq!(x["max_length"], 280);
    assert!(
        x["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h == "https://api.x.com:443")
    );
    assert!(
        v["rejected"][0]["error"]
            .as_str()
            .unwrap()
            .contains("broken.wasm")
    );
    let cached = std::fs::read_dir(home.path().join("cache"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
        })
        .count();
    assert_eq!(cached, bundled_count(), "one compiled artifact per plugin");

    let warm = home.run(&["plugins", "show", "linkedin", "--json"], None);
    assert_eq!(warm.code, 0, "{}", warm.all());
    let m: serde_json::Value = serde_json::from_str(&warm.stdout).unwrap();
    assert_eq!(m["id"], "linkedin");
    assert_eq!(m["content"]["max_length"], 3000);
    assert_eq!(
        std::fs::read_dir(home.path().join("cache"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
            })
            .count(),
        bundled_count()
    );
}

/// The broker injects credentials wherever a platform wants them — a
/// header with a prefix, a query parameter, inside the URL, inside the body —
/// and the plugin only ever names them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_injected_where_the_platform_wants_them() {
    use outreach::contract::wit::host::{Body, BodyPart, Request};
    use outreach::contract::wit::types::{
        CredentialPlacement, Field, HeaderPlacement, HttpMethod, SecretEncoding, SecretName,
        SecretPart, TextPart,
    };
    use outreach::http::{AllowedHost, Scope};

    let (host, _dir) = host_with(&[]).await;
    let fake = start(|_, seen| {
        let echoed = format!(
            "{} {}?{} auth={} body={}",
            seen.method,
            seen.path,
            seen.query,
            seen.headers
                .get("authorization")
                .cloned()
                .unwrap_or_default(),
            seen.body
        );
        respond(200, &[], echoed)
    });
    let token = "inject-PLANTED-token-0b7d";
    let app_secret = "appsecret-PLANTED-77";
    let webhook = format!("{}/api/webhooks/123/{token}", fake.url());
    let creds = Arc::new(
        Credentials::new()
            .with("access_token", Secret::new(token))
            .with("refresh_token", Secret::new(webhook.clone()))
            .with("client_secret", Secret::new(app_secret)),
    );
    let scope = |placement: Vec<CredentialPlacement>| Scope {
        plugin: "test".into(),
        account: Some("default".into()),
        allow: Arc::new(vec![
            AllowedHost::from_url(&url::Url::parse(&fake.url()).unwrap()).unwrap(),
        ]),
        credentials: Some(creds.clone()),
        placement: Arc::new(placement),
        settings: Arc::new(vec![]),
        rate_limits: Arc::new(vec![]),
        rate_headers: None,
        dry_run: None,
        dispatched: Default::default(),
        taint: Default::default(),
        pinned: None,
        jar: Default::default(),
        user_agent: None,
        uploads: Default::default(),
    };
    let text = |t: String| vec![TextPart::Text(t)];
    let secret = |name| {
        TextPart::Secret(SecretPart {
            name,
            encoding: SecretEncoding::Raw,
        })
    };
    let req = |url: Vec<TextPart>, body: Body, credential: bool| Request {
        method: HttpMethod::Post,
        url,
        headers: vec![Field {
            name: "content-type".into(),
            value: vec![TextPart::Text("application/json".into())],
        }],
        body,
        credential,
        class: String::new(),
        follow_redirects: false,
    };
    let bytes = |b: &str| Body::Bytes(b.as_bytes().to_vec());
    let no_media = |_: u32| -> Result<std::fs::File, String> { Err("none".into()) };
    let send = |placement, r| {
        let s = scope(placement);
        let broker = host.broker.clone();
        async move { broker.send(&s, r, &no_media).await.unwrap() }
    };

    // Discord bot: `Authorization: Bot <token>`.
    let bot = CredentialPlacement::Header(HeaderPlacement {
        name: "Authorization".into(),
        prefix: "Bot ".into(),
    });
    send(
        vec![bot],
        req(
            text(format!("{}/channels/1/messages", fake.url())),
            bytes("{}"),
            true,
        ),
    )
    .await;
    // Meta: `?access_token=<token>&appsecret_proof=<HMAC>`.
    send(
        vec![
            CredentialPlacement::Query("access_token".into()),
            CredentialPlacement::Proof("appsecret_proof".into()),
        ],
        req(
            text(format!("{}/me/feed?fields=id", fake.url())),
            bytes("{}"),
            true,
        ),
    )
    .await;
    // A placeholder inside a body is text (it may be post content).
    send(
        vec![CredentialPlacement::Bearer],
        req(
            text(format!("{}/xrpc/x", fake.url())),
            bytes(r#"{"t":"{{access_token}}"}"#),
            false,
        ),
    )
    .await;
    // Discord webhook: the whole URL is the secret, by structure.
    send(
        vec![],
        req(
            vec![
                secret(SecretName::RefreshToken),
                TextPart::Text("?wait=true".into()),
            ],
            bytes("{}"),
            false,
        ),
    )
    .await;
    // A body part that is a secret (a form field the platform wants).
    send(
        vec![],
        req(
            text(format!("{}/form", fake.url())),
            Body::Parts(vec![
                BodyPart::Bytes(b"token=".to_vec()),
                BodyPart::Secret(SecretPart {
                    name: SecretName::AccessToken,
                    encoding: SecretEncoding::Percent,
                }),
            ]),
            false,
        ),
    )
    .await;

    let seen = fake.seen();
    assert_eq!(seen[0].headers["authorization"], format!("Bot {token}"));
    let proof = outreach::http::proof(&Secret::new(app_secret), &Secret::new(token));
    assert_eq!(
        seen[1].query,
        format!("fields=id&access_token={token}&appsecret_proof={proof}")
    );
    assert_eq!(seen[2].body, r#"{"t":"{{access_token}}"}"#);
    assert_eq!(seen[3].path, format!("/api/webhooks/123/{token}"));
    assert_eq!(seen[3].query, "wait=true");
    assert_eq!(seen[4].body, format!("token={token}"));

    // What comes back to the plugin never holds the secret.
    let echoed = send(
        vec![CredentialPlacement::Bearer],
        req(
            text(format!("{}/e", fake.url())),
            bytes(r#"{"t":"{{access_token}}"}"#),
            true,
        ),
    )
    .await;
    let body = String::from_utf8(echoed.body).unwrap();
    assert!(!body.contains(token), "{body}");
    assert!(body.contains("auth=Bearer [redacted]"), "{body}");

    // A secret the host does not hold fails before anything is sent; a
    // placeholder in text is text (here: not a URL at all).
    let before = fake.seen().len();
    let lean = Scope {
        credentials: Some(Arc::new(
            Credentials::new().with("access_token", Secret::new(token)),
        )),
        ..scope(vec![])
    };
    let err = host
        .broker
        .send(
            &lean,
            req(vec![secret(SecretName::ClientSecret)], bytes("{}"), false),
            &no_media,
        )
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("client_secret"), "{err:?}");
    let err = host
        .broker
        .send(
            &lean,
            req(
                text("{{refresh_token}}?wait=true".into()),
                bytes("{}"),
                false,
            ),
            &no_media,
        )
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("invalid URL"), "{err:?}");
    assert_eq!(fake.seen().len(), before);

    // Pinned to other hosts (the account approved the plugin before it
    // added this one): a request with a secret in any part, or asking for
    // the credential, is refused before it leaves; one without goes out.
    let pinned = Scope {
        pinned: Some(Arc::new(vec![
            AllowedHost::from_pattern("api.example").unwrap(),
        ])),
        ..scope(vec![CredentialPlacement::Bearer])
    };
    let url = || text(format!("{}/p", fake.url()));
    for r in [
        req(url(), bytes("{}"), true),
        req(vec![secret(SecretName::RefreshToken)], bytes("{}"), false),
        req(
            url(),
            Body::Parts(vec![BodyPart::Secret(SecretPart {
                name: SecretName::RefreshToken,
                encoding: SecretEncoding::Raw,
            })]),
            false,
        ),
    ] {
        let err = host.broker.send(&pinned, r, &no_media).await.unwrap_err();
        assert!(
            format!("{err:?}").contains("outreach plugins approve test"),
            "{err:?}"
        );
    }
    assert_eq!(fake.seen().len(), before);
    host.broker
        .send(&pinned, req(url(), bytes("{}"), false), &no_media)
        .await
        .unwrap();
    assert_eq!(fake.seen().len(), before + 1);
    assert!(!fake.seen()[before].headers.contains_key("authorization"));
}

/// A component that imports what outreach refuses (a key-value store, a
/// neural network, a vendor's vault) next to the one interface it grants, and exports the
/// world's function names, over a core module with enough code that
/// compiling it is real work.
fn doomed_component() -> Vec<u8> {
    let mut funcs = String::new();
    for i in 0..400 {
        funcs.push_str(&format!("(func (export \"f{i}\") (param i32) (result i32)"));
        for k in 0..40 {
            funcs.push_str(&format!(
                " local.get 0 i32.const {k} i32.mul i32.const {i} i32.add local.set 0"
            ));
        }
        funcs.push_str(" local.get 0)\n");
    }
    let exports: String = ["describe", "validate", "publish", "profile", "find-post"]
        .iter()
        .map(|e| format!("(export \"{e}\" (func $f))\n"))
        .collect();
    wat_component(&format!(
        r#"(component
             (import "wasi:keyvalue/store@0.2.0" (instance
               (export "open" (func (result (list u32))))))
             (import "outreach:platform/host@0.1.0" (instance
               (export "now-millis" (func (result u64)))))
             (import "wasi:nn/graph@0.2.0" (instance
               (export "load" (func (param "port" u16)))))
             (import "acme:vault/secrets@1.0.0" (instance
               (export "get" (func (result (list string))))))
             (core module $m
               (func (export "main") (result i32) i32.const 7)
               {funcs})
             (core instance $i (instantiate $m))
             (func $f (result u32) (canon lift (core func $i "main")))
             {exports})"#
    ))
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Item 9: a plugin the host will refuse is refused from its bytes — every
/// refused import named — before anything is compiled or cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doomed_plugins_are_refused_before_compiling() {
    let doomed = doomed_component();
    let future_contract = wat_component(
        r#"(component
             (import "outreach:platform/host@9.0.0" (instance
               (export "now-millis" (func (result u64)))))
             (import "outreach:platform/types@9.0.0" (instance)))"#,
    );
    let no_exports = wat_component("(component (core module $m (func (export \"f\"))))");
    let (host, dir) = host_with(&[
        ("doomed.wasm", doomed.clone()),
        ("future.wasm", future_contract.clone()),
        ("silent.wasm", no_exports.clone()),
    ])
    .await;

    let why = rejected(&host, "doomed.wasm");
    for import in [
        "wasi:keyvalue/store@0.2.0",
        "wasi:nn/graph@0.2.0",
        "acme:vault/secrets@1.0.0",
    ] {
        assert!(why.contains(&format!("`{import}`")), "{import}: {why}");
    }
    assert!(why.contains("which outreach does not grant"), "{why}");
    assert!(!why.contains("outreach:platform/host@0.1.0`"), "{why}");
    let why = rejected(&host, "future.wasm");
    assert!(
        why.contains("`outreach:platform/host@9.0.0`")
            && why.contains("`outreach:platform/types@9.0.0`")
            && why.contains(
                "this outreach implements outreach:platform@0.2.0 and outreach:platform@0.1.0"
            ),
        "{why}"
    );
    assert!(why.contains("does not export"), "{why}");
    let why = rejected(&host, "silent.wasm");
    assert!(
        why.contains("does not export the outreach:platform@0.2.0 `plugin` world")
            && why.contains("`describe`")
            && why.contains("`find-post`"),
        "{why}"
    );
    for why in host.rejected().iter().map(|(_, e)| e) {
        assert!(!why.contains('\n'), "one line: {why}");
    }

    // Nothing refused was compiled: the compile cache holds the plugins
    // that loaded and the one whose manifest was refused after its call.
    let cached: Vec<String> = std::fs::read_dir(dir.path().join("cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".cwasm"))
        .collect();
    for (name, bytes) in [
        ("doomed.wasm", &doomed),
        ("future.wasm", &future_contract),
        ("silent.wasm", &no_exports),
    ] {
        let sha = sha256_hex(bytes);
        assert!(
            !cached.iter().any(|c| c.starts_with(&sha)),
            "{name} was compiled before it was refused: {cached:?}"
        );
    }
    // The bundled plugins and the two test plugins.
    assert_eq!(cached.len(), bundled_count() + 2, "{cached:?}");
    for id in [
        "x", "linkedin", "mastodon", "bluesky", "discord", "devto", "hostile",
    ] {
        assert!(host.get(id).is_ok(), "{id}");
    }
}

/// Item 9: truncated, empty and garbled files are refused with one line
/// each, never a panic or a backtrace, and the rest load.
#[test]
fn truncated_and_empty_plugins_get_a_one_line_error() {
    let mut home = Home::new();
    home.env.push(("RUST_BACKTRACE".into(), "1".into()));
    let mastodon = std::fs::read(bundled_plugins().join("mastodon.wasm")).unwrap();
    let doomed = doomed_component();
    let files: [(&str, &[u8]); 6] = [
        ("half.wasm", &mastodon[..mastodon.len() / 2]),
        ("one-short.wasm", &mastodon[..mastodon.len() - 1]),
        ("cut-component.wasm", &doomed[..doomed.len() * 2 / 3]),
        ("empty.wasm", b""),
        ("header-only.wasm", b"\0asm\x01\0\0\0"),
        (
            "garbled.wasm",
            b"\0asm\x01\0\0\0\x01\xff\xff\xff\xff\x0f\x60",
        ),
    ];
    for (name, bytes) in files {
        std::fs::write(home.plugins_dir().join(name), bytes).unwrap();
    }
    let r = home.run(&["plugins", "--json"], None);
    assert_eq!(r.code, 1, "{}", r.all());
    for bad in ["panicked", "backtrace", "RUST_BACKTRACE"] {
        assert!(!r.stderr.contains(bad), "{bad}:\n{}", r.stderr);
    }
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        v["plugins"].as_array().unwrap().len(),
        bundled_count(),
        "{v}"
    );
    let rejected = v["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), files.len(), "{v}");
    let error = |file: &str| -> String {
        rejected
            .iter()
            .find(|r| r["path"].as_str().unwrap().ends_with(&format!("/{file}")))
            .unwrap_or_else(|| panic!("{file} was not rejected: {v}"))["error"]
            .as_str()
            .unwrap()
            .to_string()
    };
    for (name, _) in files {
        let e = error(name);
        assert!(!e.contains('\n'), "{name}: more than one line: {e}");
        assert!(e.len() < 400, "{name}: {e}");
    }
    for name in ["half.wasm", "one-short.wasm", "cut-component.wasm"] {
        assert!(error(name).contains("truncated"), "{name}: {}", error(name));
    }
    assert!(
        error("empty.wasm").contains("is empty"),
        "{}",
        error("empty.wasm")
    );
}

/// Item 8: a `*.wasm` that is not a regular file — a FIFO, a link to one, a
/// link to nothing, a folder — is skipped with a warning and never opened;
/// a link to a real plugin loads.
#[test]
fn plugins_that_are_not_regular_files_are_skipped_without_hanging() {
    let home = Home::new();
    let dir = home.plugins_dir();
    let (hostile, _) = hostile_plugins();
    let elsewhere = home.path().join("elsewhere.wasm");
    std::fs::copy(&hostile, &elsewhere).unwrap();
    mkfifo(&dir.join("fifo.wasm"));
    std::os::unix::fs::symlink(dir.join("fifo.wasm"), dir.join("to-fifo.wasm")).unwrap();
    std::os::unix::fs::symlink(home.path().join("nowhere"), dir.join("dangling.wasm")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, dir.join("linked.wasm")).unwrap();
    std::fs::create_dir(dir.join("folder.wasm")).unwrap();

    for args in [
        &["plugins", "--json"][..],
        &["plugins", "show", "hostile", "--json"],
    ] {
        let r = run_with_deadline(&home, args, std::time::Duration::from_secs(60));
        assert_eq!(r.code, 0, "{}", r.all());
        for (file, what) in [
            ("fifo.wasm", "is a FIFO"),
            ("to-fifo.wasm", "is a FIFO"),
            ("dangling.wasm", "is a symbolic link to nothing"),
            ("folder.wasm", "is a folder"),
        ] {
            assert!(
                r.stderr
                    .lines()
                    .any(|l| l.contains(file) && l.contains(what) && l.contains("skipped")),
                "{file}: {}",
                r.stderr
            );
        }
        if args.len() == 2 {
            let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
            assert_eq!(v["rejected"], serde_json::json!([]), "{v}");
            assert!(
                v["plugins"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["id"] == "hostile"),
                "{v}"
            );
        }
    }
}

fn mkfifo(path: &std::path::Path) {
    let ok = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mkfifo {}", path.display());
}

/// `home.run`, but killed (and failed) if it takes longer than `limit`.
fn run_with_deadline(home: &Home, args: &[&str], limit: std::time::Duration) -> Run {
    use std::io::Read;
    let mut child = home
        .command(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`outreach {}` hung for {limit:?}:\n{}",
                args.join(" "),
                err.join().unwrap()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let run = Run {
        code: status.code().unwrap_or(-1),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    };
    run.assert_no_secrets();
    run
}

/// Issue 11: a manifest problem names a media kind as the contract spells
/// it (`video`), never as Rust does (`MediaKind::Video`).
#[test]
fn manifest_problems_name_contract_values_not_rust_types() {
    let home = Home::new();
    let (_, hostile_bad) = hostile_plugins();
    std::fs::copy(&hostile_bad, home.plugins_dir().join("hostile-bad.wasm")).unwrap();
    let r = home.run(&["plugins", "--json"], None);
    assert_eq!(r.code, 1, "{}", r.all());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let why = v["rejected"][0]["error"].as_str().unwrap();
    assert!(
        why.contains("media rule for video must allow at least one item"),
        "{why}"
    );
    assert!(!why.contains("MediaKind") && !why.contains("::"), "{why}");
}

/// Issue 11: limits have sane upper bounds; a value beyond them (a memory
/// cap no WebAssembly plugin can use, one that overflows when turned into
/// bytes) is an error naming the key and the range — never a panic, an
/// obscure engine error or a quiet substitute. The same for a zero that
/// used to be turned into 1.
#[test]
fn absurd_limits_are_refused_with_their_range() {
    for (table, key, value, range) in [
        ("limits", "memory_mib", "100000", "from 1 to 4096"),
        ("limits", "memory_mib", "17592186044416", "from 1 to 4096"),
        ("limits", "max_concurrent_calls", "100000", "from 1 to 1024"),
        (
            "limits",
            "http_timeout_ms",
            "99999999999",
            "from 1 to 600000",
        ),
        ("limits", "max_redirects", "1000", "from 0 to 20"),
        ("publish", "retries", "4000000000", "from 0 to 10"),
        (
            "auth",
            "max_backoff_secs",
            "9223372036854775807",
            "from 1 to 604800",
        ),
        ("daemon", "grace_secs", "99999999", "from 0 to 3600"),
    ] {
        let home = Home::new();
        // The test home sets [limits] itself: replace its line.
        let config = home.config_path();
        let text = std::fs::read_to_string(&config).unwrap();
        let text = if table == "limits" && text.contains(&format!("\n{key} = ")) {
            text.lines()
                .map(|l| {
                    if l.starts_with(&format!("{key} = ")) {
                        format!("{key} = {value}")
                    } else {
                        l.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n")
        } else if table == "limits" {
            text.replace("[limits]\n", &format!("[limits]\n{key} = {value}\n"))
        } else {
            format!("{text}\n[{table}]\n{key} = {value}\n")
        };
        let path = home.path().join("custom.toml");
        std::fs::write(&path, text).unwrap();
        let r = run_with_config(&home, &path, &["plugins"]);
        assert_eq!(r.code, 2, "{table}.{key} = {value}: {}", r.all());
        let line = r
            .stderr
            .lines()
            .find(|l| l.starts_with("error:"))
            .unwrap_or("");
        assert!(
            line.contains(&format!("{table}.{key} = {value} is too large")) && line.contains(range),
            "{table}.{key} = {value}: {}",
            r.stderr
        );
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    }
    // Zero where zero means nothing would work.
    let home = Home::new();
    let path = home.path().join("zero.toml");
    std::fs::write(&path, "[publish]\nper_platform = 0\n").unwrap();
    let r = run_with_config(&home, &path, &["plugins"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr
            .contains("publish.per_platform must be greater than zero"),
        "{}",
        r.stderr
    );
}

/// The real binary with `config` instead of the home's own.
fn run_with_config(home: &Home, config: &std::path::Path, args: &[&str]) -> Run {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_outreach"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("OUTREACH_CONFIG")
        .current_dir(home.path())
        .stdin(std::process::Stdio::null())
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

/// Issue 11: an endpoint override whose name the plugin does not declare
/// (a typo) is a config error naming the file, line and key, the endpoints
/// the plugin has and the one probably meant — not an endpoint quietly
/// added that nothing uses, while the real one keeps its default.
#[test]
fn an_unknown_endpoint_override_is_a_config_error_naming_the_real_ones() {
    let mut home = Home::new();
    home.endpoint("x", "api", "http://127.0.0.1:9/api");
    home.endpoint("x", "tokn", "http://127.0.0.1:9/token");
    let post = home.post("p.toml", "text = \"hi\"\nto = [\"x\"]\n");
    for args in [
        vec!["plugins"],
        vec!["plugins", "show", "x"],
        vec!["publish", post.to_str().unwrap(), "--check"],
    ] {
        let r = home.run(&args, None);
        assert_eq!(r.code, 2, "{args:?}: {}", r.all());
        let config = home.config_path();
        let line = std::fs::read_to_string(&config)
            .unwrap()
            .lines()
            .position(|l| l.starts_with("tokn ="))
            .unwrap()
            + 1;
        for want in [
            format!("{} is not valid", config.display()),
            format!("line {line}, platforms.x.endpoints.tokn"),
            "the x plugin has no endpoint named `tokn`".into(),
            "did you mean `token`?".into(),
            "its endpoints are authorize, token, revoke, api".into(),
        ] {
            assert!(r.stderr.contains(&want), "{args:?}: {want}:\n{}", r.stderr);
        }
    }
    // An override for a plugin that is not installed is not checked.
    let mut home = Home::new();
    home.endpoint("myspace", "whatever", "http://127.0.0.1:9/");
    let r = home.run(&["plugins"], None);
    assert_eq!(r.code, 0, "{}", r.all());
}

/// Issue 11: `plugins` and `plugins show` show what is in effect — the
/// manifest's endpoints with the config's overrides, the hosts the plugin
/// may call because of them — and where each comes from.
#[test]
fn plugins_show_the_endpoints_and_hosts_in_effect_and_where_they_come_from() {
    let mut home = Home::new();
    home.endpoint("x", "api", "http://127.0.0.1:4567");
    home.endpoint(
        "mastodon",
        "revoke",
        "https://proxy.example:8443/oauth/revoke",
    );
    let from_config = "config: platforms.x.endpoints.api";

    let r = home.run(&["plugins", "--json"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let plugin = |id: &str| {
        v["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == id)
            .unwrap()
            .clone()
    };
    let x = plugin("x");
    let endpoint = |p: &serde_json::Value, name: &str| {
        p["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no endpoint {name}: {p}"))
            .clone()
    };
    let api = endpoint(&x, "api");
    assert_eq!(api["url"], "http://127.0.0.1:4567", "{x}");
    assert_eq!(api["from"], from_config, "{x}");
    assert_eq!(api["replaces"], "https://api.x.com", "{x}");
    let token = endpoint(&x, "token");
    assert_eq!(token["url"], "https://api.x.com/2/oauth2/token");
    assert_eq!(token["from"], "manifest");
    // The override's host is one X may call now, and says why.
    assert!(
        x["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h == "http://127.0.0.1:4567"),
        "{x}"
    );
    let sources = x["host_sources"].as_array().unwrap();
    let source = |host: &str| {
        sources
            .iter()
            .find(|h| h["host"] == host)
            .unwrap_or_else(|| panic!("no host {host}: {x}"))["from"]
            .clone()
    };
    assert_eq!(
        source("http://127.0.0.1:4567"),
        serde_json::json!([from_config])
    );
    assert!(
        source("https://api.x.com:443")
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "manifest: hosts"),
        "{x}"
    );
    // A platform whose endpoints come from the account's settings says so;
    // an overridden one shows the override.
    let md = plugin("mastodon");
    assert_eq!(
        endpoint(&md, "token")["from"],
        "manifest, with the account's `instance` setting"
    );
    assert_eq!(
        endpoint(&md, "revoke")["url"],
        "https://proxy.example:8443/oauth/revoke"
    );
    assert!(
        md["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h == "https://proxy.example:8443"),
        "{md}"
    );

    // For people, too.
    let r = home.run(&["plugins"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.lines().any(|l| l.contains("api")
            && l.contains("http://127.0.0.1:4567")
            && l.contains(from_config)),
        "{}",
        r.stdout
    );

    // `plugins show`: the manifest, then what is in effect.
    let r = home.run(&["plugins", "show", "x", "--json"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    let m: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(m["id"], "x");
    assert_eq!(
        endpoint(&m["effective"], "api")["url"],
        "http://127.0.0.1:4567"
    );
    assert_eq!(endpoint(&m["effective"], "api")["from"], from_config);
    let r = home.run(&["plugins", "show", "x"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains(&format!(
            "#   api = http://127.0.0.1:4567  ({from_config}; the manifest says https://api.x.com)"
        )),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains(&format!("#   http://127.0.0.1:4567  ({from_config})")),
        "{}",
        r.stdout
    );
}

/// A Discord plugin built against contract 0.1.0 (kept as a fixture: the
/// bundled plugins have moved on) still loads and publishes through the
/// current host; its `{{access_token}}` URL template is turned into a
/// credential part, and the same text in a post stays text.
#[test]
fn a_plugin_built_against_contract_0_1_0_still_loads_and_publishes() {
    let discord = fake_discord();
    let mut home = Home::new();
    std::fs::copy(
        repo_root().join("tests/fixtures/contract-0.1.0/discord.wasm"),
        home.plugins_dir().join("discord.wasm"),
    )
    .unwrap();
    home.endpoint("discord", "api", &format!("{}/api/v10", discord.url()));
    let r = home.run(&["plugins", "show", "discord"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("built against contract 0.1.0"),
        "{}",
        r.stdout
    );
    let r = home.run(&["plugins", "show", "x"], None);
    assert!(
        r.stdout.contains("built against contract 0.2.0"),
        "{}",
        r.stdout
    );

    let hook = format!(
        "{}/api/webhooks/{DISCORD_WEBHOOK_ID}/{DISCORD_WEBHOOK_TOKEN}",
        discord.url()
    );
    let r = home.run(&["accounts", "add", "discord"], Some(&hook));
    assert_eq!(r.code, 0, "{}", r.all());
    let post = home.post(
        "old.toml",
        "text = \"from an old plugin\"\nto = [\"discord\"]\n",
    );
    let r = home.run(&["publish", post.to_str().unwrap(), "--json"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    let posts = discord.posts();
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert!(
        posts[0].1.to_string().contains("from an old plugin"),
        "{posts:?}"
    );
    // 0.1.0 names the webhook with `{{access_token}}`: a post holding the
    // same text is refused before anything is sent, saying why.
    let hostile = home.post(
        "hostile.toml",
        "text = \"{{ access_token }} as text\"\nto = [\"discord\"]\n",
    );
    let r = home.run(&["publish", hostile.to_str().unwrap(), "--json"], None);
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(r.all().contains("appears in this post"), "{}", r.all());
    assert_eq!(discord.posts().len(), 1);
    for s in discord.seen() {
        assert!(
            !s.body.contains("PLANTED"),
            "the credential went into a body: {}",
            s.body
        );
    }
}

/// A post the platform accepted but is still processing (`pending`) is
/// asked about with `check-receipt` until it is published, and one whose
/// last step is the user's (`handed-to-user`) is reported with the page to
/// open; neither is sent again.
#[test]
fn pending_posts_settle_by_asking_and_handed_ones_are_reported() {
    let home = Home::new();
    let (hostile, _) = hostile_plugins();
    std::fs::copy(&hostile, home.plugins_dir().join("hostile.wasm")).unwrap();
    let r = home.run(&["accounts", "add", "hostile"], Some("h-PLANTED-key"));
    assert_eq!(r.code, 0, "{}", r.all());
    let p = home.post("pending.toml", "text = \"pending\"\nto = [\"hostile\"]\n");
    let r = home.run(&["publish", p.to_str().unwrap(), "--json"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["results"][0]["state"], "published", "{v}");
    assert_eq!(v["results"][0]["post_id"], "post-of-job-7", "{v}");
    assert_eq!(v["results"][0]["url"], "https://example.org/p/job-7", "{v}");
    let h = home.post("handed.toml", "text = \"handed\"\nto = [\"hostile\"]\n");
    let r = home.run(&["publish", h.to_str().unwrap()], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout
            .contains("handed to you — finish it at https://example.org/finish/draft-9"),
        "{}",
        r.stdout
    );
    let r = home.run(&["publish", h.to_str().unwrap(), "--json"], None);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["results"][0]["already"], true, "{v}");
}

/// `outreach plugins check FILE` reports what a file imports, exports and
/// declares without installing it, and why the host would refuse one.
#[test]
fn plugins_check_reports_a_file_without_installing_it() {
    let home = Home::new();
    let x = bundled_plugins().join("x.wasm");
    let r = home.run(&["plugins", "check", "--json", x.to_str().unwrap()], None);
    assert_eq!(r.code, 0, "{}", r.all());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["contract"], "0.2.0", "{v}");
    assert_eq!(v["manifest"]["id"], "x", "{v}");
    assert!(v["exports"].to_string().contains("check-receipt"), "{v}");
    assert!(v["refused"].is_null(), "{v}");
    let old = repo_root().join("tests/fixtures/contract-0.1.0/discord.wasm");
    let r = home.run(&["plugins", "check", old.to_str().unwrap()], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("outreach:platform/host@0.1.0"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("built against contract 0.1.0"),
        "{}",
        r.stdout
    );
    let junk = home.path().join("junk.wasm");
    std::fs::write(&junk, b"not wasm").unwrap();
    let r = home.run(&["plugins", "check", junk.to_str().unwrap()], None);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stdout.contains("REFUSED"), "{}", r.stdout);
    // Nothing was installed.
    assert!(!home.plugins_dir().join("junk.wasm").exists());
}

/// Whether the JavaScript and Python plugin toolchains can run here. CI
/// installs them (`.ci/run`) and sets OUTREACH_REQUIRE_PLUGIN_TOOLCHAINS=1,
/// so their absence fails there; a developer's `cargo test` without them
/// skips loudly.
fn plugin_toolchains() -> bool {
    let have = |cmd: &str, arg: &str| {
        std::process::Command::new(cmd)
            .arg(arg)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let ok = have("node", "--version") && have("npm", "--version") && have("python3", "--version");
    if !ok {
        assert!(
            std::env::var_os("OUTREACH_REQUIRE_PLUGIN_TOOLCHAINS").is_none(),
            "node, npm and python3 are required (OUTREACH_REQUIRE_PLUGIN_TOOLCHAINS is set) but missing"
        );
        eprintln!(
            "SKIPPING the JavaScript and Python plugin tests: node, npm or python3 is not installed (CI installs them; see README)"
        );
    }
    ok
}

/// Build `tests/plugins/{lang}` with its toolchain into `out`.
fn build_foreign_plugin(lang: &str, out: &std::path::Path) -> std::path::PathBuf {
    let script = repo_root()
        .join("tests/plugins")
        .join(lang)
        .join("build.sh");
    let o = std::process::Command::new("sh")
        .arg(&script)
        .arg(out)
        .output()
        .expect("run build.sh");
    assert!(
        o.status.success(),
        "building the {lang} test plugin failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let path = String::from_utf8_lossy(&o.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string();
    std::path::PathBuf::from(path)
}

/// The fake platform both foreign plugins talk to: `GET /me`, `POST /posts`.
fn fake_demo() -> Fake {
    start(|st, seen| {
        let auth = seen
            .headers
            .get("authorization")
            .cloned()
            .unwrap_or_default();
        if auth != "Bearer demo-PLANTED-key" {
            return json_response(401, &[], serde_json::json!({"error": "bad key"}));
        }
        match (seen.method.as_str(), seen.path.as_str()) {
            ("GET", "/me") => json_response(
                200,
                &[],
                serde_json::json!({"id": "u1", "name": "Demo User", "handle": "demo"}),
            ),
            ("POST", "/posts") => {
                let body: serde_json::Value = serde_json::from_str(&seen.body).unwrap_or_default();
                let mut posts = st.posts.lock().unwrap();
                let id = format!("p{}", posts.len() + 1);
                posts.push((id.clone(), body));
                json_response(
                    201,
                    &[],
                    serde_json::json!({"id": id, "url": format!("https://demo.example/{id}")}),
                )
            }
            _ => json_response(404, &[], serde_json::json!({"error": "no route"})),
        }
    })
}

/// Plugins written in JavaScript (componentize-js) and Python
/// (componentize-py), built from source with their toolchains' default
/// settings — so they import WASI, including `wasi:http` and sockets — are
/// dropped into a running daemon's plugins folder, load, and publish
/// through the broker.
#[test]
fn plugins_in_javascript_and_python_publish_through_a_running_daemon() {
    if !plugin_toolchains() {
        return;
    }
    let fake = fake_demo();
    let mut home = Home::new();
    home.endpoint("jsdemo", "api", &fake.url())
        .endpoint("pydemo", "api", &fake.url());
    let built = tempfile::tempdir().unwrap();
    let js = build_foreign_plugin("js", built.path());
    let py = build_foreign_plugin("py", built.path());
    // `plugins check` tells what a file imports before it is installed.
    let r = home.run(&["plugins", "check", js.to_str().unwrap()], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("wasi:http/"), "{}", r.stdout);
    assert!(
        r.stdout.contains("built against contract 0.2.0"),
        "{}",
        r.stdout
    );
    let r = home.run(&["plugins", "check", "--json", py.to_str().unwrap()], None);
    assert_eq!(r.code, 0, "{}", r.all());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["manifest"]["id"], "pydemo", "{v}");
    assert!(v["imports"].to_string().contains("wasi:sockets/"), "{v}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let d = support::daemon::start_daemon(&home);
    for (file, id) in [(&js, "jsdemo"), (&py, "pydemo")] {
        std::fs::copy(file, home.plugins_dir().join(format!("{id}.wasm"))).unwrap();
    }
    // Hot reload: both appear in the running daemon.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(240);
    loop {
        let (_, v) = rt.block_on(d.try_call("GET", "/platforms", None)).unwrap();
        let ids: Vec<String> = v["plugins"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["id"].as_str().map(str::to_string))
            .collect();
        if ids.iter().any(|i| i == "jsdemo") && ids.iter().any(|i| i == "pydemo") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the foreign plugins did not load: {v}\n{}",
            d.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    for id in ["jsdemo", "pydemo"] {
        let r = home.run(&["accounts", "add", id], Some("demo-PLANTED-key"));
        assert_eq!(r.code, 0, "{}", r.all());
        assert!(r.stdout.contains("Demo User"), "{}", r.stdout);
        let body = serde_json::json!({
            "id": format!("from-{id}"),
            "text": format!("hello from {id}, {{{{access_token}}}} stays text"),
            "to": [id],
            "override": {id: {"visibility": "unlisted"}},
        });
        let (code, v) = rt
            .block_on(d.try_call("POST", "/publish", Some(body)))
            .unwrap();
        assert_eq!(code, 200, "{v}\n{}", d.log());
        assert_eq!(v["results"][0]["state"], "published", "{v}");
        // A declared choice field is checked by the host.
        let bad = serde_json::json!({
            "text": "bad field", "to": [id], "override": {id: {"visibility": "secret"}},
        });
        let (code, v) = rt
            .block_on(d.try_call("POST", "/publish", Some(bad)))
            .unwrap();
        assert_ne!(code, 200, "{v}");
        assert!(v.to_string().contains("visibility"), "{v}");
    }
    let posts = fake.posts();
    assert_eq!(posts.len(), 2, "{posts:?}");
    for (_, body) in &posts {
        assert_eq!(body["visibility"], "unlisted", "{body}");
        assert!(
            body["text"]
                .as_str()
                .unwrap()
                .contains("{{access_token}} stays text")
        );
    }
    let log = d.stop();
    assert!(!log.contains("PLANTED"), "a secret reached the log");
}

/// A plugin update that declares a new host loads, but an account connected
/// before it sends its credential there only once the user approves the
/// plugin (`outreach plugins approve`); `plugins` and `status` say what
/// waits. (Manifest endpoints are https, so the new host is one that does
/// not resolve: refused, nothing is attempted; approved, the request is
/// attempted. The broker test below shows a live listener gets nothing.)
#[test]
fn a_replaced_plugin_cannot_send_an_existing_token_to_a_host_it_added() {
    let home = Home::new();
    let (hostile, _) = hostile_plugins();
    let installed = home.plugins_dir().join("hostile.wasm");
    std::fs::copy(&hostile, &installed).unwrap();
    let r = home.run(
        &["accounts", "add", "hostile"],
        Some("h-PLANTED-pinned-key-41c9"),
    );
    assert_eq!(r.code, 0, "{}", r.all());

    // The update: the same plugin, its `extra` endpoint now on a host the
    // account never approved.
    let patched = hostile_with_extra_endpoint(&hostile, "https://collector.invalid");
    std::fs::write(&installed, &patched).unwrap();
    let origin = "https://collector.invalid:443";

    let r = home.run(&["plugins"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains(&format!("AWAITING APPROVAL: {origin}")),
        "{}",
        r.stdout
    );
    let r = home.run(&["plugins", "--json"], None);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let row = v["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "hostile")
        .unwrap()
        .clone();
    assert_eq!(row["awaiting_approval"][0], origin, "{row}");
    assert_eq!(row["awaiting_accounts"][0], "hostile/default", "{row}");
    let r = home.run(&["status"], None);
    assert!(
        r.stdout.contains(&format!("awaiting approval: {origin}")),
        "{}",
        r.stdout
    );
    let p = home.post(
        "one.toml",
        "text = \"extra:/collect\"\nto = [\"hostile\"]\n",
    );
    let r = home.run(&["publish", p.to_str().unwrap()], None);
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(
        r.all().contains("outreach plugins approve hostile")
            && r.all().contains("nothing was sent"),
        "{}",
        r.all()
    );

    // Approved: the request is attempted (and fails only because the host
    // does not exist); nothing waits any more.
    let r = home.run(&["plugins", "approve", "hostile"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains(origin), "{}", r.stdout);
    let p = home.post(
        "two.toml",
        "text = \"extra:/collect\"\nto = [\"hostile\"]\n",
    );
    let r = home.run(&["publish", p.to_str().unwrap()], None);
    assert!(!r.all().contains("plugins approve"), "{}", r.all());
    assert!(r.all().contains("collector.invalid"), "{}", r.all());
    let r = home.run(&["plugins"], None);
    assert!(!r.stdout.contains("AWAITING APPROVAL"), "{}", r.stdout);
    let r = home.run(&["plugins", "approve", "hostile"], None);
    assert!(
        r.stdout.contains("nothing awaited approval"),
        "{}",
        r.stdout
    );
}

/// A huge file in the plugins folder is refused by its size, without
/// being read into memory.
#[test]
fn a_huge_file_is_refused_by_its_size() {
    let home = Home::new();
    let huge = std::fs::File::create(home.plugins_dir().join("huge.wasm")).unwrap();
    // Sparse: no disk space, and nothing worth reading.
    huge.set_len(300 << 20).unwrap();
    let r = home.run(&["plugins"], None);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stdout.contains("huge.wasm")
            && r.stdout
                .contains("is 300 MiB; plugins larger than 256 MiB are not read"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("x — X"), "the others load: {}", r.stdout);
}

/// `outreach man DIR` writes a manual page for outreach and for every
/// subcommand, hidden ones excepted.
#[test]
fn manual_pages_for_every_subcommand() {
    let home = Home::new();
    let dir = home.path().join("man1");
    let r = home.run(&["man", dir.to_str().unwrap()], None);
    assert_eq!(r.code, 0, "{}", r.all());
    for page in [
        "outreach.1",
        "outreach-publish.1",
        "outreach-connect.1",
        "outreach-plugins-approve.1",
        "outreach-posts-retry.1",
    ] {
        let text = std::fs::read_to_string(dir.join(page)).unwrap();
        assert!(text.contains(".TH"), "{page}: {text}");
    }
    assert!(!dir.join("outreach-escrow.1").exists());
    let text = std::fs::read_to_string(dir.join("outreach-connect.1")).unwrap();
    assert!(
        text.contains("remember") && text.contains("paste"),
        "{text}"
    );
}

/// The binary carries its platforms: copied alone into a clean home (no
/// config, no plugins folder), it lists every built-in platform; `outreach
/// init` writes a starter config and the identity, and refuses to write
/// over them; an account added and a post published against a fake work
/// with that config; a plugin dropped into the plugins folder with a
/// built-in id takes its place and says so.
#[test]
fn a_lone_binary_carries_its_platforms_and_init_starts_a_home() {
    let home = tempfile::tempdir().unwrap();
    let bin = home.path().join("bin/outreach");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_outreach"), &bin).unwrap();
    let run = |args: &[&str], stdin: &str| {
        let mut c = std::process::Command::new(&bin)
            .args(args)
            .env_clear()
            .env("HOME", home.path())
            .env("PATH", "/usr/bin:/bin")
            .current_dir(home.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        c.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        let o = c.wait_with_output().unwrap();
        let r = Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        };
        r.assert_no_secrets();
        r
    };
    let r = run(&["plugins", "--json"], "");
    assert_eq!(r.code, 0, "{}", r.all());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let ids: Vec<&str> = v["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), bundled_count(), "{ids:?}");
    assert!(
        v["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["source"] == "built in")
    );

    let r = run(&["init"], "");
    assert_eq!(r.code, 0, "{}", r.all());
    let config = home.path().join(".config/outreach/outreach.toml");
    assert!(config.exists(), "{}", r.all());
    assert!(
        home.path().join(".config/outreach/identity.txt").exists(),
        "{}",
        r.all()
    );
    assert!(r.stdout.contains("outreach accounts add"), "{}", r.stdout);
    let written = std::fs::read_to_string(&config).unwrap();
    let r = run(&["init"], "");
    assert_ne!(r.code, 0, "init never replaces a config");
    assert!(r.stderr.contains("already exists"), "{}", r.stderr);
    assert_eq!(std::fs::read_to_string(&config).unwrap(), written);

    // The starter config, pointed at a fake Discord.
    let discord = fake_discord();
    std::fs::write(
        &config,
        format!(
            "{written}\n[platforms.discord.endpoints]\napi = \"{}/api/v10\"\n",
            discord.url()
        ),
    )
    .unwrap();
    let hook = format!(
        "{}/api/webhooks/{DISCORD_WEBHOOK_ID}/{DISCORD_WEBHOOK_TOKEN}",
        discord.url()
    );
    let r = run(&["accounts", "add", "discord"], &hook);
    assert_eq!(r.code, 0, "{}", r.all());
    std::fs::write(
        home.path().join("hi.toml"),
        "text = \"hello from a lone binary\"\nto = [\"discord\"]\n",
    )
    .unwrap();
    let r = run(&["publish", "hi.toml"], "");
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(discord.posts().len(), 1);

    // A folder plugin with a built-in id takes its place.
    let folder = home.path().join(".local/share/outreach/plugins");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::copy(bundled_plugins().join("x.wasm"), folder.join("my-x.wasm")).unwrap();
    let r = run(&["plugins"], "");
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("my-x.wasm, in place of the built-in one"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("discord — Discord 0.1.0 (webhook-url, contract 0.2.0; built in)"),
        "{}",
        r.stdout
    );
}

/// `outreach status` reads what plugins declare from the manifest cache
/// beside the compiled code, without instantiating them; a damaged cache
/// entry is ignored (the plugin is loaded and the entry written again),
/// and a changed plugin file is never answered from an old entry.
#[test]
fn status_reads_manifests_from_the_cache_without_instantiating_plugins() {
    let mut w = World::new().with_accounts();
    w.home
        .env
        .push(("RUST_LOG".into(), "outreach=debug".into()));
    let r = w.home.run(&["plugins"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    let cached = |r: &Run| {
        r.stderr
            .matches("plugin read from the manifest cache")
            .count()
    };
    let r = w.home.run(&["status"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("x/default"), "{}", r.stdout);
    assert_eq!(
        cached(&r),
        3,
        "x, linkedin and mastodon from the cache:\n{}",
        r.stderr
    );

    // Damaged entries: loaded as usual, and cached again.
    let dir = w.home.path().join("cache/manifests");
    for e in std::fs::read_dir(&dir).unwrap() {
        std::fs::write(e.unwrap().path(), b"{not json").unwrap();
    }
    let r = w.home.run(&["status"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("mastodon/social"), "{}", r.stdout);
    assert_eq!(cached(&r), 0, "{}", r.stderr);
    let r = w.home.run(&["status"], None);
    assert_eq!(cached(&r), 3, "cached again:\n{}", r.stderr);
    r.assert_no_secrets();
}
