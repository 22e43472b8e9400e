//! Talking to a running daemon from the CLI.
//!
//! Owns: finding the daemon for this config's store (its state file, and
//! its lock actually being held), and requests to its control API with
//! the token from the token file.
//!
//! Never: guesses. A stale state file (lock free) means no daemon; a daemon
//! that does not answer is reported and the CLI reads the store itself.

use serde::de::DeserializeOwned;

use super::{StateFile, lock_path, state_path};
use crate::config::Loaded;

pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    /// The daemon running on this config's store, if there is one.
    pub fn find(cfg: &Loaded) -> Option<Client> {
        let state: StateFile =
            serde_json::from_str(&std::fs::read_to_string(state_path(cfg)).ok()?).ok()?;
        // If we can take the lock, nobody holds it: the state file is stale.
        let lock = std::fs::OpenOptions::new()
            .write(true)
            .open(lock_path(cfg))
            .ok()?;
        if lock.try_lock().is_ok() {
            return None;
        }
        let token = std::fs::read_to_string(&state.token_file).ok()?;
        crate::store::warn_if_exposed(&state.token_file, "the control API token file");
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .ok()?;
        Some(Client {
            base: format!("http://{}", state.address),
            token: token.trim().to_string(),
            http,
        })
    }

    /// GET `path` as JSON.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(reqwest::Method::GET, path).await
    }

    /// POST to `path` (no body), answered with JSON.
    pub async fn post<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(reqwest::Method::POST, path).await
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> anyhow::Result<T> {
        let r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("the daemon at {} did not answer: {e}", self.base))?;
        let status = r.status();
        let body = r.bytes().await?;
        if !status.is_success() {
            let msg = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            anyhow::bail!("the daemon answered {status}: {msg}");
        }
        serde_json::from_slice(&body)
            .map_err(|e| anyhow::anyhow!("the daemon's answer to {path} did not parse: {e}"))
    }
}
