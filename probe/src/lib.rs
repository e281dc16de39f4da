//! docker-agent-probe: what a hostile sandbox would run against the hub, and the reachability checks
//! between agents, for the end-to-end tests. It runs inside an agent container as a task, and only
//! ever talks to the hub (its socket or port) and to addresses the test names (its own containers).
//! Each probe prints one JSON object that the test reads.

#![forbid(unsafe_code)]

pub mod args;
mod flood;
mod impersonate;
mod reach;

use std::net::SocketAddr;
use std::process::ExitCode;

use args::{Args, Probe};

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.probe {
        Probe::Listen { port } => reach::listen(port).await,
        Probe::Connect {
            address,
            timeout_ms,
            connect_only,
        } => reach::connect(&address, timeout_ms, !connect_only).await,
        Probe::Flood {
            target,
            hold,
            connections,
            seconds,
        } => flood::run(&target, hold, connections, seconds).await,
        Probe::Impersonate {
            target,
            message_bytes,
            seconds,
        } => impersonate::run(&target, message_bytes, seconds).await,
    }
}

/// `HOST:PORT` with HOST an IP or a name in /etc/hosts (the probe is static: no NSS).
pub fn resolve(address: &str) -> anyhow::Result<SocketAddr> {
    use anyhow::Context;
    if let Ok(addr) = address.parse() {
        return Ok(addr);
    }
    let (host, port) = address
        .rsplit_once(':')
        .with_context(|| format!("{address:?} is not HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("bad port in {address:?}"))?;
    let hosts = std::fs::read_to_string("/etc/hosts").context("failed to read /etc/hosts")?;
    let ip = hosts
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .find_map(|l| {
            let mut fields = l.split_whitespace();
            let ip = fields.next()?.parse::<std::net::IpAddr>().ok()?;
            fields
                .any(|name| name.eq_ignore_ascii_case(host))
                .then_some(ip)
        })
        .with_context(|| format!("{host:?} is not in /etc/hosts"))?;
    Ok(SocketAddr::new(ip, port))
}
