//! A real headless browser for the UI tests: Debian's `chromium`, driven
//! through `chromedriver` over WebDriver (the `fantoccini` crate).
//!
//! This module owns:
//! - finding the browser (`/usr/bin/chromium`, `/usr/bin/chromedriver`, as
//!   Debian's `chromium` and `chromium-driver` packages install them) and
//!   skipping loudly without it, or failing when `OUTREACH_REQUIRE_BROWSER`
//!   is set (as `.ci/run` does once it has installed them). Nothing here
//!   downloads a browser;
//! - one `chromedriver` child per [`Browser`], on a free loopback port, with
//!   a profile folder of its own; the session is ended and the child killed
//!   (by its own process id, and the process group it leads) on drop;
//! - the helpers flows are written with ([`Browser::goto`],
//!   [`Browser::wait_for`], [`Browser::click`], [`Browser::type_into`], ...),
//!   which panic with the selector, the page's address and its text when a
//!   step fails, and time out rather than hang;
//! - accessibility checks with axe-core ([`Browser::axe`]): the version
//!   pinned in `tests/ui-npm/package-lock.json`, installed with `npm ci`
//!   once into `target/ui-npm/` (under a file lock, so parallel tests install
//!   once), injected through WebDriver's execute script, which a page's
//!   Content-Security-Policy does not govern;
//! - screenshots: [`Browser::screenshot`] to any path, [`Browser::shot`] to
//!   `docs/screenshots/` when `OUTREACH_SCREENSHOTS=1` (the README's
//!   pictures), else to a folder under the system's temp dir.

use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use super::repo_root;

/// Where Debian's `chromium` package puts the browser.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Where Debian's `chromium-driver` package puts chromedriver.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The longest any one WebDriver command may take before the test fails
/// (rather than hangs on a wedged browser).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// How often [`Browser::wait_for`] and friends look again.
const POLL: Duration = Duration::from_millis(50);

/// The window every session starts with (the brief's desktop size).
pub const DESKTOP: (u32, u32) = (1280, 900);

/// A phone-sized window (an iPhone 12-15 in CSS pixels), for
/// [`Browser::set_window_size`].
pub const PHONE: (u32, u32) = (390, 844);

/// A headless chromium session and the chromedriver serving it.
pub struct Browser {
    client: Client,
    driver: Child,
    port: u16,
    session: String,
    /// The chromedriver log and the browser profile; removed on drop.
    dir: tempfile::TempDir,
}

/// One axe-core rule broken on the page, with the elements that break it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The axe rule, e.g. `label`, `color-contrast`.
    pub id: String,
    /// `serious` or `critical` (only those are returned).
    pub impact: String,
    /// What the rule asks for, in a sentence.
    pub help: String,
    /// Deque's page about the rule.
    pub help_url: String,
    /// A CSS selector for each offending element (frames and shadow roots
    /// joined with ` >>> `).
    pub targets: Vec<String>,
    /// The start of each offending element's HTML, in `targets`' order.
    pub html: Vec<String>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "[{}] {}: {} ({})",
            self.impact, self.id, self.help, self.help_url
        )?;
        for (target, html) in self.targets.iter().zip(&self.html) {
            writeln!(f, "    at {target}: {html}")?;
        }
        Ok(())
    }
}

/// Whether the browser is installed; when it is not, either skip loudly
/// (`false`) or, with `OUTREACH_REQUIRE_BROWSER` set, fail.
pub fn browser_available() -> bool {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let missing = missing.join(" and ");
    assert!(
        std::env::var_os("OUTREACH_REQUIRE_BROWSER").is_none(),
        "the browser tests need {missing} (OUTREACH_REQUIRE_BROWSER is set): \
         apt-get install -y chromium chromium-driver"
    );
    let test = std::thread::current()
        .name()
        .unwrap_or("a browser test")
        .to_string();
    // Straight to the process's stderr, not `eprintln!`, which the test
    // harness captures and shows only for failing tests.
    let _ = writeln!(
        std::io::stderr(),
        "\n\
         ==================== SKIPPING A BROWSER TEST ====================\n\
         {test}: {missing} not installed.\n\
         Install Debian's packages to run it:\n\
         \n    sudo apt-get install -y chromium chromium-driver\n\n\
         CI installs them (.ci/run) and sets OUTREACH_REQUIRE_BROWSER=1,\n\
         which turns this skip into a failure.\n\
         =================================================================\n"
    );
    false
}

/// A free port on 127.0.0.1 (released before chromedriver binds it).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One blocking HTTP/1.1 request to chromedriver on `port`; the status code
/// and body. Used where no async runtime may be at hand (drop). chromedriver
/// keeps the connection open whatever the request says, so the body is read
/// by its Content-Length.
fn blocking_http(port: u16, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(15)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&got[..head_end]).to_string();
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let length: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    while got.len() < head_end + length {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    Ok((code, String::from_utf8_lossy(&got[head_end..]).to_string()))
}

fn is_true(v: &Value) -> bool {
    !matches!(v, Value::Null | Value::Bool(false))
        && v.as_str() != Some("")
        && v.as_f64() != Some(0.0)
}

impl Browser {
    /// A new headless chromium session at the desktop size, or `None` (after
    /// a loud banner) when chromium or chromedriver is not installed and
    /// `OUTREACH_REQUIRE_BROWSER` is unset. Panics when they are missing and
    /// required, or when the browser does not start.
    pub async fn start() -> Option<Browser> {
        if !browser_available() {
            return None;
        }
        let mut last_err = String::new();
        // A port taken between `free_port` and chromedriver's bind makes
        // chromedriver exit; try another.
        for _ in 0..3 {
            match Self::try_start().await {
                Ok(b) => return Some(b),
                Err(e) => last_err = e,
            }
        }
        panic!("could not start headless chromium through chromedriver:\n{last_err}");
    }

    async fn try_start() -> Result<Browser, String> {
        let dir = tempfile::Builder::new()
            .prefix("outreach-browser-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let log_path = dir.path().join("chromedriver.log");
        let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
        let port = free_port();
        let mut cmd = Command::new(CHROMEDRIVER);
        cmd.arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        // Its own process group, so the browser it starts can be ended with
        // it even if it dies before it can end the browser itself.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let driver = cmd
            .spawn()
            .map_err(|e| format!("spawn {CHROMEDRIVER}: {e}"))?;
        // From here on, `guard` ends chromedriver if anything fails.
        let mut guard = DriverGuard(Some(driver));
        let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();

        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, body)) = blocking_http(port, "GET", "/status")
                && serde_json::from_str::<Value>(&body).is_ok_and(|v| v["value"]["ready"] == true)
            {
                break;
            }
            if let Ok(Some(status)) = guard.0.as_mut().unwrap().try_wait() {
                return Err(format!(
                    "chromedriver exited with {status}:\n{}",
                    read_log()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "chromedriver did not become ready on port {port}:\n{}",
                    read_log()
                ));
            }
            tokio::time::sleep(POLL).await;
        }

        let profile = dir.path().join("profile");
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--no-default-browser-check",
                    format!("--window-size={},{}", DESKTOP.0, DESKTOP.1),
                    format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        // Keep the console, for `console_errors`.
        caps.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
        let connect = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await;
        let client = match connect {
            Ok(c) => c,
            Err(e) => {
                return Err(format!(
                    "chromedriver could not start {CHROMIUM}: {e}\n{}",
                    read_log()
                ));
            }
        };
        let session = client
            .session_id()
            .await
            .ok()
            .flatten()
            .ok_or("no WebDriver session id")?;
        Ok(Browser {
            client,
            driver: guard.0.take().unwrap(),
            port,
            session,
            dir,
        })
    }

    /// The fantoccini client, for anything the helpers do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Runs one WebDriver command with [`COMMAND_TIMEOUT`]; panics with
    /// `what` and the error.
    async fn step<T>(
        &self,
        what: &str,
        fut: impl Future<Output = Result<T, fantoccini::error::CmdError>>,
    ) -> T {
        match tokio::time::timeout(COMMAND_TIMEOUT, fut).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => panic!("browser: {what} failed: {e}{}", self.where_now().await),
            Err(_) => panic!(
                "browser: {what} took longer than {COMMAND_TIMEOUT:?}{}",
                self.where_now().await
            ),
        }
    }

    /// ` (at URL; the page says: ...)`, for failure messages; empty when the
    /// browser does not answer.
    async fn where_now(&self) -> String {
        let probe = async {
            let url = self.client.current_url().await.ok()?;
            let text = self
                .client
                .execute(
                    "return document.body ? document.body.innerText : '';",
                    vec![],
                )
                .await
                .ok()?;
            let text: String = text.as_str().unwrap_or("").chars().take(600).collect();
            Some(format!("\n  at {url}\n  the page says: {text:?}"))
        };
        tokio::time::timeout(Duration::from_secs(5), probe)
            .await
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// Opens `url` and waits for it to load.
    pub async fn goto(&self, url: &str) {
        self.step(&format!("goto {url}"), self.client.goto(url))
            .await;
    }

    /// The page's address now.
    pub async fn current_url(&self) -> String {
        self.step("current_url", self.client.current_url())
            .await
            .to_string()
    }

    /// The page's `<title>`.
    pub async fn title(&self) -> String {
        self.step("title", self.client.title()).await
    }

    /// The first element matching `css`; panics when there is none.
    pub async fn find(&self, css: &str) -> Element {
        self.step(
            &format!("find `{css}`"),
            self.client.find(Locator::Css(css)),
        )
        .await
    }

    /// Every element matching `css` (maybe none).
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        self.step(
            &format!("find_all `{css}`"),
            self.client.find_all(Locator::Css(css)),
        )
        .await
    }

    /// The first element matching `css`, if any (no waiting).
    pub async fn try_find(&self, css: &str) -> Option<Element> {
        let found = self
            .step(
                &format!("find_all `{css}`"),
                self.client.find_all(Locator::Css(css)),
            )
            .await;
        found.into_iter().next()
    }

    /// Waits up to `timeout` for an element matching `css` to be in the
    /// page, looking every 50 ms; panics (with the page's text) when none
    /// came.
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> Element {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.try_find(css).await {
                return e;
            }
            if Instant::now() > deadline {
                panic!(
                    "browser: no `{css}` within {timeout:?}{}",
                    self.where_now().await
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits up to `timeout` for an element matching `css` whose visible
    /// text contains `needle`; its whole text.
    pub async fn wait_for_text(&self, css: &str, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Some(e) = self.try_find(css).await
                && let Ok(text) = e.text().await
            {
                if text.contains(needle) {
                    return text;
                }
                last = Some(text);
            }
            if Instant::now() > deadline {
                panic!(
                    "browser: `{css}` did not come to say {needle:?} within {timeout:?} \
                     (it says {last:?}){}",
                    self.where_now().await
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits up to `timeout` for the JavaScript expression `js` to be truthy
    /// in the page; its value.
    pub async fn wait_until(&self, js: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.eval(js).await;
            if is_true(&v) {
                return v;
            }
            if Instant::now() > deadline {
                panic!(
                    "browser: `{js}` was still {v} after {timeout:?}{}",
                    self.where_now().await
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Clicks the first element matching `css`.
    pub async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.step(&format!("click `{css}`"), e.click()).await;
    }

    /// Types `text` into the first element matching `css`, as keystrokes
    /// after whatever it holds (see [`Browser::clear`]).
    pub async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.step(&format!("type into `{css}`"), e.send_keys(text))
            .await;
    }

    /// Empties the input or textarea matching `css`.
    pub async fn clear(&self, css: &str) {
        let e = self.find(css).await;
        self.step(&format!("clear `{css}`"), e.clear()).await;
    }

    /// Waits up to `timeout` until no element matches `css`.
    pub async fn wait_gone(&self, css: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.try_find(css).await.is_some() {
            if Instant::now() > deadline {
                panic!(
                    "browser: `{css}` still there after {timeout:?}{}",
                    self.where_now().await
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits up to `timeout` for the page's address to start with
    /// `prefix`; the address.
    pub async fn wait_for_url(&self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let url = self.current_url().await;
            if url.starts_with(prefix) {
                return url;
            }
            if Instant::now() > deadline {
                panic!(
                    "browser: the address did not come to start with {prefix:?} within \
                     {timeout:?}{}",
                    self.where_now().await
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Picks the file at `path` in the file input matching `css` (hidden
    /// or not), as a user choosing it in the file dialog: chromedriver
    /// takes the path as the input's keys.
    pub async fn choose_file(&self, css: &str, path: &Path) {
        let e = self.find(css).await;
        let path = path.to_str().expect("a UTF-8 path");
        self.step(&format!("choose {path} in `{css}`"), e.send_keys(path))
            .await;
    }

    /// The page's HTML as the browser has it now (after scripts).
    pub async fn source(&self) -> String {
        self.step("page source", self.client.source()).await
    }

    /// The visible text of the first element matching `css`.
    pub async fn text_of(&self, css: &str) -> String {
        let e = self.find(css).await;
        self.step(&format!("text of `{css}`"), e.text()).await
    }

    /// The current value of the input, select or textarea matching `css`.
    pub async fn value_of(&self, css: &str) -> String {
        let e = self.find(css).await;
        self.step(&format!("value of `{css}`"), e.prop("value"))
            .await
            .unwrap_or_default()
    }

    /// The attribute `name` of the first element matching `css`, if set.
    pub async fn attr(&self, css: &str, name: &str) -> Option<String> {
        let e = self.find(css).await;
        self.step(&format!("attribute {name} of `{css}`"), e.attr(name))
            .await
    }

    /// Resizes the window (e.g. to [`PHONE`] for the narrow layout).
    pub async fn set_window_size(&self, width: u32, height: u32) {
        self.step(
            &format!("resize to {width}x{height}"),
            self.client.set_window_size(width, height),
        )
        .await;
    }

    /// Saves a PNG of the viewport to `path` (making its folder).
    pub async fn screenshot(&self, path: &Path) {
        let png = self.step("screenshot", self.client.screenshot()).await;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// Saves a PNG of the viewport as `NAME.png` in [`screenshots_dir`]
    /// (`docs/screenshots/` with `OUTREACH_SCREENSHOTS=1`); its path.
    pub async fn shot(&self, name: &str) -> PathBuf {
        let path = screenshots_dir().join(format!("{name}.png"));
        self.screenshot(&path).await;
        path
    }

    /// The value of the JavaScript expression `js` in the page.
    pub async fn eval(&self, js: &str) -> Value {
        self.execute(&format!("return ({js});"), vec![]).await
    }

    /// Runs the JavaScript function body `body` (with `arguments` = `args`,
    /// and `return` for a value), as WebDriver's execute script.
    pub async fn execute(&self, body: &str, args: Vec<Value>) -> Value {
        let what: String = body.chars().take(80).collect();
        self.step(&format!("script `{what}`"), self.client.execute(body, args))
            .await
    }

    /// The browser console's errors (level SEVERE: uncaught exceptions,
    /// failed loads, Content-Security-Policy refusals) since the last call.
    pub async fn console_errors(&self) -> Vec<String> {
        let url = format!(
            "http://127.0.0.1:{}/session/{}/se/log",
            self.port, self.session
        );
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let res = tokio::time::timeout(
            COMMAND_TIMEOUT,
            http.post(&url)
                .header("content-type", "application/json")
                .body(json!({"type": "browser"}).to_string())
                .send(),
        )
        .await
        .expect("the console log did not come")
        .expect("read the console log");
        let body = res.text().await.expect("read the console log");
        let body: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("the console log is not JSON ({e}): {body}"));
        body["value"]
            .as_array()
            .unwrap_or_else(|| panic!("no console log: {body}"))
            .iter()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Runs axe-core on the page as it is now; its serious and critical
    /// violations.
    pub async fn axe(&self) -> Vec<Violation> {
        let loaded = self.eval("typeof window.axe === 'object'").await;
        if loaded != Value::Bool(true) {
            self.execute(
                &format!("{}\n;return typeof window.axe;", axe_source()),
                vec![],
            )
            .await;
        }
        let result = self
            .step(
                "axe.run",
                self.client.execute_async(
                    r#"
const done = arguments[arguments.length - 1];
const sel = (t) => Array.isArray(t) ? t.join(' >>> ') : String(t);
axe.run(document, { resultTypes: ['violations'] }).then(
  (r) => done({ violations: r.violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => ({
      id: v.id, impact: v.impact, help: v.help, helpUrl: v.helpUrl,
      targets: v.nodes.map((n) => n.target.map(sel).join(' >>> ')),
      html: v.nodes.map((n) => String(n.html).slice(0, 200)),
    })) }),
  (e) => done({ error: String((e && e.stack) || e) }),
);"#,
                    vec![],
                ),
            )
            .await;
        if let Some(e) = result.get("error") {
            panic!("axe.run failed: {e}");
        }
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .map(|s| s.as_str().unwrap_or_default().to_string())
                        .collect()
                })
                .unwrap_or_default()
        };
        result["violations"]
            .as_array()
            .unwrap_or_else(|| panic!("axe.run gave {result}"))
            .iter()
            .map(|v| Violation {
                id: v["id"].as_str().unwrap_or_default().into(),
                impact: v["impact"].as_str().unwrap_or_default().into(),
                help: v["help"].as_str().unwrap_or_default().into(),
                help_url: v["helpUrl"].as_str().unwrap_or_default().into(),
                targets: strings(&v["targets"]),
                html: strings(&v["html"]),
            })
            .collect()
    }

    /// Panics, listing them, when axe finds serious or critical violations;
    /// `what` names the page or state in the message.
    pub async fn assert_accessible(&self, what: &str) {
        let violations = self.axe().await;
        if !violations.is_empty() {
            let list: String = violations.iter().map(|v| v.to_string()).collect();
            panic!(
                "{} serious or critical accessibility violation(s) on {what} ({}):\n{list}",
                violations.len(),
                self.current_url().await
            );
        }
    }

    /// Ends the session and chromedriver now (drop does the same).
    pub async fn close(self) {
        // Drop ends the session with a blocking request; the client's own
        // shutdown then finds it gone, which is fine.
        drop(self);
    }

    /// The chromedriver log so far, for failure messages.
    pub fn driver_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("chromedriver.log")).unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ask chromedriver to end the session, which quits the browser;
        // then end chromedriver and anything left in its process group.
        let _ = blocking_http(self.port, "DELETE", &format!("/session/{}", self.session));
        kill_driver(&mut self.driver);
    }
}

/// Ends a chromedriver that never became a [`Browser`].
struct DriverGuard(Option<Child>);

impl Drop for DriverGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            kill_driver(&mut child);
        }
    }
}

/// SIGKILL to chromedriver (its own pid) and to the process group it leads
/// (the browser it started, if still there); reaps chromedriver.
fn kill_driver(child: &mut Child) {
    let pid = child.id() as libc::pid_t;
    let _ = child.kill();
    let _ = child.wait();
    // SAFETY: a plain kill(2) on the group this test created for its child.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
}

/// Where [`Browser::shot`] saves: `docs/screenshots/` with
/// `OUTREACH_SCREENSHOTS=1` (for the README), else
/// `$TMPDIR/outreach-ui-screenshots/` (kept, to look at after a run).
pub fn screenshots_dir() -> PathBuf {
    if std::env::var("OUTREACH_SCREENSHOTS").as_deref() == Ok("1") {
        repo_root().join("docs").join("screenshots")
    } else {
        std::env::temp_dir().join("outreach-ui-screenshots")
    }
}

/// The text of `axe.min.js` at the version pinned in `tests/ui-npm/`,
/// installed on first use with `npm ci` into
/// `target/ui-npm/axe-<hash of package.json and lock>/` (so a changed pin
/// installs afresh), one installer at a time across test processes.
pub fn axe_source() -> &'static str {
    static SOURCE: OnceLock<String> = OnceLock::new();
    SOURCE.get_or_init(|| {
        let pinned = repo_root().join("tests").join("ui-npm");
        let manifest = std::fs::read(pinned.join("package.json")).unwrap();
        let lock = std::fs::read(pinned.join("package-lock.json")).unwrap();
        let hash = {
            use sha2::Digest;
            let mut h = sha2::Sha256::new();
            h.update(&manifest);
            h.update(&lock);
            hex_prefix(&h.finalize())
        };
        let root = repo_root().join("target").join("ui-npm");
        std::fs::create_dir_all(&root).unwrap();
        let dir = root.join(format!("axe-{hash}"));
        let js = dir.join("node_modules/axe-core/axe.min.js");
        let done = dir.join(".complete");

        let lock_file = std::fs::File::create(root.join(".install.lock")).unwrap();
        lock_file.lock().expect("lock target/ui-npm/.install.lock");
        if !done.exists() || !js.exists() {
            eprintln!("browser: installing axe-core with npm into {}", dir.display());
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("package.json"), &manifest).unwrap();
            std::fs::write(dir.join("package-lock.json"), &lock).unwrap();
            let out = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error", "--prefix"])
                .arg(&dir)
                .stdin(Stdio::null())
                .output()
                .unwrap_or_else(|e| {
                    panic!("axe-core is installed with npm, which did not run ({e}): apt-get install -y npm")
                });
            assert!(
                out.status.success() && js.exists(),
                "npm ci of axe-core into {} failed:\n{}\n{}",
                dir.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            std::fs::write(&done, b"").unwrap();
        }
        let _ = lock_file.unlock();
        std::fs::read_to_string(&js).unwrap()
    })
}

fn hex_prefix(bytes: &[u8]) -> String {
    bytes[..6].iter().map(|b| format!("{b:02x}")).collect()
}
