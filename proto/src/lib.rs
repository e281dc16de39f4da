//! Generated types and services of the `docker_agent.v1` protocol, plus the few constants both ends agree on.

#![forbid(unsafe_code)]

pub mod codec;

/// Version 1 of the protocol: the agent stream and the control API.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("docker_agent.v1");
}

/// Protocol version the agent announces in `Hello`. The hub refuses agents that speak another major version.
pub const PROTOCOL_VERSION: u32 = 1;

/// gRPC metadata key carrying the agent id on the agent stream.
pub const AGENT_ID_HEADER: &str = "x-agent-id";
