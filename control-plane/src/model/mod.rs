//! The floor: plain types (keys, users, teams, memberships, their policies, spend rows) that every room shares
//! and that import nothing else of the control plane.

mod key;
pub mod keys;
mod member;
mod policy;
pub mod rotation;
mod spend;
mod team;
mod user;

pub use key::*;
pub use member::*;
pub use policy::*;
pub use spend::*;
pub use team::*;
pub use user::*;
