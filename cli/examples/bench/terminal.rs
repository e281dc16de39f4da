//! Interactive use: keystroke echo through `exec -t` against `docker exec -it`, and `cp` both ways
//! against `docker cp`.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::pty::Winsize;

use crate::fixture::{Hub, docker, timed};
use crate::report::{Row, Samples, Unit};

/// A pseudo-terminal pair, 24×80.
fn openpty() -> (OwnedFd, OwnedFd) {
    let ws = Winsize {
        ws_row: 24,
        ws_col: 80,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(&ws, None).expect("openpty");
    (pty.master, pty.slave)
}

/// Keystroke echo: `cmd` (a `cat` on a remote terminal) runs on a local terminal; each sample is the
/// time from typing one key to seeing its echo come back. Returns (median, p99).
fn echo_latency(cmd: &mut Command, keystrokes: usize) -> Samples {
    let (master, slave) = openpty();
    let mut child = cmd
        .stdin(Stdio::from(slave.try_clone().expect("dup")))
        .stdout(Stdio::from(slave.try_clone().expect("dup")))
        .stderr(Stdio::from(slave.try_clone().expect("dup")))
        .spawn()
        .expect("spawn");
    let mut out = std::fs::File::from(master.try_clone().expect("dup"));
    let mut input = std::fs::File::from(master);
    let mut buf = [0u8; 256];
    // Until the remote terminal echoes, the command is not up yet.
    loop {
        input.write_all(b"w").expect("type");
        std::thread::sleep(Duration::from_millis(200));
        let n = out.read(&mut buf).expect("read");
        if buf[..n].contains(&b'w') {
            break;
        }
    }
    let mut samples = Samples::default();
    for _ in 0..keystrokes {
        let start = Instant::now();
        input.write_all(b"k").expect("type");
        loop {
            let n = out.read(&mut buf).expect("read");
            if buf[..n].contains(&b'k') {
                break;
            }
        }
        samples.push(start.elapsed());
    }
    input.write_all(&[3]).expect("ctrl-c");
    let _ = child.kill();
    let _ = child.wait();
    drop(slave);
    samples
}

pub fn measure(hub: &Hub, name: &str, container: &str, keystrokes: usize) -> Vec<Row> {
    let ours = echo_latency(
        hub.cli().args(["exec", "-t", name, "--", "cat"]),
        keystrokes,
    );
    let theirs = echo_latency(docker().args(["exec", "-it", container, "cat"]), keystrokes);
    vec![Row::compared(
        format!(
            "keystroke echo, `exec -t N cat` vs `docker exec -it N cat` ({keystrokes} keys each)"
        ),
        Unit::Millis,
        &ours,
        &theirs,
        "≤ 2 ms",
    )]
}

pub fn measure_cp(hub: &Hub, name: &str, container: &str, bytes: u64, runs: usize) -> Vec<Row> {
    let scratch = tempfile::tempdir().expect("tempdir");
    let file = scratch.path().join("blob");
    let mut data = Vec::new();
    std::fs::File::open("/dev/urandom")
        .expect("urandom")
        .take(bytes)
        .read_to_end(&mut data)
        .expect("random bytes");
    std::fs::write(&file, &data).expect("write blob");
    drop(data);
    let blob = file.to_str().expect("utf-8 path");
    let rate = |d: Duration| bytes as f64 / d.as_secs_f64();
    let (mut cp_in, mut dcp_in, mut cp_out, mut dcp_out) = Default::default();
    let push = |s: &mut Samples, d: Duration| s.push_value(rate(d));
    for i in 0..runs {
        let ours = format!("{name}:/workspace/in-{i}");
        let theirs = format!("{container}:/workspace/din-{i}");
        push(&mut cp_in, timed(hub.cli().args(["cp", blob, &ours])));
        push(&mut dcp_in, timed(docker().args(["cp", blob, &theirs])));
        let back = scratch.path().join(format!("out-{i}"));
        let dback = scratch.path().join(format!("dout-{i}"));
        push(
            &mut cp_out,
            timed(hub.cli().args(["cp", &ours, back.to_str().expect("utf-8")])),
        );
        push(
            &mut dcp_out,
            timed(docker().args(["cp", &theirs, dback.to_str().expect("utf-8")])),
        );
    }
    let mib = bytes >> 20;
    vec![
        Row::compared(
            format!("`cp` in, a {mib} MiB file, vs `docker cp` ({runs} each)"),
            Unit::MibPerSec,
            &cp_in,
            &dcp_in,
            "",
        ),
        Row::compared(
            format!("`cp` out, a {mib} MiB file, vs `docker cp` ({runs} each)"),
            Unit::MibPerSec,
            &cp_out,
            &dcp_out,
            "",
        ),
    ]
}
