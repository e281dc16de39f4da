//! The `docker-agent` binary; everything lives in the library.

fn main() -> std::process::ExitCode {
    docker_agent_cli::main()
}
