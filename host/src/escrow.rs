//! Token exchanges that outlive the process that starts them.
//!
//! A rotating (single-use) refresh token is spent the moment the platform
//! answers the exchange. If outreach is killed between that answer and the
//! write of the new token (SIGKILL, the OOM killer, a crash, a second
//! Ctrl-C), the grant is gone and the account needs a reconnect. So those
//! exchanges are not sent by the process that wants them but by an escrow
//! helper: a small child process (`outreach escrow`, hidden) that survives
//! its parent, sends the exchange, and seals the answer in the store
//! (encrypted to the store's public keys) before it tells anyone. The next
//! process that refreshes the account applies a sealed answer first
//! ([`settle`]), so a kill at any point loses nothing.
//!
//! Ordering across processes: the parent holds the account's refresh lease
//! (see [`crate::store::CredentialStore::lease`]); the helper holds the
//! account's exchange lock from before it is told to send until the answer
//! is on disk, and sends only after the parent has seen it take that lock.
//! A process that takes over the lease waits for the exchange lock before
//! reading a sealed answer, so it never sends a refresh token an earlier
//! exchange may already have spent.
//!
//! Where the lock and the answer live is the store's business
//! ([`EscrowSlot`]): with the files backend a lock file and a sealed file
//! beside the record; with PostgreSQL an advisory lock held on the
//! helper's own connection (released by the server if the helper dies)
//! and a row of the answers table, the helper reaching the database
//! through the environment variable the config names, which it inherits.
//!
//! One helper serves every exchange of a process (started on first use;
//! it exits once its parent is gone and its exchanges are done). The parent
//! reaps it whenever it exits, and before exiting itself closes the
//! helper's input and waits for it ([`close_helpers`]), so no helper is
//! left behind, running or as a zombie — unless the parent is killed, when
//! the helper finishes the exchange on its own. If it cannot be started the
//! exchange runs in-process, as it would without escrow, with a warning.
//!
//! Owns: the helper process and its line protocol, sealed answers' format.
//! Never: reads the identity (the helper encrypts to public keys only),
//! logs a request or an answer (both carry secrets), or decides what an
//! answer means (the parent parses it with the plugin's token shape).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use crate::store::{CredentialStore, EscrowSlot, SlotLock, StoreError};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// One HTTP exchange, as plain data (it crosses a pipe).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Exchange {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    /// Base64 of the body.
    pub body: Option<String>,
}

impl Exchange {
    /// Send it with `client`; the status and the whole body.
    pub async fn send(&self, client: &reqwest::Client) -> Result<(u16, Vec<u8>), String> {
        self.send_keeping_cookies(client)
            .await
            .map(|(status, _, body)| (status, body))
    }

    /// [`Exchange::send`], also returning the cookies the answer sets
    /// (name, value): a session login's token is one.
    pub async fn send_keeping_cookies(
        &self,
        client: &reqwest::Client,
    ) -> Result<(u16, Vec<(String, String)>, Vec<u8>), String> {
        let method = reqwest::Method::from_bytes(self.method.as_bytes())
            .map_err(|_| format!("invalid method {}", self.method))?;
        let mut rb = client.request(method, &self.url);
        for (n, v) in &self.headers {
            rb = rb.header(n.as_str(), v.as_str());
        }
        if let Some(b) = &self.body {
            rb = rb.body(B64.decode(b).map_err(|e| e.to_string())?);
        }
        let resp = rb.send().await.map_err(|e| describe(&e, &self.url))?;
        let status = resp.status().as_u16();
        let cookies = resp
            .headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split(';').next()?.split_once('='))
            .map(|(n, v)| (n.trim().to_string(), v.trim().trim_matches('"').to_string()))
            .collect();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| format!("the answer from {} was cut off: {e}", origin(&self.url)))?;
        Ok((status, cookies, bytes.to_vec()))
    }
}

/// A transport error without the URL's query (it may carry a token).
fn describe(e: &reqwest::Error, url: &str) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    format!("cannot reach {}: {what}", origin(url))
}

fn origin(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!("{}{}", u.origin().ascii_serialization(), u.path()),
        Err(_) => "the token endpoint".into(),
    }
}

/// What an answer looks like on disk (sealed) and on the pipe.
#[derive(Debug, Serialize, Deserialize)]
pub struct Answer {
    pub status: u16,
    /// Base64 of the body.
    pub body: String,
    /// When the platform answered: expiries relative to "now" in the
    /// answer are relative to this.
    pub at: DateTime<Utc>,
}

impl Answer {
    pub fn body(&self) -> Vec<u8> {
        B64.decode(&self.body).unwrap_or_default()
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum ToHelper {
    /// Take the exchange lock for an account.
    Lock { n: u64, slot: EscrowSlot },
    /// Send the exchange whose lock is held; seal a 2xx answer.
    Send { n: u64, exchange: Exchange },
    /// The sender gave up before confirming: release (or never take) the
    /// lock.
    Release { n: u64 },
}

/// Releases a helper's lock for an exchange the caller stopped waiting
/// for (its future was dropped) before confirming it.
struct Unconfirmed<'a> {
    to: &'a mpsc::UnboundedSender<String>,
    n: u64,
    armed: bool,
}

impl Drop for Unconfirmed<'_> {
    fn drop(&mut self) {
        if self.armed {
            let line = serde_json::to_string(&ToHelper::Release { n: self.n })
                .expect("messages serialise");
            let _ = self.to.send(line);
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum FromHelper {
    Locked {
        n: u64,
    },
    /// `unkept`: why a 2xx answer could not be sealed.
    Answer {
        n: u64,
        answer: Answer,
        unkept: Option<String>,
    },
    Failed {
        n: u64,
        error: String,
    },
}

impl FromHelper {
    fn n(&self) -> u64 {
        match self {
            FromHelper::Locked { n }
            | FromHelper::Answer { n, .. }
            | FromHelper::Failed { n, .. } => *n,
        }
    }
}

/// How the helper sends requests (the parent's broker settings).
#[derive(Clone, Debug)]
pub struct HelperHttp {
    pub user_agent: String,
    pub timeout_ms: u64,
}

impl HelperHttp {
    fn client(&self) -> anyhow::Result<reqwest::Client> {
        Ok(reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(self.user_agent.clone())
            .timeout(Duration::from_millis(self.timeout_ms))
            .connect_timeout(Duration::from_millis(self.timeout_ms.min(10_000)))
            .build()?)
    }
}

/// A running helper: requests go in through its stdin, replies are routed
/// back by number. The process itself is owned by a task that waits for
/// it, so it is reaped the moment it exits (see [`close_helpers`]).
struct Conn {
    to: mpsc::UnboundedSender<String>,
    waiting: Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<FromHelper>>>>,
    alive: Arc<std::sync::atomic::AtomicBool>,
}

/// A helper this process started, as [`close_helpers`] needs it.
struct Started {
    pid: Option<u32>,
    /// Tells the task that feeds its stdin to close it.
    close: Arc<tokio::sync::Notify>,
    /// Turns true once it has exited and been reaped.
    exited: tokio::sync::watch::Receiver<bool>,
    /// How long an exchange it is still sending may take.
    limit: Duration,
}

/// Every helper this process started and has not seen exit.
static STARTED: Mutex<Vec<Started>> = Mutex::new(Vec::new());

/// Before this process exits: close every helper's input and wait until it
/// has finished what it was sending and exited, so none is left behind —
/// not even as a zombie waiting for a parent that is gone (a container's
/// init often reaps nothing). A helper still sending an exchange after its
/// HTTP timeout is left to finish on its own: it seals the answer whoever
/// its parent is by then.
pub async fn close_helpers() {
    let started = std::mem::take(&mut *STARTED.lock().expect("escrow helpers"));
    for h in &started {
        h.close.notify_one();
    }
    for mut h in started {
        let done = tokio::time::timeout(h.limit, h.exited.wait_for(|exited| *exited)).await;
        if done.is_err() {
            tracing::warn!(
                pid = h.pid,
                "the escrow helper is still sending a token exchange; it finishes on its own and keeps the answer in the store"
            );
        }
    }
}

/// The parent's side: starts the helper on first use and routes exchanges
/// through it.
pub struct Escrow {
    program: Mutex<Option<PathBuf>>,
    http: HelperHttp,
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
    next: std::sync::atomic::AtomicU64,
    warned: std::sync::atomic::AtomicBool,
}

impl Escrow {
    /// `program` is an `outreach` binary (None: exchanges run in-process).
    pub fn new(program: Option<PathBuf>, http: HelperHttp) -> Self {
        Escrow {
            program: Mutex::new(program),
            http,
            conn: tokio::sync::Mutex::new(None),
            next: Default::default(),
            warned: Default::default(),
        }
    }

    /// This process's own binary when it is `outreach` (a library user —
    /// a benchmark — sets one with [`Escrow::set_program`]).
    pub fn own_binary() -> Option<PathBuf> {
        let exe = std::env::current_exe().ok()?;
        (exe.file_stem()? == "outreach").then_some(exe)
    }

    pub fn set_program(&self, program: Option<PathBuf>) {
        *self.program.lock().expect("escrow program") = program;
    }

    async fn conn(&self) -> Option<Arc<Conn>> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref()
            && c.alive.load(std::sync::atomic::Ordering::SeqCst)
        {
            return Some(c.clone());
        }
        let program = self.program.lock().expect("escrow program").clone()?;
        match spawn(&program, &self.http) {
            Ok(c) => {
                let c = Arc::new(c);
                *guard = Some(c.clone());
                Some(c)
            }
            Err(e) => {
                if !self.warned.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    tracing::warn!(
                        "cannot start the escrow helper ({}): {e:#}; token exchanges run in this process, and a kill mid-exchange can lose a rotating refresh token",
                        program.display()
                    );
                }
                None
            }
        }
    }

    /// Send `exchange` through the helper, holding `slot`'s exchange lock
    /// until a 2xx answer is sealed. `None` when there is no helper (the
    /// caller sends it itself).
    pub async fn send(
        &self,
        slot: &EscrowSlot,
        exchange: &Exchange,
    ) -> Option<Result<(u16, Vec<u8>), String>> {
        let conn = self.conn().await?;
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, mut rx) = mpsc::unbounded_channel();
        conn.waiting.lock().expect("escrow table").insert(n, tx);
        let result = async {
            let stopped = || "the escrow helper stopped before answering".to_string();
            let line = |m: &ToHelper| serde_json::to_string(m).expect("messages serialise");
            conn.to
                .send(line(&ToHelper::Lock {
                    n,
                    slot: slot.clone(),
                }))
                .map_err(|_| stopped())?;
            let mut unconfirmed = Unconfirmed {
                to: &conn.to,
                n,
                armed: true,
            };
            match rx.recv().await {
                Some(FromHelper::Locked { .. }) => {}
                Some(FromHelper::Failed { error, .. }) => return Err(error),
                _ => return Err(stopped()),
            }
            conn.to
                .send(line(&ToHelper::Send {
                    n,
                    exchange: exchange.clone(),
                }))
                .map_err(|_| stopped())?;
            unconfirmed.armed = false;
            match rx.recv().await {
                Some(FromHelper::Answer { answer, unkept, .. }) => {
                    if let Some(why) = unkept {
                        tracing::warn!(
                            "could not keep a token answer in {} ({why}); it is stored now, but a kill before that would have lost it",
                            slot.describe()
                        );
                    }
                    Ok((answer.status, answer.body()))
                }
                Some(FromHelper::Failed { error, .. }) => Err(error),
                _ => Err(stopped()),
            }
        }
        .await;
        conn.waiting.lock().expect("escrow table").remove(&n);
        Some(result)
    }
}

fn spawn(program: &Path, http: &HelperHttp) -> anyhow::Result<Conn> {
    let mut child = tokio::process::Command::new(program)
        .arg("escrow")
        .arg("--user-agent")
        .arg(&http.user_agent)
        .arg("--timeout-ms")
        .arg(http.timeout_ms.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        // Not in the terminal's process group: a Ctrl-C meant for outreach
        // must not cut an exchange short.
        .process_group(0)
        .kill_on_drop(false)
        .spawn()?;
    let mut stdin = child.stdin.take().expect("piped");
    let stdout = child.stdout.take().expect("piped");
    let (to, mut rx) = mpsc::unbounded_channel::<String>();
    let waiting: Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<FromHelper>>>> = Arc::default();
    let alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let close = Arc::new(tokio::sync::Notify::new());
    let (exited_tx, exited) = tokio::sync::watch::channel(false);
    {
        let alive = alive.clone();
        let close = close.clone();
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    biased;
                    line = rx.recv() => line,
                    () = close.notified() => None,
                };
                let Some(mut line) = next else {
                    break;
                };
                line.push('\n');
                if stdin.write_all(line.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
                    alive.store(false, std::sync::atomic::Ordering::SeqCst);
                    break;
                }
            }
            // Dropping stdin here is the helper's signal to finish and exit.
        });
    }
    // Reap it as soon as it exits, whenever that is: a helper that died
    // (or was killed) never lingers as a zombie of this process.
    let pid = child.id();
    {
        let alive = alive.clone();
        tokio::spawn(async move {
            let _ = child.wait().await;
            alive.store(false, std::sync::atomic::Ordering::SeqCst);
            let _ = exited_tx.send(true);
        });
    }
    {
        let mut started = STARTED.lock().expect("escrow helpers");
        started.retain(|h| !*h.exited.borrow());
        started.push(Started {
            pid,
            close,
            exited,
            limit: Duration::from_millis(http.timeout_ms) + Duration::from_secs(2),
        });
    }
    {
        let waiting = waiting.clone();
        let alive = alive.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(msg) = serde_json::from_str::<FromHelper>(&line) else {
                    continue;
                };
                let tx = waiting.lock().expect("escrow table").get(&msg.n()).cloned();
                if let Some(tx) = tx {
                    let _ = tx.send(msg);
                }
            }
            alive.store(false, std::sync::atomic::Ordering::SeqCst);
            // Everyone still waiting learns that the helper is gone.
            waiting.lock().expect("escrow table").clear();
        });
    }
    Ok(Conn { to, waiting, alive })
}

/// A sealed answer left for `id` by an exchange whose requester did not
/// live to store it, once no exchange for `id` is in flight. The caller
/// holds the account's lease, applies the answer, stores the record, then
/// calls [`CredentialStore::clear_answer`]. Blocking.
pub fn settle(
    store: &dyn CredentialStore,
    id: &crate::store::AccountId,
) -> Result<Option<Answer>, StoreError> {
    let Some(slot) = store.escrow_slot(id) else {
        return Ok(None);
    };
    if !slot.may_be_busy() {
        return Ok(None);
    }
    // Another process's helper may still be sending an exchange for this
    // account: wait until it is done.
    slot.wait_idle()?;
    let Some(plain) = store.read_answer(id)? else {
        return Ok(None);
    };
    match serde_json::from_slice::<Answer>(&plain) {
        Ok(a) => Ok(Some(a)),
        Err(e) => Err(StoreError::Corrupt {
            id: id.clone(),
            path: PathBuf::from(slot.describe()),
            detail: format!("the escrowed token answer does not parse: {e}"),
        }),
    }
}

/// The helper process: `outreach escrow`. Reads [`ToHelper`] lines until its
/// parent is gone, then finishes the exchanges it was told to send and
/// exits. Returns the exit code. Needs the multi-threaded runtime (sealing
/// blocks in place).
pub async fn serve(http: HelperHttp) -> i32 {
    // Signals meant for outreach (a service manager stopping the group)
    // must not cut a spent token's answer short; the exchange is bounded
    // by the HTTP timeout.
    let _hold: Vec<_> = [
        tokio::signal::unix::SignalKind::terminate(),
        tokio::signal::unix::SignalKind::interrupt(),
        tokio::signal::unix::SignalKind::hangup(),
    ]
    .into_iter()
    .filter_map(|k| tokio::signal::unix::signal(k).ok())
    .collect();
    let client = match http.client() {
        Ok(c) => c,
        Err(_) => return 1,
    };
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<FromHelper>();
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(m) = out_rx.recv().await {
            let mut line = serde_json::to_string(&m).expect("messages serialise");
            line.push('\n');
            // The parent may be gone; the answer is sealed either way.
            let _ = stdout.write_all(line.as_bytes()).await;
            let _ = stdout.flush().await;
        }
    });
    let locks: Arc<Mutex<Locks>> = Arc::default();
    let mut tasks = tokio::task::JoinSet::new();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        match serde_json::from_str::<ToHelper>(&line) {
            Ok(ToHelper::Release { n }) => {
                let mut l = locks.lock().expect("escrow locks");
                if l.held.remove(&n).is_none() {
                    l.released.insert(n);
                }
            }
            Ok(ToHelper::Lock { n, slot }) => {
                let locks = locks.clone();
                let out = out_tx.clone();
                tasks.spawn(async move {
                    // A lock file is almost always free: only wait on a
                    // thread when not (a database lock always takes one).
                    let got = match slot.try_lock_now() {
                        Some(f) => Ok(Ok(f)),
                        None => {
                            let slot = slot.clone();
                            tokio::task::spawn_blocking(move || slot.lock()).await
                        }
                    };
                    match got {
                        Ok(Ok(f)) => {
                            let mut l = locks.lock().expect("escrow locks");
                            if l.released.remove(&n) {
                                return;
                            }
                            l.held.insert(n, (slot, f));
                            drop(l);
                            let _ = out.send(FromHelper::Locked { n });
                        }
                        Ok(Err(e)) => {
                            let _ = out.send(FromHelper::Failed {
                                n,
                                error: e.to_string(),
                            });
                        }
                        Err(e) => {
                            let _ = out.send(FromHelper::Failed {
                                n,
                                error: e.to_string(),
                            });
                        }
                    }
                });
            }
            Ok(ToHelper::Send { n, exchange }) => {
                let Some((slot, lock)) = locks.lock().expect("escrow locks").held.remove(&n) else {
                    let _ = out_tx.send(FromHelper::Failed {
                        n,
                        error: "the escrow helper holds no lock for this exchange".into(),
                    });
                    continue;
                };
                let client = client.clone();
                let out = out_tx.clone();
                tasks.spawn(async move {
                    let msg = match exchange.send(&client).await {
                        Ok((status, body)) => {
                            let answer = Answer {
                                status,
                                body: B64.encode(&body),
                                at: Utc::now(),
                            };
                            // The parent gets the answer even if it could
                            // not be kept, and is told why.
                            let unkept = if (200..300).contains(&status) {
                                tokio::task::block_in_place(|| seal(&slot, &answer)).err()
                            } else {
                                None
                            };
                            FromHelper::Answer { n, answer, unkept }
                        }
                        Err(error) => FromHelper::Failed { n, error },
                    };
                    drop(lock);
                    let _ = out.send(msg);
                });
            }
            Err(_) => {}
        }
        // Reap finished tasks as we go.
        while tasks.try_join_next().is_some() {}
    }
    // The parent is gone (or done): locks taken for exchanges it never
    // confirmed are released; exchanges already sent finish.
    locks.lock().expect("escrow locks").held.clear();
    while tasks.join_next().await.is_some() {
        locks.lock().expect("escrow locks").held.clear();
    }
    drop(out_tx);
    let _ = writer.await;
    0
}

/// The helper's exchange locks: held until confirmed or released, and
/// releases that came before their lock was taken.
#[derive(Default)]
struct Locks {
    held: HashMap<u64, (EscrowSlot, SlotLock)>,
    released: std::collections::HashSet<u64>,
}

fn seal(slot: &EscrowSlot, answer: &Answer) -> Result<(), String> {
    let plain = serde_json::to_vec(answer).expect("answers serialise");
    let sealed = crate::store::seal_to(&slot.recipients, &plain)?;
    slot.keep_answer(&sealed)
}
