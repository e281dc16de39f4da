//! Exec latency: `docker-agent exec N true` against `docker exec N true` (alternating, same container),
//! and the same without process starts: the hub's Exec RPC from this process against the Engine API's exec.

use std::time::{Duration, Instant};

use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use docker_agent_proto::v1 as pb;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::fixture::{Hub, docker, rt, timed};
use crate::report::{Row, Samples, Unit};

/// One exec through the hub's control API, from the request to the finished task; returns the
/// task's exit code and how long it took.
pub async fn grpc_exec(
    client: &mut docker_agent_cli::client::Client,
    agent: &str,
    argv: &[&str],
) -> (i32, Duration) {
    let (code, took, _) = grpc_exec_task(client, agent, argv).await;
    (code, took)
}

/// `grpc_exec`, also returning the finished task (its timestamps show where the time went).
pub async fn grpc_exec_task(
    client: &mut docker_agent_cli::client::Client,
    agent: &str,
    argv: &[&str],
) -> (i32, Duration, pb::Task) {
    let start = Instant::now();
    let (tx, rx) = mpsc::channel(1);
    let spec = pb::TaskSpec {
        argv: argv.iter().map(|a| (*a).to_owned()).collect(),
        kind: "exec".into(),
        ..Default::default()
    };
    tx.send(pb::ExecRequest {
        msg: Some(pb::exec_request::Msg::Start(pb::ExecStart {
            agent: agent.to_owned(),
            spec: Some(spec),
            attach: String::new(),
            replay_bytes: 0,
        })),
    })
    .await
    .expect("queue the start");
    let mut events = client
        .exec(ReceiverStream::new(rx))
        .await
        .expect("exec")
        .into_inner();
    while let Some(event) = events.next().await {
        if let Some(pb::exec_event::Event::Task(task)) = event.expect("exec event").event
            && task.state == pb::TaskState::Finished as i32
        {
            let code = match task.result.clone().and_then(|r| r.outcome) {
                Some(pb::task_result::Outcome::ExitCode(c)) => c,
                other => panic!("exec on {agent} did not exit: {other:?}"),
            };
            // The request stream stays open until here, as the CLI's does.
            drop(tx);
            return (code, start.elapsed(), task);
        }
    }
    panic!("the exec stream on {agent} ended without the finished task");
}

/// `docker exec` without the CLI: create, start attached, read to the end, inspect the exit code.
async fn engine_exec(docker: &bollard::Docker, container: &str) -> Duration {
    let start = Instant::now();
    let exec = docker
        .create_exec(
            container,
            CreateExecOptions {
                cmd: Some(vec!["true"]),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
        .expect("create exec");
    if let StartExecResults::Attached { mut output, .. } = docker
        .start_exec(&exec.id, None::<StartExecOptions>)
        .await
        .expect("start exec")
    {
        while output.next().await.is_some() {}
    }
    let inspect = docker.inspect_exec(&exec.id).await.expect("inspect exec");
    assert_eq!(inspect.exit_code, Some(0));
    start.elapsed()
}

pub fn measure(hub: &Hub, name: &str, container: &str, runs: usize) -> Vec<Row> {
    // Warm both paths once so neither pays first-use costs in the samples.
    timed(hub.cli().args(["exec", name, "--", "true"]));
    timed(docker().args(["exec", container, "true"]));
    let (mut ours, mut theirs) = (Samples::default(), Samples::default());
    for _ in 0..runs {
        ours.push(timed(hub.cli().args(["exec", name, "--", "true"])));
        theirs.push(timed(docker().args(["exec", container, "true"])));
    }
    let (api_ours, api_theirs) = rt().block_on(async {
        let mut client = hub.client().await;
        let engine = bollard::Docker::connect_with_local_defaults().expect("docker");
        grpc_exec(&mut client, name, &["true"]).await;
        engine_exec(&engine, container).await;
        let (mut ours, mut theirs) = (Samples::default(), Samples::default());
        for _ in 0..runs {
            let (code, took) = grpc_exec(&mut client, name, &["true"]).await;
            assert_eq!(code, 0);
            ours.push(took);
            theirs.push(engine_exec(&engine, container).await);
        }
        (ours, theirs)
    });
    vec![
        Row::compared(
            format!(
                "`exec N true` vs `docker exec N true` (CLI process included, {runs} runs each, alternating)"
            ),
            Unit::Millis,
            &ours,
            &theirs,
            "≤ 0.25",
        ),
        Row::compared(
            format!(
                "exec `true`, hub's Exec RPC vs the Engine API's exec create/start/inspect, no process start ({runs} each)"
            ),
            Unit::Millis,
            &api_ours,
            &api_theirs,
            "",
        ),
    ]
}
