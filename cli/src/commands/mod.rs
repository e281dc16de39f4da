//! One module per verb family; `run` dispatches.

mod agents;
mod catalog;
mod copy;
mod exec;
pub mod hub;
mod image;
mod prune;
mod task;

use std::process::ExitCode;

use anyhow::{Result, anyhow};
use clap::CommandFactory;

use crate::args::{Cli, Command, ImageCommand, ProfilesCommand, SnapshotsCommand};
use crate::client;

pub async fn run(cli: Cli) -> Result<ExitCode> {
    let home = client::data_dir(cli.home.as_deref());
    let connect = || client::connect(&home, cli.hub.as_deref());
    match cli.command {
        Command::Hub(args) => hub::run(*args, &home).await,
        Command::Image {
            command:
                ImageCommand::Build {
                    profile,
                    source,
                    profiles,
                    quiet,
                },
        } => image::build(profile, source, profiles, quiet, &home).await,
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "docker-agent",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Create(args) => agents::create(connect().await?, args).await,
        Command::List(args) => agents::list(connect().await?, args).await,
        Command::Nodes(args) => agents::nodes(connect().await?, args).await,
        Command::Status(args) => agents::status(connect().await?, args).await,
        Command::Start(args) => agents::start(connect().await?, args.name).await,
        Command::Stop(args) => agents::stop(connect().await?, args, false).await,
        Command::Restart(args) => agents::stop(connect().await?, args, true).await,
        Command::Destroy(args) => agents::destroy(connect().await?, args).await,
        Command::Exec(args) => exec::run(connect().await?, args).await,
        Command::Shell(args) => exec::run(connect().await?, args.into_exec()).await,
        Command::Sessions(args) => task::sessions(connect().await?, args).await,
        Command::Task(mut args) => match args.command.take() {
            Some(command) => task::run(connect().await?, command).await,
            None => {
                let run = args.into_run().ok_or_else(|| {
                    anyhow!("usage: docker-agent task NAME JSON (or task get|logs|list|cancel)")
                })?;
                task::submit(connect().await?, run).await
            }
        },
        Command::Profiles(args) => {
            let command = args
                .command
                .unwrap_or(ProfilesCommand::List { json: args.json });
            catalog::profiles(connect().await?, command).await
        }
        Command::Cp(args) => copy::cp(connect().await?, args).await,
        Command::Kill(args) => task::kill(connect().await?, args).await,
        Command::Logs(args) => catalog::logs(connect().await?, args).await,
        Command::Snapshot(args) => catalog::snapshot(connect().await?, args).await,
        Command::Prune(args) => prune::prune(connect().await?, args).await,
        Command::Snapshots(args) => {
            let command = args
                .command
                .unwrap_or(SnapshotsCommand::List { json: args.json });
            catalog::snapshots(connect().await?, command).await
        }
    }
}
