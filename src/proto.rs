//! Generated types and services of the host's `protocol` package.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

tonic::include_proto!("protocol");

/// Encoded descriptors of every file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("protocol_descriptor");
