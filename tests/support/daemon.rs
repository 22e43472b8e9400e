//! A running `outreach daemon` for the end-to-end tests: started on a
//! [`Home`], its control API's address and token, its log; stopped with
//! SIGTERM and checked to exit 0 with no planted secret in its log.

use std::io::Read;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Home;

/// A running `outreach daemon`, its address, token and log.
pub struct Daemon {
    pub child: Child,
    pub base: String,
    pub token: String,
    pub log: Arc<Mutex<String>>,
    pub http: reqwest::Client,
}

pub fn start_daemon(home: &Home) -> Daemon {
    let state = home.path().join("store.daemon.json");
    let _ = std::fs::remove_file(&state);
    let mut child = home
        .command(&["daemon"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the daemon");
    let log = Arc::new(Mutex::new(String::new()));
    let mut stderr = child.stderr.take().unwrap();
    let sink = log.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let address = loop {
        if let Ok(s) = std::fs::read_to_string(&state)
            && let Ok(v) = serde_json::from_str::<Value>(&s)
        {
            break v["address"].as_str().unwrap().to_string();
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "the daemon exited with {status} before it was ready:\n{}",
                log.lock().unwrap()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not start:\n{}",
            log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let token = std::fs::read_to_string(home.path().join("daemon.token"))
        .unwrap()
        .trim()
        .to_string();
    Daemon {
        child,
        base: format!("http://{address}"),
        token,
        log,
        http: reqwest::Client::builder().no_proxy().build().unwrap(),
    }
}

impl Daemon {
    /// One request to the control API with the daemon's token; an error
    /// when no answer came.
    pub async fn try_call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), reqwest::Error> {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let r = req.send().await?;
        let code = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        Ok((
            code,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(mut self) -> String {
        self.signal("TERM");
        let status = wait_exit(&mut self.child, Duration::from_secs(30));
        let log = self.log();
        assert_eq!(status, Some(0), "the daemon did not exit 0:\n{log}");
        assert!(
            !log.contains("PLANTED"),
            "a secret leaked into the log:\n{log}"
        );
        log
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code();
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
