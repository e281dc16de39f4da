//! Snapshots: an agent's files (in /workspace and elsewhere) survive into an agent made from its snapshot; listing, removal, and refusals.

use futures::StreamExt;

use crate::support::Hub;

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_round_trip_keeps_the_files_and_removal_is_guarded() {
    let hub = Hub::builder().start().await;
    let source = hub.name("src");
    hub.cli(&["create", &source, "-e", "SECRET_TOKEN=s3cret"])
        .await
        .ok();
    hub.sh(
        &source,
        "echo kept-in-workspace > /workspace/keep.txt && mkdir -p ~/cache && echo kept-at-home > ~/cache/home.txt",
    )
    .await;

    let tag = format!("{}-snap", hub.prefix);
    let taken = hub
        .cli(&["snapshot", &source, "--tag", &tag, "--json"])
        .await
        .json();
    assert_eq!(taken["tag"], tag.as_str());
    assert_eq!(taken["agent"], source.as_str());
    assert_eq!(
        taken["image"],
        format!("docker-agent/snapshot:{tag}").as_str()
    );
    hub.cli(&["snapshot", &source, "--tag", &tag])
        .await
        .fails_with("already exists");
    let list = hub.cli(&["snapshots", "--json"]).await.json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["profile"], "minimal");

    // The credentials live on a volume of their own, so the image holds no token of the source's.
    assert_eq!(
        hub.sh(&source, "stat -c '%a %U' /etc/docker-agent").await,
        "700 root\n"
    );
    let docker = crate::support::docker().await;
    let probe = docker
        .create_container(
            None::<bollard::query_parameters::CreateContainerOptions>,
            bollard::models::ContainerCreateBody {
                image: Some(format!("docker-agent/snapshot:{tag}")),
                labels: Some(std::collections::HashMap::from([(
                    "dev.docker-agent.hub".to_string(),
                    hub.hub_id.clone(),
                )])),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let token = docker
        .download_from_container(
            &probe.id,
            Some(bollard::query_parameters::DownloadFromContainerOptions {
                path: "/etc/docker-agent/token".into(),
            }),
        )
        .next()
        .await
        .unwrap();
    assert!(token.is_err(), "the snapshot image holds a token");
    let _ = docker
        .remove_container(
            &probe.id,
            None::<bollard::query_parameters::RemoveContainerOptions>,
        )
        .await;

    // The source goes on unchanged.
    assert_eq!(
        hub.sh(&source, "cat /workspace/keep.txt").await,
        "kept-in-workspace\n"
    );

    let copy = hub.name("copy");
    hub.cli(&["create", &copy, "--from-snapshot", &tag])
        .await
        .ok();
    assert_eq!(
        hub.sh(&copy, "cat /workspace/keep.txt").await,
        "kept-in-workspace\n"
    );
    assert_eq!(
        hub.sh(&copy, "cat ~/cache/home.txt").await,
        "kept-at-home\n"
    );
    // What `create -e` gave the source stays with the source; the profile's environment is back.
    assert_eq!(
        hub.sh(&copy, "echo \"[$SECRET_TOKEN] $LANG\"").await,
        "[] C.UTF-8\n"
    );
    assert_eq!(
        hub.sh(&copy, "stat -c %U /workspace/keep.txt ~/cache")
            .await,
        "agent\nagent\n"
    );
    // The copy has its own workspace: writes do not reach the source.
    hub.sh(&copy, "echo changed > /workspace/keep.txt").await;
    assert_eq!(
        hub.sh(&source, "cat /workspace/keep.txt").await,
        "kept-in-workspace\n"
    );
    let status = hub.cli(&["status", &copy, "--json"]).await.json();
    assert_eq!(
        status["image"],
        format!("docker-agent/snapshot:{tag}").as_str()
    );

    hub.cli(&["snapshots", "rm", &tag])
        .await
        .fails_with(&format!("in use by agent {copy}"));
    hub.cli(&["destroy", &copy, "--purge"]).await.ok();
    assert_eq!(hub.cli(&["snapshots", "rm", &tag]).await.ok().trim(), tag);
    assert!(
        hub.cli(&["snapshots", "--json"])
            .await
            .json()
            .as_array()
            .unwrap()
            .is_empty()
    );

    let ghost = hub.name("ghost");
    hub.cli(&["create", &ghost, "--from-snapshot", "no-such-snapshot"])
        .await
        .fails_with("snapshot \"no-such-snapshot\" not found");
    let both = hub
        .cli(&[
            "create",
            &ghost,
            "--from-snapshot",
            &tag,
            "--profile",
            "builder",
        ])
        .await;
    assert_eq!(both.code(), 2, "{}", both.stderr);
    hub.cli(&["snapshot", &source, "--tag", "Bad Tag"])
        .await
        .fails_with("invalid snapshot tag");
    hub.cli(&["snapshots", "rm", "no-such-snapshot"])
        .await
        .fails_with("not found");
    let left: Vec<String> = hub
        .leftovers()
        .await
        .into_iter()
        .filter(|n| n.contains("ghost"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
