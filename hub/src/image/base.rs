//! The default base image: a Debian bookworm root filesystem made by debootstrap (no registry needed), imported into the engine.

use std::path::Path;
use std::process::Stdio;

use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use super::{ImageError, Progress, ProgressFn, ROOTFS_SCRIPT};
use crate::driver::Driver;

/// Builds the base image `base` from Debian's packages and imports it. Dropping the future kills
/// debootstrap's whole process group and removes its half-made tree.
pub async fn build(
    driver: &dyn Driver,
    base: &str,
    work_dir: &Path,
    progress: ProgressFn<'_>,
) -> Result<(), ImageError> {
    progress(Progress::new(
        "image",
        format!("building base {base} from Debian packages (debootstrap, about a minute)"),
    ));
    if !command_exists("debootstrap") {
        return Err(ImageError::DebootstrapMissing);
    }
    std::fs::create_dir_all(work_dir).map_err(|source| ImageError::Io {
        path: work_dir.to_path_buf(),
        source,
    })?;
    let dir = tempfile::Builder::new()
        .prefix("rootfs-")
        .tempdir_in(work_dir)
        .map_err(|source| ImageError::Io {
            path: work_dir.to_path_buf(),
            source,
        })?;
    let rootfs = dir.path().join("rootfs");
    let script = dir.path().join("rootfs.sh");
    std::fs::write(&script, ROOTFS_SCRIPT).map_err(|source| ImageError::Io {
        path: script.clone(),
        source,
    })?;
    run_logged(
        Command::new("bash").arg(&script).arg(&rootfs),
        &rootfs,
        progress,
    )
    .await?;

    progress(Progress::new("image", format!("importing {base}")));
    let mut tar = Command::new("tar")
        .args(["--numeric-owner", "-C"])
        .arg(&rootfs)
        .args(["-cf", "-", "."])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| ImageError::Rootfs(format!("cannot run tar: {e}")))?;
    let stdout = tar.stdout.take().expect("piped stdout");
    let body = Box::pin(tokio_util::io::ReaderStream::with_capacity(
        stdout,
        256 * 1024,
    ));
    let changes = vec![
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        "CMD [\"/bin/bash\"]".to_string(),
    ];
    let imported = driver.import_rootfs(base, body, changes).await;
    let output = tar
        .wait_with_output()
        .await
        .map_err(|e| ImageError::Rootfs(format!("tar failed: {e}")))?;
    if !output.status.success() {
        return Err(ImageError::Rootfs(format!(
            "tar failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    imported?;
    progress(Progress::new("image", format!("base {base} ready")));
    Ok(())
}

/// Runs a command in its own process group, turning each output line into progress; fails with the
/// last lines of output. Cancelled (dropped), it stops the whole group and undoes mounts under `root`.
async fn run_logged(
    cmd: &mut Command,
    root: &Path,
    progress: ProgressFn<'_>,
) -> Result<(), ImageError> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| ImageError::Rootfs(format!("cannot start: {e}")))?;
    let mut guard = GroupGuard {
        pgid: child.id().map(|p| p as i32),
        root: root.to_path_buf(),
    };
    let stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
    let stderr = BufReader::new(child.stderr.take().expect("piped")).lines();
    let mut lines = futures::stream::select(
        tokio_stream::wrappers::LinesStream::new(stdout),
        tokio_stream::wrappers::LinesStream::new(stderr),
    );
    let mut tail: std::collections::VecDeque<String> = Default::default();
    while let Some(Ok(line)) = lines.next().await {
        if tail.len() == 5 {
            tail.pop_front();
        }
        tail.push_back(line.clone());
        progress(Progress::new("image", line));
    }
    let status = child
        .wait()
        .await
        .map_err(|e| ImageError::Rootfs(e.to_string()))?;
    guard.pgid = None;
    if !status.success() {
        return Err(ImageError::Rootfs(format!(
            "{status}: {}",
            tail.into_iter().collect::<Vec<_>>().join(" | ")
        )));
    }
    Ok(())
}

fn command_exists(name: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .any(|dir| dir.join(name).is_file())
}

/// Stops a cancelled debootstrap: TERM to its process group so its own traps unmount what it mounted,
/// KILL after a short grace, then detach anything still mounted under its tree so the tree can go.
struct GroupGuard {
    pgid: Option<i32>,
    root: std::path::PathBuf,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        use nix::sys::signal::{Signal, killpg};
        let Some(pgid) = self.pgid else { return };
        let group = nix::unistd::Pid::from_raw(pgid);
        let alive = |sig: Option<Signal>| killpg(group, sig).is_ok();
        if alive(Some(Signal::SIGTERM)) {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
            while alive(None) && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            alive(Some(Signal::SIGKILL));
        }
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut under: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|m| Path::new(m).starts_with(&self.root))
            .collect();
        // Deepest first.
        under.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for mount in under {
            // MNT_DETACH never blocks on busy mounts.
            let _ = nix::mount::umount2(mount, nix::mount::MntFlags::MNT_DETACH);
        }
        tracing::warn!(root = %self.root.display(), "base image build cancelled; its tree is removed");
    }
}
