//! The product's domain in its own words: principals, permissions, roles,
//! policies, meters and profiles. Plain data; no protocol types, no I/O.

pub mod directory;
pub mod meter;
pub mod permission;
pub mod policy;
pub mod principal;
pub mod reach;
pub mod rules;

pub use directory::*;
pub use meter::*;
pub use permission::*;
pub use policy::*;
pub use principal::*;
pub use reach::{Entry, Reach, changed_entries, reach};
pub use rules::*;
