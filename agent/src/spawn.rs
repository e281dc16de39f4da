//! Starting a task's process: its environment, its own process session (setsid) and process group, the task user, and its pipes.

use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid};
use tokio::sync::oneshot;

use crate::reaper::{self, ExitStatus};
use crate::users::TaskUser;

/// PATH for tasks when the agent's own environment has none (scratch images often do not).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Tasks get this `oom_score_adj` (or the agent's own, if higher) so the kernel kills a task before the agent.
const TASK_OOM_SCORE_ADJ: i32 = 500;

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot start a task with an empty argv")]
    EmptyArgv,
    #[error("cannot start {program:?}: working directory {cwd:?}: {source}")]
    Cwd {
        program: String,
        cwd: PathBuf,
        source: io::Error,
    },
    #[error("cannot start {program:?}: {source}")]
    Start { program: String, source: io::Error },
    #[error("cannot start {program:?}: cannot open a pseudo-terminal: {source}")]
    Pty { program: String, source: io::Error },
}

/// What to run; built from a RunTask by the caller.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    pub argv: Vec<String>,
    pub env: Vec<(OsString, OsString)>,
    pub cwd: PathBuf,
    pub stdin: bool,
}

/// A started process. Its exit status arrives from the reaper; the caller must never wait for it.
#[derive(Debug)]
pub struct Spawned {
    pub pid: u32,
    pub stdin: Option<OwnedFd>,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub exit: oneshot::Receiver<ExitStatus>,
}

/// The agent's environment as tasks should see it: without any `DOCKER_AGENT_*` variable.
pub fn base_env(vars: impl IntoIterator<Item = (OsString, OsString)>) -> Vec<(OsString, OsString)> {
    vars.into_iter()
        .filter(|(k, _)| !k.as_bytes().starts_with(b"DOCKER_AGENT_"))
        .collect()
}

/// The task's full environment: base, then the task user's identity, a default PATH, then the task's own variables.
pub fn task_env(
    base: &[(OsString, OsString)],
    user: &TaskUser,
    overrides: &HashMap<String, String>,
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = Vec::with_capacity(base.len() + overrides.len() + 4);
    let set = |env: &mut Vec<(OsString, OsString)>, k: &OsStr, v: &OsStr| match env
        .iter_mut()
        .find(|(ek, _)| ek == k)
    {
        Some(slot) => slot.1 = v.to_owned(),
        None => env.push((k.to_owned(), v.to_owned())),
    };
    for (k, v) in base {
        // Defence in depth: the caller already filtered, but the token's file path must never leak.
        if !k.as_bytes().starts_with(b"DOCKER_AGENT_") {
            set(&mut env, k, v);
        }
    }
    set(&mut env, "HOME".as_ref(), user.home.as_os_str());
    set(&mut env, "USER".as_ref(), user.name.as_ref());
    set(&mut env, "LOGNAME".as_ref(), user.name.as_ref());
    if !env.iter().any(|(k, _)| k == "PATH") {
        set(&mut env, "PATH".as_ref(), DEFAULT_PATH.as_ref());
    }
    let mut keys: Vec<&String> = overrides.keys().collect();
    keys.sort();
    for k in keys {
        set(&mut env, k.as_ref(), overrides[k].as_ref());
    }
    env
}

/// The value written to a task's /proc/self/oom_score_adj.
pub fn task_oom_score_adj() -> i32 {
    let own = std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .unwrap_or(0);
    // Lowering it would need CAP_SYS_RESOURCE; never go below the agent's own.
    own.clamp(TASK_OOM_SCORE_ADJ, 1000)
}

/// Capabilities the agent lacks to start tasks as `user` and to signal them, from `/proc/self/status`.
/// None are needed when the agent already runs as that user; otherwise setuid/setgid need
/// CAP_SETUID/CAP_SETGID and signalling another uid's processes needs CAP_KILL (`cap-drop ALL` removes all three).
pub fn missing_capabilities(proc_status: &str, euid: u32, user: &TaskUser) -> Vec<&'static str> {
    if euid == user.uid {
        return Vec::new();
    }
    let effective = proc_status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    [(5, "CAP_KILL"), (6, "CAP_SETGID"), (7, "CAP_SETUID")]
        .into_iter()
        .filter(|(bit, _)| effective & (1u64 << bit) == 0)
        .map(|(_, name)| name)
        .collect()
}

fn check_cwd(program: &str, cwd: &Path) -> Result<(), SpawnError> {
    let fail = |source| SpawnError::Cwd {
        program: program.to_owned(),
        cwd: cwd.to_owned(),
        source,
    };
    let meta = std::fs::metadata(cwd).map_err(fail)?;
    if !meta.is_dir() {
        return Err(fail(io::Error::from(Errno::ENOTDIR)));
    }
    Ok(())
}

/// Where a child's standard streams go.
#[derive(Debug)]
pub enum Streams {
    /// Pipes for stdout and stderr; stdin piped or /dev/null as `ProcessSpec::stdin` says.
    Pipes,
    /// All three on this terminal (a PTY slave), which also becomes the child's controlling terminal.
    Terminal(OwnedFd),
}

/// Starts `spec` as `user`, in a new process session (setsid: its process group id is its pid), with piped output.
pub fn spawn(
    spec: &ProcessSpec,
    user: &TaskUser,
    oom_score_adj: i32,
) -> Result<Spawned, SpawnError> {
    let (mut child, exit) = spawn_with(spec, user, oom_score_adj, Streams::Pipes)?;
    let pid = child.id();
    let missing = || SpawnError::Start {
        program: spec.argv[0].clone(),
        source: io::Error::other("child pipe missing"),
    };
    let stdout: OwnedFd = child.stdout.take().ok_or_else(missing)?.into();
    let stderr: OwnedFd = child.stderr.take().ok_or_else(missing)?.into();
    let stdin: Option<OwnedFd> = child.stdin.take().map(Into::into);
    // `child` is dropped without waiting: the reaper owns its exit status.
    Ok(Spawned {
        pid,
        stdin,
        stdout,
        stderr,
        exit,
    })
}

/// Starts `spec` as `user` in a new process session with the given streams. The returned `Child` must never be waited
/// for (the reaper owns its exit status); it only hands over pipes and the pid.
pub fn spawn_with(
    spec: &ProcessSpec,
    user: &TaskUser,
    oom_score_adj: i32,
    streams: Streams,
) -> Result<(Child, oneshot::Receiver<ExitStatus>), SpawnError> {
    let program = spec.argv.first().ok_or(SpawnError::EmptyArgv)?;
    check_cwd(program, &spec.cwd)?;
    let start_err = |source| SpawnError::Start {
        program: program.clone(),
        source,
    };
    let cwd = CString::new(spec.cwd.as_os_str().as_bytes())
        .map_err(|e| start_err(io::Error::new(io::ErrorKind::InvalidInput, e)))?;

    let mut cmd = Command::new(program);
    cmd.args(&spec.argv[1..])
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)));
    let take_terminal = match streams {
        Streams::Pipes => {
            cmd.stdin(if spec.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
            false
        }
        Streams::Terminal(tty) => {
            // std dup2()s each onto 0, 1 and 2 in the child; the copies here close when `cmd` is dropped
            // below, so that once the task's side is gone the master reads EOF (EIO).
            cmd.stdin(Stdio::from(tty.try_clone().map_err(start_err)?))
                .stdout(Stdio::from(tty.try_clone().map_err(start_err)?))
                .stderr(Stdio::from(tty));
            true
        }
    };

    // Everything the child needs is prepared here: after fork only async-signal-safe calls are allowed, so no allocation.
    let switch_user = nix::unistd::geteuid().as_raw() != user.uid;
    let uid = Uid::from_raw(user.uid);
    let gid = Gid::from_raw(user.gid);
    let groups: Vec<Gid> = user.groups.iter().copied().map(Gid::from_raw).collect();
    let mut oom_buf = [0u8; 12];
    let oom_len = {
        use std::io::Write;
        let mut cursor = io::Cursor::new(&mut oom_buf[..]);
        let _ = write!(cursor, "{oom_score_adj}");
        usize::try_from(cursor.position()).unwrap_or(0)
    };

    let pre_exec = move || -> io::Result<()> {
        // Own process session: the task and all its descendants form one process group we can signal as a whole.
        nix::unistd::setsid()?;
        if take_terminal {
            // std has already put the terminal on fd 0. As the new process session's leader the child makes it its
            // controlling terminal, which also makes its process group the terminal's foreground group
            // (so ^C, ^Z and SIGWINCH reach the task).
            // rustix rather than nix, which has no safe TIOCSCTTY; it is a bare ioctl(2) with argument 0 (do not
            // steal) and, like the io::Error conversion, allocates nothing, so it is fit for after fork.
            rustix::process::ioctl_tiocsctty(rustix::stdio::stdin())?;
        }
        // Before setuid: afterwards /proc/self belongs to root and is no longer writable. Failure is harmless.
        if let Ok(fd) =
            nix::fcntl::open(c"/proc/self/oom_score_adj", OFlag::O_WRONLY, Mode::empty())
        {
            let _ = nix::unistd::write(&fd, &oom_buf[..oom_len]);
        }
        if switch_user {
            nix::unistd::setgroups(&groups)?;
            nix::unistd::setgid(gid)?;
            nix::unistd::setuid(uid)?;
        }
        // After setuid, so the task user's own permissions decide (root without CAP_DAC_OVERRIDE might be refused anyway).
        nix::unistd::chdir(cwd.as_c_str())?;
        Ok(())
    };
    // SAFETY: the closure only makes raw syscalls (setsid, ioctl, open/write/close, setgroups, setgid,
    // setuid, chdir) on data allocated before the fork; it neither allocates nor takes locks.
    unsafe {
        cmd.pre_exec(pre_exec);
    }

    let started = reaper::spawn_registered(|| cmd.spawn(), |c| c.id()).map_err(start_err);
    // Closes the parent's copies of the child's ends (pipes, or the terminal) now.
    drop(cmd);
    started
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> TaskUser {
        TaskUser {
            name: "agent".into(),
            uid: 1000,
            gid: 1000,
            home: "/home/agent".into(),
            groups: vec![1000],
        }
    }

    fn get<'a>(env: &'a [(OsString, OsString)], k: &str) -> Option<&'a OsStr> {
        env.iter()
            .find(|(ek, _)| ek == k)
            .map(|(_, v)| v.as_os_str())
    }

    #[test]
    fn env_drops_agent_vars_and_sets_identity() {
        let base = base_env([
            (
                "DOCKER_AGENT_TOKEN_FILE".into(),
                "/etc/docker-agent/token".into(),
            ),
            ("DOCKER_AGENT_HUB_URL".into(), "https://x:1".into()),
            ("HOME".into(), "/root".into()),
            ("LANG".into(), "C.UTF-8".into()),
        ]);
        assert_eq!(base.len(), 2);
        let mut overrides = HashMap::new();
        overrides.insert("LANG".to_owned(), "en_US.UTF-8".to_owned());
        overrides.insert("FOO".to_owned(), "bar".to_owned());
        let env = task_env(&base, &user(), &overrides);
        assert!(
            env.iter()
                .all(|(k, _)| !k.as_bytes().starts_with(b"DOCKER_AGENT_"))
        );
        assert_eq!(get(&env, "HOME").unwrap(), "/home/agent");
        assert_eq!(get(&env, "USER").unwrap(), "agent");
        assert_eq!(get(&env, "LOGNAME").unwrap(), "agent");
        assert_eq!(get(&env, "PATH").unwrap(), DEFAULT_PATH);
        assert_eq!(get(&env, "LANG").unwrap(), "en_US.UTF-8");
        assert_eq!(get(&env, "FOO").unwrap(), "bar");
        assert_eq!(env.iter().filter(|(k, _)| k == "HOME").count(), 1);
    }

    #[test]
    fn env_keeps_existing_path_and_lets_the_task_override_everything() {
        let base = vec![("PATH".into(), "/opt/bin".into())];
        let env = task_env(&base, &user(), &HashMap::new());
        assert_eq!(get(&env, "PATH").unwrap(), "/opt/bin");
        let overrides = HashMap::from([
            ("PATH".to_owned(), "/x".to_owned()),
            ("HOME".to_owned(), "/tmp".to_owned()),
        ]);
        let env = task_env(&base, &user(), &overrides);
        assert_eq!(get(&env, "PATH").unwrap(), "/x");
        assert_eq!(get(&env, "HOME").unwrap(), "/tmp");
    }

    #[test]
    fn capability_check() {
        let full = "Name:\tagent\nCapEff:\t000001ffffffffff\n";
        let none = "Name:\tagent\nCapEff:\t0000000000000000\n";
        let only_setuid_setgid = "CapEff:\t00000000000000c0\n";
        assert!(missing_capabilities(full, 0, &user()).is_empty());
        assert_eq!(
            missing_capabilities(none, 0, &user()),
            vec!["CAP_KILL", "CAP_SETGID", "CAP_SETUID"]
        );
        assert_eq!(
            missing_capabilities(only_setuid_setgid, 0, &user()),
            vec!["CAP_KILL"]
        );
        // Running as the task user itself needs nothing.
        assert!(missing_capabilities(none, 1000, &user()).is_empty());
    }

    #[test]
    fn oom_score_adj_is_at_least_the_task_default() {
        let adj = task_oom_score_adj();
        assert!((TASK_OOM_SCORE_ADJ..=1000).contains(&adj));
    }

    #[test]
    fn missing_program_and_bad_cwd_are_errors_not_panics() {
        let spec = |argv: &[&str], cwd: &str| ProcessSpec {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: vec![("PATH".into(), DEFAULT_PATH.into())],
            cwd: cwd.into(),
            stdin: false,
        };
        let me = crate::users::lookup("root").unwrap();
        let err = spawn(&spec(&["no-such-program-xyz"], "/"), &me, 500).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot start \"no-such-program-xyz\": No such file or directory (os error 2)"
        );
        let err = spawn(&spec(&["true"], "/no/such/dir"), &me, 500).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot start \"true\": working directory \"/no/such/dir\": No such file or directory (os error 2)"
        );
        let err = spawn(&spec(&["true"], "/etc/passwd"), &me, 500).unwrap_err();
        assert!(err.to_string().contains("Not a directory"), "{err}");
        assert!(matches!(
            spawn(&spec(&[], "/"), &me, 500),
            Err(SpawnError::EmptyArgv)
        ));
    }
}
