//! gRPC services: the agent stream (agent listener) and the control API (operator listener).

pub mod agent_guard;
pub mod agent_listener;
pub mod agent_sockets;
pub mod agent_svc;
mod catalog_svc;
pub mod control_svc;
mod convert;
mod copy_svc;
mod status;

/// The largest message either gRPC service decodes (tonic's default, made explicit). A task's command
/// and environment are capped well below it (`tasks::MAX_SPEC_BYTES`), so whatever the hub accepts it
/// can forward to an agent.
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;

pub use agent_svc::AgentSvc;
pub use control_svc::ControlSvc;
