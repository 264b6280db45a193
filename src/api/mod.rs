//! The client edges: REST ([`rest`]) and gRPC ([`grpc`]). Both call [`crate::node::RaftNode`]
//! and map failures through [`error::ApiError`] exactly once each (problem+json, `Status`).

pub mod error;
pub mod grpc;
pub mod rest;

/// Default page size of list calls.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Largest page size of list calls.
pub const MAX_PAGE_SIZE: usize = 1000;
