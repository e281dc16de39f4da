//! Tidiness, checked as a test: every source file says what it is for, and the hub's rooms only use
//! rooms below them (ARCHITECTURE.md, "one way down").

use std::path::{Path, PathBuf};

/// The hub's rooms, highest first. A file may name `crate::X` only for a room X below its own.
const ROOMS: &[&str] = &[
    "lib",
    "server",
    "api",
    "create",
    // Above exec: cp over an agent's link (`agent/files.rs`) runs as an exec.
    "agent",
    "exec",
    "task",
    "config",
    "core",
    "error",
    "image",
    "driver",
    "tls",
    "metrics",
    "store",
    "datadir",
    "lifecycle",
    "profile",
    "credentials",
];

fn rank(room: &str) -> usize {
    ROOMS
        .iter()
        .position(|r| *r == room)
        .unwrap_or_else(|| panic!("room {room:?} is not in the list; place it in ROOMS"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The room a file under `src/` is in: its first path component, without `.rs`.
fn room_of(file: &Path) -> String {
    let rel = file.strip_prefix(src()).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

#[test]
fn every_file_opens_with_what_it_is_for() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for dir in ["hub/src", "agent/src", "cli/src", "proto/src", "probe/src"] {
        rust_files(&root.join(dir), &mut files);
    }
    let missing: Vec<_> = files
        .iter()
        .filter(|f| !std::fs::read_to_string(f).unwrap().starts_with("//!"))
        .collect();
    assert!(
        missing.is_empty(),
        "files without a `//!` line: {missing:?}"
    );
}

#[test]
fn rooms_only_use_rooms_below_them() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut upward = Vec::new();
    for file in &files {
        let room = room_of(file);
        let text = std::fs::read_to_string(file).unwrap();
        for (i, line) in text.lines().enumerate() {
            let mut rest = line;
            while let Some(at) = rest.find("crate::") {
                rest = &rest[at + "crate::".len()..];
                let used: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if used.is_empty() || used == room || !ROOMS.contains(&used.as_str()) {
                    continue;
                }
                if rank(&used) < rank(&room) {
                    upward.push(format!(
                        "{}:{}: {room} uses {used}, a room above it",
                        file.display(),
                        i + 1
                    ));
                }
            }
        }
    }
    assert!(upward.is_empty(), "{}", upward.join("\n"));
}
