//! The peer transport. [`client`] is what OpenRaft replicates through (one long-lived HTTP/2
//! [`channel`] per peer address, reused by every RPC) plus the typed calls other modules make
//! to peers (forward a write, ask for a read index, join). [`server`] is the peer gRPC
//! service that receives them. Peer-port traffic is only for trusted cluster members.

pub mod channel;
pub mod client;
pub mod lease;
pub mod server;

pub use client::{PeerClients, PeerNetwork};
pub use server::PeerService;
