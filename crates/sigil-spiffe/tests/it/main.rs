//! The integration tests of sigil-spiffe: one binary, one module per part of the crate.

mod bundle;
