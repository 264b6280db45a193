//! The peer transport, outbound only: [`client`] is what OpenRaft replicates through (one
//! long-lived HTTP/2 [`channel`] per peer address, reused by every RPC) plus the pool the
//! node's own peer calls use; [`peer`] is the typed client of those calls (forward a write,
//! ask for a read index, join, remove, probe status). The service that receives them is an
//! inbound edge, `api::peer`. Peer-port traffic is only for trusted cluster members.

pub mod channel;
pub mod client;
pub mod hold;
pub mod peer;

pub use channel::LinkTiming;
pub use client::{PeerClients, PeerNetwork};
pub use hold::CommitHold;
pub use peer::PeerError;
