//! The `docker-agent` binary; everything lives in the library.

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    docker_agent_cli::main()
}
