//! Where agents connect: the accept loops of the TCP port and of each agent's own socket
//! (`listener`), what each source may hold (`guard`), the per-agent sockets (`sockets`), and the
//! gRPC agent service that authenticates a link and hands it to `agent::link` (`service`).

pub mod guard;
pub mod listener;
pub mod serve;
pub mod service;
pub mod sockets;

pub use service::AgentSvc;
