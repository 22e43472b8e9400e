//! The daemon's configuration file (TOML).
//!
//! Owns: parsing and checking the config, resolving its paths (relative to
//! the config file, `~` expanded, XDG defaults), and per-platform settings
//! such as endpoint overrides. Unknown keys are errors that name the key and
//! line, so a typo never silently does nothing.
//!
//! Never: keeps secrets in the file. OAuth client secrets are named here
//! only as environment variables (`client_secret_env`), never as values;
//! [`client_for`] reads them from the environment when a flow needs them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub paths: Paths,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub http: Http,
    /// Per-platform settings, keyed by plugin id.
    #[serde(default)]
    pub platforms: BTreeMap<String, PlatformConfig>,
    #[serde(default)]
    pub auth: Auth,
    #[serde(default)]
    pub notify: Notify,
    #[serde(default)]
    pub publish: Publish,
    #[serde(default)]
    pub daemon: Daemon,
    #[serde(default)]
    pub media: MediaServing,
    #[serde(default)]
    pub plugins: PluginsConfig,
    #[serde(default)]
    pub store: StoreConfig,
}

/// Where credentials are kept: `[store]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `files` (one age file per account under `paths.store`, the
    /// default) or `postgres` (age-encrypted rows in a PostgreSQL
    /// database several daemons can share).
    pub backend: StoreBackend,
    /// The name of the environment variable that holds the PostgreSQL
    /// connection URL (`postgres://user:password@host/db?sslmode=verify-full`).
    /// The URL itself is never read from this file: it holds a password.
    pub url_env: String,
    /// Connections the store keeps open to the server (1-100).
    pub pool_size: u32,
    /// How long an unreachable server is waited for, retrying with backoff,
    /// before an operation fails (1-600 seconds).
    pub connect_retry_secs: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: StoreBackend::Files,
            url_env: "OUTREACH_DATABASE_URL".into(),
            pool_size: 8,
            connect_retry_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    #[default]
    Files,
    Postgres,
}

/// Which platform plugins load.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginsConfig {
    /// Load the plugins built into the binary (a plugin in the plugins
    /// folder with the same id takes a built-in one's place).
    pub built_in: bool,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        PluginsConfig { built_in: true }
    }
}

/// Serving attachments to platforms that fetch media themselves
/// (Instagram, Threads): on a listener of its own, under a public address a
/// reverse proxy or tunnel points at it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaServing {
    /// The public address that reaches `listen` (`https://media.example.org`
    /// or a path below it). Unset: attachments such platforms need must
    /// carry `public_url` in the post file.
    pub public_base_url: Option<String>,
    /// Where the media listener binds; only attachment paths answer there,
    /// never the control API.
    pub listen: String,
    /// How long a served attachment's address works at most; it is also
    /// removed as soon as its delivery settles.
    pub ttl_secs: u64,
}

impl Default for MediaServing {
    fn default() -> Self {
        MediaServing {
            public_base_url: None,
            listen: "127.0.0.1:8718".into(),
            ttl_secs: 3600,
        }
    }
}

/// `outreach daemon`: the control API, shutdown and logging.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Daemon {
    /// Address of the control API. Loopback only unless `allow_remote`.
    pub listen: String,
    /// Bind `listen` even if it is not a loopback address (put TLS and a
    /// firewall in front of it).
    pub allow_remote: bool,
    /// The https address a proxy in front of the daemon serves it at
    /// (`https://outreach.example.org`): the web UI answers to it as well
    /// as to the listen address, and its session cookie is `Secure`.
    pub public_url: Option<String>,
    /// How long a web UI sign-in link (`outreach ui`) works.
    pub signin_link_secs: u64,
    /// The control API's bearer token, generated on first start (0600);
    /// default `daemon.token` beside the config file.
    pub token_file: Option<PathBuf>,
    /// On SIGTERM/SIGINT, how long in-flight publishes and refreshes may
    /// take to finish.
    pub grace_secs: u64,
    /// Log level when RUST_LOG is not set (`error` … `trace`, or a filter
    /// such as `outreach=debug`).
    pub log_level: String,
    /// `human` or `json`.
    pub log_format: String,
    /// Quiet period before a changed plugin, post or config file is read.
    pub debounce_ms: u64,
    /// How often due posts are checked when nothing wakes the daemon.
    pub due_check_secs: u64,
}

impl Default for Daemon {
    fn default() -> Self {
        Daemon {
            listen: "127.0.0.1:8717".into(),
            allow_remote: false,
            public_url: None,
            signin_link_secs: 120,
            token_file: None,
            grace_secs: 30,
            log_level: "info".into(),
            log_format: "human".into(),
            debounce_ms: 50,
            due_check_secs: 30,
        }
    }
}

/// Publishing and the outbox.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Publish {
    /// Requests to one platform in flight at once.
    pub per_platform: u32,
    /// A 429 asking to wait up to this long is waited out (that target
    /// only); a longer wait fails the target: the next `publish` of the
    /// post (or the daemon's next due check) tries it again, up to three
    /// automatic attempts in all, then `outreach posts retry`.
    pub max_rate_limit_wait_secs: u64,
    /// Sends that failed before reaching the platform are retried this many
    /// times, with backoff.
    pub retries: u32,
    /// A scheduled post published this long after its time is reported late.
    pub late_after_secs: u64,
    /// A post the platform accepted but is still processing (TikTok
    /// moderation, Reddit media) is asked about for this long by the
    /// `publish` that sent it; then it stays `processing` in the journal
    /// and the daemon keeps asking (for up to a week).
    pub pending_wait_secs: u64,
    /// How long the daemon keeps asking about a post that is processing
    /// or handed to you (a Hacker News submit page) before it reports it
    /// `unknown`.
    pub processing_limit_hours: u64,
}

impl Default for Publish {
    fn default() -> Self {
        Publish {
            per_platform: 4,
            max_rate_limit_wait_secs: 120,
            retries: 3,
            late_after_secs: 60,
            pending_wait_secs: 60,
            processing_limit_hours: 168,
        }
    }
}

/// Connect flows and the refresh scheduler.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    /// Port of the loopback redirect listener; 0 picks a free one (a
    /// Mastodon app registered once per instance serves any port: loopback
    /// redirects match whatever their port).
    pub redirect_port: u16,
    /// How long `connect` waits for the browser to come back.
    pub connect_timeout_secs: u64,
    /// Refresh when this fraction of a token's lifetime has passed.
    pub refresh_at: f64,
    /// Random spread added to each scheduled refresh, as a fraction of the
    /// lifetime, so many accounts do not refresh in the same second.
    pub jitter: f64,
    /// First retry delay after a transient refresh failure; doubles per
    /// failure up to `max_backoff_secs`.
    pub min_backoff_secs: u64,
    pub max_backoff_secs: u64,
    /// Warn this long before a token that cannot be refreshed expires.
    pub warn_before_secs: u64,
    /// Serve the loopback redirect over https for every platform (see
    /// `platforms.ID.redirect_tls`).
    pub redirect_tls: bool,
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            redirect_port: 0,
            connect_timeout_secs: 300,
            refresh_at: 0.8,
            jitter: 0.05,
            min_backoff_secs: 30,
            max_backoff_secs: 3600,
            warn_before_secs: 7 * 86_400,
            redirect_tls: false,
        }
    }
}

/// Where account state changes are announced (besides the log).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    /// A command run through `sh -c` with OUTREACH_ACCOUNT, OUTREACH_STATE,
    /// OUTREACH_PREVIOUS_STATE and OUTREACH_MESSAGE in its environment.
    pub command: Option<String>,
    /// A URL that receives a JSON POST per state change.
    pub webhook: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Paths {
    /// Folder of platform plugins (`*.wasm`).
    pub plugins: Option<PathBuf>,
    /// Folder of encrypted account records.
    pub store: Option<PathBuf>,
    /// The age identity that decrypts the store.
    pub identity: Option<PathBuf>,
    /// The age plugin identities (`AGE-PLUGIN-…`, a hardware key's stub)
    /// that unwrap the identity file when it is wrapped to a plugin's key;
    /// defaults to `identity-plugin.txt` beside the identity file.
    pub identity_plugin: Option<PathBuf>,
    /// Compiled-plugin cache.
    pub cache: Option<PathBuf>,
    /// The publishing journal (SQLite); defaults to `outbox.sqlite` beside
    /// the store.
    pub outbox: Option<PathBuf>,
    /// Folder the daemon watches for post files (`*.toml`).
    pub posts: Option<PathBuf>,
    /// A folder media may also come from, besides the post file's own
    /// folder (and, for the control API, the posts folder).
    pub media: Option<PathBuf>,
    /// Where the web UI's composer saves drafts (post files the daemon
    /// does not watch); default `drafts` beside the store.
    pub drafts: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Wall-clock budget of one plugin call that does no network I/O
    /// (`describe`, `validate`).
    pub call_timeout_ms: u64,
    /// Wall-clock budget of a `publish` or `profile` call, including every
    /// request and poll it makes.
    pub publish_timeout_ms: u64,
    /// Memory cap per plugin instance.
    pub memory_mib: u64,
    /// Timeout of one HTTP request made for a plugin.
    pub http_timeout_ms: u64,
    /// Largest response body handed to a plugin.
    pub max_response_bytes: u64,
    /// Largest request body a plugin may send.
    pub max_request_bytes: u64,
    /// Redirects the broker follows (each hop re-checked).
    pub max_redirects: u32,
    /// Plugin calls running at once.
    pub max_concurrent_calls: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            call_timeout_ms: 2_000,
            publish_timeout_ms: 300_000,
            memory_mib: 64,
            http_timeout_ms: 30_000,
            max_response_bytes: 16 << 20,
            max_request_bytes: 64 << 20,
            max_redirects: 5,
            max_concurrent_calls: 64,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http {
    /// Sent on every request: several platforms throttle generic agents.
    pub user_agent: String,
}

impl Default for Http {
    fn default() -> Self {
        Http {
            user_agent: format!(
                "outreach/{} (self-hosted publisher)",
                env!("CARGO_PKG_VERSION")
            ),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformConfig {
    /// Set to false to keep the plugin loaded but unused.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Overrides of the plugin's endpoints by name (`api`, `token`, …):
    /// self-hosted instances, proxies, tests. Their hosts join the plugin's
    /// allow-list.
    #[serde(default)]
    pub endpoints: BTreeMap<String, String>,
    /// The OAuth client id (not a secret), or the name of an environment
    /// variable holding it.
    pub client_id: Option<String>,
    pub client_id_env: Option<String>,
    /// The name of the environment variable holding the client secret.
    /// Secrets never go in this file or on the command line.
    pub client_secret_env: Option<String>,
    /// Overrides `auth.refresh_at` for this platform.
    pub refresh_at: Option<f64>,
    /// Overrides the plugin's minimum token age before a refresh (Instagram
    /// and Threads: 86400 s), in seconds.
    pub refresh_min_age_secs: Option<u64>,
    /// The redirect URI registered with the platform, when it is not
    /// outreach's own loopback listener (Meta and Threads want https): the
    /// browser lands there and `connect` asks for the address it landed on.
    pub redirect_uri: Option<String>,
    /// Serve the loopback redirect over https (a certificate made once and
    /// kept in the store) for platforms that accept only https redirects.
    pub redirect_tls: Option<bool>,
    /// The User-Agent for every request to this platform, token requests
    /// included, instead of `http.user_agent` (Reddit wants
    /// `<platform>:<app id>:<version> (by /u/<user>)`).
    pub user_agent: Option<String>,
    /// Whether to hold requests to the rate limits the plugin declares
    /// (turn off when your API plan allows more). Limits the platform
    /// reports in its responses always apply.
    #[serde(default = "yes")]
    pub declared_limits: bool,
}

fn yes() -> bool {
    true
}

/// Where outreach looks for its config when none is named:
/// `$XDG_CONFIG_HOME/outreach/outreach.toml` (`~/.config/outreach/…`).
pub fn default_file() -> Option<PathBuf> {
    dirs::config_dir().map(|d| d.join("outreach").join("outreach.toml"))
}

/// The config `outreach init` writes: every setting a new user may want,
/// commented, with the defaults as they are.
pub const STARTER: &str = r#"# outreach — written by `outreach init`. Every line is optional: what is
# commented out is the default. `outreach man` and the README explain more.

[paths]
# posts = "~/outreach/posts"          # the daemon publishes post files dropped here
# plugins = "~/.local/share/outreach/plugins"   # more platforms, besides the built-in ones
# store = "~/.local/share/outreach/store"       # encrypted accounts
# identity = "~/.config/outreach/identity.txt"  # the key that opens the store: back it up
# identity_plugin = "~/.config/outreach/identity-plugin.txt"  # a YubiKey/TPM that unwraps it (store rekey --wrap-with)
# drafts = "~/.local/share/outreach/drafts"     # the web composer's drafts (never published on their own)

[plugins]
# built_in = true                     # false: only the plugins folder's platforms

[daemon]
# listen = "127.0.0.1:8717"           # the control API and web UI (`outreach ui`), loopback only
# public_url = "https://outreach.example.org"   # a TLS proxy in front of it, if any

[auth]
# redirect_port = 0                   # the OAuth redirect listener's port (0: any free one);
#                                     # 8717 (the daemon's) lets one registered redirect URI,
#                                     # http://127.0.0.1:8717/callback, serve the CLI and the web UI

# An OAuth platform needs your app's client id, and its secret in the
# environment, never in this file:
# [platforms.x]
# client_id = "your-client-id"
# client_secret_env = "OUTREACH_X_CLIENT_SECRET"

# Instagram and Threads fetch media from a public address: give posts a
# `public_url`, or let outreach serve the files behind your proxy:
# [media]
# public_base_url = "https://media.example.org"
# listen = "127.0.0.1:8718"
"#;

/// A config file that could not be used.
///
/// The I/O error is part of the message and deliberately not its `source`:
/// `{:#}` would print it a second time.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "cannot read the config file {path}: {error}; pass --config PATH or set OUTREACH_CONFIG"
    )]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("the config file {path} is not valid: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Where the plugin identities that unwrap the identity file at
/// `identity` are by default: `identity-plugin.txt` beside it.
pub fn default_plugin_identities(identity: &Path) -> PathBuf {
    identity.with_file_name("identity-plugin.txt")
}

/// A loaded config with its paths resolved.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub file: Option<PathBuf>,
    pub config: Config,
    pub plugins_dir: PathBuf,
    pub store_dir: PathBuf,
    pub identity: PathBuf,
    /// The age plugin identities that unwrap a wrapped identity file.
    pub identity_plugin: PathBuf,
    pub cache_dir: PathBuf,
    pub outbox: PathBuf,
    /// Post files the daemon watches (none unless configured).
    pub posts_dir: Option<PathBuf>,
    /// An extra folder media may come from (none unless configured).
    pub media_dir: Option<PathBuf>,
    /// The control API token file.
    pub token_file: PathBuf,
    /// The web UI's drafts (never watched, never published on their own).
    pub drafts_dir: PathBuf,
}

impl Loaded {
    /// Read and check `path`. `None` means "no config file": defaults only.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let (config, base, file) = match path {
            Some(p) => {
                let text = read_regular_text(p).map_err(|error| ConfigError::Read {
                    path: p.to_path_buf(),
                    error,
                })?;
                let config = parse(&text).map_err(|message| ConfigError::Invalid {
                    path: p.to_path_buf(),
                    message,
                })?;
                let base = match p.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                (config, base, Some(p.to_path_buf()))
            }
            None => (Config::default(), PathBuf::from("."), None),
        };
        let data = dirs::data_dir()
            .unwrap_or_else(|| PathBuf::from("."))
            .join("outreach");
        let conf = dirs::config_dir()
            .unwrap_or_else(|| PathBuf::from("."))
            .join("outreach");
        let cache = dirs::cache_dir()
            .unwrap_or_else(|| PathBuf::from("."))
            .join("outreach");
        let resolve = |p: &Option<PathBuf>, default: PathBuf| match p {
            Some(p) => resolve_path(&base, p),
            None => default,
        };
        let loaded = Loaded {
            plugins_dir: resolve(&config.paths.plugins, data.join("plugins")),
            store_dir: resolve(&config.paths.store, data.join("store")),
            identity: resolve(&config.paths.identity, conf.join("identity.txt")),
            identity_plugin: resolve(
                &config.paths.identity_plugin,
                default_plugin_identities(&resolve(
                    &config.paths.identity,
                    conf.join("identity.txt"),
                )),
            ),
            cache_dir: resolve(&config.paths.cache, cache),
            outbox: match &config.paths.outbox {
                Some(p) => resolve_path(&base, p),
                None => {
                    resolve(&config.paths.store, data.join("store")).with_file_name("outbox.sqlite")
                }
            },
            drafts_dir: resolve(
                &config.paths.drafts,
                resolve(&config.paths.store, data.join("store")).with_file_name("drafts"),
            ),
            posts_dir: config.paths.posts.as_ref().map(|p| resolve_path(&base, p)),
            media_dir: config.paths.media.as_ref().map(|p| resolve_path(&base, p)),
            token_file: match &config.daemon.token_file {
                Some(p) => resolve_path(&base, p),
                None => match &file {
                    Some(_) => base.join("daemon.token"),
                    None => conf.join("daemon.token"),
                },
            },
            file,
            config,
        };
        // A draft in the watched folder would be published.
        if loaded.posts_dir.as_ref() == Some(&loaded.drafts_dir) {
            return Err(ConfigError::Invalid {
                path: loaded.file.clone().unwrap_or_default(),
                message: "paths.drafts is the posts folder, which the daemon publishes from; give drafts a folder of their own".into(),
            });
        }
        Ok(loaded)
    }

    /// Settings for platform `id` (defaults when the config has none).
    pub fn platform(&self, id: &str) -> PlatformConfig {
        self.config
            .platforms
            .get(id)
            .cloned()
            .unwrap_or(PlatformConfig {
                enabled: true,
                declared_limits: true,
                ..Default::default()
            })
    }
}

/// Read a text file, refusing (without opening it, so a FIFO never
/// blocks) anything that is not a regular file.
pub fn read_regular_text(p: &Path) -> std::io::Result<String> {
    let meta = std::fs::metadata(p)?;
    if !meta.is_file() {
        return Err(std::io::Error::other(if meta.is_dir() {
            "it is a folder, not a file"
        } else {
            "it is not a regular file (a FIFO, socket or device?)"
        }));
    }
    let bytes = std::fs::read(p)?;
    String::from_utf8(bytes).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "it is not UTF-8 text (byte {} is not); save it as UTF-8",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

/// Parse config text, checking values a type cannot.
pub fn parse(text: &str) -> Result<Config, String> {
    let config: Config = toml::from_str(text).map_err(|e| describe_toml_error(text, &e))?;
    check_ranges(&config)?;
    let a = &config.auth;
    if !(0.1..=0.99).contains(&a.refresh_at) {
        return Err(format!(
            "auth.refresh_at = {} must be between 0.1 and 0.99",
            a.refresh_at
        ));
    }
    if !(0.0..=0.5).contains(&a.jitter) {
        return Err(format!(
            "auth.jitter = {} must be between 0 and 0.5",
            a.jitter
        ));
    }
    if a.max_backoff_secs < a.min_backoff_secs {
        return Err(format!(
            "auth.min_backoff_secs = {} must be at most auth.max_backoff_secs = {}",
            a.min_backoff_secs, a.max_backoff_secs
        ));
    }
    for (id, p) in &config.platforms {
        if let Some(ua) = &p.user_agent
            && (ua.trim().is_empty() || http::HeaderValue::from_str(ua).is_err())
        {
            return Err(format!(
                "platforms.{id}.user_agent must be one line of visible text, such as \"outreach:abc123:1.0 (by /u/you)\""
            ));
        }
        if let Some(uri) = &p.redirect_uri {
            let ok = url::Url::parse(uri)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
            if !ok {
                return Err(format!(
                    "platforms.{id}.redirect_uri must be the http(s) address registered with the platform"
                ));
            }
        }
    }
    let d = &config.daemon;
    let addr: std::net::SocketAddr = d.listen.parse().map_err(|_| {
        format!(
            "daemon.listen = {:?} is not an address such as 127.0.0.1:8717",
            d.listen
        )
    })?;
    if !addr.ip().is_loopback() && !d.allow_remote {
        return Err(format!(
            "daemon.listen = {:?} is not a loopback address; the control API publishes and refreshes on your behalf, so it binds to 127.0.0.1 unless you also set daemon.allow_remote = true",
            d.listen
        ));
    }
    if let Some(public) = &d.public_url {
        // Not quoted: a URL may carry a password.
        let u = url::Url::parse(public).map_err(|_| {
            "daemon.public_url is not an absolute address such as https://outreach.example.org"
                .to_string()
        })?;
        if u.scheme() != "https" {
            return Err(
                "daemon.public_url must be https (the session cookie is only sent over it)".into(),
            );
        }
        if !u.username().is_empty()
            || u.password().is_some()
            || u.query().is_some()
            || u.fragment().is_some()
            || u.path() != "/"
        {
            return Err("daemon.public_url must be only scheme, host and port (no credentials, path, query or fragment)".into());
        }
    }
    if !matches!(d.log_format.as_str(), "human" | "json") {
        return Err(format!(
            "daemon.log_format = {:?} must be \"human\" or \"json\"",
            d.log_format
        ));
    }
    if tracing_subscriber::EnvFilter::try_new(&d.log_level).is_err() {
        return Err(format!(
            "daemon.log_level = {:?} is not a level (error, warn, info, debug, trace) or filter",
            d.log_level
        ));
    }
    check_media_serving(&config.media, &addr)?;
    check_store(&config.store)?;
    // A webhook address often holds its own secret: never echoed.
    if let Some(w) = &config.notify.webhook {
        url::Url::parse(w).map_err(|e| format!("notify.webhook is not a URL ({e})"))?;
    }
    for (id, p) in &config.platforms {
        if let Some(r) = p.refresh_at
            && !(0.1..=0.99).contains(&r)
        {
            return Err(format!(
                "platforms.{id}.refresh_at = {r} must be between 0.1 and 0.99"
            ));
        }
        for (name, url) in &p.endpoints {
            let parsed = url::Url::parse(url)
                .map_err(|e| format!("platforms.{id}.endpoints.{name} is not a URL ({e})"))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                return Err(format!(
                    "platforms.{id}.endpoints.{name} must be an http(s) URL with a host"
                ));
            }
            if !parsed.username().is_empty() || parsed.password().is_some() {
                return Err(format!(
                    "platforms.{id}.endpoints.{name} carries a user name or password; endpoints are addresses, and credentials come from the store"
                ));
            }
        }
    }
    Ok(config)
}

/// `[store]`: an environment variable's name (never a value: a URL holds
/// a password), and bounds.
fn check_store(s: &StoreConfig) -> Result<(), String> {
    let name_ok = !s.url_env.is_empty()
        && s.url_env.len() <= 128
        && !s.url_env.starts_with(|c: char| c.is_ascii_digit())
        && s.url_env
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !name_ok {
        // Not quoted: someone may have pasted the URL itself here.
        return Err("store.url_env must be the name of an environment variable (letters, digits and `_`, such as OUTREACH_DATABASE_URL) that holds the connection URL, not the URL itself".into());
    }
    if !(1..=100).contains(&s.pool_size) {
        return Err(format!(
            "store.pool_size = {} must be between 1 and 100",
            s.pool_size
        ));
    }
    if !(1..=600).contains(&s.connect_retry_secs) {
        return Err(format!(
            "store.connect_retry_secs = {} must be between 1 and 600",
            s.connect_retry_secs
        ));
    }
    Ok(())
}

/// `[media]`: an http(s) base without credentials or query (https unless it
/// is this machine: platforms fetch only https), and a listener apart from
/// the control API's.
fn check_media_serving(m: &MediaServing, api: &std::net::SocketAddr) -> Result<(), String> {
    let listen: std::net::SocketAddr = m.listen.parse().map_err(|_| {
        format!(
            "media.listen = {:?} is not an address such as 127.0.0.1:8718",
            m.listen
        )
    })?;
    if listen.port() != 0 && listen.port() == api.port() && listen.ip() == api.ip() {
        return Err(
            "media.listen must differ from daemon.listen: the media listener never serves the control API"
                .into(),
        );
    }
    if let Some(base) = &m.public_base_url {
        let u = url::Url::parse(base)
            .map_err(|e| format!("media.public_base_url is not a URL ({e})"))?;
        let local = u.host().is_some_and(|h| match h {
            url::Host::Domain(d) => d == "localhost",
            url::Host::Ipv4(ip) => ip.is_loopback(),
            url::Host::Ipv6(ip) => ip.is_loopback(),
        });
        if !(u.scheme() == "https" || u.scheme() == "http" && local) || u.host_str().is_none() {
            return Err(
                "media.public_base_url must be an https address (platforms fetch media only over https; http is accepted for this machine, to try it out)"
                    .into(),
            );
        }
        if !u.username().is_empty()
            || u.password().is_some()
            || u.query().is_some()
            || u.fragment().is_some()
        {
            return Err(
                "media.public_base_url must be a plain address: no user name, password, query or fragment"
                    .into(),
            );
        }
    }
    if m.ttl_secs == 0 || m.ttl_secs > 7 * DAY {
        return Err(format!(
            "media.ttl_secs = {} must be between 1 and {} (7 days)",
            m.ttl_secs,
            7 * DAY
        ));
    }
    Ok(())
}

/// What a number in the config must be, and why: a value out of range is
/// an error that names the key and the range, never quietly replaced.
struct Range {
    key: &'static str,
    value: u64,
    min: u64,
    max: u64,
    /// Why the upper bound is what it is.
    why: &'static str,
}

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;
const MIB: u64 = 1 << 20;

/// Check every number that has a sensible range.
fn check_ranges(config: &Config) -> Result<(), String> {
    let l = &config.limits;
    let p = &config.publish;
    let a = &config.auth;
    let d = &config.daemon;
    let ranges = [
        Range {
            key: "limits.call_timeout_ms",
            value: l.call_timeout_ms,
            min: 1,
            max: 10 * MINUTE * 1000,
            why: "10 minutes; `describe` and `validate` do no network I/O",
        },
        Range {
            key: "limits.publish_timeout_ms",
            value: l.publish_timeout_ms,
            min: 1,
            max: HOUR * 1000,
            why: "an hour",
        },
        Range {
            key: "limits.memory_mib",
            value: l.memory_mib,
            min: 1,
            max: 4096,
            why: "4 GiB, the most a WebAssembly plugin can address",
        },
        Range {
            key: "limits.http_timeout_ms",
            value: l.http_timeout_ms,
            min: 1,
            max: 10 * MINUTE * 1000,
            why: "10 minutes",
        },
        Range {
            key: "limits.max_response_bytes",
            value: l.max_response_bytes,
            min: 1,
            max: 1024 * MIB,
            why: "1 GiB; a response is handed to the plugin whole",
        },
        Range {
            key: "limits.max_request_bytes",
            value: l.max_request_bytes,
            min: 1,
            max: 4096 * MIB,
            why: "4 GiB, the most a plugin can address",
        },
        Range {
            key: "limits.max_redirects",
            value: u64::from(l.max_redirects),
            min: 0,
            max: 20,
            why: "20, as browsers allow",
        },
        Range {
            key: "limits.max_concurrent_calls",
            value: u64::from(l.max_concurrent_calls),
            min: 1,
            max: 1024,
            why: "1024; each call reserves memory for a plugin instance",
        },
        Range {
            key: "publish.per_platform",
            value: u64::from(p.per_platform),
            min: 1,
            max: 64,
            why: "64; platforms rate-limit far below that",
        },
        Range {
            key: "publish.max_rate_limit_wait_secs",
            value: p.max_rate_limit_wait_secs,
            min: 0,
            max: DAY,
            why: "a day",
        },
        Range {
            key: "publish.retries",
            value: u64::from(p.retries),
            min: 0,
            max: 10,
            why: "10; each retry waits twice as long as the one before",
        },
        Range {
            key: "publish.processing_limit_hours",
            value: p.processing_limit_hours,
            min: 1,
            max: 24 * 90,
            why: "90 days",
        },
        Range {
            key: "publish.pending_wait_secs",
            value: p.pending_wait_secs,
            min: 0,
            max: 3600,
            why: "an hour; the daemon keeps asking after that",
        },
        Range {
            key: "publish.late_after_secs",
            value: p.late_after_secs,
            min: 0,
            max: 30 * DAY,
            why: "30 days",
        },
        Range {
            key: "auth.connect_timeout_secs",
            value: a.connect_timeout_secs,
            min: 1,
            max: DAY,
            why: "a day",
        },
        Range {
            key: "auth.min_backoff_secs",
            value: a.min_backoff_secs,
            min: 1,
            max: 7 * DAY,
            why: "a week",
        },
        Range {
            key: "auth.max_backoff_secs",
            value: a.max_backoff_secs,
            min: 1,
            max: 7 * DAY,
            why: "a week",
        },
        Range {
            key: "auth.warn_before_secs",
            value: a.warn_before_secs,
            min: 0,
            max: 365 * DAY,
            why: "a year",
        },
        Range {
            key: "daemon.grace_secs",
            value: d.grace_secs,
            min: 0,
            max: HOUR,
            why: "an hour",
        },
        Range {
            key: "daemon.debounce_ms",
            value: d.debounce_ms,
            min: 1,
            max: MINUTE * 1000,
            why: "a minute",
        },
        Range {
            key: "daemon.due_check_secs",
            value: d.due_check_secs,
            min: 1,
            max: DAY,
            why: "a day",
        },
    ];
    for r in ranges {
        if r.value < r.min {
            return Err(if r.min == 1 {
                format!("{} must be greater than zero", r.key)
            } else {
                format!("{} = {} must be at least {}", r.key, r.value, r.min)
            });
        }
        if r.value > r.max {
            return Err(format!(
                "{} = {} is too large: the most it can be is {} ({}); use a value from {} to {}",
                r.key, r.value, r.max, r.why, r.min, r.max
            ));
        }
    }
    Ok(())
}

/// A TOML or schema error as one line that names the line and the key,
/// and never quotes the file: toml's own message shows the offending source
/// line and serde's shows the offending value, either of which may be a
/// secret pasted into the wrong place.
pub fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let line_no = e
        .span()
        .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
    let key = line_no.and_then(|n| key_at_line(text, n));
    let reason = without_quoted_values(e.message().lines().next().unwrap_or("").trim());
    let secretish = |k: &str| {
        let last = k.rsplit('.').next().unwrap_or(k).to_ascii_lowercase();
        last.contains("secret")
            || last.contains("password")
            || last.contains("token")
            || last == "api_key"
            || last == "apikey"
    };
    let location = match (line_no, &key) {
        (Some(n), Some(k)) => format!("line {n}, {k}: "),
        (Some(n), None) => format!("line {n}: "),
        _ => String::new(),
    };
    if reason.starts_with("unknown field")
        && let Some(k) = key.as_deref().filter(|k| {
            k.strip_prefix("store.").is_some_and(|f| {
                matches!(f, "url" | "uri" | "dsn" | "database_url") || secretish(f)
            })
        })
    {
        return format!(
            "{location}the database URL (it holds a password) is never read from the config file; remove `{}`, put the URL in an environment variable and name that variable with store.url_env (default OUTREACH_DATABASE_URL)",
            k.rsplit('.').next().unwrap_or(k)
        );
    }
    if reason.starts_with("unknown field")
        && let Some(k) = key.as_deref().filter(|k| secretish(k))
    {
        let platform = k
            .strip_prefix("platforms.")
            .and_then(|r| r.split('.').next())
            .unwrap_or("PLATFORM");
        return format!(
            "{location}secrets are never read from the config file (it is shown in errors, backed up and shared); remove `{}` and put the value in an environment variable named here instead, e.g. client_secret_env = \"OUTREACH_{}_CLIENT_SECRET\"",
            k.rsplit('.').next().unwrap_or(k),
            platform.to_ascii_uppercase().replace('-', "_")
        );
    }
    format!("{location}{reason}")
}

/// The dotted key defined on line `n` (1-based), with the table header in
/// effect there: `platforms.x.client_secret`. `None` when the line holds no
/// `key = value`.
fn key_at_line(text: &str, n: usize) -> Option<String> {
    let mut table = String::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if let Some(h) = t.strip_prefix('[') {
            let h = h.trim_start_matches('[');
            if let Some(end) = h.find(']') {
                table = h[..end].trim().replace(['"', '\''], "");
            }
            if i + 1 == n {
                return Some(table.clone());
            }
            continue;
        }
        if i + 1 == n {
            let (k, _) = t.split_once('=')?;
            let k = k.trim().replace(['"', '\''], "");
            let plain = k
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if k.is_empty() || !plain {
                return None;
            }
            return Some(if table.is_empty() {
                k
            } else {
                format!("{table}.{k}")
            });
        }
    }
    None
}

/// The line (1-based) of `text` that sets `key` in table `table` (dotted,
/// such as `platforms.x.endpoints`): under its `[table]` header, or as a
/// dotted key under a header above it.
pub fn line_of(text: &str, table: &str, key: &str) -> Option<usize> {
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if let Some(h) = t.strip_prefix('[') {
            let h = h.trim_start_matches('[');
            if let Some(end) = h.find(']') {
                current = h[..end].trim().replace(['"', '\'', ' '], "");
            }
            continue;
        }
        let Some((k, _)) = t.split_once('=') else {
            continue;
        };
        let k = k.trim().replace(['"', '\'', ' '], "");
        let full = if current.is_empty() {
            k
        } else {
            format!("{current}.{k}")
        };
        if full == format!("{table}.{key}") {
            return Some(i + 1);
        }
    }
    None
}

/// serde's messages quote the value they choke on (`invalid type: string
/// "…", expected u32`); drop every double-quoted part.
pub fn without_quoted_values(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut in_quote = false;
    let mut escaped = false;
    for c in msg.chars() {
        if in_quote {
            match (escaped, c) {
                (false, '\\') => escaped = true,
                (false, '"') => in_quote = false,
                _ => escaped = false,
            }
            continue;
        }
        if c == '"' {
            in_quote = true;
            out.push('…');
            continue;
        }
        out.push(c);
    }
    let out = out.replace(" …,", ",").replace(" …", "");
    // `unknown variant `…``: the user's text, in backticks.
    match out.strip_prefix("unknown variant `") {
        Some(rest) => match rest.find('`') {
            Some(end) => format!("unknown value{}", &rest[end + 1..]),
            None => out,
        },
        None => out,
    }
}

/// `~/x` → home/x; relative paths are relative to `base` (the config
/// file's folder).
pub fn resolve_path(base: &Path, p: &Path) -> PathBuf {
    if let Ok(rest) = p.strip_prefix("~")
        && let Some(home) = dirs::home_dir()
    {
        return home.join(rest);
    }
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_section_defaults_to_files_and_names_an_env_var() {
        let c = parse("").unwrap();
        assert_eq!(c.store.backend, StoreBackend::Files);
        assert_eq!(c.store.url_env, "OUTREACH_DATABASE_URL");
        let c = parse("[store]\nbackend = \"postgres\"\nurl_env = \"PG_URL\"\n").unwrap();
        assert_eq!(c.store.backend, StoreBackend::Postgres);
        assert_eq!(c.store.url_env, "PG_URL");
    }

    #[test]
    fn store_url_in_the_file_is_refused_without_quoting_it() {
        let planted = "postgres://u:hunter2-planted@db/x";
        let err = parse(&format!(
            "[store]\nbackend = \"postgres\"\nurl = \"{planted}\"\n"
        ))
        .unwrap_err();
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("url_env"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        // A URL pasted where the variable's name goes is not quoted either.
        let err = parse(&format!("[store]\nurl_env = \"{planted}\"\n")).unwrap_err();
        assert!(err.contains("store.url_env"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let err = parse("[store]\nbackend = \"mysql\"\n").unwrap_err();
        assert!(err.contains("files") && err.contains("postgres"), "{err}");
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let err = parse("[limits]\nmemory_mib = 3\nbogus = 1\n").unwrap_err();
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn errors_never_quote_the_file() {
        let secret = "sk-PLANTED-config-secret-51c2";
        let text = format!("[platforms.x]\nclient_id = \"abc\"\nclient_secret = \"{secret}\"\n");
        let err = parse(&text).unwrap_err();
        assert!(!err.contains(secret), "{err}");
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("client_secret_env"), "{err}");
        assert!(err.contains("OUTREACH_X_CLIENT_SECRET"), "{err}");

        // A type error next to a secret names the key, not the value.
        let text = format!(
            "[platforms.x]\nclient_id = \"5\"\n# {secret}\n[publish]\nretries = \"{secret}\"\n"
        );
        let err = parse(&text).unwrap_err();
        assert!(!err.contains(secret), "{err}");
        assert!(err.contains("line 5, publish.retries"), "{err}");

        // A User-Agent that would split a header, a redirect that is no URL.
        let err = parse("[platforms.reddit]\nuser_agent = \"a\\r\\nx-evil: 1\"\n").unwrap_err();
        assert!(err.contains("platforms.reddit.user_agent"), "{err}");
        let err = parse("[platforms.facebook]\nredirect_uri = \"not a url\"\n").unwrap_err();
        assert!(err.contains("platforms.facebook.redirect_uri"), "{err}");

        // A syntax error: no source excerpt.
        let text = format!("[daemon]\nlisten = \"{secret}\nx = 1\n");
        let err = parse(&text).unwrap_err();
        assert!(!err.contains(secret), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn zero_limit_rejected() {
        let err = parse("[limits]\nmemory_mib = 0\n").unwrap_err();
        assert!(err.contains("limits.memory_mib"), "{err}");
    }

    #[test]
    fn limits_have_upper_bounds() {
        let err = parse("[limits]\nmemory_mib = 4097\n").unwrap_err();
        assert!(
            err.contains("limits.memory_mib = 4097 is too large") && err.contains("from 1 to 4096"),
            "{err}"
        );
        assert!(parse("[limits]\nmemory_mib = 4096\n").is_ok());
        let err = parse("[publish]\nper_platform = 0\n").unwrap_err();
        assert!(err.contains("publish.per_platform"), "{err}");
    }

    #[test]
    fn line_of_finds_a_key_under_its_table_or_dotted() {
        let text = "[paths]\nstore = \"s\"\n[platforms.x.endpoints]\napi = \"u\"\n[platforms.y]\nendpoints.tokn = \"u\"\n";
        assert_eq!(line_of(text, "platforms.x.endpoints", "api"), Some(4));
        assert_eq!(line_of(text, "platforms.y.endpoints", "tokn"), Some(6));
        assert_eq!(line_of(text, "platforms.x.endpoints", "tokn"), None);
    }

    #[test]
    fn endpoint_override_must_be_url() {
        let err = parse("[platforms.x.endpoints]\napi = \"nope\"\n").unwrap_err();
        assert!(err.contains("platforms.x.endpoints.api"), "{err}");
    }
}

/// An OAuth client: the app registered with the platform.
#[derive(Clone, Debug, serde::Serialize, Deserialize)]
pub struct Client {
    pub id: String,
    pub secret: Option<crate::secret::Secret>,
}

/// The client credentials for `platform` from config and the environment.
pub fn client_for(cfg: &Loaded, platform: &str) -> Result<Client, String> {
    let p = cfg.platform(platform);
    let id = match (&p.client_id, &p.client_id_env) {
        (Some(id), _) => id.clone(),
        (None, Some(var)) => std::env::var(var).map_err(|_| {
            format!(
                "the environment variable {var} (platforms.{platform}.client_id_env) is not set"
            )
        })?,
        (None, None) => {
            return Err(format!(
                "no OAuth client for {platform}: set platforms.{platform}.client_id (and client_secret_env) in the config"
            ));
        }
    };
    let secret = match &p.client_secret_env {
        Some(var) => Some(crate::secret::Secret::new(std::env::var(var).map_err(|_| {
            format!(
                "the environment variable {var} (platforms.{platform}.client_secret_env) is not set"
            )
        })?)),
        None => None,
    };
    Ok(Client { id, secret })
}
