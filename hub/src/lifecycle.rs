//! The agent's two state axes: the lifecycle state machine (explicit transitions) and the connection state.

use std::fmt;
use std::str::FromStr;

/// Where an agent is in its life. Advanced only through [`Lifecycle::on`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lifecycle {
    /// Docker objects (volume, container) are being made.
    Creating,
    /// The container runs; the agent has not dialed back yet.
    Starting,
    /// The agent registered and takes tasks.
    Ready,
    /// The container ran but the agent never registered in time.
    StartError,
    Stopping,
    Stopped,
    Destroyed,
    /// Its node was lost and the scheduler placed it on another node (Swarm): running again there,
    /// but its agent has not dialed back yet.
    Rescheduled,
}

/// Where the profile's setup stands, as far as the lifecycle says: the agent is `starting` (or in
/// `start_error`) because of its setup, or for another reason (None).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SetupPhase {
    #[default]
    None,
    Running,
    Failed,
}

impl SetupPhase {
    /// What a transition on `event` leaves: only the setup's own events say anything about it.
    pub fn after(event: LifecycleEvent) -> Self {
        match event {
            LifecycleEvent::SetupRunning => SetupPhase::Running,
            LifecycleEvent::SetupFailed => SetupPhase::Failed,
            _ => SetupPhase::None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SetupPhase::None => "",
            SetupPhase::Running => "running",
            SetupPhase::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Self {
        match s {
            "running" => SetupPhase::Running,
            "failed" => SetupPhase::Failed,
            _ => SetupPhase::None,
        }
    }
}

/// What happened to an agent; the input of the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleEvent {
    /// The container was started (by us, by Docker's restart policy, or by someone else).
    ContainerStarted,
    /// The agent inside completed its hello, with its profile's setup done (or none).
    AgentRegistered,
    /// The agent runs its profile's setup steps; it is not ready until they succeed.
    SetupRunning,
    /// A setup step failed.
    SetupFailed,
    /// The agent did not register within the ready timeout.
    ReadyTimeout,
    StopRequested,
    /// The container is no longer running.
    ContainerExited,
    Destroyed,
    /// The scheduler replaced the agent's container with one on another node.
    Rescheduled,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {event} while the agent is {from}")]
pub struct InvalidTransition {
    pub from: Lifecycle,
    pub event: &'static str,
}

impl Lifecycle {
    /// The transition table. Events that do not change the state (a reconnect while ready, a second stop)
    /// return the same state, so callers can apply Docker events without first checking them.
    pub fn on(self, event: LifecycleEvent) -> Result<Lifecycle, InvalidTransition> {
        use Lifecycle::*;
        use LifecycleEvent as E;
        let next = match (self, event) {
            (Lifecycle::Destroyed, _) => return Err(self.invalid(event)),
            (_, E::Destroyed) => Lifecycle::Destroyed,
            (Creating | Stopped | StartError | Starting, E::ContainerStarted) => Starting,
            (Ready, E::ContainerStarted) => Ready,
            (Stopping, E::ContainerStarted) => Stopping,
            // A hello proves the container runs, even if Docker's start event has not reached us yet.
            (Creating | Starting | StartError | Ready | Stopped, E::AgentRegistered) => Ready,
            // A late hello from an agent we are stopping changes nothing.
            (Stopping, E::AgentRegistered | E::SetupRunning | E::SetupFailed) => Stopping,
            (Creating | Starting | StartError | Ready | Stopped, E::SetupRunning) => Starting,
            (Creating | Starting | StartError | Ready, E::SetupFailed) => StartError,
            // A step killed by the container's stop reports a failure after the stop was recorded.
            (Stopped, E::SetupFailed) => Stopped,
            (Creating | Starting | Ready | StartError | Stopped | Rescheduled, E::Rescheduled) => {
                Rescheduled
            }
            (Stopping, E::Rescheduled) => Stopping,
            // Until its agent dials back, a rescheduled agent stays so: the new container's start
            // is part of the move.
            (Rescheduled, E::ContainerStarted) => Rescheduled,
            (Rescheduled, E::AgentRegistered) => Ready,
            (Rescheduled, E::SetupRunning) => Starting,
            (Rescheduled, E::SetupFailed | E::ReadyTimeout) => StartError,
            (Rescheduled, E::StopRequested) => Stopping,
            (Rescheduled, E::ContainerExited) => Stopped,
            (Creating | Starting, E::ReadyTimeout) => StartError,
            (Ready | StartError | Stopping | Stopped, E::ReadyTimeout) => self,
            (Creating | Starting | Ready | StartError, E::StopRequested) => Stopping,
            (Stopping | Stopped, E::StopRequested) => self,
            (Creating | Starting | Ready | StartError | Stopping | Stopped, E::ContainerExited) => {
                Stopped
            }
        };
        Ok(next)
    }

    fn invalid(self, event: LifecycleEvent) -> InvalidTransition {
        let event = match event {
            LifecycleEvent::ContainerStarted => "start",
            LifecycleEvent::AgentRegistered => "register",
            LifecycleEvent::SetupRunning => "run setup",
            LifecycleEvent::SetupFailed => "fail setup",
            LifecycleEvent::ReadyTimeout => "time out",
            LifecycleEvent::StopRequested => "stop",
            LifecycleEvent::ContainerExited => "exit",
            LifecycleEvent::Destroyed => "destroy",
            LifecycleEvent::Rescheduled => "reschedule",
        };
        InvalidTransition { from: self, event }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Creating => "creating",
            Lifecycle::Starting => "starting",
            Lifecycle::Ready => "ready",
            Lifecycle::StartError => "start_error",
            Lifecycle::Stopping => "stopping",
            Lifecycle::Stopped => "stopped",
            Lifecycle::Destroyed => "destroyed",
            Lifecycle::Rescheduled => "rescheduled",
        }
    }

    /// True while the container is expected to run.
    pub fn is_running(self) -> bool {
        matches!(
            self,
            Lifecycle::Starting | Lifecycle::Ready | Lifecycle::StartError | Lifecycle::Rescheduled
        )
    }
}

impl fmt::Display for Lifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Lifecycle {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "creating" => Lifecycle::Creating,
            "starting" => Lifecycle::Starting,
            "ready" => Lifecycle::Ready,
            "start_error" => Lifecycle::StartError,
            "stopping" => Lifecycle::Stopping,
            "stopped" => Lifecycle::Stopped,
            "destroyed" => Lifecycle::Destroyed,
            "rescheduled" => Lifecycle::Rescheduled,
            other => return Err(format!("unknown lifecycle state {other:?}")),
        })
    }
}

/// The state of the agent's link to the hub, independent of the lifecycle: a ready agent may be
/// disconnected for a while without anything being wrong with its workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Connection {
    /// The container runs; no stream yet.
    Connecting,
    Connected,
    /// The stream ended.
    Disconnected,
    /// The stream is open but heartbeats stopped arriving.
    Timeout,
}

impl Connection {
    pub fn as_str(self) -> &'static str {
        match self {
            Connection::Connecting => "connecting",
            Connection::Connected => "connected",
            Connection::Disconnected => "disconnected",
            Connection::Timeout => "timeout",
        }
    }
}

impl fmt::Display for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Connection {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "connecting" => Connection::Connecting,
            "connected" => Connection::Connected,
            "disconnected" => Connection::Disconnected,
            "timeout" => Connection::Timeout,
            other => return Err(format!("unknown connection state {other:?}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Lifecycle::*;
    use super::LifecycleEvent as E;
    use super::*;

    #[test]
    fn happy_path() {
        let s = Creating.on(E::ContainerStarted).unwrap();
        assert_eq!(s, Starting);
        let s = s.on(E::AgentRegistered).unwrap();
        assert_eq!(s, Ready);
        let s = s.on(E::StopRequested).unwrap();
        assert_eq!(s, Stopping);
        let s = s.on(E::ContainerExited).unwrap();
        assert_eq!(s, Stopped);
        assert_eq!(s.on(E::ContainerStarted).unwrap(), Starting);
        assert_eq!(s.on(E::Destroyed).unwrap(), Destroyed);
    }

    #[test]
    fn timeouts_and_late_registration() {
        assert_eq!(Starting.on(E::ReadyTimeout).unwrap(), StartError);
        assert_eq!(StartError.on(E::AgentRegistered).unwrap(), Ready);
        assert_eq!(Ready.on(E::ReadyTimeout).unwrap(), Ready);
    }

    #[test]
    fn destroyed_is_final() {
        for ev in [
            E::ContainerStarted,
            E::AgentRegistered,
            E::StopRequested,
            E::ContainerExited,
            E::Destroyed,
        ] {
            assert!(Lifecycle::Destroyed.on(ev).is_err(), "{ev:?}");
        }
    }

    #[test]
    fn a_hello_proves_the_container_runs() {
        // The agent can dial back before the hub has recorded the start.
        assert_eq!(Creating.on(E::AgentRegistered).unwrap(), Ready);
        assert_eq!(Stopped.on(E::AgentRegistered).unwrap(), Ready);
        assert_eq!(Stopping.on(E::AgentRegistered).unwrap(), Stopping);
    }

    #[test]
    fn setup_holds_readiness_back_and_a_failed_step_is_a_start_error() {
        let s = Starting.on(E::SetupRunning).unwrap();
        assert_eq!(s, Starting);
        assert_eq!(s.on(E::SetupFailed).unwrap(), StartError);
        assert_eq!(s.on(E::AgentRegistered).unwrap(), Ready);
        // A restart after a failure resumes the setup.
        assert_eq!(StartError.on(E::ContainerStarted).unwrap(), Starting);
        assert_eq!(StartError.on(E::SetupRunning).unwrap(), Starting);
        assert_eq!(Stopping.on(E::SetupFailed).unwrap(), Stopping);
        assert_eq!(Stopped.on(E::SetupFailed).unwrap(), Stopped);
        assert!(Destroyed.on(E::SetupRunning).is_err());
    }

    #[test]
    fn errors_read_well() {
        let err = Lifecycle::Destroyed.on(E::StopRequested).unwrap_err();
        assert_eq!(err.to_string(), "cannot stop while the agent is destroyed");
    }

    #[test]
    fn a_rescheduled_agent_waits_for_its_agent_and_can_still_be_stopped() {
        assert_eq!(Ready.on(E::Rescheduled).unwrap(), Rescheduled);
        assert_eq!(Rescheduled.on(E::ContainerStarted).unwrap(), Rescheduled);
        assert_eq!(Rescheduled.on(E::AgentRegistered).unwrap(), Ready);
        assert_eq!(Rescheduled.on(E::SetupRunning).unwrap(), Starting);
        assert_eq!(Rescheduled.on(E::ReadyTimeout).unwrap(), StartError);
        assert_eq!(Rescheduled.on(E::StopRequested).unwrap(), Stopping);
        assert_eq!(Stopping.on(E::Rescheduled).unwrap(), Stopping);
        assert!(Rescheduled.is_running());
    }

    #[test]
    fn names_round_trip() {
        for s in [
            Creating,
            Starting,
            Ready,
            StartError,
            Stopping,
            Stopped,
            Destroyed,
            Rescheduled,
        ] {
            assert_eq!(s.as_str().parse::<Lifecycle>().unwrap(), s);
        }
        for c in [
            Connection::Connecting,
            Connection::Connected,
            Connection::Disconnected,
            Connection::Timeout,
        ] {
            assert_eq!(c.as_str().parse::<Connection>().unwrap(), c);
        }
    }
}
