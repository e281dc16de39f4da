//! The hub's view of an agent's profile setup: the statuses the agent reports become lifecycle transitions, with reasons `status` shows.

use docker_agent_proto::v1::{SetupState, SetupStatus};

use crate::core::Core;
use crate::error::Result;
use crate::lifecycle::LifecycleEvent;

/// The lifecycle event and reason a setup status means; None when setup is done or there is none.
pub fn transition_for(status: &SetupStatus) -> Option<(LifecycleEvent, String)> {
    let step = if status.step == 0 {
        // The plan itself could not be read: no step ran.
        "setup plan".to_string()
    } else {
        format!("setup {}/{}", status.step, status.total)
    };
    // Reasons are one line: a multi-line command or description shows its first line.
    let first = |s: &str| match s.trim().split_once('\n') {
        Some((line, _)) => format!("{} ...", line.trim_end()),
        None => s.trim().to_string(),
    };
    let what = match (status.description.is_empty(), status.command.is_empty()) {
        (_, true) if status.total == 0 || status.step == 0 => String::new(),
        (true, _) => format!("`{}` ", first(&status.command)),
        (false, true) => format!("{} ", first(&status.description)),
        (false, false) => format!(
            "{} (`{}`) ",
            first(&status.description),
            first(&status.command)
        ),
    };
    match SetupState::try_from(status.state).unwrap_or(SetupState::Unspecified) {
        SetupState::Unspecified | SetupState::Done => None,
        SetupState::Running => Some((
            LifecycleEvent::SetupRunning,
            format!("{step}: {}", what.trim_end()),
        )),
        SetupState::Failed => {
            let how = if !status.error.is_empty() {
                status.error.clone()
            } else if status.exited {
                format!("exited with code {}", status.exit_code)
            } else {
                format!("killed by signal {}", status.signal)
            };
            Some((
                LifecycleEvent::SetupFailed,
                format!("{step} failed: {what}{how}"),
            ))
        }
    }
}

impl Core {
    /// Applies what the agent says about its setup: running or failed holds it back from ready; done
    /// (or no setup at all) makes it ready.
    pub fn apply_setup_status(&self, agent_id: &str, status: Option<&SetupStatus>) -> Result<()> {
        match status.and_then(transition_for) {
            Some((event, reason)) => {
                if event == LifecycleEvent::SetupFailed {
                    tracing::warn!(agent_id, %reason, "setup failed");
                }
                self.transition(agent_id, event, &reason)?;
            }
            None => {
                self.transition(agent_id, LifecycleEvent::AgentRegistered, "")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: SetupState) -> SetupStatus {
        SetupStatus {
            state: state as i32,
            step: 2,
            total: 3,
            command: "make deps".into(),
            description: "dependencies".into(),
            ..Default::default()
        }
    }

    #[test]
    fn reasons_name_the_step_the_command_and_how_it_ended() {
        let (event, reason) = transition_for(&status(SetupState::Running)).unwrap();
        assert_eq!(event, LifecycleEvent::SetupRunning);
        assert_eq!(reason, "setup 2/3: dependencies (`make deps`)");
        let mut failed = status(SetupState::Failed);
        failed.exited = true;
        failed.exit_code = 2;
        let (event, reason) = transition_for(&failed).unwrap();
        assert_eq!(event, LifecycleEvent::SetupFailed);
        assert_eq!(
            reason,
            "setup 2/3 failed: dependencies (`make deps`) exited with code 2"
        );
        failed.exited = false;
        failed.signal = 9;
        assert!(
            transition_for(&failed)
                .unwrap()
                .1
                .ends_with("killed by signal 9")
        );
        failed.error = "timed out after 10s".into();
        assert!(
            transition_for(&failed)
                .unwrap()
                .1
                .ends_with("timed out after 10s")
        );
        assert!(transition_for(&status(SetupState::Done)).is_none());
        assert!(transition_for(&SetupStatus::default()).is_none());
        let mut multi = status(SetupState::Failed);
        multi.command = "set -e\nmake\nmake test".into();
        multi.description = String::new();
        multi.exited = true;
        multi.exit_code = 1;
        assert_eq!(
            transition_for(&multi).unwrap().1,
            "setup 2/3 failed: `set -e ...` exited with code 1"
        );
        let broken = SetupStatus {
            state: SetupState::Failed as i32,
            error: "cannot read /etc/docker-agent/setup.pb: bad".into(),
            ..Default::default()
        };
        assert_eq!(
            transition_for(&broken).unwrap().1,
            "setup plan failed: cannot read /etc/docker-agent/setup.pb: bad"
        );
    }
}
