//! The credential commands: connect, status, refresh, disconnect, import,
//! store rekey.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::print_json;
use crate::accounts::ConnectOptions;
use crate::app::App;
use crate::error::bad;
use crate::schedule::{Need, RefreshError, Refresher, health};
use crate::secret::Secret;
use crate::store::{AccountId, Health, Profile, Record};

pub async fn connect(app: &App, opts: ConnectOptions) -> anyhow::Result<i32> {
    for rec in crate::accounts::connect(app, opts).await? {
        println!(
            "connected {} as {}{}",
            rec.id,
            rec.profile.label(),
            rec.expires_at
                .map(|t| format!("; token valid until {}", t.format("%Y-%m-%d %H:%M UTC")))
                .unwrap_or_default()
        );
    }
    Ok(0)
}

pub fn status(app: &App, json: bool) -> anyhow::Result<i32> {
    let mut rows = Vec::new();
    let mut broken = Vec::new();
    for (id, r) in crate::accounts::list(app)? {
        match r {
            Ok(rec) => rows.push(health(app, &rec)),
            Err(e) => broken
                .push(serde_json::json!({ "account": id.to_string(), "error": format!("{e:#}") })),
        }
    }
    print_status(rows, broken, json)
}

/// `status` from a running daemon's `GET /accounts`.
pub fn status_from_daemon(v: serde_json::Value, json: bool) -> anyhow::Result<i32> {
    let list: Vec<crate::accounts::AccountStatus> = serde_json::from_value(v)?;
    let mut rows = Vec::new();
    let mut broken = Vec::new();
    for a in list {
        match (a.token_health, a.summary.error) {
            (Some(h), _) => rows.push(h),
            (None, e) => broken.push(
                serde_json::json!({ "account": a.summary.id, "error": e.unwrap_or_default() }),
            ),
        }
    }
    print_status(rows, broken, json)
}

fn print_status(
    rows: Vec<crate::schedule::TokenHealth>,
    broken: Vec<serde_json::Value>,
    json: bool,
) -> anyhow::Result<i32> {
    if json {
        print_json(&serde_json::json!({ "accounts": rows, "unreadable": broken }))?;
    } else {
        if rows.is_empty() && broken.is_empty() {
            println!("no accounts; connect one with `outreach connect PLATFORM`");
        }
        for h in &rows {
            let expires = match h.expires_in {
                None => "does not expire".to_string(),
                Some(s) if s <= 0 => "EXPIRED".to_string(),
                Some(s) => format!("expires in {}", human(s)),
            };
            let next = match h.next_refresh {
                Some(t) => format!(", next refresh {}", when(t)),
                // Said once, while it matters: before the token expires.
                None if !h.refreshable
                    && !h.plugin_missing
                    && h.expires_in.is_some_and(|s| s > 0) =>
                {
                    ", cannot be refreshed: reconnect before it expires".into()
                }
                None => String::new(),
            };
            println!(
                "{:<28} {:<16} {}{}{}{}",
                format!("{}/{}", h.platform, h.account),
                if h.plugin_missing {
                    "plugin-missing".to_string()
                } else {
                    h.state.to_string()
                },
                expires,
                if h.needs_refresh {
                    " (needs refresh)"
                } else {
                    ""
                },
                next,
                h.error
                    .as_deref()
                    .map(|e| format!("\n{:28} last error: {e}", ""))
                    .unwrap_or_default()
            );
            if !h.awaiting_approval.is_empty() {
                println!(
                    "{:28} awaiting approval: {} (the plugin declares them since this account was connected; `outreach plugins approve {}`)",
                    "",
                    h.awaiting_approval.join(", "),
                    h.platform
                );
            }
        }
        for b in &broken {
            println!(
                "{:<28} UNREADABLE {}",
                b["account"].as_str().unwrap_or(""),
                b["error"].as_str().unwrap_or("")
            );
        }
    }
    let bad_state = rows.iter().any(|h| !h.is_valid) || !broken.is_empty();
    Ok(if bad_state { super::EXIT_FAILED } else { 0 })
}

fn human(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86_400),
    }
}

fn when(t: DateTime<Utc>) -> String {
    let d = (t - Utc::now()).num_seconds();
    if d <= 0 {
        "now".into()
    } else {
        format!("in {}", human(d))
    }
}

/// Accounts named by an optional `platform[/account]` target.
fn targets(app: &App, target: Option<&str>) -> anyhow::Result<Vec<AccountId>> {
    let all = app.store()?.list()?;
    Ok(match target {
        None => all,
        Some(t) => match t.split_once('/') {
            Some(_) => {
                let id = AccountId::parse(t)?;
                if !all.contains(&id) {
                    return Err(bad!("there is no account {id}"));
                }
                vec![id]
            }
            None => {
                let v: Vec<AccountId> = all.into_iter().filter(|i| i.platform == t).collect();
                if v.is_empty() {
                    return Err(bad!("there are no {t} accounts"));
                }
                v
            }
        },
    })
}

pub async fn refresh(app: Arc<App>, target: Option<String>, watch: bool) -> anyhow::Result<i32> {
    let refresher = Arc::new(Refresher::new(app.services().clone())?);
    if watch {
        let stop = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
        };
        crate::schedule::run(refresher, 16, stop).await?;
        return Ok(0);
    }
    let mut code = 0;
    for id in targets(&app, target.as_deref())? {
        match refresher.ensure(&id, Need::Now).await {
            Ok(r) => println!(
                "{id:<28} refreshed{}",
                r.expires_at
                    .map(|t| format!("; valid until {}", t.format("%Y-%m-%d %H:%M:%S UTC")))
                    .unwrap_or_default()
            ),
            // Still valid: nothing failed, the user is told until when.
            Err(RefreshError::CannotRefresh {
                id,
                reason,
                expires_at,
            }) => println!(
                "{id:<28} cannot be refreshed ({reason}); {}",
                match expires_at {
                    Some(t) => format!(
                        "it stays valid until {}; reconnect with `{}` before then",
                        t.format("%Y-%m-%d %H:%M:%S UTC"),
                        crate::schedule::reconnect_command(&id)
                    ),
                    None => "its token does not expire".into(),
                }
            ),
            // Still valid, and renewable later: the user is told when.
            Err(e @ RefreshError::TooEarly { .. }) => println!("{id:<28} {e}"),
            Err(e @ (RefreshError::NeedsReconnect { .. } | RefreshError::Transient { .. })) => {
                println!("{id:<28} FAILED: {e}");
                code = super::EXIT_FAILED;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(code)
}

pub async fn disconnect(app: &App, target: &str, force: bool) -> anyhow::Result<i32> {
    let id = AccountId::parse(target)?;
    match crate::accounts::disconnect(app, &id, force).await? {
        Ok(done) => {
            for line in done.lines() {
                println!("{line}");
            }
            Ok(0)
        }
        Err(refused) => {
            eprintln!(
                "{refused} Run again with --force to remove it anyway, then revoke access in the platform's settings."
            );
            Ok(super::EXIT_FAILED)
        }
    }
}

/// One platform's entry in a tokens file (the previous tool's format), read
/// field by field so that a message names the field that is wrong and
/// never quotes a value (they are secrets).
struct Entry {
    access_token: String,
    refresh_token: Option<String>,
    expires_in: Option<u64>,
    expires_at: Option<DateTime<Utc>>,
    scope: String,
    profile: serde_json::Value,
    created_at: Option<DateTime<Utc>>,
    last_refreshed: Option<DateTime<Utc>>,
}

/// A time in a tokens file: RFC 3339 text, or seconds or milliseconds
/// since the epoch, told apart by magnitude (10^11 seconds is in the year
/// 5138, 10^11 milliseconds in 1973).
fn file_time(v: &serde_json::Value) -> Option<DateTime<Utc>> {
    let since_epoch = |x: f64| {
        if !x.is_finite() || x < 0.0 {
            return None;
        }
        let ms = if x >= 1e11 { x } else { x * 1000.0 };
        DateTime::from_timestamp_millis(ms.round() as i64)
    };
    match v {
        serde_json::Value::Number(n) => n.as_f64().and_then(since_epoch),
        serde_json::Value::String(s) => DateTime::parse_from_rfc3339(s.trim())
            .ok()
            .map(|d| d.with_timezone(&Utc))
            .or_else(|| s.trim().parse::<f64>().ok().and_then(since_epoch)),
        _ => None,
    }
}

impl Entry {
    fn read(v: &serde_json::Value) -> Result<Entry, String> {
        use serde_json::Value;
        let Value::Object(o) = v else {
            return Err("the entry is not a JSON object with an `accessToken`".into());
        };
        let get = |k: &str| o.get(k).filter(|x| !x.is_null());
        let text = |k: &str| -> Result<Option<String>, String> {
            match get(k) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(format!("`{k}` must be text")),
            }
        };
        const TIME: &str = "a time: seconds or milliseconds since the epoch, or RFC 3339 text such as 2026-11-01T10:00:00Z";
        let time = |k: &str| -> Result<Option<DateTime<Utc>>, String> {
            match get(k) {
                None => Ok(None),
                Some(x) => file_time(x)
                    .map(Some)
                    .ok_or_else(|| format!("`{k}` must be {TIME}")),
            }
        };
        let access_token = text("accessToken")?
            .filter(|a| !a.trim().is_empty())
            .ok_or("`accessToken` is missing or empty")?;
        let expires_in = match get("expiresIn") {
            None => None,
            Some(x) => Some(
                x.as_u64()
                    .or_else(|| {
                        x.as_f64()
                            .filter(|f| f.is_finite() && *f >= 0.0)
                            .map(|f| f as u64)
                    })
                    .ok_or("`expiresIn` must be a number of seconds")?,
            ),
        };
        let scope = match get("scope") {
            None => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(a)) if a.iter().all(Value::is_string) => a
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" "),
            Some(_) => return Err("`scope` must be text or a list of text".into()),
        };
        let profile = match get("profile") {
            None => Value::Null,
            Some(p @ Value::Object(_)) => p.clone(),
            Some(_) => return Err("`profile` must be a JSON object".into()),
        };
        Ok(Entry {
            access_token,
            refresh_token: text("refreshToken")?.filter(|r| !r.trim().is_empty()),
            expires_in,
            expires_at: time("expiresAt")?,
            scope,
            profile,
            created_at: time("createdAt")?,
            last_refreshed: time("lastRefreshed")?,
        })
    }
}

/// Why a platform's tokens cannot be imported without a setting the file
/// does not carry (the server they belong to), and the command to use.
fn needs_setting(m: &crate::contract::wit::types::Manifest, account: &str) -> Option<String> {
    use crate::contract::wit::types::AuthKind;
    // Tokens belong to one server: a required host setting is needed even
    // when it has a default, which may not be the server they came from.
    let s = m
        .settings
        .iter()
        .find(|s| s.required && (s.default_value.is_none() || s.is_host))?;
    let value = match (&s.default_value, s.is_host) {
        (Some(d), _) => d.as_str(),
        (None, true) => "https://…",
        (None, false) => "VALUE",
    };
    let set = format!("--set {}={value}", s.name);
    let acct = if account == "default" {
        String::new()
    } else {
        format!(" --account {account}")
    };
    let connect = format!("`outreach connect {}{acct} {set}", m.id);
    let how = match m.auth.kind {
        // A session comes from a login, not from a pasted token.
        AuthKind::AppPassword => format!("{connect} --username HANDLE`"),
        _ => format!(
            "{connect}`, or paste its accessToken into `outreach accounts add {}{acct} {set}`",
            m.id
        ),
    };
    Some(format!(
        "{} tokens belong to one server, and a tokens file does not say which (setting `{}`: {}); connect the account with {how}",
        m.name, s.name, s.description
    ))
}

#[derive(Serialize)]
struct ImportReport {
    imported: Vec<String>,
    skipped: Vec<(String, String)>,
}

pub fn import(app: &App, file: &Path, account: &str) -> anyhow::Result<i32> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    // A syntax error names a position, never the text around it; the
    // shape is checked here so that no value is quoted either.
    let not_tokens = |why: String| {
        bad!(
            "{} is not a tokens file (a JSON object with one entry per platform): {why}",
            file.display()
        )
    };
    let all = match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(serde_json::Value::Object(all)) => all,
        Ok(_) => return Err(not_tokens("it holds no JSON object".into())),
        Err(e) => return Err(not_tokens(e.to_string())),
    };
    let store = app.store()?;
    let mut report = ImportReport {
        imported: vec![],
        skipped: vec![],
    };
    for (key, value) in all {
        let platform = if key == "twitter" {
            "x".to_string()
        } else {
            key.clone()
        };
        let Ok(plugin) = app.host.get(&platform) else {
            report
                .skipped
                .push((key, format!("no `{platform}` plugin is loaded")));
            continue;
        };
        let t = match Entry::read(&value) {
            Ok(t) => t,
            Err(why) => {
                report.skipped.push((key, why));
                continue;
            }
        };
        if let Some(why) = needs_setting(&plugin.manifest, account) {
            report.skipped.push((key, why));
            continue;
        }
        let settings = match app.check_settings(&plugin, BTreeMap::new()) {
            Ok(s) => s,
            Err(e) => {
                report.skipped.push((key, format!("{e:#}")));
                continue;
            }
        };
        let id = AccountId::new(&platform, account)?;
        if store.contains(&id)? {
            report.skipped.push((
                key,
                format!("{id} already exists; remove it first to replace it"),
            ));
            continue;
        }
        let created = t.created_at.unwrap_or_else(Utc::now);
        let last = t.last_refreshed;
        let issued = last.unwrap_or(created);
        // An absolute expiry wins over a lifetime counted from issue.
        let (expires_in, expires_at) = match (t.expires_at, t.expires_in.filter(|&e| e > 0)) {
            (Some(at), _) => (
                u64::try_from((at - issued).num_seconds())
                    .ok()
                    .filter(|&s| s > 0),
                Some(at),
            ),
            (None, Some(e)) => (Some(e), Some(issued + chrono::Duration::seconds(e as i64))),
            (None, None) => (None, None),
        };
        let p = &t.profile;
        let s = |k: &str| p.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let record = Record {
            version: Record::VERSION,
            id: id.clone(),
            access_token: Secret::new(t.access_token),
            refresh_token: t.refresh_token.map(Secret::new),
            expires_in,
            expires_at,
            refresh_expires_at: None,
            scope: t.scope.clone(),
            profile: Profile {
                id: s("id").or_else(|| s("sub")).unwrap_or_default(),
                name: s("name").or_else(|| s("displayName")).unwrap_or_default(),
                handle: s("username").or_else(|| s("handle")),
                picture: s("picture")
                    .or_else(|| s("profileImageUrl"))
                    .or_else(|| s("avatar")),
                url: s("url"),
            },
            created_at: created,
            last_refreshed: last,
            settings,
            health: Health::default(),
            hosts: None,
            saved_login: None,
            scopes_asked: Some(
                t.scope
                    .split(|c: char| c.is_whitespace() || c == ',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
            ),
        };
        store.save(&record)?;
        report.imported.push(id.to_string());
    }
    for id in &report.imported {
        println!("imported {id}");
    }
    for (k, why) in &report.skipped {
        println!("skipped {k}: {why}");
    }
    if !report.imported.is_empty() {
        println!(
            "{} is unchanged; once `outreach status` shows the imported accounts, delete it (it holds the tokens in plain text)",
            file.display()
        );
    }
    Ok(if report.skipped.is_empty() {
        0
    } else {
        super::EXIT_FAILED
    })
}

pub fn rekey(app: &App, add_recipients: &[String], wrap_with: &[String]) -> anyhow::Result<i32> {
    if app.cfg().config.store.backend == crate::config::StoreBackend::Postgres {
        if add_recipients.is_empty() || !wrap_with.is_empty() {
            return Err(bad!(
                "on PostgreSQL, `store rekey` adds recipients only (`--add-recipient age1…`): moving to a new identity or wrapping it changes the identity file on every machine that runs a daemon, which outreach does not do yet; nothing was changed"
            ));
        }
        let n = app
            .store()?
            .add_recipients(add_recipients)?
            .context("the PostgreSQL store adds recipients itself")?;
        println!(
            "re-encrypted {n} values in {} to the identity and {}; every outreach process on the database now encrypts to them too",
            app.store_location(),
            add_recipients.join(", ")
        );
        return Ok(0);
    }
    let store = app.store_dir()?;
    let report = store.rekey_with(&app.cfg().identity, add_recipients, wrap_with)?;
    println!(
        "re-encrypted {} records to {}; the previous identity was kept at {}",
        report.records,
        report.recipients.join(", "),
        report
            .retired
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "(unchanged identity)".into())
    );
    if !wrap_with.is_empty() {
        println!(
            "{} is wrapped to {}: outreach unwraps it once at start with the plugin identities in {} (keep that file, and the key, with your backups)",
            app.cfg().identity.display(),
            report.wrapped_to.join(", "),
            app.cfg().identity_plugin.display()
        );
    }
    Ok(0)
}

/// `outreach store migrate --to BACKEND`.
pub fn migrate(app: &App, to: crate::cli::MigrateTo, json: bool) -> anyhow::Result<i32> {
    let to = match to {
        crate::cli::MigrateTo::Files => crate::config::StoreBackend::Files,
        crate::cli::MigrateTo::Postgres => crate::config::StoreBackend::Postgres,
    };
    let report = crate::migrate::migrate(app.services(), to)?;
    if json {
        print_json(&report)?;
        return Ok(0);
    }
    let n = |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    println!(
        "copied {}, {} and the journal ({}, {}, {}) from {} to {}, and read them back: the copy matches; the source was left as it was",
        n(report.accounts, "account", "accounts"),
        n(report.aux, "aux secret", "aux secrets"),
        n(report.posts, "post", "posts"),
        n(report.deliveries, "delivery", "deliveries"),
        n(report.attempts, "attempt", "attempts"),
        report.from,
        report.to
    );
    if !report.kept_in_destination.is_empty() {
        println!(
            "{} accounts the destination already had were left as they are: {}",
            report.kept_in_destination.len(),
            report.kept_in_destination.join(", ")
        );
    }
    let current = app.cfg().config.store.backend;
    if current != to {
        println!(
            "next: set `backend = \"{}\"` under [store] in the config, then start the daemons again",
            report.to
        );
    }
    Ok(0)
}
