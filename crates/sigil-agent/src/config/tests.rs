#![allow(clippy::unwrap_used)]

use std::path::Path;

use super::*;

const HEAD: &str = "trust_domain = \"example.org\"\nserver_address = \"127.0.0.1:8081\"\n\
                    data_dir = \"data\"\n";
const TOKEN: &str = "[node_attestor]\ntype = \"join_token\"\ntoken = \"abc\"\n";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/sigil"))
}

#[test]
fn minimal_config_gets_defaults_and_absolute_paths() {
    let config = parse(&format!("{HEAD}trust_bundle_path = \"b.pem\"\n{TOKEN}")).unwrap();
    assert_eq!(config.data_dir, Path::new("/etc/sigil/data"));
    assert_eq!(config.socket_path, Path::new("/etc/sigil/data/api.sock"));
    assert_eq!(
        config.bootstrap,
        Bootstrap::Path {
            path: "/etc/sigil/b.pem".into(),
            format: BundleFormat::Pem
        }
    );
    assert_eq!(
        config.workload_attestors,
        vec![WorkloadAttestor::Unix {
            discover_workload_path: false,
            workload_sha256: false,
            workload_size_limit: 0
        }]
    );
    assert_eq!(config.svid, SvidConfig::default());
    assert_eq!(
        config.server_spiffe_id().to_string(),
        "spiffe://example.org/sigil/server"
    );
    assert!(config.warnings().is_empty());
}

#[test]
fn server_address_takes_one_address_or_a_list() {
    let one = parse(&format!("{HEAD}trust_bundle_path = \"b.pem\"\n{TOKEN}")).unwrap();
    assert_eq!(one.server_addresses, ["127.0.0.1:8081"]);
    assert_eq!(one.server_rebalance_interval, DEFAULT_REBALANCE_INTERVAL);
    let list =
        format!("{HEAD}server_rebalance_interval = \"5s\"\ntrust_bundle_path = \"b.pem\"\n{TOKEN}")
            .replace(
                "\"127.0.0.1:8081\"",
                "[\"10.0.0.1:8081\", \"spire.example.org:8081\", \"[::1]:8081\"]",
            );
    let many = parse(&list).unwrap();
    assert_eq!(
        many.server_addresses,
        ["10.0.0.1:8081", "spire.example.org:8081", "[::1]:8081"]
    );
    assert_eq!(many.server_rebalance_interval, Duration::from_secs(5));
}

#[test]
fn the_token_never_shows_in_debug_output() {
    let config = parse(&format!("{HEAD}insecure_bootstrap = true\n{TOKEN}")).unwrap();
    let printed = format!("{config:?}");
    assert!(!printed.contains("abc"), "{printed}");
    let raw: RawConfig = parse_toml(&format!("{HEAD}insecure_bootstrap = true\n{TOKEN}")).unwrap();
    assert!(!format!("{raw:?}").contains("abc"));
    assert_eq!(config.warnings().len(), 1);
}

/// Each bad config and the error it gets; every message names the key.
#[test]
fn bad_configs_get_errors_naming_the_key() {
    let bundle = "trust_bundle_path = \"b.pem\"\n";
    let cases: &[(String, &str)] = &[
        (
            format!("{HEAD}{TOKEN}"),
            "trust_bundle_path: no way to trust the server",
        ),
        (
            format!("{HEAD}{bundle}insecure_bootstrap = true\n{TOKEN}"),
            "trust_bundle_path: set exactly one of",
        ),
        (
            format!("{HEAD}trust_bundle_url = \"http://x/b\"\n{TOKEN}"),
            "trust_bundle_url: \"http://x/b\" must be an https:// URL",
        ),
        (
            format!("{HEAD}{bundle}trust_bundle_format = \"der\"\n{TOKEN}"),
            "trust_bundle_format: unknown format \"der\"",
        ),
        (
            format!("{HEAD}{bundle}[node_attestor]\ntype = \"tpm\"\n"),
            "node_attestor.type: unknown node attestor \"tpm\"",
        ),
        (
            format!("{HEAD}{bundle}[node_attestor]\ntype = \"join_token\"\n"),
            "missing required key \"node_attestor.token\"",
        ),
        (
            format!("{HEAD}{bundle}{TOKEN}token_file = \"t\"\n"),
            "node_attestor.token_file: set token or token_file, not both",
        ),
        (
            format!("{HEAD}{bundle}{TOKEN}[[workload_attestor]]\ntype = \"docker\"\n"),
            "workload_attestor[0].type: unknown workload attestor \"docker\"",
        ),
        (
            format!("{HEAD}{bundle}{TOKEN}[svid]\nkey_type = \"dsa\"\n"),
            "svid.key_type: invalid value \"dsa\"",
        ),
        (
            format!("{HEAD}{bundle}{TOKEN}[svid]\nx509_cache_size = 0\n"),
            "svid.x509_cache_size: must be at least 1",
        ),
        (
            format!("{HEAD}{bundle}{TOKEN}[svid]\nttl = \"1h\"\n"),
            "unknown key \"ttl\" at svid",
        ),
        (
            format!("{HEAD}{bundle}{TOKEN}").replace("127.0.0.1:8081", "localhost"),
            "server_address: invalid address \"localhost\"",
        ),
        (
            format!("{HEAD}{bundle}{TOKEN}").replace("\"127.0.0.1:8081\"", "[]"),
            "server_address: the list is empty",
        ),
        (
            format!("{HEAD}{bundle}{TOKEN}").replace("\"127.0.0.1:8081\"", "[\"a:1\", \"b\"]"),
            "server_address[1]: invalid address \"b\"",
        ),
        (
            format!("{HEAD}{bundle}{TOKEN}").replace("\"127.0.0.1:8081\"", "[\"a:1\", \"a:1\"]"),
            "server_address[1]: \"a:1\" is listed twice",
        ),
        (
            format!("{HEAD}{bundle}{TOKEN}").replace("\"127.0.0.1:8081\"", "8081"),
            "an address HOST:PORT or a list of them",
        ),
        (
            format!("{HEAD}server_rebalance_interval = \"0s\"\n{bundle}{TOKEN}"),
            "server_rebalance_interval: \"0s\" is zero",
        ),
        (
            format!(
                "{HEAD}{bundle}{TOKEN}socket_path = \"/{}\"\n",
                "s".repeat(120)
            ),
            "unknown key",
        ),
        (
            format!(
                "{HEAD}{bundle}socket_path = \"/{}\"\n{TOKEN}",
                "s".repeat(120)
            ),
            "socket_path: \"/sss",
        ),
        (
            format!("{HEAD}{bundle}{TOKEN}").replace("example.org", "Example.org"),
            "trust_domain: invalid value \"Example.org\"",
        ),
    ];
    for (text, expected) in cases {
        let error = parse(text).unwrap_err().to_string();
        assert!(
            error.contains(expected),
            "{text}\n-> {error}\nwanted {expected}"
        );
    }
}

#[test]
fn an_error_points_at_the_line_of_the_value() {
    let text = format!("{HEAD}trust_bundle_path = \"b.pem\"\n{TOKEN}[svid]\nkey_type = \"x\"\n");
    let error = parse(&text).unwrap_err();
    assert_eq!(error.position().map(|(line, _)| line), Some(9));
}

/// The shipped example sets every key; it must load, and mean what its comments say.
#[test]
fn the_example_config_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conf/agent.toml");
    let config = Config::load(&path).unwrap();
    assert_eq!(config.trust_domain.as_str(), "example.org");
    assert!(config.socket_path.ends_with("conf/data/agent/api.sock"));
    assert!(matches!(
        config.bootstrap,
        Bootstrap::Path {
            format: BundleFormat::Pem,
            ..
        }
    ));
    assert!(matches!(
        config.node_attestor,
        NodeAttestor::JoinToken(TokenSource::Inline(_))
    ));
    assert_eq!(config.svid, SvidConfig::default());
}
