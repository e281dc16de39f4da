//! An agent's conduct on its link: the protocol violations the hub's half of the link (and the agent
//! service) can see, reported to whoever admitted the connection (`api::agents::guard`), which cuts a
//! source off after enough of them.

/// A break of the agent protocol. A real agent never commits one, except a bad token after its
/// agent was re-created, or a reconnect that overlaps its old stream; a few are tolerated for those.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// No authenticated hello within the deadline of the accept.
    NoHello,
    BadCredentials,
    /// The first message of a stream was not hello, or hello named another agent.
    BadHello,
    /// Credentials of one agent on another agent's socket.
    WrongSocket,
    /// More unauthenticated connections, or new ones faster, than an agent ever opens.
    Flood,
    /// A second process with the same identity while the first is connected.
    Duplicate,
    /// More connections than an agent holds.
    TooManyConnections,
    /// Output, a start or a result for a task that is not the agent's.
    ForeignTask,
    /// Output the hub asked the agent to stop sending (a quota was reached), far past the grace.
    UnwantedOutput,
    /// A message that makes no sense on a link (a second hello, output naming no stream).
    Malformed,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Violation::NoHello => "no authenticated hello in time",
            Violation::BadCredentials => "invalid credentials",
            Violation::BadHello => "a stream that did not open with its own hello",
            Violation::WrongSocket => "another agent's credentials on its socket",
            Violation::Flood => "more connections, or faster, than an agent opens",
            Violation::Duplicate => "a second process with the same identity",
            Violation::TooManyConnections => "more connections than an agent may hold",
            Violation::ForeignTask => "messages about tasks that are not its own",
            Violation::UnwantedOutput => "output it was told to stop sending",
            Violation::Malformed => "malformed messages",
        })
    }
}

/// Where violations go: the connection's standing with the guard.
pub trait Conduct: Send + Sync + std::fmt::Debug {
    /// Records a violation; true when it cut the connection's source off (the connection is then
    /// closed already).
    fn strike(&self, violation: Violation) -> bool;
}
