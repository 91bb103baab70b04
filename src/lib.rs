//! sitelog: a replicated, append-only message log that survives the loss of a whole site.
#![warn(missing_docs)]

pub mod error;
pub mod io;

pub use error::{Error, Result};
