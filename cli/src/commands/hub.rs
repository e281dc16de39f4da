//! `docker-agent hub`: runs the hub until SIGINT or SIGTERM, then shuts it down gracefully.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use docker_agent_hub::HubConfig;
use docker_agent_hub::driver::EngineAddress;

use crate::args::HubArgs;

/// The hub's config from its flags; the message says which flag is wrong.
pub fn config(args: &HubArgs, home: &Path) -> Result<HubConfig, String> {
    let mut config = HubConfig::new(home.to_path_buf());
    config.engine = match &args.engine {
        Some(url) => EngineAddress::parse(url, args.engine_tls_dir.as_deref())?,
        None if args.engine_tls_dir.is_some() => {
            return Err("--engine-tls-dir needs --engine tcp://HOST:PORT".into());
        }
        None => EngineAddress::Local,
    };
    config.operator_listen = args.operator_listen;
    config.agent_listen = args.agent_listen;
    config.agent_url = args.agent_url.clone();
    config.network = args.network.clone();
    config.driver = args.driver;
    config.registry = args.registry.clone();
    config.agent_binary = args.image.agent_binary.clone();
    config.base_image = args.image.base_image.clone();
    config.heartbeat_interval = args.heartbeat_interval;
    config.ready_timeout = args.ready_timeout;
    config.kill_grace = args.kill_grace;
    config.session_timeout = args.session_timeout;
    config.web_idle = args.web_idle;
    config.retain_tasks = args.retain_tasks;
    config.retain_output = args.retain_output;
    config.xterm_dir = args.xterm_dir.clone();
    config.xterm_lib_dir = args.xterm_lib_dir.clone();
    config.agent_spool_bytes = args.agent_spool;
    config.output_limits = docker_agent_hub::store::OutputLimits {
        task: args.max_task_output,
        agent: args.max_agent_output,
        min_free_disk: args.min_free_disk,
    };
    config.agent_socket = args.agent_socket;
    config.agent_cooldown = args.agent_cooldown;
    config.profiles_dir = args.profiles.profiles_dir.clone();
    Ok(config)
}

pub async fn run(args: HubArgs, home: &Path) -> Result<ExitCode> {
    crate::init_logging(&args.log);
    let config = match config(&args, home) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(64));
        }
    };
    if let Err(e) = config.validate() {
        eprintln!("error: {e}");
        return Ok(ExitCode::from(64));
    }
    let hub = docker_agent_hub::start(config)
        .await
        .context("failed to start the hub")?;
    eprintln!(
        "docker-agent hub {} ready: operator {} · agents {} · data {}",
        env!("CARGO_PKG_VERSION"),
        hub.operator_addr,
        hub.agent_url,
        home.display()
    );
    eprintln!(
        "dashboard: http://{}/ (log in with the admin token in {})",
        docker_agent_hub::browser_addr(hub.operator_addr),
        home.join(docker_agent_hub::datadir::ADMIN_TOKEN_FILE)
            .display()
    );
    hub.warm_default_image();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("failed to listen for SIGTERM")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    hub.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
