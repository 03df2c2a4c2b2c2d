//! Integration tests of the Sigil server crate, one module per topic.

// Tests state their expectations with unwrap: a failure is the test failing.
#![allow(clippy::unwrap_used)]

mod datastore;
