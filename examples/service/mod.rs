//! The parts of the two example services: the tables of the domain ([`entities`]), where the
//! settings come from ([`settings`]), JSON errors and the read endpoints ([`http`]), the
//! start and stop of a service ([`lifecycle`]), and what a client may send the master
//! ([`bodies`]).
//!
//! Not an example of its own: `examples/master.rs` and `examples/replica.rs` include it with
//! `mod service;`.

// Each example uses its own part of the module (the master writes, the replica only reads).
#![allow(dead_code)]

pub mod bodies;
pub mod entities;
pub mod http;
pub mod lifecycle;
pub mod settings;
