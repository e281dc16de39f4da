//! `prune`: containers with this hub's labels that no agent owns, listed first and removed only
//! with `--force` (the hub never removes them by itself); with `--tasks`, ended tasks and their
//! output, counted first and deleted with `--force`.

use std::process::ExitCode;

use anyhow::Result;
use docker_agent_proto::v1 as pb;

use crate::args::PruneArgs;
use crate::client::{Client, status_error};
use crate::output::{bytes, table};

pub async fn prune(mut client: Client, args: PruneArgs) -> Result<ExitCode> {
    let response = client
        .prune(pb::PruneRequest {
            remove: args.force,
            tasks: args.tasks,
            older_than_ms: args.older_than.map_or(0, |d| d.as_millis() as u64),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if args.tasks {
        return tasks(&response, args.force, args.json.json);
    }
    if args.json.json {
        let list: Vec<_> = response
            .orphans
            .iter()
            .map(|o| {
                serde_json::json!({
                    "container_id": o.container_id,
                    "name": o.name,
                    "agent": o.agent,
                    "status": o.status,
                })
            })
            .collect();
        let out = serde_json::json!({ "orphans": list, "removed": response.removed });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    if response.orphans.is_empty() {
        println!("no orphaned containers");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = response
        .orphans
        .iter()
        .map(|o| {
            vec![
                o.container_id.chars().take(12).collect(),
                o.name.trim_start_matches('/').to_string(),
                o.agent.clone(),
                o.status.clone(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["CONTAINER", "NAME", "AGENT", "STATUS"], &rows)
    );
    if response.removed {
        println!("removed {} orphaned container(s)", response.orphans.len());
    } else {
        println!(
            "{} orphaned container(s); remove them with `docker-agent prune --force`",
            response.orphans.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn tasks(response: &pb::PruneResponse, removed: bool, json: bool) -> Result<ExitCode> {
    if json {
        let out = serde_json::json!({
            "tasks": response.tasks,
            "output_bytes": response.task_output_bytes,
            "removed": removed,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else if removed {
        println!(
            "deleted {} ended task(s) and {} of their output",
            response.tasks,
            bytes(response.task_output_bytes)
        );
    } else {
        println!(
            "{} ended task(s) with {} of output; delete them with `docker-agent prune --tasks --force`",
            response.tasks,
            bytes(response.task_output_bytes)
        );
    }
    Ok(ExitCode::SUCCESS)
}
