//! Entry point of docker-agent-probe: parse the flags, run the probe, print its JSON report.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use docker_agent_probe::args::Args;

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("docker-agent-probe: failed to start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(docker_agent_probe::run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("docker-agent-probe: {e:#}");
            ExitCode::FAILURE
        }
    }
}
