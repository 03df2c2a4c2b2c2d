//! Which server the agent talks to: the configured `server_address` entries (each
//! `HOST:PORT`; a name may resolve to several addresses), in this agent's order of preference.
//!
//! The order is rendezvous hashing (highest random weight): an address's weight is a hash of
//! the agent's key (its SPIFFE ID) and the address, and the agent prefers the heaviest. So the
//! agents of a trust domain spread evenly over its servers without talking to each other, each
//! agent has the same first choice at every restart, and when a server leaves or returns only
//! the agents whose first choice it is move (a server's return does not reshuffle the rest).

use std::net::SocketAddr;

/// The configured server addresses, resolved at each use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerAddresses {
    configured: Vec<String>,
}

impl ServerAddresses {
    /// The addresses as configured (`HOST:PORT` each, already checked).
    pub fn new(configured: Vec<String>) -> Self {
        Self { configured }
    }

    /// What was configured, for messages.
    pub fn describe(&self) -> String {
        self.configured.join(", ")
    }

    /// Every address the configured entries resolve to now, each once, heaviest first for
    /// `key`. A name that does not resolve is logged and skipped: the others may still serve.
    pub async fn candidates(&self, key: &str) -> Vec<SocketAddr> {
        let mut found = Vec::new();
        for entry in &self.configured {
            match tokio::net::lookup_host(entry.as_str()).await {
                Ok(addresses) => found.extend(addresses),
                Err(error) => tracing::warn!(server_address = %entry, "cannot resolve: {error}"),
            }
        }
        in_preference_order(key, found)
    }
}

/// `addresses` without repeats, heaviest first for `key` (ties, which a 64-bit hash makes
/// rare, by address).
pub fn in_preference_order(key: &str, mut addresses: Vec<SocketAddr>) -> Vec<SocketAddr> {
    addresses.sort_unstable();
    addresses.dedup();
    let mut weighted: Vec<(u64, SocketAddr)> = addresses
        .into_iter()
        .map(|address| (weight(key, &address), address))
        .collect();
    weighted.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    weighted.into_iter().map(|(_, address)| address).collect()
}

/// The first 8 bytes of SHA-256 over the key and the address: the same on every agent build
/// and platform, unlike std's hasher, so an agent's preference survives upgrades.
fn weight(key: &str, address: &SocketAddr) -> u64 {
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    context.update(key.as_bytes());
    // A separator no SPIFFE ID contains keeps "a" + "b:1" apart from "ab" + ":1".
    context.update(b"\0");
    context.update(address.to_string().as_bytes());
    let digest = context.finish();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use super::*;

    fn servers(count: u16) -> Vec<SocketAddr> {
        (0..count)
            .map(|i| SocketAddr::from(([10, 0, 0, 1], 8081 + i)))
            .collect()
    }

    fn agent(i: usize) -> String {
        format!("spiffe://example.org/spire/agent/join_token/{i:08}")
    }

    #[test]
    fn the_order_is_a_permutation_without_repeats_and_stable() {
        let mut with_repeats = servers(3);
        with_repeats.push(with_repeats[0]);
        let order = in_preference_order(&agent(1), with_repeats);
        assert_eq!(order.len(), 3);
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, servers(3));
        // The same for the same key, whatever order the addresses came in.
        let mut reversed = servers(3);
        reversed.reverse();
        assert_eq!(in_preference_order(&agent(1), reversed), order);
    }

    #[test]
    fn agents_spread_evenly_over_the_servers() {
        let mut first_choices: BTreeMap<SocketAddr, usize> = BTreeMap::new();
        for i in 0..3000 {
            let order = in_preference_order(&agent(i), servers(3));
            *first_choices.entry(order[0]).or_default() += 1;
        }
        assert_eq!(first_choices.len(), 3);
        // 1,000 each on average; a uniform hash stays well within 15% of it.
        for (server, count) in first_choices {
            assert!((850..=1150).contains(&count), "{server}: {count}");
        }
    }

    #[test]
    fn a_server_leaving_or_returning_moves_only_its_own_agents() {
        let all = servers(3);
        let without_last: Vec<_> = all[..2].to_vec();
        let mut moved = 0;
        for i in 0..3000 {
            let with = in_preference_order(&agent(i), all.clone())[0];
            let without = in_preference_order(&agent(i), without_last.clone())[0];
            if with == all[2] {
                moved += 1;
            } else {
                // An agent that did not prefer the missing server keeps its choice.
                assert_eq!(with, without, "agent {i} moved needlessly");
            }
        }
        assert!(moved > 0);
    }

    #[tokio::test]
    async fn names_resolve_and_an_unresolvable_one_is_skipped() {
        let addresses = ServerAddresses::new(vec![
            "127.0.0.1:8081".to_owned(),
            "localhost:8082".to_owned(),
            "no-such-host.invalid:8083".to_owned(),
        ]);
        let found = addresses.candidates(&agent(0)).await;
        assert!(
            found.contains(&"127.0.0.1:8081".parse().unwrap()),
            "{found:?}"
        );
        assert!(found.iter().any(|a| a.port() == 8082), "{found:?}");
        assert!(found.iter().all(|a| a.port() != 8083), "{found:?}");
    }
}
