//! Federation: serving our trust bundle to other trust domains ([`endpoint`]).

pub mod endpoint;
