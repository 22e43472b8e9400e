//! The web UI in a real browser: headless chromium driven over WebDriver
//! (tests/support/browser.rs), with axe-core for accessibility.
//!
//! Without `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian's
//! `chromium` and `chromium-driver`) every test here skips with a banner
//! saying so; with `OUTREACH_REQUIRE_BROWSER=1` (CI) it fails instead.
//! `OUTREACH_SCREENSHOTS=1` writes the README's screenshots to
//! `docs/screenshots/`.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use support::browser::{Browser, PHONE};

/// The policy the outreach UI will serve: only same-origin scripts, so an
/// inline `<script>` is refused.
const CSP: &str = "default-src 'self'";

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Harness check</title>
<script src="/app.js" defer></script>
</head>
<body>
<main>
<h1>Harness check</h1>
<form id="greet">
<label for="name">Your name</label>
<input id="name" name="name" type="text" autocomplete="name">
<button type="submit">Greet</button>
</form>
<p id="out" role="status">Waiting</p>
</main>
<script>document.title = "inline script ran";</script>
</body>
</html>
"#;

const APP_JS: &str = r#"document.getElementById("greet").addEventListener("submit", (ev) => {
  ev.preventDefault();
  document.getElementById("out").textContent = "Hello, " + document.getElementById("name").value + "!";
});
"#;

/// A static site on 127.0.0.1 with [`CSP`] on every response; its base URL.
async fn serve_page() -> String {
    let with_csp = |ctype: &'static str, body: &'static str| {
        move || async move {
            (
                [
                    (header::CONTENT_TYPE, ctype),
                    (header::CONTENT_SECURITY_POLICY, CSP),
                ],
                body,
            )
                .into_response()
        }
    };
    let app = Router::new()
        .route("/", get(with_csp("text/html; charset=utf-8", PAGE)))
        .route("/app.js", get(with_csp("text/javascript", APP_JS)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// The harness on its own, without the outreach UI: a page under a strict
/// CSP is typed into, clicked, waited on, checked with axe, screenshotted,
/// and narrowed to a phone's width.
#[tokio::test]
async fn browser_harness_drives_headless_chromium() {
    let t0 = Instant::now();
    let Some(browser) = Browser::start().await else {
        return;
    };
    let started = t0.elapsed();
    let base = serve_page().await;
    browser.goto(&format!("{base}/")).await;
    // The page's own inline script was refused by its CSP, and the console
    // says so; the same-origin script loaded.
    assert_eq!(browser.title().await, "Harness check");
    let errors = browser.console_errors().await;
    assert!(
        errors.iter().any(|e| e.contains("Content Security Policy")),
        "{errors:?}"
    );
    assert_eq!(
        browser.attr("#name", "autocomplete").await.as_deref(),
        Some("name")
    );

    browser.type_into("#name", "Ada").await;
    assert_eq!(browser.value_of("#name").await, "Ada");
    browser.click("button[type=submit]").await;
    let said = browser
        .wait_for_text("#out", "Hello", Duration::from_secs(10))
        .await;
    assert_eq!(said, "Hello, Ada!");
    assert_eq!(browser.text_of("#out").await, "Hello, Ada!");
    browser.clear("#name").await;
    assert_eq!(browser.value_of("#name").await, "");
    browser
        .wait_until(
            "document.readyState === 'complete'",
            Duration::from_secs(10),
        )
        .await;
    let found = browser.wait_for("main h1", Duration::from_secs(5)).await;
    assert_eq!(found.text().await.unwrap(), "Harness check");
    assert!(browser.try_find("#nothing-here").await.is_none());

    // axe-core goes in through execute script, past the page's CSP.
    let a = Instant::now();
    let violations = browser.axe().await;
    assert!(
        violations.is_empty(),
        "{}",
        violations.iter().map(|v| v.to_string()).collect::<String>()
    );
    browser.assert_accessible("the harness page").await;
    let axe_took = a.elapsed();
    // ... and does find what is wrong: an unlabelled input is critical.
    browser
        .execute(
            "const i = document.createElement('input'); i.id = 'bare'; \
             document.querySelector('main').append(i);",
            vec![],
        )
        .await;
    let violations = browser.axe().await;
    assert!(
        violations
            .iter()
            .any(|v| v.id == "label" && v.targets.iter().any(|t| t == "#bare")),
        "{violations:?}"
    );

    let shots = tempfile::tempdir().unwrap();
    let png = shots.path().join("desktop.png");
    browser.screenshot(&png).await;
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(browser.eval("window.innerWidth").await.as_u64().unwrap() > 1000);

    browser.set_window_size(PHONE.0, PHONE.1).await;
    let width = browser.eval("window.innerWidth").await.as_u64().unwrap();
    assert!(width <= u64::from(PHONE.0) && width > 300, "{width}");
    browser.screenshot(&shots.path().join("phone.png")).await;
    assert!(
        std::fs::read(shots.path().join("phone.png"))
            .unwrap()
            .starts_with(b"\x89PNG")
    );

    browser.close().await;
    eprintln!(
        "browser harness: started in {started:?}, axe in {axe_took:?}, whole test {:?}",
        t0.elapsed()
    );
}
