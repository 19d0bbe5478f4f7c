//! The floor: plain types (keys, teams, their policies, spend rows) that every room shares
//! and that import nothing else of the control plane.

mod key;
pub mod keys;
mod policy;
mod spend;
mod team;

pub use key::*;
pub use policy::*;
pub use spend::*;
pub use team::*;
