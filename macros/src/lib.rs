//! `#[procwire::service]`: one trait becomes a typed client and a server dispatcher.
//!
//! The attribute itself lands with the service macro; until then, services are written by
//! hand against [`procwire-rpc`]'s `Service` trait, as its conformance suite does.
#![deny(missing_docs)]
