//! Unit tests of create against the fake driver: undo on failure, the socket opt-in, what reaches the container.

use std::sync::Arc;

use super::container::TOKEN_PATH;
use super::files::{SETUP_PATH, profile_files};
use super::*;
use crate::driver::fake::{FailAt, FakeDriver};
use crate::profile::TASK_UID;
use crate::profile::{Format, parse};
use prost::Message;

fn create_request(name: &str) -> CreateRequest {
    CreateRequest {
        name: name.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_create_failing_after_the_container_exists_removes_everything() {
    let dir = tempfile::tempdir().unwrap();
    let driver = Arc::new(FakeDriver::failing(FailAt::Start));
    let core = Core::for_tests(driver.clone(), dir.path());
    let err = core
        .create_agent(create_request("demo"), &|_| {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("boom"), "{err}");
    assert!(
        driver.containers.lock().unwrap().is_empty(),
        "container left behind"
    );
    assert!(
        driver.volumes.lock().unwrap().is_empty(),
        "volume left behind"
    );
    assert!(
        core.store.agent_by_name("demo").unwrap().is_none(),
        "row left behind"
    );
    // The name is free again.
    *driver.fail.lock().unwrap() = FailAt::Nothing;
    let err = core
        .create_agent(create_request("demo"), &|_| {})
        .await
        .unwrap_err();
    // No agent dials back in a unit test: the ready timeout, with everything removed again.
    assert!(err.to_string().contains("did not connect"), "{err}");
    assert!(err.to_string().contains("nothing was kept"), "{err}");
    assert!(driver.containers.lock().unwrap().is_empty());
    assert!(core.store.agent_by_name("demo").unwrap().is_none());
}

#[tokio::test]
async fn a_failed_cleanup_keeps_the_row_so_destroy_can_finish() {
    let dir = tempfile::tempdir().unwrap();
    let driver = Arc::new(FakeDriver::failing(FailAt::StartAndRemove));
    let core = Core::for_tests(driver.clone(), dir.path());
    let err = core
        .create_agent(create_request("demo"), &|_| {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cleanup failed"), "{err}");
    let kept = core.store.agent_by_name("demo").unwrap().expect("row kept");
    assert_eq!(kept.lifecycle, Lifecycle::StartError);
    assert_eq!(driver.containers.lock().unwrap().len(), 1);
    *driver.fail.lock().unwrap() = FailAt::Nothing;
    core.destroy_agent("demo", true).await.unwrap();
    assert!(driver.containers.lock().unwrap().is_empty());
    assert!(driver.volumes.lock().unwrap().is_empty());
}

#[tokio::test]
async fn the_docker_socket_needs_an_explicit_opt_in_and_nothing_is_made_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let driver = Arc::new(FakeDriver::default());
    let core = Core::for_tests(driver.clone(), dir.path());
    let err = core
        .create_agent(
            CreateRequest {
                name: "dh".into(),
                profile: "docker-host".into(),
                ..Default::default()
            },
            &|_| {},
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("--allow-docker-socket"), "{err}");
    assert!(driver.containers.lock().unwrap().is_empty());
    assert!(driver.volumes.lock().unwrap().is_empty());
    assert!(core.store.agent_by_name("dh").unwrap().is_none());
}

#[tokio::test]
async fn the_profile_reaches_the_container_spec_and_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let driver = Arc::new(FakeDriver::default());
    let core = Core::for_tests(driver.clone(), dir.path());
    // No agent dials back in a unit test; what was sent to Docker before that is what counts.
    let _ = core
        .create_agent(create_request_with_profile("b", "builder"), &|_| {})
        .await;
    let uploads = driver.uploads.lock().unwrap();
    let (_, files) = &uploads[0];
    let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
    assert!(
        paths.contains(&TOKEN_PATH) && paths.contains(&SETUP_PATH),
        "{paths:?}"
    );
    let config_dir = files
        .iter()
        .find(|f| f.path == "/home/agent/.config/git")
        .expect("parent directory of the git ignore file");
    assert!(config_dir.dir && config_dir.uid == TASK_UID);
    assert!(
        files
            .iter()
            .any(|f| f.path == "/home/agent/.config" && f.dir)
    );
    assert!(!files.iter().any(|f| f.path == "/home/agent"));
    let plan = files.iter().find(|f| f.path == SETUP_PATH).unwrap();
    let plan = docker_agent_proto::v1::SetupPlan::decode(plan.contents.as_slice()).unwrap();
    assert!(plan.steps[0].command.contains("git config"));
}

fn create_request_with_profile(name: &str, profile: &str) -> CreateRequest {
    CreateRequest {
        name: name.into(),
        profile: profile.into(),
        ..Default::default()
    }
}

#[test]
fn root_profiles_give_files_to_root_and_others_to_uid_1000() {
    let p = parse(
        "name = \"r\"\nuser = \"root\"\n[[files]]\npath = \"/root/.x/y\"\ncontent = \"1\"\nmode = \"0600\"\n",
        Format::Toml,
        "r",
    )
    .unwrap();
    let files = profile_files(&p);
    assert_eq!(files.len(), 2);
    assert!(files.iter().all(|f| f.uid == 0));
    assert_eq!(files[1].mode, 0o600);
}
