//! The floor: plain types (keys, teams, their policies, spend rows) that every room shares
//! and that import nothing else of the control plane.

pub mod keys;
mod record;
mod spend;

pub use record::*;
pub use spend::*;
