//! Profiles: what an agent's container gets (base, packages, user, environment, files, setup steps, resources, network, mounts). Built-in ones ship in `profiles/` and are compiled in; a user directory adds to and overrides them.

mod parse;
mod raw;
mod render;
mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use parse::{Format, parse};
pub use raw::parse_size;
pub use render::format_size;
pub use validate::{validate_abs_path, validate_group, validate_profile_name};

/// Where every image the hub makes has the agent binary (images/agent.Dockerfile puts it there): no
/// profile file may replace it and no mount may hide it, and `cp` over the link runs it.
pub const AGENT_BINARY: &str = "/usr/local/bin/docker-agent-agent";

/// The profile used when `create` names none.
pub const DEFAULT_PROFILE: &str = "minimal";
/// The task user every image has unless its profile names another.
pub const DEFAULT_USER: &str = "agent";
/// The uid the image build gives a non-root task user that the base lacks.
pub const TASK_UID: u64 = 1000;

const BUILTIN: &[(&str, &str)] = &[
    ("builder", include_str!("../../../profiles/builder.toml")),
    ("deployer", include_str!("../../../profiles/deployer.toml")),
    (
        "docker-host",
        include_str!("../../../profiles/docker-host.toml"),
    ),
    ("minimal", include_str!("../../../profiles/minimal.toml")),
    (
        "researcher",
        include_str!("../../../profiles/researcher.toml"),
    ),
    ("tester", include_str!("../../../profiles/tester.toml")),
];

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProfileError {
    #[error("profile {origin}: {message}")]
    Invalid { origin: String, message: String },
    #[error("unknown profile {name:?} (available: {available})")]
    Unknown { name: String, available: String },
    #[error("cannot read profile directory {path}: {message}")]
    Directory { path: PathBuf, message: String },
}

/// Who owns a profile file in the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileOwner {
    Root,
    /// The task user.
    User,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProfileFile {
    pub path: String,
    pub content: String,
    pub mode: u32,
    /// Unset: the task user under its home or /workspace, root elsewhere.
    pub owner: Option<FileOwner>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SetupTask {
    pub command: String,
    pub description: String,
    /// Unset: the task user.
    pub user: Option<String>,
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountKind {
    Bind,
    Volume,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProfileMount {
    pub kind: MountKind,
    pub source: String,
    pub target: String,
    pub read_only: bool,
}

/// A volume driver and its options for /workspace (`docker volume create --driver D --opt K=V`): with
/// a network file system behind it, the workspace follows an agent a Swarm moves to another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceVolume {
    pub driver: String,
    pub options: std::collections::BTreeMap<String, String>,
}

/// A validated profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub name: String,
    pub description: String,
    /// An image on the engine; unset: the hub's base (Debian bookworm built by debootstrap).
    pub base: Option<String>,
    /// Debian packages installed into the image at build time.
    pub packages: Vec<String>,
    /// The user tasks run as (created by the image build when the base lacks it).
    pub user: String,
    pub environment: BTreeMap<String, String>,
    pub files: Vec<ProfileFile>,
    pub setup_tasks: Vec<SetupTask>,
    /// 0: no limit.
    pub cpus: f64,
    pub memory_bytes: u64,
    pub pids: i64,
    /// Output stored per task and per agent (`resources.max_output`, `resources.max_agent_output`);
    /// 0: the hub's bounds.
    pub max_output: u64,
    pub max_agent_output: u64,
    /// A Docker network the container joins besides the hub's.
    pub network: Option<String>,
    /// Agents of one group share a network and can reach each other; others cannot.
    pub group: Option<String>,
    pub mounts: Vec<ProfileMount>,
    /// The container's root filesystem is read-only; `/workspace`, `/tmp` and the agent's own state
    /// (on its credentials volume) stay writable.
    pub read_only_root: bool,
    /// Swarm placement constraints (`node.labels.X==Y`, `node.role!=manager`, …); a single engine
    /// has one place and ignores them.
    pub placement: Vec<String>,
    /// The volume driver /workspace is made with (None: the engine's default, a local directory).
    pub workspace: Option<WorkspaceVolume>,
    /// "builtin", a file path, or "snapshot TAG".
    pub origin: String,
}

impl Profile {
    pub fn with_origin(mut self, origin: &str) -> Self {
        self.origin = origin.to_string();
        self
    }

    /// The task user's home directory as the image build makes it.
    pub fn home(&self) -> String {
        if self.user == "root" {
            "/root".into()
        } else {
            format!("/home/{}", self.user)
        }
    }

    /// Who owns `file` in the container, and the directory under which its missing parents belong to
    /// the same owner (so a file in `~/.config/x` leaves `~/.config` writable by the user).
    pub fn file_owner(&self, file: &ProfileFile) -> (FileOwner, Option<String>) {
        let home = self.home();
        let user_root = ["/workspace", home.as_str()]
            .into_iter()
            .find(|root| file.path.starts_with(&format!("{root}/")))
            .map(str::to_string);
        let owner = file.owner.unwrap_or(if user_root.is_some() {
            FileOwner::User
        } else {
            FileOwner::Root
        });
        (owner, user_root)
    }

    /// Bind mounts that hand the container a host socket (a container engine's above all) or a
    /// directory holding an engine's socket: root on the host. Judged on the host's filesystem
    /// (symlinks resolved), and by name for paths the hub cannot see.
    pub fn docker_socket_mounts(&self) -> Vec<&ProfileMount> {
        self.mounts
            .iter()
            .filter(|m| m.kind == MountKind::Bind && exposes_engine(Path::new(&m.source)))
            .collect()
    }
}

/// Where container engines put their API sockets.
const ENGINE_SOCKETS: &[&str] = &[
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/run/containerd/containerd.sock",
    "/run/podman/podman.sock",
];

fn exposes_engine(source: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    if source.to_string_lossy().ends_with(".sock") {
        return true;
    }
    let canonical = std::fs::canonicalize(source).unwrap_or_else(|_| source.to_path_buf());
    if std::fs::metadata(&canonical).is_ok_and(|m| m.file_type().is_socket()) {
        return true;
    }
    let docker_host = std::env::var("DOCKER_HOST").ok();
    ENGINE_SOCKETS
        .iter()
        .copied()
        .chain(
            docker_host
                .as_deref()
                .and_then(|h| h.strip_prefix("unix://")),
        )
        .any(|socket| {
            let socket = Path::new(socket);
            let socket = std::fs::canonicalize(socket).unwrap_or_else(|_| socket.to_path_buf());
            socket.starts_with(&canonical) || socket.starts_with(source)
        })
}

/// Profiles are a few kilobytes; the directory is read on every request, so a stray huge file
/// must not be read whole each time.
const MAX_PROFILE_BYTES: u64 = 1 << 20;

fn read_profile_file(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_PROFILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > MAX_PROFILE_BYTES {
        return Err(format!(
            "larger than {} KiB; a profile is a few lines",
            MAX_PROFILE_BYTES >> 10
        ));
    }
    String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())
}

/// The profiles a hub offers right now: the built-in ones, overridden and extended by the files of
/// the user directory, with the errors of the files that did not load.
#[derive(Debug, Clone)]
pub struct ProfileCatalog {
    profiles: BTreeMap<String, Profile>,
    /// Per profile name (the file's stem), why its file did not load.
    pub errors: BTreeMap<String, ProfileError>,
}

impl ProfileCatalog {
    /// Reads the built-in profiles and `dir` (its `*.toml` and `*.json` files; absent is fine).
    /// Cheap enough to do per request, so edits apply without restarting the hub.
    pub fn load(dir: Option<&Path>) -> Self {
        let mut catalog = Self {
            profiles: BTreeMap::new(),
            errors: BTreeMap::new(),
        };
        for (name, text) in BUILTIN {
            match parse(text, Format::Toml, &format!("builtin {name}")) {
                Ok(p) => {
                    catalog
                        .profiles
                        .insert(p.name.clone(), p.with_origin("builtin"));
                }
                Err(e) => {
                    catalog.errors.insert(name.to_string(), e);
                }
            }
        }
        if let Some(dir) = dir {
            catalog.load_dir(dir);
        }
        catalog
    }

    fn load_dir(&mut self, dir: &Path) {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                self.errors.insert(
                    String::new(),
                    ProfileError::Directory {
                        path: dir.to_path_buf(),
                        message: e.to_string(),
                    },
                );
                return;
            }
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths {
            let format = match path.extension().and_then(|e| e.to_str()) {
                Some("toml") => Format::Toml,
                Some("json") => Format::Json,
                _ => continue,
            };
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let origin = path.display().to_string();
            let loaded = read_profile_file(&path)
                .map_err(|message| ProfileError::Invalid {
                    origin: origin.clone(),
                    message,
                })
                .and_then(|text| parse(&text, format, &origin))
                .and_then(|p| {
                    if p.name == stem {
                        Ok(p)
                    } else {
                        Err(ProfileError::Invalid {
                            origin: origin.clone(),
                            message: format!(
                                "field `name`: {:?} differs from the file name; name the file {}.{}",
                                p.name,
                                p.name,
                                path.extension().unwrap_or_default().to_string_lossy()
                            ),
                        })
                    }
                });
            match loaded {
                Ok(p)
                    if self
                        .profiles
                        .get(&p.name)
                        .is_some_and(|o| o.origin != "builtin") =>
                {
                    // Which of the two was meant is anyone's guess: neither is used.
                    self.profiles.remove(&p.name);
                    self.errors.insert(
                        stem,
                        ProfileError::Invalid {
                            origin,
                            message: format!(
                                "profile {:?} is defined twice in {} (as .toml and .json)",
                                p.name,
                                dir.display()
                            ),
                        },
                    );
                }
                Ok(p) => {
                    self.profiles.insert(p.name.clone(), p.with_origin(&origin));
                }
                Err(e) => {
                    // A broken override must not silently fall back to the built-in profile.
                    self.profiles.remove(&stem);
                    self.errors.insert(stem, e);
                }
            }
        }
    }

    /// The profile called `name`; an invalid file of that name reports its own error.
    pub fn get(&self, name: &str) -> Result<&Profile, ProfileError> {
        if let Some(p) = self.profiles.get(name) {
            return Ok(p);
        }
        if let Some(e) = self.errors.get(name) {
            return Err(e.clone());
        }
        Err(ProfileError::Unknown {
            name: name.to_string(),
            available: self.profiles.keys().cloned().collect::<Vec<_>>().join(", "),
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Profile> {
        self.profiles.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_profiles_parse_and_minimal_is_the_default() {
        let catalog = ProfileCatalog::load(None);
        assert!(catalog.errors.is_empty(), "{:?}", catalog.errors);
        let names: Vec<&str> = catalog.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "builder",
                "deployer",
                "docker-host",
                "minimal",
                "researcher",
                "tester"
            ]
        );
        let minimal = catalog.get(DEFAULT_PROFILE).unwrap();
        assert_eq!(minimal.memory_bytes, 1 << 30);
        assert!(minimal.packages.is_empty());
        assert_eq!(
            catalog
                .get("docker-host")
                .unwrap()
                .docker_socket_mounts()
                .len(),
            1
        );
        assert!(
            catalog
                .get("builder")
                .unwrap()
                .docker_socket_mounts()
                .is_empty()
        );
    }

    #[test]
    fn any_way_to_the_engine_socket_needs_the_opt_in() {
        let mounts = |source: &str| {
            let text =
                format!("name = \"s\"\n[[mounts]]\nsource = \"{source}\"\ntarget = \"/x\"\n");
            parse(&text, Format::Toml, "s")
                .unwrap()
                .docker_socket_mounts()
                .len()
        };
        // The directories holding the socket, the root, another engine's socket: all need the opt-in.
        for source in [
            "/var/run/docker.sock",
            "/var/run",
            "/run",
            "/",
            "/run/containerd/containerd.sock",
            "/tmp/podman.sock",
        ] {
            assert_eq!(mounts(source), 1, "{source}");
        }
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("innocent");
        std::os::unix::fs::symlink("/var/run", &link).unwrap();
        assert_eq!(mounts(&link.display().to_string()), 1);
        for source in ["/srv/data", "/var/cache"] {
            assert_eq!(mounts(source), 0, "{source}");
        }
    }

    #[test]
    fn a_user_directory_adds_overrides_and_reports_broken_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("minimal.toml"),
            "name = \"minimal\"\ndescription = \"mine\"\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("extra.json"), "{\"name\": \"extra\"}").unwrap();
        std::fs::write(
            dir.path().join("builder.toml"),
            "name = \"builder\"\n[resources]\nmemory = \"4q\"\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("other.toml"), "name = \"renamed\"\n").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let catalog = ProfileCatalog::load(Some(dir.path()));
        assert_eq!(catalog.get("minimal").unwrap().description, "mine");
        assert!(
            catalog
                .get("minimal")
                .unwrap()
                .origin
                .ends_with("minimal.toml")
        );
        assert_eq!(catalog.get("extra").unwrap().name, "extra");
        // The broken override hides the built-in one rather than falling back to it.
        let err = catalog.get("builder").unwrap_err().to_string();
        assert!(err.contains("builder.toml"), "{err}");
        assert!(err.contains("resources.memory"), "{err}");
        let err = catalog.get("other").unwrap_err().to_string();
        assert!(err.contains("differs from the file name"), "{err}");
        assert_eq!(catalog.errors.len(), 2);
        let err = catalog.get("nope").unwrap_err().to_string();
        assert!(
            err.starts_with("unknown profile \"nope\" (available: "),
            "{err}"
        );
    }

    #[test]
    fn file_owners_follow_the_users_directories() {
        let p = parse("name = \"x\"\nuser = \"dev\"\n", Format::Toml, "x").unwrap();
        let file = |path: &str, owner| ProfileFile {
            path: path.into(),
            content: String::new(),
            mode: 0o644,
            owner,
        };
        assert_eq!(
            p.file_owner(&file("/home/dev/.config/a", None)),
            (FileOwner::User, Some("/home/dev".into()))
        );
        assert_eq!(
            p.file_owner(&file("/workspace/a", None)),
            (FileOwner::User, Some("/workspace".into()))
        );
        assert_eq!(
            p.file_owner(&file("/etc/motd", None)),
            (FileOwner::Root, None)
        );
        assert_eq!(
            p.file_owner(&file("/etc/motd", Some(FileOwner::User))),
            (FileOwner::User, None)
        );
    }
}
