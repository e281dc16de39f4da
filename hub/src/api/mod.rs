//! The hub's transports: where agents connect (`agents`: the port and each agent's socket, the guard,
//! the agent service), the CLI's gRPC control API (`control`), the REST API and dashboard (`http`), how the operator side is
//! served (`operator`), and the connection limits they share (`limits`). A transport only translates: what it does is decided
//! below it.

pub mod agents;
pub mod control;
pub mod http;
pub mod json;
pub mod limits;
pub mod operator;

/// The largest message either gRPC service decodes (tonic's default, made explicit). A task's command
/// and environment are capped well below it (`task::MAX_SPEC_BYTES`), so whatever the hub accepts it
/// can forward to an agent.
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;
