//! Unit tests of the config rules: defaults, path resolution, and one exact error per rule.

use super::*;

const BASE: &str = "/etc/sigil";
const HEAD: &str = "trust_domain = \"example.org\"\ndata_dir = \"data\"\n";

fn ok(text: &str) -> Config {
    Config::parse(text, Path::new(BASE)).unwrap()
}

fn err(text: &str) -> String {
    Config::parse(text, Path::new(BASE))
        .unwrap_err()
        .to_string()
}

#[test]
fn minimal_config_gets_the_defaults() {
    let config = ok(HEAD);
    assert_eq!(config.trust_domain.as_str(), "example.org");
    assert_eq!(config.data_dir, Path::new("/etc/sigil/data"));
    assert_eq!(config.bind_address, "0.0.0.0:8081".parse().unwrap());
    assert_eq!(config.admin_socket, Path::new("/etc/sigil/data/admin.sock"));
    assert_eq!(
        config.datastore,
        Datastore::Sqlite {
            path: "/etc/sigil/data/datastore.sqlite3".into()
        }
    );
    assert_eq!(config.ca.key_type, KeyType::EcP256);
    assert_eq!(config.ca.ttl, Duration::from_secs(86_400));
    assert_eq!(config.ca.upstream, None);
    assert_eq!(config.svid.default_x509_ttl, Duration::from_secs(3600));
    assert_eq!(config.svid.default_jwt_ttl, Duration::from_secs(300));
    assert_eq!(config.health, None);
    assert!(!config.federation.is_configured());
    assert_eq!(
        config.server_spiffe_id().as_str(),
        "spiffe://example.org/sigil/server"
    );
    assert!(config.warnings().is_empty());
}

#[test]
fn relative_paths_are_relative_to_the_config_directory() {
    let config = ok(&format!(
        "{HEAD}admin_socket = \"run/admin.sock\"\n\
         [datastore]\nurl = \"sqlite://db/state.sqlite3\"\n\
         [ca.upstream]\ncert_file = \"upstream/ca.pem\"\nkey_file = \"/abs/ca.key\"\n"
    ));
    assert_eq!(config.admin_socket, Path::new("/etc/sigil/run/admin.sock"));
    assert_eq!(
        config.datastore,
        Datastore::Sqlite {
            path: "/etc/sigil/db/state.sqlite3".into()
        }
    );
    let upstream = config.ca.upstream.unwrap();
    assert_eq!(upstream.cert_file, Path::new("/etc/sigil/upstream/ca.pem"));
    assert_eq!(upstream.key_file, Path::new("/abs/ca.key"));

    // Absolute data_dir and sqlite paths are kept; `sqlite:` without slashes works too.
    let config = ok("trust_domain = \"a.test\"\ndata_dir = \"/var/lib/sigil\"\n\
         [datastore]\nurl = \"sqlite:///var/db/s.sqlite3\"\n");
    assert_eq!(config.data_dir, Path::new("/var/lib/sigil"));
    assert_eq!(config.admin_socket, Path::new("/var/lib/sigil/admin.sock"));
    assert_eq!(
        config.datastore,
        Datastore::Sqlite {
            path: "/var/db/s.sqlite3".into()
        }
    );
    let config = ok(&format!("{HEAD}[datastore]\nurl = \"sqlite:s.db\"\n"));
    assert_eq!(
        config.datastore,
        Datastore::Sqlite {
            path: "/etc/sigil/s.db".into()
        }
    );
}

#[test]
fn sql_urls_are_kept_and_their_passwords_redacted() {
    for (url, kind) in [
        (
            "postgres://sigil:hunter2@db.internal:5432/sigil",
            "postgres",
        ),
        ("postgresql://sigil:hunter2@db.internal/sigil", "postgres"),
        ("mysql://sigil:hunter2@db.internal:3306/sigil", "mysql"),
    ] {
        let config = ok(&format!("{HEAD}[datastore]\nurl = \"{url}\"\n"));
        assert_eq!(config.datastore.kind(), kind);
        let redacted = config.datastore.redacted();
        assert!(!redacted.contains("hunter2"), "{redacted}");
        assert!(redacted.contains("sigil:***@db.internal"), "{redacted}");
        assert!(!format!("{config:?}").contains("hunter2"));
        match config.datastore {
            Datastore::Postgres { url: kept } | Datastore::Mysql { url: kept } => {
                assert_eq!(kept, url)
            }
            Datastore::Sqlite { .. } => panic!("not sqlite"),
        }
    }
}

#[test]
fn every_key_is_read() {
    let config = ok(&format!(
        "{HEAD}bind_address = \"127.0.0.1:9081\"\n\
         [ca]\nkey_type = \"rsa-2048\"\nttl = \"48h\"\n\
         [svid]\ndefault_x509_ttl = \"2h\"\ndefault_jwt_ttl = \"10m\"\n\
         [health]\nbind_address = \"[::1]:9080\"\n\
         [federation.bundle_endpoint]\nbind_address = \"0.0.0.0:9443\"\nprofile = \"https_web\"\n\
         cert_file = \"web.pem\"\nkey_file = \"web.key\"\nrefresh_hint = \"1m\"\n\
         [[federation.federates_with]]\ntrust_domain = \"b.test\"\nurl = \"https://b.example:8443\"\n\
         profile = \"https_spiffe\"\nendpoint_spiffe_id = \"spiffe://b.test/sigil/server\"\n\
         bundle_path = \"b.pem\"\n\
         [[federation.federates_with]]\ntrust_domain = \"c.test\"\nurl = \"https://c.example/bundle\"\n\
         profile = \"https_web\"\nca_file = \"/etc/ssl/c.pem\"\n"
    ));
    assert_eq!(config.bind_address, "127.0.0.1:9081".parse().unwrap());
    assert_eq!(config.ca.key_type, KeyType::Rsa2048);
    assert_eq!(config.ca.ttl, Duration::from_secs(48 * 3600));
    assert_eq!(config.svid.default_x509_ttl, Duration::from_secs(7200));
    assert_eq!(config.svid.default_jwt_ttl, Duration::from_secs(600));
    assert_eq!(
        config.health.unwrap().bind_address,
        "[::1]:9080".parse().unwrap()
    );
    let endpoint = config.federation.bundle_endpoint.unwrap();
    assert_eq!(endpoint.refresh_hint, Duration::from_secs(60));
    assert_eq!(
        endpoint.profile,
        EndpointProfile::HttpsWeb {
            cert_file: "/etc/sigil/web.pem".into(),
            key_file: "/etc/sigil/web.key".into()
        }
    );
    let [b, c] = &config.federation.federates_with[..] else {
        panic!("two relationships")
    };
    assert_eq!(b.trust_domain.as_str(), "b.test");
    assert_eq!(
        b.profile,
        RemoteProfile::HttpsSpiffe {
            endpoint_spiffe_id: "spiffe://b.test/sigil/server".parse().unwrap(),
            bundle_path: Some("/etc/sigil/b.pem".into())
        }
    );
    assert_eq!(c.url, "https://c.example/bundle");
    assert_eq!(
        c.profile,
        RemoteProfile::HttpsWeb {
            ca_file: Some("/etc/ssl/c.pem".into()),
            ca_roots: None,
        }
    );
}

#[test]
fn long_svid_ttls_and_federation_warn() {
    let config = ok(&format!(
        "{HEAD}[ca]\nttl = \"24h\"\n[svid]\ndefault_x509_ttl = \"5h\"\n"
    ));
    let warnings: Vec<String> = config.warnings().iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        [
            "svid.default_x509_ttl: 5h is more than a sixth of ca.ttl (1d): SVIDs signed late in \
          a CA's life will be cut short to 4h"
        ]
    );
    // Exactly a sixth is fine.
    assert!(
        ok(&format!(
            "{HEAD}[ca]\nttl = \"24h\"\n[svid]\ndefault_x509_ttl = \"4h\"\n"
        ))
        .warnings()
        .is_empty()
    );
    // Federation is acted on, both ways: no warning.
    let config = ok(&format!(
        "{HEAD}[federation.bundle_endpoint]\nbind_address = \"0.0.0.0:8443\"\n"
    ));
    assert!(config.warnings().is_empty());
    let config = ok(&format!(
        "{HEAD}[[federation.federates_with]]\ntrust_domain = \"b.test\"\nurl = \"https://b\"\nprofile = \"https_web\"\n"
    ));
    assert!(config.warnings().is_empty());
}

#[test]
fn jwt_issuer_and_oidc_discovery() {
    let config = ok(&format!(
        "{HEAD}[svid]\njwt_issuer = \"https://oidc.example.org\"\n\
         [oidc_discovery]\nbind_address = \"127.0.0.1:9444\"\ncert_file = \"web.pem\"\n\
         key_file = \"/etc/web.key\"\n"
    ));
    assert_eq!(
        config.svid.jwt_issuer.as_deref(),
        Some("https://oidc.example.org")
    );
    let oidc = config.oidc_discovery.unwrap();
    assert_eq!(oidc.bind_address, "127.0.0.1:9444".parse().unwrap());
    assert!(oidc.cert_file.is_absolute() && oidc.cert_file.ends_with("web.pem"));
    assert_eq!(oidc.key_file, Path::new("/etc/web.key"));
    let config = ok(HEAD);
    assert_eq!(config.svid.jwt_issuer, None);
    assert_eq!(config.oidc_discovery, None);
}

#[test]
fn listeners_may_share_port_zero_but_not_a_real_port() {
    ok(&format!(
        "{HEAD}bind_address = \"127.0.0.1:0\"\n[health]\nbind_address = \"127.0.0.1:0\"\n"
    ));
    ok(&format!(
        "{HEAD}bind_address = \"127.0.0.1:8081\"\n[health]\nbind_address = \"127.0.0.2:8081\"\n"
    ));
}

/// Each bad config and the exact error it gets: every message names the key.
#[test]
fn bad_configs_get_errors_naming_the_key() {
    let long_socket = format!("/{}/admin.sock", "s".repeat(100));
    let cases: Vec<(String, &str)> = vec![
        (
            format!("{HEAD}foo = 1\n"),
            "line 3, column 1: unknown key \"foo\" at the top level; expected one of \
             trust_domain, data_dir, bind_address, advertise_address, admin_socket, datastore, ca, \
             svid, health, federation, oidc_discovery",
        ),
        (
            format!("{HEAD}advertise_address = \"10.0.0.1\"\n"),
            "line 3, column 21: advertise_address: invalid address \"10.0.0.1\": write HOST:PORT, such as 127.0.0.1:8081",
        ),
        (
            format!("{HEAD}[svid]\nfoo = \"1h\"\n"),
            "line 4, column 1: unknown key \"foo\" at svid; expected one of default_x509_ttl, \
             default_jwt_ttl, jwt_issuer",
        ),
        (
            format!("{HEAD}[ca.upstream]\ncert_file = \"c.pem\"\nkey = \"k.pem\"\n"),
            "line 5, column 1: unknown key \"key\" at ca.upstream; expected cert_file or key_file",
        ),
        (
            format!(
                "{HEAD}[[federation.federates_with]]\ntrust_domain = \"b.test\"\nurl = \"https://b\"\nprofile = \"https_web\"\nrefresh = \"1m\"\n"
            ),
            "line 7, column 1: unknown key \"refresh\" at federation.federates_with[0]; expected \
             one of trust_domain, url, profile, endpoint_spiffe_id, bundle_path, ca_file",
        ),
        (
            "data_dir = \"d\"\n".to_owned(),
            "line 1, column 1: missing required key \"trust_domain\"",
        ),
        (
            "trust_domain = \"a.test\"\n".to_owned(),
            "line 1, column 1: missing required key \"data_dir\"",
        ),
        (
            "trust_domain = \"Example.org\"\ndata_dir = \"d\"\n".to_owned(),
            "line 1, column 16: trust_domain: invalid value \"Example.org\": trust domain characters are limited \
             to lowercase letters, numbers, dots, dashes, and underscores (found 'E' at byte 0)",
        ),
        (
            "trust_domain = \"spiffe://a.test\"\ndata_dir = \"d\"\n".to_owned(),
            "line 1, column 16: trust_domain: invalid value \"spiffe://a.test\": trust domain characters are \
             limited to lowercase letters, numbers, dots, dashes, and underscores (found ':' at \
             byte 6)",
        ),
        (
            format!("{HEAD}[ca]\nttl = \"1x\"\n"),
            "line 4, column 7: ca.ttl: invalid duration \"1x\": write it like 30s, 5m, 1h, 24h or 1h30m (units s, \
             m, h, d)",
        ),
        (
            format!("{HEAD}[ca]\nttl = 24\n"),
            "line 4, column 7: ca.ttl: invalid type: integer `24`, expected a string",
        ),
        (
            format!("{HEAD}[ca]\nttl = \"0s\"\n"),
            "line 4, column 7: ca.ttl: \"0s\" is zero; it must be positive",
        ),
        (
            format!("{HEAD}[ca]\nkey_type = \"ed25519\"\n"),
            "line 4, column 12: ca.key_type: unknown key type \"ed25519\": expected ec-p256, ec-p384 or rsa-2048",
        ),
        (
            format!("{HEAD}[svid]\ndefault_jwt_ttl = \"\"\n"),
            "line 4, column 19: svid.default_jwt_ttl: duration is empty: write it like 30s, 5m, 1h or 24h",
        ),
        (
            format!("{HEAD}[svid]\ndefault_x509_ttl = \"5s\"\n"),
            "line 4, column 20: svid.default_x509_ttl: 5s is outside the allowed range 10s to 30d",
        ),
        (
            format!("{HEAD}[ca]\nttl = \"1h\"\n"),
            "svid.default_x509_ttl: 1h must be shorter than ca.ttl (1h): no SVID outlives the \
             CA that signed it",
        ),
        (
            format!("{HEAD}[ca]\nttl = \"2h\"\n[svid]\ndefault_jwt_ttl = \"3h\"\n"),
            "line 6, column 19: svid.default_jwt_ttl: 3h must be shorter than ca.ttl (2h): no SVID outlives the CA \
             that signed it",
        ),
        (
            format!("{HEAD}[datastore]\nurl = \"redis://user:pw@host/0\"\n"),
            "line 4, column 7: datastore.url: unsupported scheme \"redis\": expected sqlite, postgres, postgresql \
             or mysql",
        ),
        (
            format!("{HEAD}[datastore]\nurl = \"data.sqlite3\"\n"),
            "line 4, column 7: datastore.url: not a URL: write sqlite://PATH, postgres://... or mysql://...",
        ),
        (
            format!("{HEAD}[datastore]\nurl = \"sqlite://\"\n"),
            "line 4, column 7: datastore.url: the sqlite URL has no file path",
        ),
        (
            format!("{HEAD}[datastore]\nurl = \"sqlite::memory:\"\n"),
            "line 4, column 7: datastore.url: in-memory sqlite is not supported: the server's state must survive \
             a restart",
        ),
        (
            format!("{HEAD}[datastore]\nurl = \"sqlite://s.db?mode=rwc\"\n"),
            "line 4, column 7: datastore.url: sqlite URL options are not supported: Sigil sets the journal mode \
             and busy timeout itself",
        ),
        (
            format!("{HEAD}[datastore]\nurl = \"postgres://user:secret@/db\"\n"),
            "line 4, column 7: datastore.url: not a valid postgres URL: empty host",
        ),
        (
            format!("{HEAD}bind_address = \"localhost:8081\"\n"),
            "line 3, column 16: bind_address: invalid address \"localhost:8081\": write IP:PORT, such as \
             0.0.0.0:8081 or [::1]:8081",
        ),
        (
            format!("{HEAD}data_dir2 = \"\"\n"),
            "line 3, column 1: unknown key \"data_dir2\" at the top level; expected one of \
             trust_domain, data_dir, bind_address, advertise_address, admin_socket, datastore, ca, \
             svid, health, federation, oidc_discovery",
        ),
        (
            format!("{HEAD}advertise_address = \"10.0.0.1\"\n"),
            "line 3, column 21: advertise_address: invalid address \"10.0.0.1\": write HOST:PORT, such as 127.0.0.1:8081",
        ),
        (
            format!("{HEAD}[svid]\njwt_issuer = \"http://oidc.example.org\"\n"),
            "line 4, column 14: svid.jwt_issuer: scheme \"http\" is not allowed: an OIDC issuer is an \
             https URL",
        ),
        (
            format!("{HEAD}[svid]\njwt_issuer = \"https://oidc.example.org/?a=b\"\n"),
            "line 4, column 14: svid.jwt_issuer: \"https://oidc.example.org/?a=b\" has a query or \
             fragment, which an OIDC issuer may not have",
        ),
        (
            format!("{HEAD}[oidc_discovery]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n"),
            "line 3, column 1: oidc_discovery: needs svid.jwt_issuer: the discovery document names \
             the issuer that JWT-SVIDs carry as iss",
        ),
        (
            format!(
                "{HEAD}[svid]\njwt_issuer = \"https://o.test\"\n[oidc_discovery]\ncert_file = \"c.pem\"\n"
            ),
            "missing required key \"oidc_discovery.key_file\"",
        ),
        (
            format!(
                "{HEAD}[svid]\njwt_issuer = \"https://o.test\"\n[oidc_discovery]\ncert_file = \"c.pem\"\n\
                 key_file = \"k.pem\"\n[federation.bundle_endpoint]\nbind_address = \"0.0.0.0:8444\"\n"
            ),
            "oidc_discovery.bind_address: 0.0.0.0:8444 conflicts with \
             federation.bundle_endpoint.bind_address (0.0.0.0:8444)",
        ),
        (
            "trust_domain = \"a.test\"\ndata_dir = \"\"\n".to_owned(),
            "line 2, column 12: data_dir: path is empty",
        ),
        (
            format!("{HEAD}admin_socket = \"{long_socket}\"\n"),
            "line 3, column 16: admin_socket: \"/sssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssss\
             sssssssssssssssssssssssssssssssssss/admin.sock\" is 112 bytes long; a Unix socket \
             path is limited to 107 bytes (choose a shorter path)",
        ),
        (
            format!("{HEAD}[health]\nbind_address = \"0.0.0.0:8081\"\n"),
            "line 4, column 16: health.bind_address: 0.0.0.0:8081 conflicts with bind_address (0.0.0.0:8081)",
        ),
        (
            format!("{HEAD}bind_address = \"127.0.0.1:8443\"\n[federation.bundle_endpoint]\n"),
            "federation.bundle_endpoint.bind_address: 0.0.0.0:8443 conflicts with bind_address \
             (127.0.0.1:8443)",
        ),
        (
            format!("{HEAD}[federation.bundle_endpoint]\nprofile = \"https\"\n"),
            "line 4, column 11: federation.bundle_endpoint.profile: unknown profile \"https\": expected \
             https_spiffe or https_web",
        ),
        (
            format!(
                "{HEAD}[federation.bundle_endpoint]\nprofile = \"https_web\"\ncert_file = \"c.pem\"\n"
            ),
            "missing required key \"federation.bundle_endpoint.key_file\"",
        ),
        (
            format!("{HEAD}[federation.bundle_endpoint]\ncert_file = \"c.pem\"\n"),
            "line 4, column 13: federation.bundle_endpoint.cert_file: only the https_web profile takes a \
             certificate file; https_spiffe serves the server's own SVID",
        ),
        (
            format!("{HEAD}[federation.bundle_endpoint]\nrefresh_hint = \"soon\"\n"),
            "line 4, column 16: federation.bundle_endpoint.refresh_hint: invalid duration \"soon\": write it like \
             30s, 5m, 1h, 24h or 1h30m (units s, m, h, d)",
        ),
        (
            format!(
                "{HEAD}[[federation.federates_with]]\ntrust_domain = \"b.test\"\nurl = \"http://b.example\"\nprofile = \"https_web\"\n"
            ),
            "line 5, column 7: federation.federates_with[0].url: scheme \"http\" is not allowed: bundle endpoints \
             are https only",
        ),
        (
            format!(
                "{HEAD}[[federation.federates_with]]\ntrust_domain = \"b.test\"\nurl = \"b.example\"\nprofile = \"https_web\"\n"
            ),
            "line 5, column 7: federation.federates_with[0].url: invalid value \"b.example\": relative URL \
             without a base",
        ),
        (
            format!(
                "{HEAD}[[federation.federates_with]]\ntrust_domain = \"b.test\"\nurl = \"https://b\"\nprofile = \"https_spiffe\"\n"
            ),
            "missing required key \"federation.federates_with[0].endpoint_spiffe_id\"",
        ),
        (
            format!(
                "{HEAD}[[federation.federates_with]]\ntrust_domain = \"b.test\"\nurl = \"https://b\"\nprofile = \"https_spiffe\"\nendpoint_spiffe_id = \"spiffe://c.test/sigil/server\"\n"
            ),
            "line 7, column 22: federation.federates_with[0].endpoint_spiffe_id: \"spiffe://c.test/sigil/server\" \
             is not in trust domain \"b.test\"",
        ),
        (
            format!(
                "{HEAD}[[federation.federates_with]]\ntrust_domain = \"b.test\"\nurl = \"https://b\"\nprofile = \"https_web\"\nendpoint_spiffe_id = \"spiffe://b.test/x\"\n"
            ),
            "line 7, column 22: federation.federates_with[0].endpoint_spiffe_id: not used with the https_web \
             profile",
        ),
        (
            format!(
                "{HEAD}[[federation.federates_with]]\ntrust_domain = \"example.org\"\nurl = \"https://b\"\nprofile = \"https_web\"\n"
            ),
            "line 4, column 16: federation.federates_with[0].trust_domain: \"example.org\" is this server's own \
             trust domain",
        ),
        (
            format!(
                "{HEAD}[[federation.federates_with]]\ntrust_domain = \"b.test\"\nurl = \"https://b\"\nprofile = \"https_web\"\n\
                     [[federation.federates_with]]\ntrust_domain = \"b.test\"\nurl = \"https://b2\"\nprofile = \"https_web\"\n"
            ),
            "line 8, column 16: federation.federates_with[1].trust_domain: \"b.test\" is already listed at \
             federation.federates_with[0]",
        ),
        (
            format!("{HEAD}health = \"127.0.0.1:8080\"\n"),
            "line 3, column 10: health: invalid type: string \"127.0.0.1:8080\", expected a table",
        ),
        (
            format!("{HEAD}[ca\n"),
            "line 3, column 4: invalid TOML: unclosed table, expected `]`",
        ),
    ];
    let mut wrong = Vec::new();
    for (text, expected) in cases {
        let actual = err(&text);
        if actual != expected {
            wrong.push(format!(
                "config:\n{text}\nexpected: {expected}\nactual:   {actual}\n"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn errors_expose_the_key() {
    let error = Config::parse(&format!("{HEAD}[svid]\nfoo = 1\n"), Path::new(BASE)).unwrap_err();
    assert_eq!(error.key().as_deref(), Some("svid.foo"));
    assert_eq!(error.position(), Some((4, 1)));
    let error = Config::parse(&format!("{HEAD}[ca]\nttl = \"x\"\n"), Path::new(BASE)).unwrap_err();
    assert_eq!(error.key().as_deref(), Some("ca.ttl"));
    let error = Config::parse("data_dir = \"d\"", Path::new(BASE)).unwrap_err();
    assert_eq!(error.key().as_deref(), Some("trust_domain"));
}

#[test]
fn load_names_the_file_and_reads_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.toml");
    std::fs::write(&path, format!("{HEAD}[svid]\nfoo = 1\n")).unwrap();
    let error = Config::load(&path).unwrap_err().to_string();
    assert_eq!(
        error,
        format!(
            "{}:4:1: unknown key \"foo\" at svid; expected one of default_x509_ttl, default_jwt_ttl, jwt_issuer",
            path.display()
        )
    );

    std::fs::write(&path, HEAD).unwrap();
    let config = Config::load(&path).unwrap();
    assert_eq!(config.data_dir, dir.path().join("data"));
    // Nothing was created next to the config: no data_dir, no database, no socket.
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1);

    let missing = dir.path().join("absent.toml");
    let error = Config::load(&missing).unwrap_err().to_string();
    assert!(
        error.starts_with(&format!(
            "{}: cannot read the config file: ",
            missing.display()
        )),
        "{error}"
    );
}
