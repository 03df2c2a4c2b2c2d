//! Every example config shipped in `conf/` must load (style.md: a test parses every file).

use std::path::Path;

use sigil_server::config::Config;

#[test]
fn every_server_config_in_conf_validates() {
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conf");
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(&conf).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.starts_with("server") && name.ends_with(".toml")) {
            continue;
        }
        let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        // Relative paths in the examples resolve next to the file, not in the working dir.
        assert!(config.data_dir.starts_with(&conf), "{name}");
        checked.push(name);
    }
    checked.sort();
    // The full example and the minimal one must be among them.
    assert!(
        checked.len() >= 2
            && checked.contains(&"server.toml".to_owned())
            && checked.contains(&"server-minimal.toml".to_owned()),
        "{checked:?}"
    );
}

#[test]
fn the_full_example_uses_every_section() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conf/server.toml");
    let config = Config::load(&path).unwrap();
    assert!(config.ca.upstream.is_some());
    assert!(config.health.is_some());
    assert!(config.federation.bundle_endpoint.is_some());
    assert_eq!(config.federation.federates_with.len(), 2);
    assert!(config.svid.jwt_issuer.is_some());
    assert!(config.oidc_discovery.is_some());
}
