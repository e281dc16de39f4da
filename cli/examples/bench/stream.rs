//! Output: `exec N -- head -c SIZE /dev/zero` to /dev/null against `docker exec`, and the agent's
//! memory idle and while it streams (its VmRSS read from the host, sampled every 5 ms).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::fixture::{Hub, agent_path, container_pid, docker, rss, timed};
use crate::report::{Row, Samples, Unit};

/// Runs `f` while a thread samples the process's RSS; returns the highest sample.
fn peak_rss_during(pid: u32, f: impl FnOnce()) -> u64 {
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(rss(pid)));
    let sampler = {
        let (done, peak) = (done.clone(), peak.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    f();
    done.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    peak.load(Ordering::Relaxed)
}

pub fn measure(hub: &Hub, name: &str, container: &str, bytes: u64, runs: usize) -> Vec<Row> {
    let pid = container_pid(container);
    // Idle means after a heartbeat: the agent gives memory kept from the last task back then (every 5 s).
    std::thread::sleep(Duration::from_secs(6));
    let idle = rss(pid);
    let head = |n: u64| format!("head -c {n} /dev/zero");
    let hundred = 100 << 20;
    let streaming = peak_rss_during(pid, || {
        timed(
            hub.cli()
                .args(["exec", name, "--", "sh", "-c", &head(hundred)]),
        );
    });

    let (mut ours, mut theirs) = (Samples::default(), Samples::default());
    for _ in 0..runs {
        let t = timed(
            hub.cli()
                .args(["exec", name, "--", "sh", "-c", &head(bytes)]),
        );
        ours.push_value(bytes as f64 / t.as_secs_f64());
        let t = timed(docker().args(["exec", container, "sh", "-c", &head(bytes)]));
        theirs.push_value(bytes as f64 / t.as_secs_f64());
    }
    let binary = std::fs::metadata(agent_path()).map_or(0, |m| m.len());
    vec![
        Row::compared(
            format!(
                "exec output throughput, `head -c {}M /dev/zero` to /dev/null vs `docker exec` ({runs} each)",
                bytes >> 20
            ),
            Unit::MibPerSec,
            &ours,
            &theirs,
            "≥ 1.0",
        ),
        Row::single(
            "agent RSS, idle (read from the host, after a heartbeat)",
            Unit::Mib,
            idle as f64,
            "≤ 4 MB",
        ),
        Row::single(
            "agent RSS, peak while streaming 100 MiB of output",
            Unit::Mib,
            streaming as f64,
            "",
        ),
        Row::single("agent static binary", Unit::Mib, binary as f64, "≤ 5 MB"),
    ]
}
