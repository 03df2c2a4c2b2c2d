//! The model that Sigil's server and agent share: selectors, registration entries, attested
//! nodes, join tokens and the duration syntax of the command line and configs.
//!
//! It holds types and their validation only: no I/O, no clock (callers pass `now`), no
//! database. The SPIFFE standards themselves live in `sigil-spiffe`.

#![warn(missing_docs)]

pub mod config;
pub mod duration;
pub mod entry;
pub mod node;
pub mod selector;
pub mod wire;

pub use duration::{DurationError, format_duration, parse_duration};
pub use entry::{EntryError, EntryId, RegistrationEntry};
pub use node::{AttestedNode, JoinToken, agent_spiffe_id, is_agent_id, server_spiffe_id};
pub use selector::{Selector, SelectorError, SelectorSet};
