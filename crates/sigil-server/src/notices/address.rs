//! Where the other servers reach this one for its change notices: `advertise_address` when
//! configured; else the agent API's bound address when it names an IP; else (bound to every
//! interface) the local address of the route to the database host, the one network all the
//! servers sharing that database are sure to have in common.

use std::net::{IpAddr, SocketAddr};

use tokio::net::UdpSocket;

/// The address to advertise, or `None` (with the reason) when none can be found.
pub async fn advertised_address(
    configured: Option<&str>,
    bound: SocketAddr,
    datastore_url: &str,
) -> Result<String, String> {
    if let Some(address) = configured {
        return Ok(address.to_owned());
    }
    if !bound.ip().is_unspecified() {
        return Ok(bound.to_string());
    }
    let local = route_to(datastore_url).await?;
    Ok(SocketAddr::new(local, bound.port()).to_string())
}

/// The local IP the kernel would send from to the database host. A connected UDP socket
/// sends nothing; connecting only picks the route.
async fn route_to(datastore_url: &str) -> Result<IpAddr, String> {
    let url = url::Url::parse(datastore_url)
        .map_err(|e| format!("cannot read the datastore url's host: {e}"))?;
    let host = url
        .host_str()
        .filter(|host| !host.is_empty())
        .ok_or("the datastore url has no host")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = url.port().unwrap_or(3306);
    let target = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve the datastore host {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("the datastore host {host} has no address"))?;
    let any: SocketAddr = if target.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(any)
        .await
        .map_err(|e| format!("cannot open a socket: {e}"))?;
    socket
        .connect(target)
        .await
        .map_err(|e| format!("no route to the datastore host {target}: {e}"))?;
    socket
        .local_addr()
        .map(|local| local.ip())
        .map_err(|e| format!("cannot read the local address: {e}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn configured_then_bound_then_the_route_to_the_database() {
        let any: SocketAddr = "0.0.0.0:8081".parse().unwrap();
        let url = "mysql://root@127.0.0.1:3306/sigil";
        assert_eq!(
            advertised_address(Some("10.1.2.3:9000"), any, url)
                .await
                .unwrap(),
            "10.1.2.3:9000"
        );
        let bound: SocketAddr = "10.0.0.7:8081".parse().unwrap();
        assert_eq!(
            advertised_address(None, bound, url).await.unwrap(),
            "10.0.0.7:8081"
        );
        // Bound everywhere, database on loopback: loopback is the shared network.
        assert_eq!(
            advertised_address(None, any, url).await.unwrap(),
            "127.0.0.1:8081"
        );
        let error = advertised_address(None, any, "mysql:///sigil")
            .await
            .unwrap_err();
        assert!(error.contains("no host"), "{error}");
    }
}
