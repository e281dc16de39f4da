//! Agent lifecycle verbs: create, list, status, start, stop, restart, destroy.

use std::process::ExitCode;

use anyhow::Result;
use docker_agent_proto::v1 as pb;
use futures::StreamExt;

use crate::args::{CreateArgs, DestroyArgs, ListArgs, StatusArgs, StopArgs};
use crate::client::{Client, status_error};
use crate::output::{ago, bytes, span, table};
use crate::progress::ProgressView;
use crate::views::{AgentView, connection, lifecycle};

pub async fn create(mut client: Client, args: CreateArgs) -> Result<ExitCode> {
    let request = pb::CreateAgentRequest {
        name: args.name.clone(),
        profile: args.profile.unwrap_or_default(),
        env: args.env.into_iter().collect(),
        ready_timeout_secs: args.timeout.map(|d| d.as_secs().max(1) as u32).unwrap_or(0),
        from_snapshot: args.from_snapshot.unwrap_or_default(),
        allow_docker_socket: args.allow_docker_socket,
        group: args.group.unwrap_or_default(),
    };
    let mut events = client
        .create_agent(request)
        .await
        .map_err(status_error)?
        .into_inner();
    let view = ProgressView::new(&format!("creating {}", args.name), args.json.json);
    let mut agent = None;
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(e) => e,
            Err(status) => {
                view.finish();
                return Err(status_error(status));
            }
        };
        match event.event {
            Some(pb::create_agent_event::Event::Progress(p)) => {
                let steps = (p.total > 0).then_some((p.current, p.total));
                view.update(&p.stage, &p.message, steps);
            }
            Some(pb::create_agent_event::Event::Ready(a)) => agent = Some(a),
            None => {}
        }
    }
    view.finish();
    let agent =
        agent.ok_or_else(|| anyhow::anyhow!("the hub ended the create without an answer"))?;
    if args.json.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&AgentView::from(&agent))?
        );
    } else if agent.lifecycle == pb::Lifecycle::Ready as i32 {
        println!(
            "{} is ready ({}, {})",
            agent.name,
            agent.profile,
            short_id(&agent.container_id)
        );
    } else {
        // Someone stopped or destroyed it as it came up.
        println!(
            "{} was created and came up; it is now {} ({})",
            agent.name,
            lifecycle(agent.lifecycle),
            agent.lifecycle_reason
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

fn memory(a: &pb::Agent) -> String {
    match &a.health {
        Some(h) if h.memory_limit_bytes > 0 => format!(
            "{} / {}",
            bytes(h.memory_used_bytes),
            bytes(h.memory_limit_bytes)
        ),
        Some(h) => bytes(h.memory_used_bytes),
        None => "-".into(),
    }
}

fn cpu(a: &pb::Agent) -> String {
    a.health
        .as_ref()
        .map(|h| format!("{:.1}%", h.cpu_percent))
        .unwrap_or_else(|| "-".into())
}

fn uptime(a: &pb::Agent) -> String {
    if connection(a.connection) == "connected" && a.connected_since_ms > 0 {
        span(crate::output::now_ms() - a.connected_since_ms)
    } else {
        "-".into()
    }
}

pub async fn list(mut client: Client, args: ListArgs) -> Result<ExitCode> {
    let agents = client
        .list_agents(pb::ListAgentsRequest {})
        .await
        .map_err(status_error)?
        .into_inner()
        .agents;
    if args.json.json {
        let views: Vec<AgentView> = agents.iter().map(AgentView::from).collect();
        println!("{}", serde_json::to_string_pretty(&views)?);
        return Ok(ExitCode::SUCCESS);
    }
    // A NODE column only where agents can be on more than one (Swarm), as `docker service ps` has.
    let nodes = agents.iter().any(|a| !a.node.is_empty());
    let rows: Vec<Vec<String>> = agents
        .iter()
        .map(|a| {
            let mut row = vec![
                a.name.clone(),
                a.profile.clone(),
                lifecycle(a.lifecycle),
                connection(a.connection),
            ];
            if nodes {
                row.push(if a.node.is_empty() {
                    "-".into()
                } else {
                    a.node.clone()
                });
            }
            row.extend([
                uptime(a),
                cpu(a),
                memory(a),
                a.running_tasks.to_string(),
                ago(a.created_at_ms),
            ]);
            row
        })
        .collect();
    let mut header = vec!["NAME", "PROFILE", "LIFECYCLE", "CONNECTION"];
    if nodes {
        header.push("NODE");
    }
    header.extend(["UPTIME", "CPU", "MEMORY", "TASKS", "CREATED"]);
    print!("{}", table(&header, &rows));
    Ok(ExitCode::SUCCESS)
}

/// `docker-agent nodes`: the machines agents run on, with this hub's agents on each.
pub async fn nodes(mut client: Client, args: ListArgs) -> Result<ExitCode> {
    let nodes = client
        .list_nodes(pb::ListNodesRequest {})
        .await
        .map_err(status_error)?
        .into_inner()
        .nodes;
    if args.json.json {
        let views: Vec<serde_json::Value> = nodes
            .iter()
            .map(|n| {
                serde_json::json!({
                    "id": n.id,
                    "hostname": n.hostname,
                    "role": n.role,
                    "state": n.state,
                    "availability": n.availability,
                    "cpus": n.cpus,
                    "memory_bytes": n.memory_bytes,
                    "agents": n.agents,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&views)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            vec![
                n.hostname.clone(),
                n.role.clone(),
                n.state.clone(),
                n.availability.clone(),
                n.cpus.to_string(),
                crate::output::bytes(n.memory_bytes),
                n.agents.to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "NODE",
                "ROLE",
                "STATE",
                "AVAILABILITY",
                "CPUS",
                "MEMORY",
                "AGENTS"
            ],
            &rows
        )
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn status(mut client: Client, args: StatusArgs) -> Result<ExitCode> {
    let a = client
        .get_agent(pb::AgentRequest { name: args.name })
        .await
        .map_err(status_error)?
        .into_inner();
    if args.json.json {
        println!("{}", serde_json::to_string_pretty(&AgentView::from(&a))?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut lines: Vec<(&str, String)> = vec![
        ("Name", a.name.clone()),
        ("ID", a.id.clone()),
        ("Profile", a.profile.clone()),
        (
            "Lifecycle",
            if a.lifecycle_reason.is_empty() {
                format!(
                    "{} (since {})",
                    lifecycle(a.lifecycle),
                    ago(a.lifecycle_at_ms)
                )
            } else {
                format!(
                    "{}: {} (since {})",
                    lifecycle(a.lifecycle),
                    a.lifecycle_reason,
                    ago(a.lifecycle_at_ms)
                )
            },
        ),
        (
            "Connection",
            format!(
                "{} (since {})",
                connection(a.connection),
                ago(a.connection_at_ms)
            ),
        ),
        ("Last heartbeat", ago(a.last_heartbeat_ms)),
        ("Image", a.image.clone()),
        ("Container", short_id(&a.container_id).to_string()),
        ("Volume", format!("{} at /workspace", a.volume)),
        ("Created", ago(a.created_at_ms)),
        ("Running tasks", a.running_tasks.to_string()),
    ];
    if !a.node.is_empty() {
        lines.insert(lines.len() - 4, ("Node", a.node.clone()));
    }
    if let Some(r) = a.resources {
        let limit = |v: String, set: bool| if set { v } else { "unlimited".into() };
        lines.push((
            "Limits",
            format!(
                "cpus {}, memory {}, pids {}",
                limit(format!("{}", r.cpus), r.cpus > 0.0),
                limit(bytes(r.memory_bytes), r.memory_bytes > 0),
                limit(r.pids.to_string(), r.pids > 0)
            ),
        ));
    }
    if let Some(h) = &a.health {
        lines.push(("CPU", format!("{:.1}%", h.cpu_percent)));
        lines.push(("Memory", memory(&a)));
        lines.push((
            "Disk (/workspace)",
            format!(
                "{} / {}",
                bytes(h.disk_used_bytes),
                bytes(h.disk_total_bytes)
            ),
        ));
        lines.push((
            "Load",
            format!("{:.2} {:.2} {:.2}", h.load1, h.load5, h.load15),
        ));
        lines.push(("Processes", h.process_count.to_string()));
        lines.push((
            "Agent",
            format!(
                "{} · RSS {} · up {}",
                a.agent_version,
                bytes(h.agent_rss_bytes),
                span(h.uptime_secs as i64 * 1000)
            ),
        ));
    }
    if let Some(s) = &a.system {
        lines.push((
            "System",
            format!("{} · kernel {} · {}", s.os, s.kernel, s.arch),
        ));
    }
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in lines {
        println!("{:<width$}  {v}", format!("{k}:"), width = width + 1);
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn start(mut client: Client, name: String) -> Result<ExitCode> {
    let a = client
        .start_agent(pb::AgentRequest { name })
        .await
        .map_err(status_error)?
        .into_inner();
    println!("{} is {}", a.name, lifecycle(a.lifecycle));
    Ok(ExitCode::SUCCESS)
}

pub async fn stop(mut client: Client, args: StopArgs, restart: bool) -> Result<ExitCode> {
    let request = pb::StopAgentRequest {
        name: args.name,
        timeout_secs: args.time.unwrap_or(0),
    };
    let a = if restart {
        client.restart_agent(request).await
    } else {
        client.stop_agent(request).await
    }
    .map_err(status_error)?
    .into_inner();
    println!("{} is {}", a.name, lifecycle(a.lifecycle));
    Ok(ExitCode::SUCCESS)
}

pub async fn destroy(mut client: Client, args: DestroyArgs) -> Result<ExitCode> {
    let r = client
        .destroy_agent(pb::DestroyAgentRequest {
            name: args.name,
            purge: args.purge,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let volume = if r.volume_removed {
        "volume removed"
    } else if args.purge {
        "no volume to remove"
    } else {
        "volume kept (use --purge to remove it)"
    };
    println!("{} destroyed; {volume}", r.name);
    Ok(ExitCode::SUCCESS)
}
