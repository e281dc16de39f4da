//! Agent images: one per profile on a base root filesystem, tagged by content hash so nothing unchanged is rebuilt.

mod base;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};

use crate::driver::{Driver, DriverError};
use crate::profile::Profile;

const ROOTFS_SCRIPT: &str = include_str!("../../../images/rootfs.sh");
const AGENT_DOCKERFILE: &str = include_str!("../../../images/agent.Dockerfile");

/// The label every profile image carries: the profile's name.
const IMAGE_OF_LABEL: &str = "dev.docker-agent.image-of";

/// Special `--base-image` value: build the base from Debian's packages with debootstrap.
pub const DEBOOTSTRAP_BASE: &str = "debootstrap";

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(
        "agent binary not found (looked in {0}); build it with `./dev build-agent` or set DOCKER_AGENT_AGENT_BINARY"
    )]
    AgentBinaryMissing(String),
    #[error(
        "agent binary {0} is dynamically linked; build it with -C target-feature=+crt-static (./dev build-agent)"
    )]
    AgentBinaryNotStatic(PathBuf),
    #[error("failed to read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "debootstrap is not installed: install it (apt-get install debootstrap) or pass --base-image with an image you have"
    )]
    DebootstrapMissing,
    #[error("building the base root filesystem failed: {0}")]
    Rootfs(String),
    #[error(
        "base image {0} is not present on the engine (this engine cannot pull; use --base-image debootstrap)"
    )]
    BaseMissing(String),
    #[error("image build failed: {0}")]
    Build(String),
    #[error(transparent)]
    Driver(#[from] DriverError),
}

/// One line of build progress.
#[derive(Debug, Clone)]
pub struct Progress {
    pub stage: &'static str,
    pub message: String,
    /// (step, steps) when the line starts a build step.
    pub steps: Option<(u32, u32)>,
}

impl Progress {
    pub fn new(stage: &'static str, message: impl Into<String>) -> Self {
        Self {
            stage,
            message: message.into(),
            steps: None,
        }
    }
}

pub type ProgressFn<'a> = &'a (dyn Fn(Progress) + Send + Sync);

/// The agent binary as read from disk, with its digest; re-read only when the file changes.
#[derive(Debug)]
pub struct AgentBinary {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    digest: [u8; 32],
    stamp: (u64, std::time::SystemTime),
}

/// Builds and caches agent images.
#[derive(Debug)]
pub struct ImageBuilder {
    driver: Arc<dyn Driver>,
    agent_binary: Option<PathBuf>,
    base_image: String,
    work_dir: PathBuf,
    /// One build at a time per hub: concurrent creates of one profile wait for the first build.
    lock: tokio::sync::Mutex<()>,
    /// Reading and hashing 4 MB on every create would be a good part of its latency.
    cached: std::sync::Mutex<Option<Arc<AgentBinary>>>,
}

fn stamp(path: &Path) -> Option<(u64, std::time::SystemTime)> {
    let meta = std::fs::metadata(path).ok().filter(|m| m.is_file())?;
    Some((meta.len(), meta.modified().ok()?))
}

impl ImageBuilder {
    pub fn new(
        driver: Arc<dyn Driver>,
        agent_binary: Option<PathBuf>,
        base_image: String,
        work_dir: PathBuf,
    ) -> Self {
        Self {
            driver,
            agent_binary,
            base_image,
            work_dir,
            lock: tokio::sync::Mutex::new(()),
            cached: std::sync::Mutex::new(None),
        }
    }

    /// The agent binary to bake in: the configured one, else the first static one next to this
    /// executable or in cargo's cross-target output directory (a cargo tree also holds a dynamic debug
    /// build of the agent next to the CLI).
    pub fn agent_binary(&self) -> Result<Arc<AgentBinary>, ImageError> {
        let candidates = match &self.agent_binary {
            Some(path) => vec![path.clone()],
            None => default_agent_binary_candidates(),
        };
        let mut dynamic = None;
        for path in &candidates {
            let Some(stamp) = stamp(path) else { continue };
            let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(bin) = cached.as_ref()
                && &bin.path == path
                && bin.stamp == stamp
            {
                return Ok(bin.clone());
            }
            let bytes = std::fs::read(path).map_err(|source| ImageError::Io {
                path: path.clone(),
                source,
            })?;
            if !is_static_elf(&bytes) {
                dynamic.get_or_insert_with(|| path.clone());
                continue;
            }
            let bin = Arc::new(AgentBinary {
                path: path.clone(),
                digest: Sha256::digest(&bytes).into(),
                bytes,
                stamp,
            });
            *cached = Some(bin.clone());
            return Ok(bin);
        }
        Err(match dynamic {
            Some(path) => ImageError::AgentBinaryNotStatic(path),
            None => ImageError::AgentBinaryMissing(
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
        })
    }

    /// The tag the image for `profile` has (or will have) with the current agent binary: a hash of what
    /// goes into the image (recipe, base, task user, packages, agent binary). The rest of a profile is
    /// applied at create, so changing it rebuilds nothing. A base named by the user counts by its
    /// content (image id), so rebuilding it rebuilds the profile's image; the hub's own base is named
    /// by the hash of its recipe.
    pub async fn image_tag(
        &self,
        profile: &Profile,
    ) -> Result<(String, Arc<AgentBinary>), ImageError> {
        let binary = self.agent_binary()?;
        let base = self.base_reference(profile);
        let base_content = if self.is_hub_base(profile) {
            base
        } else {
            self.driver.image_id(&base).await?.unwrap_or(base)
        };
        let mut hash = Sha256::new();
        let packages = profile.packages.join(" ");
        for part in [
            AGENT_DOCKERFILE.as_bytes(),
            base_content.as_bytes(),
            profile.user.as_bytes(),
            packages.as_bytes(),
            &binary.digest,
        ] {
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part);
        }
        let digest = hex::encode(hash.finalize());
        Ok((
            format!("docker-agent/{}:{}", profile.name, &digest[..12]),
            binary,
        ))
    }

    /// True when the profile builds on the base the hub makes itself (debootstrap).
    fn is_hub_base(&self, profile: &Profile) -> bool {
        profile.base.is_none() && self.base_image == DEBOOTSTRAP_BASE
    }

    /// The image a profile builds on: its own `base`, else the hub's.
    fn base_reference(&self, profile: &Profile) -> String {
        match &profile.base {
            Some(base) => base.clone(),
            None if self.base_image == DEBOOTSTRAP_BASE => {
                let suite =
                    std::env::var("DOCKER_AGENT_SUITE").unwrap_or_else(|_| "bookworm".into());
                let digest = hex::encode(Sha256::digest(ROOTFS_SCRIPT.as_bytes()));
                format!("docker-agent/base:{suite}-{}", &digest[..12])
            }
            None => self.base_image.clone(),
        }
    }

    /// Returns the profile's image tag, building the base and the image first if the engine lacks them.
    /// Dropping the future cancels the build: the engine stops when the request goes away, and nothing
    /// is tagged.
    pub async fn ensure(
        &self,
        profile: &Profile,
        progress: ProgressFn<'_>,
    ) -> Result<String, ImageError> {
        let (tag, binary) = self.image_tag(profile).await?;
        if self.driver.image_id(&tag).await?.is_some() {
            return Ok(tag);
        }
        let _guard = match self.lock.try_lock() {
            Ok(guard) => guard,
            Err(_) => {
                progress(Progress::new(
                    "image",
                    format!("waiting for the image build already under way ({tag})"),
                ));
                self.lock.lock().await
            }
        };
        if self.driver.image_id(&tag).await?.is_some() {
            return Ok(tag);
        }
        let base = self.base_reference(profile);
        if self.driver.image_id(&base).await?.is_none() {
            if !self.is_hub_base(profile) {
                return Err(ImageError::BaseMissing(base));
            }
            base::build(&*self.driver, &base, &self.work_dir, progress).await?;
        }
        progress(Progress::new("image", format!("building {tag} on {base}")));
        let context = build_context(&binary.bytes).map_err(|e| ImageError::Build(e.to_string()))?;
        let args = HashMap::from([
            ("BASE".to_string(), base),
            ("TASK_USER".to_string(), profile.user.clone()),
            ("PACKAGES".to_string(), profile.packages.join(" ")),
            ("PROFILE".to_string(), profile.name.clone()),
        ]);
        let mut lines = self.driver.build_image(&tag, context, args);
        let mut tail = Tail::default();
        while let Some(line) = lines.next().await {
            let line = match line {
                Ok(line) => line,
                Err(e) => return Err(build_error(&profile.name, &e.to_string(), &tail)),
            };
            // One engine message can carry several lines of a step's output.
            for line in line.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
                tail.push(line);
                let mut p = Progress::new("image", line);
                p.steps = build_step(line);
                progress(p);
            }
        }
        drop(lines);
        if self.driver.image_id(&tag).await?.is_none() {
            return Err(ImageError::Build(format!(
                "the engine reported success but has no {tag}"
            )));
        }
        progress(Progress::new("image", format!("built {tag}")));
        self.prune_superseded(&profile.name, &tag).await;
        Ok(tag)
    }

    /// Removes the profile's older images (another agent binary, other packages) that no container
    /// uses, so each rebuild does not leave hundreds of megabytes behind. Layers the new image shares
    /// stay; an image still in use is refused by the engine and kept.
    async fn prune_superseded(&self, profile: &str, keep: &str) {
        let label = format!("{IMAGE_OF_LABEL}={profile}");
        let Ok(images) = self.driver.list_images(&[label]).await else {
            return;
        };
        for image in images {
            if image.tags.iter().any(|t| t == keep) {
                continue;
            }
            for tag in &image.tags {
                match self.driver.remove_image(tag).await {
                    Ok(()) => tracing::info!(image = %tag, "removed a superseded image"),
                    Err(e) => tracing::debug!(image = %tag, error = %e, "kept a superseded image"),
                }
            }
        }
    }
}

/// The last lines of a build, kept for its error message.
#[derive(Default)]
struct Tail {
    lines: std::collections::VecDeque<String>,
    /// What the recipe itself said went wrong (`docker-agent: ...` lines).
    own: Vec<String>,
}

impl Tail {
    fn push(&mut self, line: &str) {
        if let Some(own) = line.strip_prefix("docker-agent: ") {
            self.own.push(own.to_string());
        }
        if !line.trim().is_empty() {
            if self.lines.len() == 3 {
                self.lines.pop_front();
            }
            self.lines.push_back(line.trim().to_string());
        }
    }
}

/// The build's own diagnosis when it gave one (a missing package, no apt in the base), else the engine's
/// error with the last lines of output.
fn build_error(profile: &str, engine: &str, tail: &Tail) -> ImageError {
    if !tail.own.is_empty() {
        return ImageError::Build(format!("profile {profile}: {}", tail.own.join("; ")));
    }
    let last: Vec<&str> = tail.lines.iter().map(String::as_str).collect();
    ImageError::Build(format!(
        "profile {profile}: {engine} (last output: {})",
        last.join(" | ")
    ))
}

/// `Step 3/7 : RUN ...` → (3, 7): the classic builder's own progress.
fn build_step(line: &str) -> Option<(u32, u32)> {
    let rest = line.strip_prefix("Step ")?;
    let (fraction, _) = rest.split_once(' ')?;
    let (n, total) = fraction.split_once('/')?;
    Some((n.parse().ok()?, total.parse().ok()?))
}

/// The build context: the Dockerfile and the agent binary (mode 0755).
fn build_context(binary: &[u8]) -> std::io::Result<Bytes> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, mode, data) in [
        ("Dockerfile", 0o644, AGENT_DOCKERFILE.as_bytes()),
        ("docker-agent-agent", 0o755, binary),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, name, data)?;
    }
    Ok(builder.into_inner()?.into())
}

fn default_agent_binary_candidates() -> Vec<PathBuf> {
    let Ok(exe) = std::env::current_exe() else {
        return Vec::new();
    };
    let Some(dir) = exe.parent() else {
        return Vec::new();
    };
    let cross = Path::new("x86_64-unknown-linux-gnu/agent/docker-agent-agent");
    vec![
        // An installed layout: both binaries side by side, or the Debian package's.
        dir.join("docker-agent-agent"),
        dir.join("../lib/docker-agent/docker-agent-agent"),
        // target/{debug,release}/docker-agent → target/x86_64-unknown-linux-gnu/agent/…
        dir.join("..").join(cross),
    ]
}

/// True for an ELF executable without a PT_INTERP program header, i.e. one that needs no dynamic loader.
pub fn is_static_elf(bytes: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bytes[32..40].try_into().expect("8 bytes")) as usize;
    let phentsize = u16_at(54);
    let phnum = u16_at(56);
    (0..phnum).all(|i| {
        let at = phoff + i * phentsize;
        match bytes.get(at..at + 4) {
            Some(t) => u32::from_le_bytes(t.try_into().expect("4 bytes")) != PT_INTERP,
            None => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_steps_and_the_recipes_own_diagnosis() {
        assert_eq!(build_step("Step 3/7 : RUN set -eu"), Some((3, 7)));
        assert_eq!(build_step("Get:1 http://x bookworm InRelease"), None);
        let mut tail = Tail::default();
        for line in [
            "Step 4/6 : RUN ...",
            "docker-agent: no such package in the base's Debian archive: nosuchpkg",
            "x",
            "y",
            "z",
        ] {
            tail.push(line);
        }
        let err = build_error("mine", "returned a non-zero code: 100", &tail).to_string();
        assert_eq!(
            err,
            "image build failed: profile mine: no such package in the base's Debian archive: nosuchpkg"
        );
        let err = build_error("mine", "boom", &Tail::default()).to_string();
        assert!(err.contains("profile mine: boom"), "{err}");
    }

    #[test]
    fn dynamic_executables_are_not_static() {
        let ls = std::fs::read("/bin/ls").unwrap();
        assert!(!is_static_elf(&ls));
        assert!(!is_static_elf(b"#!/bin/sh\necho hi\n"));
    }

    #[test]
    fn context_holds_dockerfile_and_executable_agent() {
        let ctx = build_context(b"\x7fELF...").unwrap();
        let mut archive = tar::Archive::new(ctx.as_ref());
        let entries: Vec<(String, u32)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().display().to_string(),
                    e.header().mode().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            vec![
                ("Dockerfile".to_string(), 0o644),
                ("docker-agent-agent".to_string(), 0o755)
            ]
        );
    }
}
