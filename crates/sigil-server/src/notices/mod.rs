//! Change notices between the servers of a MySQL/MariaDB datastore, which (unlike
//! PostgreSQL's `LISTEN`/`NOTIFY`) cannot tell one connection that another committed.
//!
//! Each server serves `sigil.server.v1.Peer/WatchChanges` on its agent API port ([`publisher`]):
//! a stream that sends a notice after each of its commits. Each server finds the others in the
//! datastore (`server_peers`: instance, address, last seen) and keeps a stream open to each
//! ([`subscriber`]); a notice wakes its feed follower, which reads the events table at once.
//! Both ends authenticate as the server SPIFFE ID over the servers' own mutual TLS. A notice
//! carries no data (the feed is the truth), so a lost or duplicated one costs latency or a
//! read, never a change: while every running server's stream is open the follower reads the
//! feed only on notices and on a slow sweep ([`crate::datastore::SWEEP_INTERVAL`]); while any
//! is not, it reads every [`crate::datastore::POLL_INTERVAL`] as before.

pub mod address;
pub mod publisher;
pub mod subscriber;

pub use address::advertised_address;
pub use publisher::PeerEndpoint;
pub use subscriber::subscribe_to_peers;
