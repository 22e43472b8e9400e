//! outreach: keeps social accounts connected and publishes to them from
//! files. Each platform is a WebAssembly component; this crate is the host
//! that owns everything dangerous or stateful.
//!
//! One module per capability: [`plugin`] (engine, loading, sandbox, hot
//! swap), [`http`] (the broker), [`store`] (encrypted credentials), [`auth`]
//! (connect flows, token exchanges), [`escrow`] (exchanges that survive
//! a kill), [`schedule`] (single-flight refresh,
//! health, the refresh scheduler, notifications), [`accounts`] (the app
//! commands run against; adding, listing, removing accounts), [`publish`]
//! (post files, validation, fan-out), [`outbox`] (the exactly-once
//! journal), [`daemon`] (watchers, control API, shutdown), [`metrics`],
//! [`backup`] (backup and restore), [`config`], [`cli`].

pub mod accounts;
pub mod auth;
pub mod backup;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod escrow;
pub mod http;
pub mod metrics;
pub mod outbox;
pub mod plugin;
pub mod publish;
pub mod schedule;
pub mod secret;
pub mod store;
