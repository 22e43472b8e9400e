//! Errors that say whose mistake it was.
//!
//! Owns: [`BadInput`], a mistake in what the user gave (arguments, settings,
//! config, post files), which the CLI reports with exit code 2, and the
//! [`bad!`] macro that makes one.
//!
//! Never: decides how an error is shown; the front ends do.

/// A mistake in what the user gave (arguments, settings, post files):
/// reported with exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

/// `return Err(bad!(…)))` for a [`BadInput`].
macro_rules! bad {
    ($($t:tt)*) => { anyhow::Error::from($crate::error::BadInput(format!($($t)*))) };
}
pub(crate) use bad;
