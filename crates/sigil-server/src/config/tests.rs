//! Unit tests of the config rules.
