//! The one integration-test binary of sigil-spiffe.

// Test helpers outside `#[test]` functions unwrap too; a failure there is a test failure.
#![allow(clippy::unwrap_used)]

mod tls;
mod x509;
