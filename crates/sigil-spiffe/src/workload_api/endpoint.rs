//! The Workload API endpoint address (SPIFFE_Workload_Endpoint.md §4; checklist item 47 and
//! §2.7): `unix:///absolute/path` (or `unix:/absolute/path`) and `tcp://IP:PORT`, nothing else.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The environment variable a workload reads its endpoint address from when it is given none
/// (SPIFFE_Workload_Endpoint.md §4: the fallback is a MUST).
pub const SPIFFE_ENDPOINT_SOCKET: &str = "SPIFFE_ENDPOINT_SOCKET";

/// Where the Workload API is served: a Unix socket (preferred) or a TCP address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// A Unix domain socket, by absolute path.
    Unix(PathBuf),
    /// A TCP address; the host is always an IP literal.
    Tcp(SocketAddr),
}

/// Why an endpoint address was refused. Each variant names the rule it breaks.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// `SPIFFE_ENDPOINT_SOCKET` is unset or empty.
    #[error("no workload api address: {SPIFFE_ENDPOINT_SOCKET} is not set")]
    NotSet,
    /// `SPIFFE_ENDPOINT_SOCKET` holds bytes that are not UTF-8.
    #[error("{SPIFFE_ENDPOINT_SOCKET} is not valid UTF-8")]
    NotUnicode,
    /// Whitespace or a control character: not a URI at all.
    #[error(
        "workload api address is not a valid URI: it contains whitespace or a control character"
    )]
    NotUri,
    /// No `scheme:` prefix.
    #[error(
        "workload api address must be a URI with the scheme unix or tcp, e.g. unix:///run/spire/agent.sock"
    )]
    MissingScheme,
    /// A scheme other than `unix` and `tcp`.
    #[error("workload api address has scheme {0:?}: only unix and tcp are allowed")]
    UnsupportedScheme(String),
    /// `unix:foo` or `tcp:1.2.3.4:5`: neither `//authority` nor an absolute path follows.
    #[error(
        "{scheme} workload api address must not be opaque: expected {}",
        example(scheme)
    )]
    Opaque {
        /// `unix` or `tcp`.
        scheme: &'static str,
    },
    /// `user:password@` in the authority.
    #[error("{scheme} workload api address must not include user info")]
    UserInfo {
        /// `unix` or `tcp`.
        scheme: &'static str,
    },
    /// A `?query`.
    #[error("{scheme} workload api address must not include query values")]
    Query {
        /// `unix` or `tcp`.
        scheme: &'static str,
    },
    /// A `#fragment`.
    #[error("{scheme} workload api address must not include a fragment")]
    Fragment {
        /// `unix` or `tcp`.
        scheme: &'static str,
    },
    /// `unix://` or `unix:` without a path.
    #[error("unix workload api address must include a path, e.g. unix:///run/spire/agent.sock")]
    UnixNoPath,
    /// `unix://host/...`: a Unix socket address has no authority, and a relative path is
    /// ambiguous.
    #[error(
        "unix workload api address must not have an authority ({0:?}): use an absolute path, \
         unix:///path"
    )]
    UnixAuthority(String),
    /// A percent sign not followed by two hex digits, or an escape that decodes to a NUL or
    /// to bytes that are not UTF-8.
    #[error("unix workload api address has an invalid percent-encoded path")]
    UnixPathEncoding,
    /// `tcp://` with no host.
    #[error("tcp workload api address must include a host")]
    TcpNoHost,
    /// A host name rather than an IP literal.
    #[error("tcp workload api address host must be an IP address, not {0:?}")]
    TcpHostNotIp(String),
    /// No `:port`.
    #[error("tcp workload api address must include a port")]
    TcpNoPort,
    /// A port that is not a number from 0 to 65535.
    #[error("tcp workload api address has an invalid port {0:?}")]
    TcpInvalidPort(String),
    /// Anything after the port.
    #[error("tcp workload api address must not include a path")]
    TcpPath,
}

impl Endpoint {
    /// Reads [`SPIFFE_ENDPOINT_SOCKET`].
    pub fn from_env() -> Result<Self, EndpointError> {
        match std::env::var(SPIFFE_ENDPOINT_SOCKET) {
            Ok(value) if !value.is_empty() => value.parse(),
            Ok(_) | Err(std::env::VarError::NotPresent) => Err(EndpointError::NotSet),
            Err(std::env::VarError::NotUnicode(_)) => Err(EndpointError::NotUnicode),
        }
    }

    /// The socket path of a Unix endpoint.
    pub fn unix_path(&self) -> Option<&Path> {
        match self {
            Self::Unix(path) => Some(path),
            Self::Tcp(_) => None,
        }
    }
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(address: &str) -> Result<Self, Self::Err> {
        if address.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(EndpointError::NotUri);
        }
        let (scheme, rest) = address
            .split_once(':')
            .filter(|(scheme, _)| is_scheme(scheme))
            .ok_or(EndpointError::MissingScheme)?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "unix" => "unix",
            "tcp" => "tcp",
            _ => return Err(EndpointError::UnsupportedScheme(scheme.to_owned())),
        };
        let (rest, fragment) = split_off(rest, '#');
        let (rest, query) = split_off(rest, '?');
        let (authority, path) = if let Some(after) = rest.strip_prefix("//") {
            let end = after.find('/').unwrap_or(after.len());
            (Some(&after[..end]), &after[end..])
        } else if rest.starts_with('/') || rest.is_empty() {
            (None, rest)
        } else {
            return Err(EndpointError::Opaque { scheme });
        };
        // The order of the checks follows go-spiffe's, so both name the same problem first.
        if authority.is_some_and(|a| a.contains('@')) {
            return Err(EndpointError::UserInfo { scheme });
        }
        if query.is_some() {
            return Err(EndpointError::Query { scheme });
        }
        if fragment.is_some() {
            return Err(EndpointError::Fragment { scheme });
        }
        if scheme == "unix" {
            parse_unix(authority.unwrap_or(""), path)
        } else {
            parse_tcp(authority.unwrap_or(""), path)
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix(path) => {
                f.write_str("unix://")?;
                for byte in path.to_string_lossy().bytes() {
                    if byte.is_ascii_alphanumeric() || b"/-._~".contains(&byte) {
                        write!(f, "{}", char::from(byte))?;
                    } else {
                        write!(f, "%{byte:02X}")?;
                    }
                }
                Ok(())
            }
            Self::Tcp(address) => write!(f, "tcp://{address}"),
        }
    }
}

/// How a good address of the scheme looks, for error messages.
fn example(scheme: &str) -> &'static str {
    if scheme == "unix" {
        "unix:///absolute/path"
    } else {
        "tcp://IP:PORT"
    }
}

/// RFC 3986: `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`.
fn is_scheme(scheme: &str) -> bool {
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
}

fn split_off(input: &str, separator: char) -> (&str, Option<&str>) {
    match input.split_once(separator) {
        Some((before, after)) => (before, Some(after)),
        None => (input, None),
    }
}

fn parse_unix(authority: &str, path: &str) -> Result<Endpoint, EndpointError> {
    if !authority.is_empty() {
        return Err(EndpointError::UnixAuthority(authority.to_owned()));
    }
    if path.is_empty() || path == "/" {
        return Err(EndpointError::UnixNoPath);
    }
    Ok(Endpoint::Unix(PathBuf::from(percent_decode(path)?)))
}

fn parse_tcp(authority: &str, path: &str) -> Result<Endpoint, EndpointError> {
    if authority.is_empty() {
        return Err(EndpointError::TcpNoHost);
    }
    if !path.is_empty() {
        return Err(EndpointError::TcpPath);
    }
    // `[v6]:port` or `v4:port`; the port is after the last colon outside brackets.
    let (host, port) = match authority.rfind(':') {
        Some(colon) if !authority[colon..].contains(']') => {
            (&authority[..colon], Some(&authority[colon + 1..]))
        }
        _ => (authority, None),
    };
    let ip = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let ip: std::net::IpAddr = ip
        .parse()
        .map_err(|_| EndpointError::TcpHostNotIp(host.to_owned()))?;
    if ip.is_ipv6() && !host.starts_with('[') {
        // `tcp://::1` would be read as host `:` and port `1`; only the bracketed form is a URI.
        return Err(EndpointError::TcpHostNotIp(host.to_owned()));
    }
    let port = match port {
        None | Some("") => return Err(EndpointError::TcpNoPort),
        Some(port) => port
            .parse::<u16>()
            .map_err(|_| EndpointError::TcpInvalidPort(port.to_owned()))?,
    };
    Ok(Endpoint::Tcp(SocketAddr::new(ip, port)))
}

fn percent_decode(path: &str) -> Result<String, EndpointError> {
    let mut bytes = Vec::with_capacity(path.len());
    let mut input = path.bytes();
    while let Some(byte) = input.next() {
        if byte != b'%' {
            bytes.push(byte);
            continue;
        }
        let high = input.next().and_then(|b| char::from(b).to_digit(16));
        let low = input.next().and_then(|b| char::from(b).to_digit(16));
        match (high, low) {
            // Two hex digits make a value below 256.
            (Some(high), Some(low)) => bytes.push(u8::try_from(high * 16 + low).unwrap_or(0)),
            _ => return Err(EndpointError::UnixPathEncoding),
        }
    }
    if bytes.contains(&0) {
        return Err(EndpointError::UnixPathEncoding);
    }
    String::from_utf8(bytes).map_err(|_| EndpointError::UnixPathEncoding)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix(path: &str) -> Result<Endpoint, EndpointError> {
        Ok(Endpoint::Unix(PathBuf::from(path)))
    }

    fn tcp(address: &str) -> Result<Endpoint, EndpointError> {
        Ok(Endpoint::Tcp(address.parse().unwrap()))
    }

    #[test]
    fn the_go_spiffe_address_table_parses_the_same() {
        use EndpointError as E;
        // Checklist §2.7: every rejected case, then the accepted ones. `unix://foo` is the
        // one divergence: go-spiffe accepts it, the spec wants an absolute path.
        let cases: &[(&str, Result<Endpoint, EndpointError>)] = &[
            ("\t", Err(E::NotUri)),
            ("blah", Err(E::MissingScheme)),
            ("tcp:opaque", Err(E::Opaque { scheme: "tcp" })),
            ("tcp://", Err(E::TcpNoHost)),
            ("tcp://1.2.3.4:5?whatever", Err(E::Query { scheme: "tcp" })),
            (
                "tcp://1.2.3.4:5#whatever",
                Err(E::Fragment { scheme: "tcp" }),
            ),
            (
                "tcp://john:doe@1.2.3.4:5/path",
                Err(E::UserInfo { scheme: "tcp" }),
            ),
            ("tcp://1.2.3.4:5/path", Err(E::TcpPath)),
            ("tcp://foo", Err(E::TcpHostNotIp("foo".into()))),
            ("tcp://1.2.3.4", Err(E::TcpNoPort)),
            ("unix:opaque", Err(E::Opaque { scheme: "unix" })),
            ("unix://", Err(E::UnixNoPath)),
            ("unix://foo?whatever", Err(E::Query { scheme: "unix" })),
            ("unix://foo#whatever", Err(E::Fragment { scheme: "unix" })),
            (
                "unix://john:doe@foo/path",
                Err(E::UserInfo { scheme: "unix" }),
            ),
            ("tcp://1.2.3.4:5", tcp("1.2.3.4:5")),
            ("unix://foo", Err(E::UnixAuthority("foo".into()))),
            ("unix:///run/agent.sock", unix("/run/agent.sock")),
            ("unix:/run/agent.sock", unix("/run/agent.sock")),
        ];
        for (input, expected) in cases {
            assert_eq!(&input.parse::<Endpoint>(), expected, "{input:?}");
        }
    }

    #[test]
    fn more_addresses_beyond_the_table() {
        use EndpointError as E;
        let cases: &[(&str, Result<Endpoint, EndpointError>)] = &[
            ("", Err(E::MissingScheme)),
            ("/run/agent.sock", Err(E::MissingScheme)),
            ("http://1.2.3.4:5", Err(E::UnsupportedScheme("http".into()))),
            ("UNIX:///a.sock", unix("/a.sock")),
            ("unix:", Err(E::UnixNoPath)),
            ("unix:///", Err(E::UnixNoPath)),
            ("unix:///my%20dir/a.sock", unix("/my dir/a.sock")),
            ("unix:///a%2", Err(E::UnixPathEncoding)),
            ("unix:///a%00b", Err(E::UnixPathEncoding)),
            ("tcp://[::1]:8000", tcp("[::1]:8000")),
            ("tcp://::1:8000", Err(E::TcpHostNotIp("::1".into()))),
            ("tcp://1.2.3.4:", Err(E::TcpNoPort)),
            (
                "tcp://1.2.3.4:99999",
                Err(E::TcpInvalidPort("99999".into())),
            ),
            (
                "tcp://localhost:80",
                Err(E::TcpHostNotIp("localhost".into())),
            ),
            ("tcp:/1.2.3.4:5", Err(E::TcpNoHost)),
        ];
        for (input, expected) in cases {
            assert_eq!(&input.parse::<Endpoint>(), expected, "{input:?}");
        }
    }

    #[test]
    fn display_round_trips() {
        for input in [
            "unix:///run/spire/agent.sock",
            "unix:///my%20dir/a%25.sock",
            "tcp://127.0.0.1:8000",
            "tcp://[::1]:8000",
        ] {
            let endpoint: Endpoint = input.parse().unwrap();
            assert_eq!(endpoint.to_string(), input);
            assert_eq!(endpoint.to_string().parse::<Endpoint>().unwrap(), endpoint);
        }
    }

    #[test]
    fn errors_read_as_sentences() {
        let error = "tcp://foo:1".parse::<Endpoint>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "tcp workload api address host must be an IP address, not \"foo\""
        );
    }
}
