//! Fuzz target: the profile parser (TOML or JSON) never panics, what it accepts keeps the validator's promises, and it reads back what it writes.
#![no_main]

use docker_agent_hub::profile::{self, Format, Profile};
use libfuzzer_sys::fuzz_target;

/// Where a profile may not place a file or a mount (the hub's and the agent's own paths).
const AGENT_BINARY: &str = "/usr/local/bin/docker-agent-agent";
const OWNED_DIRS: &[&str] = &["/etc/docker-agent", "/var/lib/docker-agent"];

fn under(path: &str, dir: &str) -> bool {
    path == dir || path.starts_with(&format!("{dir}/"))
}

/// What `validate` promises about every profile it returns.
fn check(p: &Profile) {
    profile::validate_profile_name(&p.name).expect("name");
    assert!(
        p.base
            .as_deref()
            .is_none_or(|b| !b.trim().is_empty() && !b.contains(char::is_whitespace)),
        "base {:?}",
        p.base
    );
    for (i, pkg) in p.packages.iter().enumerate() {
        assert!(!p.packages[..i].contains(pkg), "package {pkg:?} twice");
    }
    for key in p.environment.keys() {
        assert!(
            !key.is_empty() && !key.starts_with("DOCKER_AGENT_") && !key.contains('='),
            "environment key {key:?}"
        );
    }
    for (i, f) in p.files.iter().enumerate() {
        // Absolute and already normalised: validating it again changes nothing.
        assert_eq!(
            profile::validate_abs_path(&f.path).as_deref(),
            Ok(f.path.as_str())
        );
        assert!(
            f.path != AGENT_BINARY && !OWNED_DIRS.iter().any(|d| under(&f.path, d)),
            "file {:?} in a docker-agent directory",
            f.path
        );
        assert!(
            !p.read_only_root || f.path.starts_with("/workspace/"),
            "file {:?} outside /workspace with a read-only root",
            f.path
        );
        assert!(
            !p.files[..i].iter().any(|o| o.path == f.path),
            "file {:?} twice",
            f.path
        );
        assert!(f.mode <= 0o7777, "mode {:o}", f.mode);
    }
    for t in &p.setup_tasks {
        assert!(!t.command.trim().is_empty(), "empty setup command");
        assert!(t.timeout.is_none_or(|d| !d.is_zero()), "zero setup timeout");
    }
    assert!(
        p.cpus == 0.0 || (p.cpus.is_finite() && p.cpus > 0.0 && p.cpus <= 1024.0),
        "cpus {}",
        p.cpus
    );
    assert!(
        p.memory_bytes == 0 || p.memory_bytes >= 6 << 20,
        "memory {}",
        p.memory_bytes
    );
    assert!(p.pids == 0 || p.pids >= 16, "pids {}", p.pids);
    for (i, m) in p.mounts.iter().enumerate() {
        assert_eq!(
            profile::validate_abs_path(&m.target).as_deref(),
            Ok(m.target.as_str())
        );
        assert!(
            m.target != "/"
                && !OWNED_DIRS
                    .iter()
                    .chain(&["/workspace", AGENT_BINARY])
                    .any(|d| under(&m.target, d) || under(d, &m.target)),
            "mount target {:?} hides a docker-agent path",
            m.target
        );
        assert!(
            !p.mounts[..i].iter().any(|o| o.target == m.target),
            "mount target {:?} twice",
            m.target
        );
        if m.kind == profile::MountKind::Bind {
            assert!(m.source.starts_with('/'), "bind source {:?}", m.source);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    // Even first byte: TOML; odd: JSON (the seeds start with '0' or '1').
    let format = if selector & 1 == 0 {
        Format::Toml
    } else {
        Format::Json
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let Ok(p) = profile::parse(text, format, "fuzz") else {
        return;
    };
    check(&p);
    // `profiles show` prints TOML and snapshots keep the profile as JSON in a label; both must read
    // back as the same profile, or a snapshot would silently start a different container.
    for (written, format) in [(p.to_toml(), Format::Toml), (p.to_json(), Format::Json)] {
        match profile::parse(&written, format, "fuzz round trip") {
            Ok(again) => assert_eq!(
                again, p,
                "{format:?} round trip changed the profile:\n{written}"
            ),
            Err(e) => panic!("{format:?} round trip failed: {e}\n{written}"),
        }
    }
});
