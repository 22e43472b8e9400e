//! The command line: parsing, and printing results for people or as JSON.
//!
//! Owns: the clap definitions, exit codes (0 ok, 1 a platform or account
//! failed, 2 bad input) and output formatting. Every command is a thin call
//! into the capability modules.
//!
//! Never: prints a secret — outputs are built from types that carry none.

mod credentials;
mod posts;

use crate::error::bad;
use std::collections::BTreeMap;
use std::io::{IsTerminal, Read};
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use serde::Serialize;

use crate::accounts::{AccountSummary, ConnectOptions};
use crate::app::App;
use crate::config::Loaded;
use crate::contract::wit::types::Manifest;
use crate::secret::Secret;
use crate::store::AccountId;

/// outreach keeps your social accounts connected and publishes to them from
/// files. Each platform is a WebAssembly plugin in the plugins folder.
#[derive(Debug, Parser)]
#[command(name = "outreach", version, about, max_term_width = 100)]
pub struct Cli {
    /// The config file (TOML). Without one, ~/.config/outreach/outreach.toml
    /// if it exists (`outreach init` writes it), else defaults: the
    /// built-in platforms plus ~/.local/share/outreach/plugins, the store
    /// beside them.
    #[arg(long, global = true, env = "OUTREACH_CONFIG")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the loaded platform plugins (and files that failed to load).
    Plugins {
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        show: Option<PluginsCmd>,
    },
    /// List accounts (no secrets), or add or remove one.
    Accounts {
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        cmd: Option<AccountsCmd>,
    },
    /// Connect an account through the platform's own flow: a browser and
    /// OAuth for most, a pasted key or app password for the rest.
    Connect {
        platform: String,
        #[arg(long, default_value = "default")]
        account: String,
        /// A per-account setting, e.g. `--set instance=https://mastodon.social`.
        #[arg(long = "set", value_name = "NAME=VALUE")]
        settings: Vec<String>,
        /// Do not open a browser; only print the address to visit.
        #[arg(long)]
        no_browser: bool,
        /// The login name, for app-password platforms.
        #[arg(long)]
        username: Option<String>,
        /// Reconnecting: grant the scopes the plugin now asks for that the
        /// account was not granted before (refused without this).
        #[arg(long)]
        approve_scopes: bool,
        /// Do not wait for the browser to come back: paste the address it
        /// lands on (for a headless server, or a redirect URI that is not
        /// this machine — `platforms.ID.redirect_uri`).
        #[arg(long)]
        paste: bool,
        /// Session logins: keep the username and password (encrypted with
        /// the account) to log in again when the session ends.
        #[arg(long)]
        remember_password: bool,
        /// Connect the page or organization with this id (or exact name)
        /// that the grant can act as; repeat for several (one account
        /// each), `me` for yourself where the platform allows. Without it
        /// you are asked when there is more than one.
        #[arg(long = "as", value_name = "ID")]
        identities: Vec<String>,
    },
    /// Token health of every account: valid, expiry, next refresh, errors.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Refresh tokens now (all accounts, a platform, or `platform/account`).
    Refresh {
        target: Option<String>,
        /// Keep running: refresh every account on schedule until stopped.
        #[arg(long)]
        watch: bool,
    },
    /// Revoke an account's token at the platform, then remove it.
    Disconnect {
        /// `platform/account` (or `platform` for its `default` account).
        id: String,
        /// Remove the account even if revoking fails.
        #[arg(long)]
        force: bool,
    },
    /// Import tokens from the previous tool's `.tokens.json`.
    Import {
        file: PathBuf,
        /// The account name to import each platform's tokens as.
        #[arg(long, default_value = "default")]
        account: String,
    },
    /// Write a consistent backup of the store (records stay encrypted), the
    /// journal and the config to FILE, also while the daemon runs.
    Backup {
        file: PathBuf,
        /// Also put the identity in, and encrypt the whole file with a
        /// passphrase (OUTREACH_BACKUP_PASSPHRASE, or asked for).
        #[arg(long)]
        include_identity: bool,
    },
    /// Restore a backup where the config says (or under --to DIR); only
    /// where nothing exists yet, and only once every checksum matches.
    Restore {
        file: PathBuf,
        /// Restore into this empty folder instead.
        #[arg(long, value_name = "DIR")]
        to: Option<PathBuf>,
    },
    /// Manage the encrypted credential store.
    Store {
        #[command(subcommand)]
        cmd: StoreCmd,
    },
    /// Validate a post file against every target, then publish it.
    Publish {
        /// Post files (TOML); see config/posts/ for an example. Several are
        /// published one after another.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print the requests each plugin would send (secrets redacted)
        /// instead of sending them.
        #[arg(long)]
        dry_run: bool,
        /// Only validate; print every problem.
        #[arg(long)]
        check: bool,
        /// The file changed after it was published: publish the new text as
        /// a new post.
        #[arg(long)]
        new: bool,
        #[arg(long)]
        json: bool,
    },
    /// Keep running (in the foreground; config/outreach.service runs it as a
    /// service): keep tokens fresh, publish scheduled posts and post files
    /// dropped into the posts folder, pick up new plugins, and serve the
    /// control API. Stops cleanly on SIGTERM or SIGINT.
    Daemon {
        /// `human` or `json` (default from daemon.log_format in the config).
        #[arg(long, value_parser = ["human", "json"])]
        log_format: Option<String>,
        /// Stop after this many seconds (for tests and benchmarks).
        #[arg(long, hide = true)]
        exit_after: Option<f64>,
    },
    /// Print a shell completion script: `outreach completions bash >
    /// ~/.local/share/bash-completion/completions/outreach`.
    Completions { shell: clap_complete::Shell },
    /// Write a manual page for outreach and for every subcommand
    /// (`outreach.1`, `outreach-publish.1`, …) into DIR: `outreach man
    /// ~/.local/share/man/man1`, then `man outreach`.
    Man { dir: std::path::PathBuf },
    /// Open the web UI of the running daemon: prints a one-time sign-in
    /// link (valid for two minutes, usable once) and opens it in a browser.
    Ui {
        /// Only print the link.
        #[arg(long)]
        no_browser: bool,
    },
    /// Start here: write a commented starter config to the XDG config
    /// folder (~/.config/outreach/outreach.toml; never over an existing
    /// one), create the identity that encrypts the store, and say what to
    /// run next.
    Init,
    /// The escrow helper outreach starts for itself (see the `escrow`
    /// module); not for people.
    #[command(hide = true)]
    Escrow {
        #[arg(long)]
        user_agent: String,
        #[arg(long)]
        timeout_ms: u64,
    },
    /// Queued, published, failed and unknown posts; show, cancel, retry,
    /// or publish the ones that are due.
    Posts {
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        cmd: Option<PostsCmd>,
    },
    /// Serve the Model Context Protocol on standard input and output, for
    /// AI agents (an MCP client starts `outreach mcp`): list platforms and
    /// accounts, check, publish, list, show and cancel posts — through the
    /// running daemon when there is one, else on this machine's store.
    Mcp,
}

#[derive(Debug, Subcommand)]
pub enum PostsCmd {
    /// Every attempt of one post: targets, times, ids, URLs, errors.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Stop a post from going out where it has not yet. It stays cancelled
    /// when its file is re-read or published again; `posts retry` sends it.
    Cancel { id: String },
    /// Send a post again where it failed, was rejected or was cancelled
    /// (outreach never does that on its own): `ID` for every such target,
    /// `ID/TARGET` (`ID/x/default`, or `ID/x`) for one. Sent now, or queued
    /// if the post is scheduled for later. Never re-sends a published post.
    Retry {
        /// `ID` or `ID/TARGET`, as `outreach posts` shows them.
        #[arg(value_name = "ID[/TARGET]")]
        spec: String,
        /// Also re-send deliveries whose outcome is unknown. Check the
        /// account first: if the earlier attempt did go out, the platform
        /// will show the post twice.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Publish every scheduled post whose time has come (for cron, when no
    /// daemon runs).
    Due {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum StoreCmd {
    /// Re-encrypt every record to a new identity (the old one is kept
    /// beside it), or also to extra recipients. Safe to run again if
    /// interrupted.
    Rekey {
        /// Also encrypt every record to this age recipient (age1…, or an
        /// age plugin's: age1yubikey1…).
        #[arg(long = "add-recipient", value_name = "AGE1…")]
        add_recipients: Vec<String>,
        /// Wrap the identity file to this age plugin recipient (a YubiKey's
        /// age1yubikey1…): the plugin unwraps it once when outreach starts,
        /// with the identity in [paths] identity_plugin.
        #[arg(long = "wrap-with", value_name = "AGE1…")]
        wrap_with: Vec<String>,
    },
    /// Copy every account, aux secret and the publishing journal to the
    /// other backend ([store] in the config says how to reach PostgreSQL),
    /// then read it all back to check it. The source is left as it is;
    /// interrupted, run it again. Stop the daemons first, then switch
    /// `[store] backend` in the config.
    Migrate {
        /// The backend to copy to.
        #[arg(long, value_enum)]
        to: MigrateTo,
        #[arg(long)]
        json: bool,
    },
}

/// Where `store migrate` copies to.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum MigrateTo {
    /// The age files under paths.store, and the SQLite journal.
    Files,
    /// The PostgreSQL database named by store.url_env.
    Postgres,
}

#[derive(Debug, Subcommand)]
pub enum PluginsCmd {
    /// Print one plugin's full manifest.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Let the accounts of plugin ID send their credentials to every host
    /// it declares now. A plugin update that declares new hosts loads, but
    /// no credential goes to those hosts until this is run (connecting an
    /// account approves the hosts of the plugin as it is then).
    Approve {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Check a plugin file without installing it: what it imports,
    /// exports and declares, and what the host would refuse. Exit code 0
    /// when it would load, 2 when it would be refused.
    Check {
        file: std::path::PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AccountsCmd {
    /// Add an account from a credential (an access token, API key…) read
    /// from standard input or a hidden prompt. The credential is checked
    /// with the platform before it is stored.
    Add {
        platform: String,
        /// A name for this account, for several accounts per platform.
        #[arg(long, default_value = "default")]
        account: String,
        /// A per-account setting, e.g. `--set instance=https://mastodon.social`.
        #[arg(long = "set", value_name = "NAME=VALUE")]
        settings: Vec<String>,
        /// Replace the account if it exists already (only once the platform
        /// accepted the new credential).
        #[arg(long)]
        replace: bool,
    },
    /// Remove an account and its stored credential.
    Remove {
        /// `platform/account` (or `platform` for its `default` account).
        id: String,
    },
}

/// `outreach ui`: a one-time sign-in link from the running daemon.
async fn ui(cfg: &Loaded, no_browser: bool) -> anyhow::Result<i32> {
    let Some(client) = crate::daemon::client::Client::find(cfg) else {
        return Err(crate::error::bad!(
            "no daemon is running for this config's store; start it (`outreach daemon`), then run `outreach ui` again"
        ));
    };
    #[derive(serde::Deserialize)]
    struct Link {
        url: String,
        expires_in_secs: u64,
    }
    let link: Link = client.post("/signin-links").await?;
    println!("{}", link.url);
    eprintln!(
        "Open this link to sign in to the web UI; it works once, within {} seconds.",
        link.expires_in_secs
    );
    if !no_browser {
        crate::auth::open_in_browser(&link.url);
    }
    Ok(0)
}

/// Exit code for "a platform or account failed".
pub const EXIT_FAILED: i32 = 1;
/// Exit code for bad input (config, post file, arguments).
pub const EXIT_BAD_INPUT: i32 = 2;

/// Write `outreach.1` and one page per (nested) subcommand into `dir`,
/// creating it; hidden commands get none. Returns how many pages.
fn write_man_pages(dir: &std::path::Path) -> anyhow::Result<usize> {
    use clap::CommandFactory;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    fn walk(cmd: clap::Command, name: String, dir: &std::path::Path) -> anyhow::Result<usize> {
        let cmd = cmd
            .display_name(name.clone())
            .bin_name(name.replace('-', " "));
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd.clone())
            .title(name.to_uppercase())
            .render(&mut page)?;
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
        let mut n = 1;
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            n += walk(sub.clone(), format!("{name}-{}", sub.get_name()), dir)?;
        }
        Ok(n)
    }
    walk(Cli::command(), "outreach".into(), dir)
}

/// Run the parsed command; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    if let Command::Completions { shell } = cli.command {
        use clap::CommandFactory;
        clap_complete::generate(
            shell,
            &mut Cli::command(),
            "outreach",
            &mut std::io::stdout(),
        );
        return Ok(0);
    }
    if let Command::Man { dir } = &cli.command {
        let written = write_man_pages(dir)?;
        println!("wrote {written} manual pages to {}", dir.display());
        return Ok(0);
    }
    if let Command::Escrow {
        user_agent,
        timeout_ms,
    } = cli.command
    {
        let http = crate::escrow::HelperHttp {
            user_agent,
            timeout_ms,
        };
        return Ok(crate::escrow::serve(http).await);
    }
    match &cli.command {
        Command::Backup {
            file,
            include_identity,
        } => return crate::backup::backup_command(cli.config.as_deref(), file, *include_identity),
        Command::Restore { file, to } => {
            return crate::backup::restore_command(cli.config.as_deref(), file, to.as_deref());
        }
        _ => {}
    }
    if let Command::Init = &cli.command {
        return init(cli.config.as_deref()).await;
    }
    let file = cli
        .config
        .clone()
        .or_else(|| crate::config::default_file().filter(|f| f.exists()));
    let cfg = Loaded::load(file.as_deref())?;
    let daemon = matches!(cli.command, Command::Daemon { .. });
    let format = match &cli.command {
        Command::Daemon {
            log_format: Some(f),
            ..
        } => f.clone(),
        Command::Daemon { .. } => cfg.config.daemon.log_format.clone(),
        _ => "human".into(),
    };
    // `refresh --watch` logs each refresh it does, as the daemon does.
    let watching = matches!(cli.command, Command::Refresh { watch: true, .. });
    init_logging(
        if daemon {
            &cfg.config.daemon.log_level
        } else if watching {
            "info"
        } else {
            "warn"
        },
        &format,
    );
    // Read-only commands ask a running daemon first: it holds the live
    // state (and the store's identity is not needed here).
    match &cli.command {
        Command::Status { json } => {
            if let Some(v) = from_daemon(&cfg, "/accounts").await {
                return credentials::status_from_daemon(v, *json);
            }
        }
        Command::Accounts { json, cmd: None } => {
            if let Some(v) = from_daemon(&cfg, "/accounts").await {
                let list: Vec<AccountSummary> = serde_json::from_value(v)?;
                return print_accounts(&list, *json);
            }
        }
        Command::Posts { json, cmd: None } => {
            if let Some(v) = from_daemon(&cfg, "/posts").await {
                return posts::print_list(v, *json);
            }
        }
        _ => {}
    }
    if let Command::Ui { no_browser } = cli.command {
        return ui(&cfg, no_browser).await;
    }
    if let Command::Mcp = cli.command {
        return crate::mcp::serve(cfg).await;
    }
    // Nothing may change the store while it is copied.
    let migrating = matches!(
        cli.command,
        Command::Store {
            cmd: StoreCmd::Migrate { .. }
        }
    );
    let lock = if daemon || migrating {
        Some(crate::daemon::take_lock(&cfg)?)
    } else {
        None
    };
    let only = needed_platforms(&cli.command, &cfg);
    // `status` only reads what plugins declare: from the manifest cache.
    let app = match (&cli.command, only) {
        (Command::Status { .. }, Some(ids)) => App::with_manifests(cfg, ids).await?,
        (_, only) => App::with_platforms(cfg, only).await?,
    };
    let app = std::sync::Arc::new(app);
    match cli.command {
        Command::Completions { .. }
        | Command::Man { .. }
        | Command::Escrow { .. }
        | Command::Backup { .. }
        | Command::Init
        | Command::Mcp
        | Command::Ui { .. }
        | Command::Restore { .. } => unreachable!("handled above"),
        Command::Daemon { exit_after, .. } => {
            let opts = crate::daemon::Options {
                exit_after: exit_after.map(std::time::Duration::from_secs_f64),
            };
            let lock = lock.expect("taken above for the daemon");
            crate::daemon::run(app, opts, lock).await
        }
        Command::Connect {
            platform,
            account,
            settings,
            no_browser,
            username,
            approve_scopes,
            remember_password,
            identities,
            paste,
        } => {
            let settings = parse_settings(&settings)?;
            let shown = format!("{platform}/{account}");
            credentials::connect(
                &app,
                ConnectOptions {
                    platform,
                    account,
                    settings,
                    open_browser: !no_browser,
                    username,
                    approve_scopes,
                    remember_password,
                    identities,
                    paste,
                    prompt: Box::new(|what: &str| read_secret(what)),
                    choose: Box::new(choose_identities),
                    via: None,
                    announce: Box::new(move |url: &str| {
                        eprintln!(
                            "To connect {shown}, open this address and approve access:\n\n  {url}\n"
                        )
                    }),
                },
            )
            .await
        }
        Command::Status { json } => credentials::status(&app, json),
        Command::Refresh { target, watch } => {
            credentials::refresh(app.clone(), target, watch).await
        }
        Command::Disconnect { id, force } => credentials::disconnect(&app, &id, force).await,
        Command::Import { file, account } => credentials::import(&app, &file, &account),
        Command::Store {
            cmd:
                StoreCmd::Rekey {
                    add_recipients,
                    wrap_with,
                },
        } => credentials::rekey(&app, &add_recipients, &wrap_with),
        Command::Store {
            cmd: StoreCmd::Migrate { to, json },
        } => credentials::migrate(&app, to, json),
        Command::Plugins { json, show: None } => plugins(&app, json),
        Command::Plugins {
            show: Some(PluginsCmd::Check { file, json }),
            ..
        } => {
            let i = app.host.inspect(&file).await;
            let code = if i.refused.is_some() {
                EXIT_BAD_INPUT
            } else {
                0
            };
            if json {
                print_json(&i)?;
                return Ok(code);
            }
            println!("{}", i.path);
            if let Some(shape) = &i.shape {
                println!("  a WebAssembly {shape}");
            }
            if !i.imports.is_empty() {
                println!("  imports:");
                for name in &i.imports {
                    println!("    {name}");
                }
            }
            if !i.exports.is_empty() {
                println!("  exports: {}", i.exports.join(", "));
            }
            if let Some(c) = &i.contract {
                println!("  built against contract {c}");
            }
            match &i.refused {
                Some(why) => println!("  REFUSED: {why}"),
                None => println!(
                    "  would load; `outreach plugins show ID` after installing lists its manifest, or add --json"
                ),
            }
            if let (Some(m), false) = (&i.manifest, json) {
                println!(
                    "  declares platform `{}` ({}) version {}",
                    m["id"].as_str().unwrap_or_default(),
                    m["name"].as_str().unwrap_or_default(),
                    m["version"].as_str().unwrap_or_default()
                );
            }
            Ok(code)
        }
        Command::Plugins {
            show: Some(PluginsCmd::Approve { id, json }),
            ..
        } => {
            let done = crate::accounts::approve_plugin(&app, &id).await?;
            if json {
                print_json(&done)?;
            } else if done.accounts.is_empty() {
                println!(
                    "nothing awaited approval for {id}: its accounts may already use every host it declares"
                );
            } else {
                println!(
                    "approved for {}: {}",
                    done.accounts.join(", "),
                    done.hosts.join(", ")
                );
            }
            Ok(0)
        }
        Command::Plugins {
            show: Some(PluginsCmd::Show { id, json }),
            ..
        } => {
            let p = app.host.get(&id)?;
            let effective = crate::plugin::manifest::effective(
                &p.manifest,
                &app.cfg().platform(&p.manifest.id).endpoints,
            );
            if json {
                let mut v = wit_style(&p.manifest);
                v["effective"] = serde_json::to_value(&effective)?;
                print_json(&v)?;
            } else {
                print_manifest(&p.manifest, &p.path, p.contract);
                print_effective(&effective, app.cfg().file.as_deref());
            }
            Ok(0)
        }
        Command::Accounts { json, cmd: None } => {
            let list: Vec<AccountSummary> = crate::accounts::list(&app)?
                .iter()
                .map(|(id, r)| AccountSummary::new(id, r))
                .collect();
            print_accounts(&list, json)
        }
        Command::Accounts {
            cmd:
                Some(AccountsCmd::Add {
                    platform,
                    account,
                    settings,
                    replace,
                }),
            ..
        } => {
            let settings = parse_settings(&settings)?;
            let token = read_secret(&format!("the {platform} access token"))?;
            let existing = if replace {
                crate::accounts::Existing::Replace
            } else {
                crate::accounts::Existing::Refuse
            };
            let id = AccountId::new(&platform, &account)?;
            let replaced = replace && app.store()?.contains(&id)?;
            let rec = crate::accounts::add_account_as(
                &app, &platform, &account, token, settings, existing,
            )
            .await?;
            println!(
                "{} {} as {}; its credential is encrypted in {}",
                if replaced { "replaced" } else { "added" },
                rec.id,
                rec.profile.label(),
                app.store_location()
            );
            Ok(0)
        }
        Command::Accounts {
            cmd: Some(AccountsCmd::Remove { id }),
            ..
        } => {
            let id = AccountId::parse(&id)?;
            app.store()?.remove(&id)?;
            println!("removed {id}");
            Ok(0)
        }
        Command::Publish {
            files,
            dry_run,
            check,
            json,
            new,
        } => {
            let mut code = 0;
            for file in &files {
                if files.len() > 1 && !json {
                    println!("{}:", file.display());
                }
                let c = if check {
                    match crate::publish::check_file(&app, file).await? {
                        Err(problems) => print_problems(file, &problems, json)?,
                        Ok(rows) => {
                            if json {
                                print_json(&serde_json::json!({ "results": rows }))?;
                            } else {
                                for r in &rows {
                                    match &r.error {
                                        None => println!("{:<24} ok", r.target),
                                        Some(e) => println!("{:<24} FAILED {e}", r.target),
                                    }
                                }
                            }
                            if rows.iter().all(|r| r.ok) {
                                0
                            } else {
                                EXIT_FAILED
                            }
                        }
                    }
                } else {
                    let opts = crate::publish::Options { dry_run, new };
                    // A bar per upload, on a terminal only.
                    let _bars = (!json && !dry_run && std::io::stderr().is_terminal())
                        .then(|| UploadBars::start(app.services().clone()));
                    match crate::publish::publish_file(app.services(), file, opts).await {
                        Ok(Err(problems)) => print_problems(file, &problems, json)?,
                        Ok(Ok(report)) => print_report(&report, dry_run, json)?,
                        // With several files, one bad file does not stop the rest.
                        Err(e) if files.len() > 1 => {
                            eprintln!("error: {e:#}");
                            EXIT_BAD_INPUT
                        }
                        Err(e) => return Err(e),
                    }
                };
                code = code.max(c);
            }
            Ok(code)
        }
        Command::Posts { json, cmd } => posts::run(&app, cmd, json).await,
    }
}

/// Log to stderr: `RUST_LOG` if set, else `level`; human or JSON lines.
/// The PostgreSQL driver's own lines (each query, the server's notices)
/// only from `warn`, unless `level` names `sqlx`.
fn init_logging(level: &str, format: &str) {
    let level = if level.contains("sqlx") {
        level.to_string()
    } else {
        format!("{level},sqlx=warn")
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let b = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter);
    if format == "json" {
        b.json().init();
    } else {
        b.init();
    }
}

/// `GET path` from the daemon running on this store, if one is; a daemon
/// that does not answer is reported and the store is read directly.
async fn from_daemon(cfg: &Loaded, path: &str) -> Option<serde_json::Value> {
    let client = crate::daemon::client::Client::find(cfg)?;
    match client.get(path).await {
        Ok(v) => Some(v),
        Err(e) => {
            eprintln!("warning: {e:#}; reading the store directly");
            None
        }
    }
}

fn print_accounts(list: &[AccountSummary], json: bool) -> anyhow::Result<i32> {
    if json {
        print_json(&list)?;
    } else if list.is_empty() {
        println!("no accounts; add one with `outreach accounts add PLATFORM`");
    } else {
        for a in list {
            match (&a.profile, &a.error) {
                (_, Some(e)) => println!("{:<24} ERROR {e}", a.id),
                (Some(p), None) => println!(
                    "{:<24} {} {}{}",
                    a.id,
                    p.name,
                    p.handle
                        .as_deref()
                        .map(|h| format!("(@{h}) "))
                        .unwrap_or_default(),
                    a.expires_at
                        .map(|t| format!("token expires {}", t.format("%Y-%m-%d %H:%M UTC")))
                        .unwrap_or_else(|| "token does not expire".into())
                ),
                _ => {}
            }
        }
    }
    Ok(if list.iter().any(|a| a.error.is_some()) {
        EXIT_FAILED
    } else {
        0
    })
}

fn plugins(app: &App, json: bool) -> anyhow::Result<i32> {
    let mut platforms = crate::plugin::manifest::Platforms::of(&app.host, &app.cfg());
    // What awaits approval is kept with the accounts: shown when the store
    // exists and opens.
    let approvals = if app.cfg().store_dir.exists()
        || app.cfg().config.store.backend != crate::config::StoreBackend::Files
    {
        crate::accounts::with_approvals(app, &mut platforms).err()
    } else {
        None
    };
    let crate::plugin::manifest::Platforms {
        plugins: rows,
        rejected,
    } = platforms;
    if json {
        print_json(&serde_json::json!({ "plugins": rows, "rejected": rejected }))?;
    } else {
        if crate::plugin::built_in_ids().is_empty() {
            println!(
                "this binary carries no built-in plugins (it was built with OUTREACH_SKIP_PLUGIN_BUILD); platforms come from {}",
                app.cfg().plugins_dir.display()
            );
        }
        if rows.is_empty() {
            println!("no plugins loaded from {}", app.cfg().plugins_dir.display());
        }
        for r in &rows {
            let source = match (r.source, r.shadows_built_in) {
                ("built in", _) => "built in".to_string(),
                (_, true) => format!("{}, in place of the built-in one", r.path),
                _ => r.path.clone(),
            };
            println!(
                "{} — {} {} ({}, contract {}; {source})",
                r.id, r.name, r.version, r.auth, r.contract
            );
            let width = r.endpoints.iter().map(|e| e.name.len()).max().unwrap_or(0);
            let url_width = r.endpoints.iter().map(|e| e.url.len()).max().unwrap_or(0);
            println!("    endpoints:");
            for e in &r.endpoints {
                println!(
                    "      {:<width$}  {:<url_width$}  ({})",
                    e.name, e.url, e.from
                );
            }
            let width = r
                .host_sources
                .iter()
                .map(|h| h.host.len())
                .max()
                .unwrap_or(0);
            println!("    hosts:");
            for h in &r.host_sources {
                println!("      {:<width$}  ({})", h.host, h.from.join("; "));
            }
            if !r.rate_limits.is_empty() {
                println!("    limits: {}", r.rate_limits.join(", "));
            }
            println!("    text:   {} characters ({})", r.max_length, r.counting);
            if !r.awaiting_approval.is_empty() {
                println!(
                    "    AWAITING APPROVAL: {} (declared since {} was connected; their credentials go there after `outreach plugins approve {}`)",
                    r.awaiting_approval.join(", "),
                    r.awaiting_accounts.join(", "),
                    r.id
                );
            }
        }
        if let Some(e) = &approvals {
            eprintln!("(hosts awaiting approval not shown: {e:#})");
        }
        for r in &rejected {
            println!("REJECTED {}: {}", r.path, r.error);
        }
    }
    Ok(if rejected.is_empty() { 0 } else { EXIT_FAILED })
}

use crate::plugin::manifest::wit_style;

fn print_manifest(m: &Manifest, path: &std::path::Path, contract: &str) {
    fn drop_nulls(v: serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match v {
            Value::Object(o) => Value::Object(
                o.into_iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k, drop_nulls(v)))
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.into_iter().map(drop_nulls).collect()),
            other => other,
        }
    }
    let pretty = toml::to_string_pretty(&drop_nulls(wit_style(m)))
        .ok()
        .unwrap_or_default();
    println!(
        "# {} ({}) from {}, built against contract {contract}\n{pretty}",
        m.name,
        m.id,
        path.display()
    );
}

/// What `plugins show` adds below the manifest: the endpoints and hosts in
/// effect with the config's overrides, as TOML comments.
fn print_effective(e: &crate::plugin::manifest::Effective, config: Option<&std::path::Path>) {
    match config {
        Some(f) => println!("# In effect with {}:", f.display()),
        None => println!("# In effect (no config file):"),
    }
    println!("# endpoints");
    for ep in &e.endpoints {
        let replaces = ep
            .replaces
            .as_deref()
            .map(|u| format!("; the manifest says {u}"))
            .unwrap_or_default();
        println!("#   {} = {}  ({}{replaces})", ep.name, ep.url, ep.from);
    }
    println!("# hosts it may call");
    for h in &e.hosts {
        println!("#   {}  ({})", h.host, h.from.join("; "));
    }
}

pub(crate) fn print_problems(
    file: &std::path::Path,
    problems: &[crate::publish::TargetProblem],
    json: bool,
) -> anyhow::Result<i32> {
    if json {
        print_json(&serde_json::json!({ "problems": problems }))?;
    } else {
        eprintln!("{}: nothing was published:", file.display());
        for p in problems {
            eprintln!("  {}: {}: {}", p.target, p.field, p.message);
        }
    }
    Ok(EXIT_BAD_INPUT)
}

/// Print what `publish` did; the exit code says whether every target is
/// published (or queued).
pub(crate) fn print_report(
    report: &crate::publish::Report,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<i32> {
    if json {
        print_json(report)?;
    } else {
        if report.late {
            println!(
                "post `{}` was due at {} and is published late",
                report.post,
                report
                    .scheduled_at
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default()
            );
        }
        for r in &report.results {
            if dry_run {
                println!("{} would send:", r.target);
                let mut item = None;
                for q in &r.requests {
                    if item != Some(q.item) {
                        item = Some(q.item);
                        println!("  {}:", crate::publish::item_name(q.item as usize));
                    }
                    println!("    {} {}", q.method, q.url);
                    for (n, v) in &q.headers {
                        println!("      {n}: {v}");
                    }
                    if !q.body.is_empty() {
                        println!("      {}", q.body);
                    }
                    if let Some(note) = &q.note {
                        println!("      ({note})");
                    }
                }
                for n in &r.not_shown {
                    println!("  not shown: {n}");
                }
                if let Some(e) = &r.error {
                    println!("  error: {e}");
                }
            } else if r.state == "queued" {
                println!(
                    "{:<24} queued for {}",
                    r.target,
                    report
                        .scheduled_at
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_default()
                );
            } else if r.state == "processing" {
                println!(
                    "{:<24} accepted as {} {}— {}",
                    r.target,
                    r.post_id.as_deref().unwrap_or("?"),
                    r.url
                        .as_deref()
                        .map(|u| format!("{u} "))
                        .unwrap_or_default(),
                    r.error.as_deref().unwrap_or("")
                );
            } else if r.ok && r.handed_to_user && r.post_id.as_deref().is_none_or(str::is_empty) {
                println!(
                    "{:<24} handed to you — finish it at {}{}",
                    r.target,
                    r.url.as_deref().unwrap_or("?"),
                    r.error
                        .as_deref()
                        .map(|n| format!(" ({n})"))
                        .unwrap_or_default()
                );
            } else if r.ok {
                println!(
                    "{:<24} {} {} {}{}",
                    r.target,
                    if r.handed_to_user {
                        "handed to you — finish it at"
                    } else if r.already {
                        "already published"
                    } else {
                        "published"
                    },
                    r.post_id.as_deref().unwrap_or(""),
                    r.url.as_deref().unwrap_or(""),
                    if r.thread.is_empty() {
                        String::new()
                    } else {
                        format!(" (thread: {})", r.thread.join(", "))
                    }
                );
            } else {
                println!(
                    "{:<24} {} ({}) {}",
                    r.target,
                    r.state.to_uppercase(),
                    r.error_kind.as_deref().unwrap_or("error"),
                    r.error.as_deref().unwrap_or("")
                );
            }
        }
    }
    Ok(if report.results.iter().all(|r| r.ok) {
        0
    } else {
        EXIT_FAILED
    })
}

/// Print `v` as pretty JSON on standard output.
fn print_json(v: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn parse_settings(items: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for s in items {
        let Some((k, v)) = s.split_once('=') else {
            bail!("--set {s:?} must be NAME=VALUE");
        };
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(out)
}

/// Ask on the terminal which of `list` to connect: numbers separated by
/// commas or spaces, or `all`. Without a terminal, say how to name them.
fn choose_identities(list: &[crate::contract::wit::types::Identity]) -> anyhow::Result<Vec<usize>> {
    let shown: Vec<String> = list
        .iter()
        .map(|i| format!("{} ({}, {})", i.id, i.name, i.kind))
        .collect();
    if !std::io::stdin().is_terminal() {
        return Err(bad!(
            "this grant can act as several: {}; pick with --as ID (repeat for several)",
            shown.join(", ")
        ));
    }
    eprintln!("This grant can act as:");
    for (n, s) in shown.iter().enumerate() {
        let extra = &list[n].extra_scopes;
        eprintln!(
            "  {}. {s}{}",
            n + 1,
            if extra.is_empty() {
                String::new()
            } else {
                format!(" — needs {}", extra.join(", "))
            }
        );
    }
    eprint!("Connect which? (numbers, or `all`): ");
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the choice")?;
    let line = line.trim();
    if line.eq_ignore_ascii_case("all") {
        return Ok((0..list.len()).collect());
    }
    line.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| match s.parse::<usize>() {
            Ok(n) if (1..=list.len()).contains(&n) => Ok(n - 1),
            _ => Err(bad!("`{s}` is not one of 1 to {}", list.len())),
        })
        .collect()
}

/// Read a credential from standard input (piped) or a hidden prompt.
pub fn read_secret(what: &str) -> anyhow::Result<Secret> {
    let stdin = std::io::stdin();
    let value = if stdin.is_terminal() {
        rpassword::prompt_password(format!("paste {what} (input is hidden): "))
            .context("cannot read the credential from the terminal")?
    } else {
        let mut s = String::new();
        stdin
            .lock()
            .read_to_string(&mut s)
            .context("cannot read the credential from standard input")?;
        s
    };
    Ok(Secret::new(value.trim()))
}

/// Progress bars for the uploads of this process (bytes, rate, time left),
/// drawn on standard error while it lives.
struct UploadBars(tokio::task::JoinHandle<()>);

impl UploadBars {
    fn start(svc: std::sync::Arc<crate::services::Services>) -> Self {
        UploadBars(tokio::spawn(async move {
            let multi = indicatif::MultiProgress::new();
            let style = indicatif::ProgressStyle::with_template(
                "{msg:24} {bar:30} {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12} {eta:>4} left",
            )
            .expect("a valid template");
            let mut bars: std::collections::BTreeMap<(String, String), indicatif::ProgressBar> =
                Default::default();
            loop {
                let now: std::collections::BTreeMap<(String, String), (u64, u64)> = svc
                    .uploads
                    .lock()
                    .expect("uploads")
                    .iter()
                    .map(|(k, (u, total))| {
                        (
                            k.clone(),
                            (u.sent.load(std::sync::atomic::Ordering::Relaxed), *total),
                        )
                    })
                    .collect();
                for (key, (sent, total)) in &now {
                    let bar = bars.entry(key.clone()).or_insert_with(|| {
                        let b = multi.add(indicatif::ProgressBar::new(*total));
                        b.set_style(style.clone());
                        b.set_message(key.1.clone());
                        b
                    });
                    bar.set_position(*sent);
                }
                bars.retain(|key, bar| {
                    let running = now.contains_key(key);
                    if !running {
                        bar.finish_and_clear();
                    }
                    running
                });
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }))
    }
}

impl Drop for UploadBars {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `outreach init`: a starter config (never over an existing file), the
/// store's identity, and the next commands.
async fn init(config: Option<&std::path::Path>) -> anyhow::Result<i32> {
    let path = match config {
        Some(p) => p.to_path_buf(),
        None => crate::config::default_file().ok_or_else(|| {
            anyhow::anyhow!("this system has no config folder; pass --config PATH")
        })?,
    };
    if path.exists() || path.is_symlink() {
        eprintln!(
            "error: {} already exists; outreach init never replaces a config (edit it, or move it away first)",
            path.display()
        );
        return Ok(EXIT_BAD_INPUT);
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    }
    // Created, never truncated: a file that appears meanwhile is kept.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    std::io::Write::write_all(&mut f, crate::config::STARTER.as_bytes())?;
    drop(f);
    let cfg = Loaded::load(Some(&path))?;
    init_logging("warn", "human");
    let app = App::new(cfg).await?;
    app.store()?;
    let cfg = app.cfg();
    println!("wrote {}", path.display());
    println!(
        "the store's identity is {} — back it up: without it the accounts cannot be read",
        cfg.identity.display()
    );
    println!(
        "{} platforms are available (`outreach plugins` lists them). Next:",
        app.host.plugins().len()
    );
    println!(
        "  outreach accounts add discord          # paste a channel webhook URL (or: outreach connect mastodon --set instance=https://mastodon.social)"
    );
    println!(
        "  outreach publish hello.toml --check    # a post file: text = \"Hello\", to = [\"discord\"]"
    );
    println!(
        "  outreach daemon                        # keep tokens fresh and publish what lands in the posts folder"
    );
    Ok(0)
}

/// The platforms a command works on, when it is a few (`None`: load every
/// plugin). `publish` needs its posts' targets, `accounts add` and
/// `connect` their platform, `status` and `refresh` the platforms that
/// have accounts (the store's folders; no identity needed to see them).
fn needed_platforms(cmd: &Command, cfg: &Loaded) -> Option<Vec<String>> {
    let platform_of = |target: &str| target.split('/').next().unwrap_or("").to_string();
    let stored = || -> Option<Vec<String>> {
        // The folders of the files backend name the platforms with
        // accounts; a database is asked (no identity needed). A database
        // that cannot be asked loads none: opening the store says why.
        if cfg.config.store.backend == crate::config::StoreBackend::Postgres {
            return Some(crate::store::PgStore::platforms(&cfg.config.store).unwrap_or_default());
        }
        let mut ids: Vec<String> = std::fs::read_dir(&cfg.store_dir)
            .ok()?
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| !n.starts_with('.'))
            .collect();
        ids.sort();
        Some(ids)
    };
    let mut ids = match cmd {
        Command::Publish { files, .. } => {
            let mut ids = Vec::new();
            for f in files {
                // A file that cannot be read is reported by the command
                // itself, with every plugin loaded.
                let text = crate::config::read_regular_text(f).ok()?;
                let post: toml::Table = toml::from_str(&text).ok()?;
                for t in post.get("to")?.as_array()? {
                    ids.push(platform_of(t.as_str()?));
                }
            }
            ids
        }
        Command::Accounts {
            cmd: Some(AccountsCmd::Add { platform, .. }),
            ..
        }
        | Command::Connect { platform, .. } => vec![platform.clone()],
        Command::Status { .. }
        | Command::Accounts { cmd: None, .. }
        | Command::Refresh {
            target: None,
            watch: false,
        } => stored()?,
        Command::Refresh {
            target: Some(t),
            watch: false,
        } => vec![platform_of(t)],
        Command::Disconnect { id, .. } => vec![platform_of(id)],
        _ => return None,
    };
    ids.sort();
    ids.dedup();
    Some(ids)
}
