//! Entry point of docker-agent-agent: parse and validate flags, set up logging, run the agent on a single-threaded runtime.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use clap::error::ErrorKind;
use docker_agent_agent::args::{ArchiveArgs, Args};
use docker_agent_agent::{EX_USAGE, agent, archive, config::Config, link_local};
use tracing_subscriber::EnvFilter;

/// clap's multi-line usage error, folded into one line for the container log.
fn one_line(err: &clap::Error) -> String {
    let text = err.render().to_string();
    let body = text.split("\n\nUsage:").next().unwrap_or(&text);
    body.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn main() -> ExitCode {
    // The same binary, run by the hub as a task: the container's side of `cp` (see `archive`).
    if std::env::args_os().nth(1).is_some_and(|a| a == "archive") {
        return match ArchiveArgs::try_parse_from(std::env::args_os().skip(1)) {
            Ok(a) => archive::run(a.op),
            Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp) => e.exit(),
            Err(e) => {
                eprintln!("docker-agent-agent archive: {}", one_line(&e));
                ExitCode::from(EX_USAGE)
            }
        };
    }
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            e.exit()
        }
        Err(e) => {
            eprintln!("docker-agent-agent: {}", one_line(&e));
            return ExitCode::from(EX_USAGE);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("DOCKER_AGENT_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    // Before the runtime: capabilities belong to a thread, and every later one inherits these.
    if args.block_link_local {
        if let Err(e) = link_local::block_and_drop_net_admin() {
            eprintln!(
                "docker-agent-agent: cannot make link-local addresses (cloud metadata) unreachable: {e}; refusing to run tasks without it"
            );
            return ExitCode::FAILURE;
        }
        let (dst, prefix) = link_local::LINK_LOCAL;
        let in_place = std::fs::read_to_string("/proc/net/route")
            .is_ok_and(|table| link_local::has_reject_route(&table, dst, prefix));
        tracing::info!(
            in_place,
            "link-local addresses ({dst}/{prefix}, cloud metadata) are unreachable from this container"
        );
    }
    // For the agent and every task it starts, whatever the engine set: a Swarm service (API 1.41)
    // cannot ask for no-new-privileges, and setting it again where Docker did changes nothing.
    if let Err(e) = nix::sys::prctl::set_no_new_privs() {
        eprintln!(
            "docker-agent-agent: cannot set no-new-privileges: {e}; refusing to run tasks without it"
        );
        return ExitCode::FAILURE;
    }
    let config = match Config::from_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("docker-agent-agent: invalid configuration: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")
        .and_then(|rt| rt.block_on(agent::run(config)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
