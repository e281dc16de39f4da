//! gRPC services: the agent stream (agent listener) and the control API (operator listener).

pub mod agent_svc;
mod catalog_svc;
pub mod control_svc;
mod convert;
mod copy_svc;
mod status;

pub use agent_svc::AgentSvc;
pub use control_svc::ControlSvc;
