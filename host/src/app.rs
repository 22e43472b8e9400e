//! The application root: builds the parts from a configuration and hands
//! them to the front ends.
//!
//! Owns: the order things start in — the plugin host and every plugin of
//! the plugins folder, the check of the config's endpoint overrides against
//! what the plugins declare, the escrow for exchanges that must survive a
//! kill — and the [`Services`] every layer below works with.
//!
//! Never: holds behaviour of its own beyond putting the parts together; the
//! front ends (`daemon`, `cli`) call the layers below with the parts they
//! need.

use std::path::Path;
use std::sync::Arc;

use crate::config::Loaded;
use crate::escrow::{Escrow, HelperHttp};
use crate::plugin::Host;
use crate::services::Services;

/// What a front end runs against.
pub struct App {
    services: Arc<Services>,
}

impl App {
    /// Load the config's plugins and put the parts together.
    pub async fn new(cfg: Loaded) -> anyhow::Result<Self> {
        Self::with_platforms(cfg, None).await
    }

    /// [`App::new`] with only the plugins of the platforms `only` (every
    /// plugin when `None`): a command about a few platforms does not pay
    /// for loading the rest.
    pub async fn with_platforms(cfg: Loaded, only: Option<Vec<String>>) -> anyhow::Result<Self> {
        Self::build(cfg, only, false).await
    }

    /// [`App::with_platforms`] for a command that only reads what plugins
    /// declare (`outreach status`): manifests come from the cache beside
    /// the compiled code where it has them, without instantiating a
    /// plugin; such plugins cannot be called.
    pub async fn with_manifests(cfg: Loaded, only: Vec<String>) -> anyhow::Result<Self> {
        Self::build(cfg, Some(only), true).await
    }

    async fn build(
        cfg: Loaded,
        only: Option<Vec<String>>,
        manifests_only: bool,
    ) -> anyhow::Result<Self> {
        let host = Host::new(&cfg)?;
        let built_in = cfg.config.plugins.built_in;
        match &only {
            Some(ids) if manifests_only => {
                host.load_manifests(&cfg.plugins_dir, built_in, ids).await?
            }
            Some(ids) => host.load_only(&cfg.plugins_dir, built_in, ids).await?,
            None => {
                host.load_dir(&cfg.plugins_dir).await?;
                if built_in {
                    host.load_built_in(None).await;
                }
            }
        }
        // An endpoint override the plugin does not have is a config error.
        crate::plugin::manifest::check_overrides(&cfg, &host)?;
        let escrow = Escrow::new(
            Escrow::own_binary(),
            HelperHttp {
                user_agent: cfg.config.http.user_agent.clone(),
                timeout_ms: cfg.config.limits.http_timeout_ms,
            },
        );
        Ok(App {
            services: Arc::new(Services::new(cfg, host, escrow, Box::new(ask_passphrase))),
        })
    }

    /// The parts, shared (for tasks that outlive the caller's borrow).
    pub fn services(&self) -> &Arc<Services> {
        &self.services
    }
}

/// The identity's passphrase: from `OUTREACH_IDENTITY_PASSPHRASE`, else
/// asked on the terminal.
fn ask_passphrase(identity: &Path) -> Option<String> {
    std::env::var("OUTREACH_IDENTITY_PASSPHRASE")
        .ok()
        .or_else(|| {
            rpassword::prompt_password(format!("passphrase for {}: ", identity.display())).ok()
        })
}

impl std::ops::Deref for App {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.services
    }
}
