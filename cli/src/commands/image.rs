//! `docker-agent image build` (local, needs only Docker) and `docker-agent profiles` (asks the hub).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use docker_agent_hub::driver::{DockerDriver, Driver};
use docker_agent_hub::image::{ImageBuilder, Progress};
use docker_agent_hub::profile::{DEFAULT_PROFILE, ProfileSet};
use docker_agent_proto::v1 as pb;

use crate::args::{ImageSource, JsonArg};
use crate::client::{Client, status_error};
use crate::output::table;

pub async fn build(
    profile: Option<String>,
    source: ImageSource,
    quiet: bool,
    home: &std::path::Path,
) -> Result<ExitCode> {
    let profiles = ProfileSet::builtin()?;
    let profile = profiles
        .get(profile.as_deref().unwrap_or(DEFAULT_PROFILE))?
        .clone();
    let driver: Arc<dyn Driver> = Arc::new(DockerDriver::connect().await?);
    driver.ping().await?;
    let builder = ImageBuilder::new(
        driver,
        source.agent_binary,
        source.base_image,
        home.join("build"),
    );
    let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    let report = |p: Progress| match &bar {
        Some(bar) => bar.set_message(format!("[{}] {}", p.stage, p.message)),
        None if !quiet => eprintln!("[{}] {}", p.stage, p.message),
        None => {}
    };
    let tag = builder
        .ensure(&profile, &report)
        .await
        .with_context(|| format!("failed to build the image of profile {}", profile.name))?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    println!("{tag}");
    Ok(ExitCode::SUCCESS)
}

pub async fn profiles(mut client: Client, json: JsonArg) -> Result<ExitCode> {
    let profiles = client
        .list_profiles(pb::ListProfilesRequest {})
        .await
        .map_err(status_error)?
        .into_inner()
        .profiles;
    if json.json {
        let list: Vec<_> = profiles
            .iter()
            .map(|p| serde_json::json!({"name": p.name, "description": p.description, "source": p.source}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        let rows: Vec<Vec<String>> = profiles
            .iter()
            .map(|p| vec![p.name.clone(), p.source.clone(), p.description.clone()])
            .collect();
        print!("{}", table(&["NAME", "SOURCE", "DESCRIPTION"], &rows));
    }
    Ok(ExitCode::SUCCESS)
}
