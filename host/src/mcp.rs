//! `outreach mcp`: the Model Context Protocol on standard input and output,
//! so that an agent (an MCP client) can see the platforms and accounts,
//! check and publish posts, and follow or cancel them.
//!
//! Owns, in this order: the seven tools and the schemas of their arguments;
//! the choice, call by call, between the running daemon (its control API,
//! as the CLI's read commands ask it) and the store and journal on this
//! machine; and turning every outcome into a tool result — a few lines for
//! people and the same data as structured JSON — or a tool error that says
//! what failed and what to do.
//!
//! Never: writes anything but protocol messages to standard output (the
//! transport; logs go to standard error); puts a secret in a result (each
//! is built from types that hold none: platform summaries, account
//! statuses, check and publish reports, journal rows); publishes by any
//! other path than [`crate::publish`] (one journal, exactly once); or
//! publishes a post here after the daemon took the request and its answer
//! was lost — the journal says what became of it (`list_posts`). The
//! protocol is rmcp's; nothing here writes JSON-RPC by hand.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::{ServerHandler, ServiceExt as _, tool, tool_handler, tool_router};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::app::App;
use crate::config::Loaded;
use crate::outbox::{Delivery, Outbox, PostRow, State};

/// What an agent reads when it connects.
const INSTRUCTIONS: &str = "outreach publishes posts to the user's social accounts. \
list_platforms gives each platform's rules (text limit and how it counts, media, threads, \
extra post fields); list_accounts gives the accounts a post can go to (`platform/account`) \
and whether their tokens work. Check a post with check_post before publish_post. \
publish_post publishes a post once: sending the same post again (the same `id`, or the same \
content without one) never publishes it twice. Times are RFC 3339.";

/// How many posts `list_posts` shows when not told.
const DEFAULT_POSTS: usize = 20;

/// Serve MCP on standard input and output until the client closes them.
/// A publish under way then is finished (and journaled) before returning.
pub async fn serve(cfg: Loaded) -> anyhow::Result<i32> {
    let server = Mcp::new(cfg);
    let tasks = server.tasks.clone();
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| anyhow::anyhow!("the MCP session did not start on standard input: {e}"))?;
    let reason = running
        .waiting()
        .await
        .context("the MCP session stopped abnormally")?;
    tracing::debug!(?reason, "the MCP session ended");
    tasks.close();
    tasks.wait().await;
    Ok(0)
}

/// The MCP server: the config, and what it loads when no daemon runs.
#[derive(Clone)]
pub struct Mcp {
    cfg: Arc<Loaded>,
    /// The plugins, store and journal of this machine, loaded on the first
    /// call that needs them without a daemon, then kept.
    local: Arc<tokio::sync::OnceCell<Arc<App>>>,
    /// Publishes run here, so that a client that cancels the call or goes
    /// away does not cut a delivery short.
    tasks: tokio_util::task::TaskTracker,
    tool_router: ToolRouter<Mcp>,
}

/// A post, with the fields of a post file (see the README, "Post files").
#[derive(Debug, Deserialize, Serialize, rmcp::schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
struct PostArgs {
    /// A stable id for the post. The same id is never published twice;
    /// without one the post is known by its content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    /// The text. Each platform's limit and how it counts: list_platforms.
    #[schemars(required)]
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    /// Targets: `x` (its `default` account), `mastodon/social` (one
    /// account), `mastodon/*` (every account of the platform).
    #[schemars(required)]
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<Vec<String>>,
    /// A title, for platforms that have them (DEV, Reddit, Medium, Hacker
    /// News, YouTube).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    title: Option<String>,
    /// A link, for platforms that post one beside the text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    link: Option<String>,
    /// When to publish, as an RFC 3339 instant (`2026-05-01T09:00:00Z`);
    /// without it, now. A scheduled post goes out from the daemon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    schedule: Option<String>,
    /// Attachments: files in the posts folder (`paths.posts`) or the media
    /// folder (`paths.media`) of outreach's config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media: Option<Vec<MediaArgs>>,
    /// Follow-up posts, published in order as replies (platforms with
    /// threads only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    thread: Option<Vec<ThreadArgs>>,
    /// Per platform: `{"x": {"text": "…"}, "reddit": {"subreddit": "rust"}}`.
    /// `text`, `title` and `link` replace the post's; other keys are the
    /// platform's post fields (list_platforms).
    #[serde(default, rename = "override", skip_serializing_if = "Option::is_none")]
    overrides: Option<BTreeMap<String, Map<String, Value>>>,
    /// Anything else goes on to the post's own check, which names a field
    /// a post does not have.
    #[serde(flatten)]
    #[schemars(skip)]
    rest: Map<String, Value>,
}

/// One attachment.
#[derive(Debug, Deserialize, Serialize, rmcp::schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
struct MediaArgs {
    /// The file, relative to the posts folder.
    #[schemars(required)]
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    /// Alternative text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    alt: Option<String>,
    /// Where platforms that fetch media themselves (Instagram, Threads)
    /// find the file (https).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    public_url: Option<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    rest: Map<String, Value>,
}

/// One follow-up of a thread.
#[derive(Debug, Deserialize, Serialize, rmcp::schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
struct ThreadArgs {
    #[schemars(required)]
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    /// Per platform, as the post's `override`.
    #[serde(default, rename = "override", skip_serializing_if = "Option::is_none")]
    overrides: Option<BTreeMap<String, Map<String, Value>>>,
    #[serde(flatten)]
    #[schemars(skip)]
    rest: Map<String, Value>,
}

#[derive(Debug, Deserialize, rmcp::schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
struct PublishArgs {
    #[serde(flatten)]
    post: PostArgs,
    /// The post (by `id`) went out before with other content: publish this
    /// content as a new post (as `outreach publish --new`).
    #[serde(default)]
    new: bool,
}

#[derive(Debug, Deserialize, rmcp::schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
struct PostId {
    /// The post's id, as list_posts shows it.
    id: String,
}

#[derive(Debug, Deserialize, rmcp::schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
struct ListPosts {
    /// How many posts, newest first (default 20).
    #[serde(default)]
    limit: Option<usize>,
}

#[tool_router]
impl Mcp {
    fn new(cfg: Loaded) -> Self {
        Mcp {
            cfg: Arc::new(cfg),
            local: Arc::default(),
            tasks: tokio_util::task::TaskTracker::new(),
            tool_router: Self::tool_router(),
        }
    }

    #[tool(
        description = "The platforms outreach can post to, each with its rules: the text limit and how it counts, title, media and thread rules, the platform's own post fields (for `override`), rate limits, and hosts awaiting the user's approval.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn list_platforms(&self) -> CallToolResult {
        outcome("list_platforms", self.platforms().await)
    }

    #[tool(
        description = "The connected accounts (`platform/account`, the targets of a post) and the health of each one's token: valid, expiry, refresh, the last error, and the last post. Never shows a credential.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn list_accounts(&self) -> CallToolResult {
        outcome("list_accounts", self.accounts().await)
    }

    #[tool(
        description = "Check a post against every target without sending anything, as `outreach publish --check`: every problem at once (text too long for a platform, a missing title, media a platform refuses, a target with no account…).",
        annotations(read_only_hint = true, open_world_hint = true)
    )]
    async fn check_post(&self, Parameters(post): Parameters<PostArgs>) -> CallToolResult {
        outcome("check_post", self.check(post).await)
    }

    #[tool(
        description = "Publish a post to its targets now, or schedule it (`schedule`). Exactly once: the same post (same `id`, or same content without one) sent again is not published again. Answers each target's outcome with the published post's id and URL.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = true
        )
    )]
    async fn publish_post(&self, Parameters(args): Parameters<PublishArgs>) -> CallToolResult {
        outcome("publish_post", self.publish(args).await)
    }

    #[tool(
        description = "The posts in outreach's journal, newest first, each with its deliveries: target, state (queued, published, failed, unknown, cancelled, processing), URL or error.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn list_posts(&self, Parameters(args): Parameters<ListPosts>) -> CallToolResult {
        outcome("list_posts", self.posts(args.limit).await)
    }

    #[tool(
        description = "One post: every delivery and every attempt at it, with times, ids, URLs and errors.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn show_post(&self, Parameters(PostId { id }): Parameters<PostId>) -> CallToolResult {
        outcome("show_post", self.show(&id).await)
    }

    #[tool(
        description = "Stop a post from going out where it has not yet (a scheduled post, or targets still pending). What was published stays published. It stays cancelled when sent again; `outreach posts retry ID` sends it.",
        annotations(
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn cancel_post(&self, Parameters(PostId { id }): Parameters<PostId>) -> CallToolResult {
        outcome("cancel_post", self.cancel(&id).await)
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Mcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("outreach", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }
}

/// A tool's answer: a result, or a failure said for the agent.
type Answer = anyhow::Result<CallToolResult>;

/// A failure becomes a tool error naming the tool; its message already
/// says what to do where there is something to do.
fn outcome(tool: &str, answer: Answer) -> CallToolResult {
    answer.unwrap_or_else(|e| {
        tracing::warn!("{tool}: {e:#}");
        CallToolResult::error(vec![ContentBlock::text(format!("{tool} failed: {e:#}"))])
    })
}

/// A result: `summary` for people first, then `data` as JSON text and as
/// structured content.
fn result(summary: String, data: Value, error: bool) -> CallToolResult {
    let mut r = if error {
        CallToolResult::structured_error(data)
    } else {
        CallToolResult::structured(data)
    };
    r.content.insert(0, ContentBlock::text(summary));
    r
}

impl Mcp {
    /// The plugins, store and journal of this machine (loaded once).
    async fn app(&self) -> anyhow::Result<Arc<App>> {
        let app = self
            .local
            .get_or_try_init(|| async { App::new((*self.cfg).clone()).await.map(Arc::new) })
            .await
            .with_context(|| {
                format!(
                    "the daemon did not serve this, and the platforms could not be loaded here (plugins folder {}); check the config, or start `outreach daemon`",
                    self.cfg.plugins_dir.display()
                )
            })?;
        Ok(app.clone())
    }

    /// `GET path` from the daemon if one runs; `None` when none does or it
    /// did not answer (then the caller reads this machine's store).
    async fn daemon_get(&self, path: &str) -> anyhow::Result<Option<(u16, Value)>> {
        let Some(link) = Link::find(&self.cfg) else {
            return Ok(None);
        };
        match link.call("GET", path, None).await {
            Ok(answer) => Ok(Some(answer)),
            Err(down) => {
                tracing::warn!("{}; reading the store directly", down.message);
                Ok(None)
            }
        }
    }

    async fn platforms(&self) -> Answer {
        let (v, note) = match self.daemon_get("/platforms").await? {
            Some((200, v)) => (v, None),
            Some((code, v)) => anyhow::bail!("{}", daemon_error(code, &v)),
            None => {
                let app = self.app().await?;
                tokio::task::spawn_blocking(move || -> anyhow::Result<(Value, Option<String>)> {
                    let mut p = crate::plugin::manifest::Platforms::of(&app.host, &app.cfg());
                    // What awaits approval is kept with the accounts.
                    let note = if app.cfg().store_dir.exists() {
                        crate::accounts::with_approvals(&app, &mut p)
                            .err()
                            .map(|e| format!("hosts awaiting approval are not shown: {e:#}"))
                    } else {
                        None
                    };
                    Ok((serde_json::to_value(&p)?, note))
                })
                .await??
            }
        };
        Ok(platforms_result(&v, note))
    }

    async fn accounts(&self) -> Answer {
        let v = match self.daemon_get("/accounts").await? {
            Some((200, v)) => v,
            Some((code, v)) => anyhow::bail!("{}", daemon_error(code, &v)),
            None => {
                let app = self.app().await?;
                let list =
                    tokio::task::spawn_blocking(move || crate::accounts::statuses(&app)).await??;
                serde_json::to_value(list)?
            }
        };
        let list: Vec<crate::accounts::AccountStatus> =
            serde_json::from_value(v).context("the daemon's list of accounts did not parse")?;
        Ok(accounts_result(&list))
    }

    async fn check(&self, args: PostArgs) -> Answer {
        let post = serde_json::to_value(&args)?;
        if let Some(link) = Link::find(&self.cfg) {
            match link.call("POST", "/publish?check=true", Some(&post)).await {
                Ok((200 | 502, v)) => return Ok(check_result(Ok(&v["results"]))),
                Ok((422, v)) => return Ok(check_result(Err(&v["problems"]))),
                Ok((code, v)) => anyhow::bail!("{}", daemon_error(code, &v)),
                // Checking sends nothing: it is as good done here.
                Err(down) => tracing::warn!("{}; checking here", down.message),
            }
        }
        let app = self.app().await?;
        let base = app.cfg().posts_dir.clone();
        let checked = crate::publish::check_json(&app, &post, base.as_deref()).await?;
        Ok(match checked {
            Ok(rows) => check_result(Ok(&serde_json::to_value(rows)?)),
            Err(problems) => check_result(Err(&serde_json::to_value(problems)?)),
        })
    }

    async fn publish(&self, args: PublishArgs) -> Answer {
        let post = serde_json::to_value(&args.post)?;
        if let Some(link) = Link::find(&self.cfg) {
            let path = if args.new {
                "/publish?new=true"
            } else {
                "/publish"
            };
            match link.call("POST", path, Some(&post)).await {
                Ok((200 | 502, v)) => return Ok(report_result(&v, true)),
                Ok((422, v)) => return Ok(problems_result(&v["problems"])),
                Ok((code, v)) => anyhow::bail!("{}", daemon_error(code, &v)),
                Err(down) if down.sent => anyhow::bail!(
                    "{}; it may have taken the post: list_posts shows whether it did. Publishing the same post again never sends it twice",
                    down.message
                ),
                // Nothing reached it: this machine publishes, on the same journal.
                Err(down) => tracing::warn!("{}; publishing here", down.message),
            }
        }
        let app = self.app().await?;
        let base = app.cfg().posts_dir.clone();
        let opts = crate::publish::Options {
            dry_run: false,
            new: args.new,
        };
        // Spawned, so that it runs to its end whatever the client does.
        let job = self.tasks.spawn(async move {
            crate::publish::publish_json(app.services(), &post, base.as_deref(), opts).await
        });
        let published = job
            .await
            .context("the publish stopped before it finished; list_posts shows where it got")??;
        Ok(match published {
            Ok(report) => report_result(&serde_json::to_value(report)?, false),
            Err(problems) => problems_result(&serde_json::to_value(problems)?),
        })
    }

    async fn posts(&self, limit: Option<usize>) -> Answer {
        let v = match self.daemon_get("/posts").await? {
            Some((200, v)) => v,
            Some((code, v)) => anyhow::bail!("{}", daemon_error(code, &v)),
            None => {
                let (store, path) = (self.cfg.config.store.clone(), self.cfg.outbox.clone());
                tokio::task::spawn_blocking(move || -> anyhow::Result<Value> {
                    let outbox = Outbox::for_store(&store, &path)?;
                    outbox.settle_interrupted()?;
                    crate::publish::journal::list(&Mutex::new(outbox))
                })
                .await??
            }
        };
        Ok(posts_result(v, limit.unwrap_or(DEFAULT_POSTS))?)
    }

    async fn show(&self, id: &str) -> Answer {
        let path = format!("/posts/{}", encode(id));
        let v = match self.daemon_get(&path).await? {
            Some((200, v)) => v,
            Some((404, _)) => anyhow::bail!("{}", no_post(id)),
            Some((code, v)) => anyhow::bail!("{}", daemon_error(code, &v)),
            None => {
                let (store, path) = (self.cfg.config.store.clone(), self.cfg.outbox.clone());
                let id = id.to_string();
                tokio::task::spawn_blocking(move || -> anyhow::Result<Value> {
                    let outbox = Outbox::for_store(&store, &path)?;
                    let Some(post) = outbox.post(&id)? else {
                        anyhow::bail!("{}", no_post(&id));
                    };
                    Ok(json!({
                        "post": post,
                        "deliveries": outbox.deliveries(&id)?,
                        "attempts": outbox.attempts(&id)?,
                    }))
                })
                .await??
            }
        };
        show_result(v)
    }

    /// As `outreach posts cancel`, on the journal itself (the daemon reads
    /// the same journal before it sends anything).
    async fn cancel(&self, id: &str) -> Answer {
        let (store, path) = (self.cfg.config.store.clone(), self.cfg.outbox.clone());
        let id = id.to_string();
        tokio::task::spawn_blocking(move || -> Answer {
            let outbox = Outbox::for_store(&store, &path)?;
            if outbox.post(&id)?.is_none() {
                anyhow::bail!("{}", no_post(&id));
            }
            let n = outbox.cancel(&id)?;
            let summary = if n == 0 {
                format!(
                    "nothing of `{id}` was waiting to go out; what was published, failed or cancelled is left as it is"
                )
            } else {
                format!(
                    "cancelled {n} pending deliveries of `{id}`; `outreach posts retry {id}` would send them"
                )
            };
            Ok(result(summary, json!({ "post": id, "cancelled": n }), false))
        })
        .await?
    }
}

fn no_post(id: &str) -> String {
    format!("there is no post `{id}`; list_posts lists them")
}

/// A path segment with everything but letters and digits escaped (post
/// ids are often file paths).
fn encode(id: &str) -> String {
    percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// What the daemon said when it refused.
fn daemon_error(code: u16, v: &Value) -> String {
    let said = v["error"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string());
    format!("the daemon answered {code}: {said}")
}

/// The running daemon's control API.
struct Link {
    base: String,
    token: String,
    http: reqwest::Client,
}

/// The daemon did not answer.
struct Down {
    message: String,
    /// The request may have reached it.
    sent: bool,
}

impl Link {
    /// The daemon on this config's store, if one runs: the CLI's test (its
    /// state file, and its lock held), then its address and token.
    fn find(cfg: &Loaded) -> Option<Link> {
        crate::daemon::client::Client::find(cfg)?;
        let text = std::fs::read_to_string(crate::daemon::state_path(cfg)).ok()?;
        let state: crate::daemon::StateFile = serde_json::from_str(&text).ok()?;
        let token = std::fs::read_to_string(&state.token_file).ok()?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .ok()?;
        Some(Link {
            base: format!("http://{}", state.address),
            token: token.trim().to_string(),
            http,
        })
    }

    /// One request with the daemon's token: its status and JSON body. A
    /// read gives up after 30 seconds; a publish takes as long as it takes.
    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), Down> {
        let url = format!("{}{path}", self.base);
        let mut req = match method {
            "POST" => self.http.post(&url),
            _ => self.http.get(&url).timeout(Duration::from_secs(30)),
        }
        .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let down = |e: reqwest::Error| Down {
            message: format!("the daemon at {} did not answer: {e}", self.base),
            sent: !e.is_connect(),
        };
        let r = req.send().await.map_err(down)?;
        let code = r.status().as_u16();
        let bytes = r.bytes().await.map_err(down)?;
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok((code, v))
    }
}

/// `list_platforms`: for each plugin what a post must follow.
fn platforms_result(v: &Value, note: Option<String>) -> CallToolResult {
    let empty = Vec::new();
    let mut summary = String::new();
    let mut platforms = Vec::new();
    for p in v["plugins"].as_array().unwrap_or(&empty) {
        let manifest = &p["manifest"];
        let content = &manifest["content"];
        let post_fields = &manifest["post_fields"];
        let fields: Vec<String> = post_fields
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .filter_map(|f| {
                let name = f["name"].as_str()?;
                Some(if f["required"] == true {
                    format!("{name} (required)")
                } else {
                    name.to_string()
                })
            })
            .collect();
        let limit = match p["max_length"].as_u64() {
            Some(0) | None => "no text limit".to_string(),
            Some(n) => format!("text up to {n} ({})", p["counting"].as_str().unwrap_or("")),
        };
        let _ = writeln!(
            summary,
            "{} — {} {}: {limit}{}{}{}",
            p["id"].as_str().unwrap_or("?"),
            p["name"].as_str().unwrap_or("?"),
            p["version"].as_str().unwrap_or(""),
            if content["threads"] == true {
                "; threads"
            } else {
                ""
            },
            if content["title_required"] == true {
                "; a title is required"
            } else {
                ""
            },
            if fields.is_empty() {
                String::new()
            } else {
                format!("; post fields: {}", fields.join(", "))
            }
        );
        platforms.push(json!({
            "id": p["id"],
            "name": p["name"],
            "version": p["version"],
            "source": p["source"],
            "auth": p["auth"],
            "max_length": p["max_length"],
            "counting": p["counting"],
            "content": content,
            "post_fields": post_fields,
            "rate_limits": p["rate_limits"],
            "awaiting_approval": p["awaiting_approval"],
            "awaiting_accounts": p["awaiting_accounts"],
        }));
    }
    if platforms.is_empty() {
        summary.push_str("no platforms are loaded\n");
    }
    let rejected = v["rejected"].clone();
    for r in rejected.as_array().unwrap_or(&empty) {
        let _ = writeln!(
            summary,
            "not loaded: {}: {}",
            r["path"].as_str().unwrap_or("?"),
            r["error"].as_str().unwrap_or("")
        );
    }
    if let Some(n) = &note {
        let _ = writeln!(summary, "{n}");
    }
    result(
        summary,
        json!({ "platforms": platforms, "rejected": rejected, "note": note }),
        false,
    )
}

/// `list_accounts`: each account and its token's health.
fn accounts_result(list: &[crate::accounts::AccountStatus]) -> CallToolResult {
    let mut summary = String::new();
    if list.is_empty() {
        summary.push_str(
            "no accounts; the user adds one with `outreach connect PLATFORM` or `outreach accounts add PLATFORM`\n",
        );
    }
    for a in list {
        let who = a
            .profile_name
            .as_deref()
            .map(|n| format!(" as {n}"))
            .unwrap_or_default();
        let mut line = format!(
            "{}{who}: {}",
            a.summary.id,
            if a.connected {
                "connected"
            } else {
                "NOT connected"
            }
        );
        if let Some(h) = &a.token_health {
            match h.expires_in {
                Some(s) if s < 0 => line.push_str("; the token has expired"),
                Some(s) => {
                    let _ = write!(line, "; the token expires in {}", human_secs(s));
                }
                None => line.push_str("; the token does not expire"),
            }
            if let Some(e) = &h.error {
                let _ = write!(line, "; last error: {e}");
            }
        }
        if a.plugin_missing {
            line.push_str("; no loaded plugin provides this platform");
        }
        if let Some(e) = &a.summary.error {
            let _ = write!(line, "; {e}");
        }
        summary.push_str(&line);
        summary.push('\n');
    }
    result(summary, json!({ "accounts": list }), false)
}

fn human_secs(s: i64) -> String {
    match s {
        s if s >= 2 * 86_400 => format!("{} days", s / 86_400),
        s if s >= 2 * 3_600 => format!("{} hours", s / 3_600),
        s if s >= 120 => format!("{} minutes", s / 60),
        s => format!("{s} seconds"),
    }
}

/// `check_post`: the rows of a check, or its problems.
fn check_result(checked: Result<&Value, &Value>) -> CallToolResult {
    match checked {
        Err(problems) => {
            let mut summary =
                "the post does not validate; publishing it would send nothing:\n".to_string();
            summary.push_str(&problem_lines(problems));
            result(summary, json!({ "ok": false, "problems": problems }), false)
        }
        Ok(rows) => {
            let empty = Vec::new();
            let rows_list = rows.as_array().unwrap_or(&empty);
            let ok = rows_list.iter().all(|r| r["ok"] == true);
            let mut summary = if ok {
                "the post validates for every target:\n".to_string()
            } else {
                "the post validates, but not every target can take it:\n".to_string()
            };
            for r in rows_list {
                let _ = writeln!(
                    summary,
                    "  {}: {}",
                    r["target"].as_str().unwrap_or("?"),
                    match r["error"].as_str() {
                        Some(e) => format!("FAILED {e}"),
                        None => "ok".into(),
                    }
                );
            }
            result(summary, json!({ "ok": ok, "results": rows }), false)
        }
    }
}

fn problem_lines(problems: &Value) -> String {
    let mut out = String::new();
    for p in problems.as_array().map(Vec::as_slice).unwrap_or_default() {
        let _ = writeln!(
            out,
            "  {}: {}: {}",
            p["target"].as_str().unwrap_or("?"),
            p["field"].as_str().unwrap_or("?"),
            p["message"].as_str().unwrap_or("")
        );
    }
    out
}

/// `publish_post` stopped before anything was sent.
fn problems_result(problems: &Value) -> CallToolResult {
    let mut summary = "nothing was published; the post does not validate:\n".to_string();
    summary.push_str(&problem_lines(problems));
    summary.push_str("Fix these (check_post checks without sending) and publish again.\n");
    result(summary, json!({ "problems": problems }), true)
}

/// `publish_post`: each target's outcome. A tool error when a target
/// failed, so that the agent does not take it for done.
fn report_result(report: &Value, daemon: bool) -> CallToolResult {
    let empty = Vec::new();
    let results = report["results"].as_array().unwrap_or(&empty);
    let post = report["post"].as_str().unwrap_or("?");
    let at = report["scheduled_at"].as_str().unwrap_or("its time");
    let mut summary = format!("post `{post}`:\n");
    if report["late"] == true {
        let _ = writeln!(summary, "  it was due at {at} and is published late");
    }
    let (mut queued, mut failed, mut unknown) = (false, false, false);
    for r in results {
        let target = r["target"].as_str().unwrap_or("?");
        let id = r["post_id"].as_str().unwrap_or("");
        let url = r["url"].as_str().unwrap_or("");
        let note = r["error"].as_str().unwrap_or("");
        let state = r["state"].as_str().unwrap_or("");
        let line = if state == "queued" {
            queued = true;
            format!("queued for {at}")
        } else if state == "processing" {
            format!("accepted as {id} {url}, still processing: {note}")
        } else if r["ok"] == true && r["handed_to_user"] == true {
            format!("handed to the user, who finishes it at {url} {note}")
        } else if r["ok"] == true {
            let word = if r["already"] == true {
                "already published (nothing sent now)"
            } else {
                "published"
            };
            format!("{word} {id} {url}")
        } else {
            failed = true;
            unknown |= state == "unknown";
            format!(
                "{} ({}): {note}",
                state.to_uppercase(),
                r["error_kind"].as_str().unwrap_or("error")
            )
        };
        let _ = writeln!(summary, "  {target}: {}", line.trim_end());
    }
    if queued && !daemon {
        summary.push_str(
            "No daemon runs on this store now: a scheduled post goes out once `outreach daemon` runs (or `outreach posts due`, from cron).\n",
        );
    }
    if failed {
        let _ = writeln!(
            summary,
            "What failed is not sent again on its own: once the error is dealt with, `outreach posts retry {post}` sends it."
        );
    }
    if unknown {
        summary.push_str(
            "An unknown outcome may have gone out: look at the account before retrying (`outreach posts retry ID --force`).\n",
        );
    }
    result(summary, report.clone(), failed)
}

/// `list_posts`: the newest `limit` posts.
fn posts_result(v: Value, limit: usize) -> anyhow::Result<CallToolResult> {
    #[derive(Deserialize)]
    struct Entry {
        post: PostRow,
        deliveries: Vec<Delivery>,
    }
    let all: Vec<Value> = match v {
        Value::Array(a) => a,
        other => anyhow::bail!("the list of posts did not parse: {other}"),
    };
    let total = all.len();
    let shown: Vec<Value> = all.into_iter().take(limit).collect();
    let mut summary = String::new();
    if total == 0 {
        summary.push_str("no posts yet\n");
    } else if total > shown.len() {
        let _ = writeln!(summary, "the newest {} of {total} posts:", shown.len());
    }
    for e in &shown {
        let Entry { post, deliveries } =
            serde_json::from_value(e.clone()).context("the list of posts did not parse")?;
        let when = match post.scheduled_at {
            Some(t) => format!("scheduled {}", t.to_rfc3339()),
            None => format!("created {}", post.created_at.to_rfc3339()),
        };
        let _ = writeln!(summary, "{} ({when})", post.id);
        for d in deliveries.iter().filter(|d| d.index == 0) {
            let thread = deliveries
                .iter()
                .filter(|t| t.target == d.target && t.index > 0)
                .count();
            let _ = writeln!(
                summary,
                "  {}: {} {}{}",
                d.target,
                d.state,
                delivery_detail(d),
                if thread > 0 {
                    format!(" (+{thread} in thread)")
                } else {
                    String::new()
                }
            );
        }
    }
    Ok(result(
        summary,
        json!({ "posts": shown, "total": total }),
        false,
    ))
}

fn delivery_detail(d: &Delivery) -> String {
    let detail = match d.state {
        State::Published => d.url.clone().or(d.platform_id.clone()),
        _ => d.error.clone(),
    };
    detail.unwrap_or_default()
}

/// `show_post`: a post's deliveries and attempts.
fn show_result(v: Value) -> Answer {
    let post: PostRow =
        serde_json::from_value(v["post"].clone()).context("the post did not parse")?;
    let deliveries: Vec<Delivery> = serde_json::from_value(v["deliveries"].clone())
        .context("the post's deliveries did not parse")?;
    let mut summary = format!("{} from {}\n", post.id, post.path);
    if let Some(t) = post.scheduled_at {
        let _ = writeln!(summary, "scheduled for {}", t.to_rfc3339());
    }
    for d in &deliveries {
        let item = if d.index > 0 {
            format!(" thread[{}]", d.index - 1)
        } else {
            String::new()
        };
        let _ = writeln!(
            summary,
            "  {}{item}: {} {}",
            d.target,
            d.state,
            d.url
                .clone()
                .or(d.platform_id.clone())
                .or(d.error.clone())
                .unwrap_or_default()
        );
    }
    Ok(result(summary, v, false))
}
