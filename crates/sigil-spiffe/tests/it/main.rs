//! The one integration-test binary of sigil-spiffe.

mod jwt;
