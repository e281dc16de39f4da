//! `docker-agent profiles`, `snapshot`, `snapshots` and `logs`: what the hub offers and keeps besides agents.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use docker_agent_proto::v1 as pb;
use futures::StreamExt;

use crate::args::{JsonArg, LogsArgs, ProfilesCommand, SnapshotArgs, SnapshotsCommand};
use crate::client::{Client, status_error};
use crate::output::{ago, bytes, table};
use crate::views::ProfileView;

/// Lists profiles; broken profile files are reported after the list and make the exit code 1, as
/// kubectl does with partial results.
pub async fn profiles(mut client: Client, command: ProfilesCommand) -> Result<ExitCode> {
    let json = match command {
        ProfilesCommand::Show { name, json } => return show_profile(client, &name, json).await,
        ProfilesCommand::List { json } => json,
    };
    let response = client
        .list_profiles(pb::ListProfilesRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    if json.json {
        let list: Vec<ProfileView> = response.profiles.iter().map(ProfileView::from).collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        let rows: Vec<Vec<String>> = response
            .profiles
            .iter()
            .map(|p| vec![p.name.clone(), p.source.clone(), p.description.clone()])
            .collect();
        print!("{}", table(&["NAME", "SOURCE", "DESCRIPTION"], &rows));
    }
    for error in &response.errors {
        eprintln!("error: {error}");
    }
    Ok(if response.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn show_profile(mut client: Client, name: &str, json: JsonArg) -> Result<ExitCode> {
    let detail = client
        .get_profile(pb::ProfileRequest {
            name: name.to_string(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let source = detail.summary.map(|s| s.source).unwrap_or_default();
    if json.json {
        println!("{}", detail.json);
    } else {
        println!("# source: {source}");
        if !detail.image.is_empty() {
            println!("# image: {}", detail.image);
        }
        print!("{}", detail.toml);
    }
    Ok(ExitCode::SUCCESS)
}

fn snapshot_json(s: &pb::Snapshot) -> serde_json::Value {
    serde_json::json!({
        "tag": s.tag,
        "image": s.image,
        "id": s.id,
        "agent": s.agent,
        "profile": s.profile,
        "created_at_ms": s.created_at_ms,
        "size_bytes": s.size_bytes,
    })
}

pub async fn snapshot(mut client: Client, args: SnapshotArgs) -> Result<ExitCode> {
    let snapshot = client
        .create_snapshot(pb::CreateSnapshotRequest {
            agent: args.name,
            tag: args.tag.unwrap_or_default(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if args.json.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&snapshot_json(&snapshot))?
        );
    } else {
        println!(
            "{} ({}, {})",
            snapshot.tag,
            snapshot.image,
            bytes(snapshot.size_bytes.max(0) as u64)
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn snapshots(mut client: Client, command: SnapshotsCommand) -> Result<ExitCode> {
    match command {
        SnapshotsCommand::List { json } => {
            let list = client
                .list_snapshots(pb::ListSnapshotsRequest {})
                .await
                .map_err(status_error)?
                .into_inner()
                .snapshots;
            if json.json {
                let list: Vec<_> = list.iter().map(snapshot_json).collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|s| {
                        vec![
                            s.tag.clone(),
                            s.agent.clone(),
                            s.profile.clone(),
                            bytes(s.size_bytes.max(0) as u64),
                            ago(s.created_at_ms),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(&["TAG", "AGENT", "PROFILE", "SIZE", "CREATED"], &rows)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        SnapshotsCommand::Rm { tags } => {
            // Like `docker rmi A B`: each one is tried, every failure reported, exit 1 if any failed.
            let mut failed = false;
            for tag in tags {
                match client
                    .remove_snapshot(pb::SnapshotRequest { tag: tag.clone() })
                    .await
                {
                    Ok(_) => println!("{tag}"),
                    Err(status) => {
                        failed = true;
                        eprintln!("error: {}", status_error(status));
                    }
                }
            }
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

/// Copies the container log to stdout and stderr as the agent wrote it.
pub async fn logs(mut client: Client, args: LogsArgs) -> Result<ExitCode> {
    let mut stream = client
        .agent_logs(pb::AgentLogsRequest {
            name: args.name,
            follow: args.follow,
            tail: args.tail,
            since_unix: args.since.unwrap_or(0),
            timestamps: args.timestamps,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(status_error)?;
        let sink: &mut dyn Write = if chunk.stderr { &mut err } else { &mut out };
        sink.write_all(&chunk.data)?;
        sink.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}
