//! Bad command lines exit 64 (not clap's 2); help and version exit 0.

use crate::{sigil, text};

#[test]
fn unknown_flags_and_missing_commands_exit_64() {
    for args in [
        &["--bogus"][..],
        &[],
        &["server"],
        &["server", "validate"],
        &["server", "run", "--config", "x.toml"],
        &[
            "--output", "yaml", "server", "validate", "--config", "x.toml",
        ],
    ] {
        let out = sigil(args);
        assert_eq!(out.status.code(), Some(64), "sigil {args:?}");
        assert!(!out.stderr.is_empty(), "sigil {args:?} says why on stderr");
    }
    let out = sigil(&["--bogus"]);
    assert!(text(&out.stderr).contains("'--bogus'"));
}

#[test]
fn help_and_version_exit_0() {
    for args in [
        &["--help"][..],
        &["--version"],
        &["server", "validate", "--help"],
    ] {
        let out = sigil(args);
        assert_eq!(out.status.code(), Some(0), "sigil {args:?}");
        assert!(!out.stdout.is_empty());
    }
}
