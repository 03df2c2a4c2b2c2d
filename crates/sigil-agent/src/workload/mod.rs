//! The workload side of the agent: the Unix socket, who is calling, and the Workload API.

pub mod authority;
