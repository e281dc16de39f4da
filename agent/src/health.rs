//! Health for heartbeats: the container's cgroup CPU and memory (v2, or v1 on older hosts), workdir disk, load, processes, and the agent's own footprint.
//!
//! Everything is read from small /proc and /sys files on demand; nothing is cached between
//! heartbeats except the previous CPU sample, to keep the agent's idle memory tiny.

use std::path::{Path, PathBuf};
use std::time::Instant;

use docker_agent_proto::v1::Health;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Where the container's CPU and memory counters live.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cgroup {
    /// The unified hierarchy: `cpu.stat`, `memory.current`, `memory.max`.
    V2(PathBuf),
    /// Docker on a cgroup v1 host mounts the container's own groups per controller.
    V1 { memory: PathBuf, cpuacct: PathBuf },
}

/// v1 reports "no limit" as a huge page-rounded number rather than `max`.
const V1_UNLIMITED: u64 = 1 << 62;

/// What each heartbeat reports. An agent samples its own container; a load run (`load`) shares one
/// sample among thousands of simulated agents in a process.
pub trait HealthSource: Send {
    /// `idle`: no output is waiting for the hub, so memory kept for an output burst can be given back.
    fn sample(&mut self, running_tasks: u32, idle: bool) -> Health;
}

/// Samples health; keeps only what is needed to compute CPU percent between two calls.
#[derive(Debug)]
pub struct HealthSampler {
    cgroup: Option<Cgroup>,
    workdir: PathBuf,
    started: Instant,
    last_cpu: Option<(u64, Instant)>,
}

/// `usage_usec` from a cgroup v2 `cpu.stat`.
pub fn parse_cpu_usage_usec(cpu_stat: &str) -> Option<u64> {
    cpu_stat.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == "usage_usec").then(|| value.trim().parse().ok())?
    })
}

/// `memory.max`: a byte count, or `max` for no limit (reported as 0).
pub fn parse_memory_max(text: &str) -> Option<u64> {
    match text.trim() {
        "max" => Some(0),
        n => n.parse().ok(),
    }
}

/// The unified (v2) hierarchy path from `/proc/self/cgroup` (the `0::/path` line).
pub fn parse_cgroup_v2_path(proc_self_cgroup: &str) -> Option<&str> {
    proc_self_cgroup
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(str::trim)
}

/// Resident set size in bytes from `/proc/<pid>/status` (its `VmRSS:` line, in kB).
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line["VmRSS:".len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// `oom_kill N` from a v2 `memory.events` or a v1 `memory.oom_control`.
pub fn parse_oom_kill(text: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == "oom_kill").then(|| value.trim().parse().ok())?
    })
}

/// How many processes the kernel's OOM killer has killed in this container so far (None where the
/// cgroup does not say).
pub fn oom_kills() -> Option<u64> {
    let file = match find_cgroup(Path::new(CGROUP_ROOT))? {
        Cgroup::V2(dir) => dir.join("memory.events"),
        Cgroup::V1 { memory, .. } => memory.join("memory.oom_control"),
    };
    parse_oom_kill(&std::fs::read_to_string(file).ok()?)
}

/// The agent's own cgroup: v2 when the unified hierarchy is mounted at the usual place, else the v1
/// `memory` and `cpuacct` controllers Docker mounts for the container.
fn find_cgroup(root: &Path) -> Option<Cgroup> {
    if let Some(rel) = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .as_deref()
        .and_then(parse_cgroup_v2_path)
        .map(|p| p.trim_start_matches('/').to_string())
    {
        let dir = root.join(rel);
        if dir.join("cgroup.controllers").exists() {
            return Some(Cgroup::V2(dir));
        }
    }
    let memory = root.join("memory");
    let cpuacct = ["cpuacct", "cpu,cpuacct"]
        .iter()
        .map(|d| root.join(d))
        .find(|d| d.join("cpuacct.usage").exists())?;
    memory
        .join("memory.usage_in_bytes")
        .exists()
        .then_some(Cgroup::V1 { memory, cpuacct })
}

/// `total_inactive_file` (v1) or `inactive_file` (v2) from `memory.stat`: page cache the kernel can
/// drop at once, which `docker stats` leaves out of "used" too.
pub fn parse_inactive_file(memory_stat: &str) -> u64 {
    memory_stat
        .lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == "total_inactive_file" || *k == "inactive_file")
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Processes visible to the agent: its pid namespace, i.e. the container.
fn count_processes() -> u32 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let n = dir
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .as_encoded_bytes()
                .iter()
                .all(u8::is_ascii_digit)
        })
        .count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn disk_usage(path: &Path) -> (u64, u64) {
    match nix::sys::statvfs::statvfs(path) {
        Ok(s) => {
            // All three are u64 on the 64-bit Linux targets the agent ships for.
            let frsize = s.fragment_size();
            let total = s.blocks().saturating_mul(frsize);
            let free = s.blocks_free().saturating_mul(frsize);
            (total.saturating_sub(free), total)
        }
        Err(_) => (0, 0),
    }
}

impl HealthSampler {
    pub fn new(workdir: impl Into<PathBuf>) -> Self {
        let cgroup = find_cgroup(Path::new(CGROUP_ROOT));
        if cgroup.is_none() {
            tracing::info!("no cgroup found; container CPU and memory are reported as 0");
        }
        Self {
            cgroup,
            workdir: workdir.into(),
            started: Instant::now(),
            last_cpu: None,
        }
    }

    pub fn sample(&mut self, running_tasks: u32) -> Health {
        let mut h = Health {
            running_tasks,
            uptime_secs: self.started.elapsed().as_secs(),
            ..Default::default()
        };
        let counters = match &self.cgroup {
            Some(Cgroup::V2(dir)) => Some((
                std::fs::read_to_string(dir.join("cpu.stat"))
                    .ok()
                    .as_deref()
                    .and_then(parse_cpu_usage_usec),
                read_u64(&dir.join("memory.current")),
                dir.join("memory.stat"),
                std::fs::read_to_string(dir.join("memory.max"))
                    .ok()
                    .as_deref()
                    .and_then(parse_memory_max),
            )),
            Some(Cgroup::V1 { memory, cpuacct }) => Some((
                read_u64(&cpuacct.join("cpuacct.usage")).map(|ns| ns / 1000),
                read_u64(&memory.join("memory.usage_in_bytes")),
                memory.join("memory.stat"),
                read_u64(&memory.join("memory.limit_in_bytes"))
                    .map(|l| if l >= V1_UNLIMITED { 0 } else { l }),
            )),
            None => None,
        };
        if let Some((cpu_usec, used, stat, limit)) = counters {
            let now = Instant::now();
            if let Some(usage) = cpu_usec {
                h.cpu_usage_usec = usage;
                if let Some((prev, at)) = self.last_cpu {
                    let wall = now.duration_since(at).as_micros() as f64;
                    if wall > 0.0 {
                        h.cpu_percent = usage.saturating_sub(prev) as f64 / wall * 100.0;
                    }
                }
                self.last_cpu = Some((usage, now));
            }
            let inactive = std::fs::read_to_string(stat)
                .map(|s| parse_inactive_file(&s))
                .unwrap_or(0);
            h.memory_used_bytes = used.unwrap_or(0).saturating_sub(inactive);
            h.memory_limit_bytes = limit.unwrap_or(0);
        }
        (h.disk_used_bytes, h.disk_total_bytes) = disk_usage(&self.workdir);
        let load = sysinfo::System::load_average();
        (h.load1, h.load5, h.load15) = (load.one, load.five, load.fifteen);
        h.process_count = count_processes();
        h.agent_rss_bytes = std::fs::read_to_string("/proc/self/status")
            .ok()
            .as_deref()
            .and_then(parse_vm_rss)
            .unwrap_or(0);
        h
    }
}

impl HealthSource for HealthSampler {
    fn sample(&mut self, running_tasks: u32, idle: bool) -> Health {
        if idle {
            // glibc keeps freed heap after an output burst; give it back so the idle agent stays small
            // (and the RSS reported below is what the agent needs).
            // libc rather than nix: malloc_trim is a glibc extension that neither nix nor rustix wraps.
            // SAFETY: malloc_trim only releases free memory of the allocator; it touches no live allocation.
            unsafe {
                libc::malloc_trim(0);
            }
        }
        HealthSampler::sample(self, running_tasks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPU_STAT: &str = "usage_usec 123456789
user_usec 100000000
system_usec 23456789
core_sched.force_idle_usec 0
nr_periods 0
nr_throttled 0
throttled_usec 0
";

    #[test]
    fn parses_cpu_stat() {
        assert_eq!(parse_cpu_usage_usec(CPU_STAT), Some(123_456_789));
        assert_eq!(parse_cpu_usage_usec("user_usec 5\n"), None);
        assert_eq!(parse_cpu_usage_usec(""), None);
        assert_eq!(parse_cpu_usage_usec("usage_usec x\n"), None);
    }

    #[test]
    fn parses_inactive_file() {
        let v1 = "cache 100\ntotal_cache 200\ntotal_inactive_file 4096\n";
        assert_eq!(parse_inactive_file(v1), 4096);
        let v2 = "anon 1\nfile 2\ninactive_file 8192\nactive_file 3\n";
        assert_eq!(parse_inactive_file(v2), 8192);
        assert_eq!(parse_inactive_file(""), 0);
    }

    #[test]
    fn parses_oom_kill_counts() {
        let v2 = "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\n";
        assert_eq!(parse_oom_kill(v2), Some(2));
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 5\n";
        assert_eq!(parse_oom_kill(v1), Some(5));
        assert_eq!(parse_oom_kill("oom_kill_disable 0\n"), None);
    }

    #[test]
    fn parses_memory_max() {
        assert_eq!(parse_memory_max("max\n"), Some(0));
        assert_eq!(parse_memory_max("536870912\n"), Some(536_870_912));
        assert_eq!(parse_memory_max("garbage"), None);
    }

    #[test]
    fn parses_proc_self_cgroup() {
        assert_eq!(parse_cgroup_v2_path("0::/\n"), Some("/"));
        let hybrid =
            "12:memory:/docker/abc\n1:name=systemd:/x\n0::/system.slice/docker-abc.scope\n";
        assert_eq!(
            parse_cgroup_v2_path(hybrid),
            Some("/system.slice/docker-abc.scope")
        );
        assert_eq!(parse_cgroup_v2_path("4:memory:/foo\n"), None);
    }

    #[test]
    fn parses_vm_rss() {
        let status = "Name:\tagent\nVmPeak:\t  9000 kB\nVmRSS:\t    2048 kB\nThreads:\t1\n";
        assert_eq!(parse_vm_rss(status), Some(2048 * 1024));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
    }

    #[test]
    fn finds_v1_controllers_when_there_is_no_v2() {
        let root = tempfile::tempdir().unwrap();
        // Whatever this host is, an empty root holds no cgroup at all.
        assert!(find_cgroup(root.path()).is_none());
        std::fs::create_dir_all(root.path().join("memory")).unwrap();
        std::fs::write(root.path().join("memory/memory.usage_in_bytes"), "4096\n").unwrap();
        std::fs::create_dir_all(root.path().join("cpu,cpuacct")).unwrap();
        std::fs::write(root.path().join("cpu,cpuacct/cpuacct.usage"), "1000\n").unwrap();
        let found = find_cgroup(root.path());
        // A v2 host's /proc/self/cgroup may point at a real unified dir under this fake root: it has none.
        assert_eq!(
            found,
            Some(Cgroup::V1 {
                memory: root.path().join("memory"),
                cpuacct: root.path().join("cpu,cpuacct"),
            })
        );
    }

    #[test]
    fn samples_without_panicking_and_reports_own_rss() {
        let mut s = HealthSampler::new("/");
        let a = s.sample(2);
        let b = s.sample(2);
        assert_eq!(b.running_tasks, 2);
        assert!(b.agent_rss_bytes > 0);
        assert!(b.process_count >= 1);
        assert!(b.disk_total_bytes >= b.disk_used_bytes);
        assert!(a.cpu_percent == 0.0, "no previous sample yet");
        let mut missing = HealthSampler::new("/no/such/workdir");
        assert_eq!(missing.sample(0).disk_total_bytes, 0);
    }
}
