//! A2A (Agent2Agent): our assistants as A2A agents ([`server`]), and external A2A agents as a
//! handler of our graphs ([`client`]). [`wire`] holds the objects and the two dialects (v1.0 and
//! v0.3) both sides speak.

pub mod client;
pub(crate) mod server;
pub mod wire;
