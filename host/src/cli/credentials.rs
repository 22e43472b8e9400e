//! The credential commands: connect, status, refresh, disconnect, import,
//! store rekey.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::print_json;
use crate::accounts::{App, bad};
use crate::auth::{ConnectOptions, TokenClient, client_for, endpoint, registered_client};
use crate::plugin::manifest::effective_endpoints;
use crate::schedule::{Need, RefreshError, Refresher, health};
use crate::secret::Secret;
use crate::store::{AccountId, Health, Profile, Record};

pub async fn connect(
    app: &App,
    platform: String,
    account: String,
    settings: BTreeMap<String, String>,
    open_browser: bool,
    username: Option<String>,
) -> anyhow::Result<i32> {
    let rec = crate::auth::connect(
        app,
        ConnectOptions {
            platform,
            account,
            settings,
            open_browser,
            username,
        },
    )
    .await?;
    println!(
        "connected {} as {}{}",
        rec.id,
        rec.profile.label(),
        rec.expires_at
            .map(|t| format!("; token valid until {}", t.format("%Y-%m-%d %H:%M UTC")))
            .unwrap_or_default()
    );
    Ok(0)
}

pub fn status(app: &App, json: bool) -> anyhow::Result<i32> {
    let mut rows = Vec::new();
    let mut broken = Vec::new();
    for (id, r) in app.accounts()? {
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
    let list: Vec<crate::daemon::api::AccountStatus> = serde_json::from_value(v)?;
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
    let refresher = Arc::new(Refresher::new(app.clone())?);
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
    let store = app.store()?;
    let record = store.load(&id)?;
    let plugin = app.host.get(&id.platform)?;
    let m = &plugin.manifest;
    let overrides = app.cfg().platform(&m.id).endpoints;
    let endpoints = effective_endpoints(m, &overrides, Some(&App::account_view(&record)));
    if let Ok(url) = endpoint(&endpoints, "revoke") {
        // A server outreach registered with (Mastodon) takes the client the
        // token was issued to: that registration, not the config's client.
        let client = if m.auth.dynamic_registration {
            registered_client(app, m, &endpoints)?
        } else {
            client_for(&app.cfg(), &m.id).ok()
        };
        let unregistered = m.auth.dynamic_registration && client.is_none();
        let token: &Secret = record
            .refresh_token
            .as_ref()
            .unwrap_or(&record.access_token);
        match TokenClient::new(app)?
            .revoke(m, &url, client.as_ref(), token)
            .await
        {
            Ok(()) => println!("revoked {id}'s token at {}", m.name),
            Err(e) if force => println!(
                "could not revoke {id}'s token at {} ({e}); removing it anyway (--force)",
                m.name
            ),
            Err(e) => {
                let why = if unregistered {
                    format!(
                        " outreach did not register the app this token was issued to (it was pasted, not connected), and {} revokes a token only for its own app.",
                        m.name
                    )
                } else {
                    String::new()
                };
                eprintln!(
                    "could not revoke {id}'s token at {} ({e}); the account was kept.{why} Run again with --force to remove it anyway, then revoke access in the platform's settings.",
                    m.name
                );
                return Ok(super::EXIT_FAILED);
            }
        }
    } else {
        println!(
            "{} has no revoke endpoint; revoke outreach's access in the platform's settings too",
            m.name
        );
    }
    store.remove(&id)?;
    println!("removed {id}");
    Ok(0)
}

/// The seed's `BaseTokens`.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct SeedTokens {
    access_token: String,
    refresh_token: Option<String>,
    expires_in: Option<u64>,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    profile: serde_json::Value,
    created_at: Option<String>,
    last_refreshed: Option<String>,
}

#[derive(Serialize)]
struct ImportReport {
    imported: Vec<String>,
    skipped: Vec<(String, String)>,
}

pub fn import(app: &App, file: &Path, account: &str) -> anyhow::Result<i32> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let all: BTreeMap<String, serde_json::Value> = serde_json::from_str(&text).map_err(|e| {
        bad!(
            "{} is not a tokens file (a JSON object of platforms): {e}",
            file.display()
        )
    })?;
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
        if app.host.get(&platform).is_err() {
            report
                .skipped
                .push((key, format!("no `{platform}` plugin is loaded")));
            continue;
        }
        let t: SeedTokens = match serde_json::from_value(value) {
            Ok(t) => t,
            Err(e) => {
                report
                    .skipped
                    .push((key, format!("not a BaseTokens record: {e}")));
                continue;
            }
        };
        if t.access_token.trim().is_empty() {
            report.skipped.push((key, "empty accessToken".into()));
            continue;
        }
        let id = AccountId::new(&platform, account)?;
        if store.list()?.contains(&id) {
            report.skipped.push((
                key,
                format!("{id} already exists; remove it first to replace it"),
            ));
            continue;
        }
        let parse = |s: &Option<String>| {
            s.as_deref()
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map(|d| d.with_timezone(&Utc))
        };
        let created = parse(&t.created_at).unwrap_or_else(Utc::now);
        let last = parse(&t.last_refreshed);
        let issued = last.unwrap_or(created);
        let p = &t.profile;
        let s = |k: &str| p.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let record = Record {
            version: Record::VERSION,
            id: id.clone(),
            access_token: Secret::new(t.access_token),
            refresh_token: t.refresh_token.filter(|r| !r.is_empty()).map(Secret::new),
            expires_in: t.expires_in.filter(|&e| e > 0),
            expires_at: t
                .expires_in
                .filter(|&e| e > 0)
                .map(|e| issued + chrono::Duration::seconds(e as i64)),
            scope: t.scope,
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
            settings: BTreeMap::new(),
            health: Health::default(),
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

pub fn rekey(app: &App, add_recipients: &[String]) -> anyhow::Result<i32> {
    let store = app.store_dir()?;
    let report = store.rekey(&app.cfg().identity, add_recipients)?;
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
    Ok(0)
}
