//! `docker-agent image build`: builds a profile's image ahead of time, locally (needs only Docker), with the same profiles and tags the hub uses.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use docker_agent_hub::driver::{DockerDriver, Driver};
use docker_agent_hub::image::{ImageBuilder, Progress};
use docker_agent_hub::profile::{DEFAULT_PROFILE, ProfileCatalog};

use crate::args::{ImageSource, ProfilesDir};
use crate::progress::ProgressView;

pub async fn build(
    profile: Option<String>,
    source: ImageSource,
    profiles: ProfilesDir,
    quiet: bool,
    home: &std::path::Path,
) -> Result<ExitCode> {
    let dir = profiles
        .profiles_dir
        .unwrap_or_else(|| home.join("profiles"));
    let catalog = ProfileCatalog::load(Some(&dir));
    let profile = catalog
        .get(profile.as_deref().unwrap_or(DEFAULT_PROFILE))?
        .clone();
    let driver: Arc<dyn Driver> = Arc::new(DockerDriver::connect(&Default::default()).await?);
    driver.ping().await?;
    let builder = ImageBuilder::new(
        driver,
        source.agent_binary,
        source.base_image,
        home.join("build"),
    );
    let view = ProgressView::new(&format!("building the image of {}", profile.name), quiet);
    let report = |p: Progress| {
        view.update(
            p.stage,
            &p.message,
            p.steps.map(|(n, t)| (n.into(), t.into())),
        )
    };
    let started = std::time::Instant::now();
    // Ctrl-C drops the build: the engine abandons it when the request goes away, a debootstrap run is
    // stopped with its process group, and nothing is tagged.
    let built = tokio::select! {
        built = builder.ensure(&profile, &report) => built,
        _ = tokio::signal::ctrl_c() => {
            view.finish();
            eprintln!("build of {} cancelled; nothing was tagged", profile.name);
            return Ok(ExitCode::from(130));
        }
    };
    view.finish();
    let tag =
        built.with_context(|| format!("failed to build the image of profile {}", profile.name))?;
    if !quiet {
        eprintln!(
            "{} is ready ({:.1}s)",
            profile.name,
            started.elapsed().as_secs_f64()
        );
    }
    println!("{tag}");
    Ok(ExitCode::SUCCESS)
}
