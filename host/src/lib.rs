//! outreach: keeps social accounts connected and publishes to them from
//! files. Each platform is a WebAssembly component; this crate is the host
//! that owns everything dangerous or stateful.
//!
//! One module per capability, in layers; a module uses only modules of the
//! layers below it (the unit test in `layers.rs` checks it on every
//! `cargo test`). From the bottom:
//!
//! 1. Foundations: [`secret`], [`metrics`], [`error`], [`config`],
//!    [`contract`] (the WIT bindings shared by broker and plugin host).
//! 2. State on disk: [`store`] (encrypted credentials), [`outbox`] (the
//!    exactly-once journal); beside them [`public_media`] (attachments
//!    served to platforms that fetch them).
//! 3. [`http`]: the broker, the only way a plugin reaches the network.
//! 4. [`plugin`]: engine, loading, sandbox, hot swap.
//! 5. [`escrow`] (exchanges that survive a kill), then [`services`] (the
//!    shared parts every layer above works with).
//! 6. [`auth`]: connect flows, token exchanges.
//! 7. [`schedule`]: single-flight refresh, health, the refresh scheduler,
//!    notifications.
//! 8. [`accounts`] (connecting, adding, listing accounts), [`backup`] and
//!    [`migrate`] (copying between store backends),
//!    then [`publish`] (parse → plan → journal → deliver → settle).
//! 9. [`app`]: the composition root.
//! 10. Front ends: [`daemon`] (watchers, control API, shutdown), then
//!     [`mcp`] (the Model Context Protocol, through the daemon or on the
//!     store), then [`cli`].

pub mod accounts;
pub mod app;
pub mod auth;
pub mod backup;
pub mod cli;
pub mod config;
pub mod contract;
pub mod daemon;
pub mod error;
pub mod escrow;
pub mod http;
pub mod mcp;
pub mod metrics;
pub mod migrate;
pub mod outbox;
pub mod plugin;
pub mod public_media;
pub mod publish;
pub mod schedule;
pub mod secret;
pub mod services;
pub mod store;

#[cfg(test)]
mod layers;
