//! Integration tests of `sigil-server`: one binary, one module per topic.

// Tests fail by panicking; unwrap is how they say "this must work".
#![allow(clippy::unwrap_used)]

mod config;
