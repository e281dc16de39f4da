//! The agent against a real TLS hub: hello/welcome, tasks over the wire, reconnects that lose nothing, refusal.

use std::sync::Arc;
use std::time::Duration;

use docker_agent_agent::agent;
use docker_agent_agent::config::Config;
use docker_agent_agent::health::HealthSampler;
use docker_agent_agent::link::{self, Identity, LinkEnd, LinkError};
use docker_agent_agent::state::Shared;
use docker_agent_proto::v1::agent_message::Msg as Up;
use docker_agent_proto::v1::hub_message::Msg as Down;
use docker_agent_proto::v1::{
    Ack, CloseStdin, Ping, ResendFrom, RunTask, StdinData, TaskResult, Welcome,
    task_result::Outcome,
};
use docker_agent_proto::{AGENT_ID_HEADER, PROTOCOL_VERSION};

use crate::hub::{Hub, HubLink};
use crate::support::{sh, shared};

/// The agent's reconnect loop on `shared`, with its real health sampler.
fn spawn_agent(shared: &Arc<Shared>, config: Config) {
    let sampler = HealthSampler::new(&config.workdir);
    tokio::spawn(agent::connect_forever(
        shared.clone(),
        config,
        identity(),
        sampler,
    ));
}

fn identity() -> Identity {
    Identity {
        instance_id: "0123abcd".into(),
        system: docker_agent_agent::system::system_info(),
    }
}

fn welcome(resend: Vec<ResendFrom>, cancel: Vec<String>) -> Down {
    Down::Welcome(Welcome {
        hub_id: "hub-1".into(),
        // Long, so every heartbeat after the first is one we asked for.
        heartbeat_interval_ms: 600_000,
        resend,
        cancel,
        forget: vec![],
        drop_output: vec![],
    })
}

/// Output of `task` on stdout among `msgs`, placed at its offsets onto `into` (the hub's copy).
fn absorb(into: &mut Vec<u8>, msgs: &[Up], task: &str) {
    for m in msgs {
        if let Up::Output(c) = m
            && c.task_id == task
            && c.stream == 1
        {
            let off = c.offset as usize;
            assert!(
                off <= into.len(),
                "chunk at {off} leaves a gap after {}",
                into.len()
            );
            // Chunks may repeat after a reconnect; the first copy of every byte wins, and must match.
            let overlap = (into.len() - off).min(c.data.len());
            assert_eq!(&into[off..off + overlap], &c.data[..overlap]);
            into.extend_from_slice(&c.data[overlap..]);
        }
    }
}

fn result_for<'a>(task: &'a str) -> impl FnMut(&Up) -> Option<TaskResult> + 'a {
    move |m| match m {
        Up::Result(r) if r.task_id == task => Some(r.clone()),
        _ => None,
    }
}

async fn hello(s: &mut HubLink) -> docker_agent_proto::v1::Hello {
    match s.recv().await {
        Up::Hello(h) => h,
        other => panic!("expected Hello first, got {other:?}"),
    }
}

#[tokio::test]
async fn full_link_with_reconnect_and_resend() {
    let mut hub = Hub::start("s3cret").await;
    let dir = tempfile::tempdir().unwrap();
    // "localhost" goes through /etc/hosts, then the certificate is checked for --tls-server-name.
    let config = hub.agent_config(dir.path(), "localhost", "s3cret");
    let shared = shared();
    spawn_agent(&shared, config);

    let mut s1 = hub.next_link().await;
    assert_eq!(s1.metadata.get("authorization").unwrap(), "Bearer s3cret");
    assert_eq!(s1.metadata.get(AGENT_ID_HEADER).unwrap(), "agent-1");
    let h = hello(&mut s1).await;
    assert_eq!(h.agent_id, "agent-1");
    assert_eq!(h.protocol_version, PROTOCOL_VERSION);
    assert_eq!(
        h.capabilities,
        [
            "exec",
            "stdin",
            "signal",
            "timeout",
            "spool",
            "pty",
            "drop-output",
            "stdin-ack"
        ]
    );
    assert_eq!(h.instance_id, "0123abcd");
    assert!(h.tasks.is_empty());
    assert!(!h.system.unwrap().kernel.is_empty());

    s1.send(welcome(vec![], vec![])).await;
    let mut seen = Vec::new();
    let hb = s1
        .recv_until(&mut seen, |m| match m {
            Up::Heartbeat(h) => Some(h.clone()),
            _ => None,
        })
        .await;
    assert!(hb.health.unwrap().agent_rss_bytes > 0);
    s1.send(Down::Ping(Ping { nonce: 1 })).await;
    s1.recv_until(&mut seen, |m| matches!(m, Up::Heartbeat(_)).then_some(()))
        .await;

    let mut task = sh("t1", "echo first; read line; echo \"got $line\"");
    task.stdin = true;
    s1.send(Down::Run(task)).await;
    let mut seen = Vec::new();
    let pid = s1
        .recv_until(&mut seen, |m| match m {
            Up::Started(s) if s.task_id == "t1" => Some(s.pid),
            _ => None,
        })
        .await;
    assert!(pid > 1);
    s1.recv_until(&mut seen, |m| {
        matches!(m, Up::Output(o) if o.task_id == "t1").then_some(())
    })
    .await;
    let mut hub_copy = Vec::new();
    absorb(&mut hub_copy, &seen, "t1");
    assert_eq!(hub_copy, b"first\n");
    // The link breaks; the task must not notice.
    drop(s1);

    let mut s2 = hub.next_link().await;
    let h = hello(&mut s2).await;
    assert_eq!(h.instance_id, "0123abcd");
    assert_eq!(h.tasks.len(), 1);
    let report = &h.tasks[0];
    assert_eq!(
        (report.task_id.as_str(), report.running, report.stdout_end),
        ("t1", true, 6)
    );
    // Pretend the hub only kept 3 bytes: the agent must resend from there.
    hub_copy.truncate(3);
    s2.send(welcome(
        vec![ResendFrom {
            task_id: "t1".into(),
            stdout_offset: 3,
            stderr_offset: 0,
        }],
        vec![],
    ))
    .await;
    s2.send(Down::Stdin(StdinData {
        task_id: "t1".into(),
        data: b"hello\n".to_vec().into(),
        offset: 0,
    }))
    .await;
    s2.send(Down::CloseStdin(CloseStdin {
        task_id: "t1".into(),
    }))
    .await;
    let mut seen = Vec::new();
    let r = s2.recv_until(&mut seen, result_for("t1")).await;
    absorb(&mut hub_copy, &seen, "t1");
    assert_eq!(hub_copy, b"first\ngot hello\n");
    assert_eq!(r.outcome, Some(Outcome::ExitCode(0)));
    assert_eq!(r.stdout_len, 16);
    assert!(!r.output_truncated);

    // A retried dispatch of a finished, unacknowledged task only brings its result back.
    s2.send(Down::Run(sh("t1", "echo must-not-run"))).await;
    let mut seen = Vec::new();
    let again = s2.recv_until(&mut seen, result_for("t1")).await;
    assert_eq!(again.outcome, r.outcome);
    assert!(
        !seen
            .iter()
            .any(|m| matches!(m, Up::Started(_) | Up::Output(_)))
    );

    s2.send(Down::Ack(Ack {
        task_id: "t1".into(),
        stdout_offset: 16,
        stderr_offset: 0,
        result: true,
    }))
    .await;
    // Acks carry no reply; a ping's heartbeat tells us the ack was processed before it.
    s2.send(Down::Ping(Ping { nonce: 2 })).await;
    s2.recv_until(&mut Vec::new(), |m| {
        matches!(m, Up::Heartbeat(_)).then_some(())
    })
    .await;
    drop(s2);
    let mut s3 = hub.next_link().await;
    assert!(
        hello(&mut s3).await.tasks.is_empty(),
        "acknowledged tasks are forgotten"
    );
}

#[tokio::test]
async fn output_produced_while_disconnected_arrives_exactly_once() {
    let mut hub = Hub::start("tok").await;
    let dir = tempfile::tempdir().unwrap();
    let config = hub.agent_config(dir.path(), "127.0.0.1", "tok");
    let fifo = dir.path().join("go");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let shared = shared();
    spawn_agent(&shared, config);

    let mut s1 = hub.next_link().await;
    hello(&mut s1).await;
    s1.send(welcome(vec![], vec![])).await;
    let script = format!("echo before; cat {}; echo after", fifo.display());
    s1.send(Down::Run(sh("cut", &script))).await;
    let mut seen = Vec::new();
    s1.recv_until(&mut seen, |m| {
        matches!(m, Up::Output(o) if o.task_id == "cut").then_some(())
    })
    .await;
    let mut hub_copy = Vec::new();
    absorb(&mut hub_copy, &seen, "cut");
    assert_eq!(hub_copy, b"before\n");
    drop(s1);

    let mut s2 = hub.next_link().await;
    hello(&mut s2).await;
    // Between Hello and Welcome nothing is sent: the task's next output is produced with no link.
    std::fs::write(&fifo, "middle\n").unwrap();
    let produced = async {
        loop {
            let done = shared.task_done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if shared.table().running_count() == 0 {
                return;
            }
            done.await;
        }
    };
    tokio::time::timeout(crate::support::PATIENCE, produced)
        .await
        .unwrap();
    s2.send(welcome(
        vec![ResendFrom {
            task_id: "cut".into(),
            stdout_offset: hub_copy.len() as u64,
            stderr_offset: 0,
        }],
        vec![],
    ))
    .await;
    let mut seen = Vec::new();
    let r = s2.recv_until(&mut seen, result_for("cut")).await;
    absorb(&mut hub_copy, &seen, "cut");
    assert_eq!(hub_copy, b"before\nmiddle\nafter\n");
    assert_eq!(r.outcome, Some(Outcome::ExitCode(0)));
    assert_eq!(r.stdout_len, hub_copy.len() as u64);
}

#[tokio::test]
async fn welcome_cancel_stops_a_task_started_on_an_earlier_link() {
    let mut hub = Hub::start("tok").await;
    let dir = tempfile::tempdir().unwrap();
    let config = hub.agent_config(dir.path(), "127.0.0.1", "tok");
    let shared = shared();
    spawn_agent(&shared, config);

    let mut s1 = hub.next_link().await;
    hello(&mut s1).await;
    s1.send(welcome(vec![], vec![])).await;
    s1.send(Down::Run(RunTask {
        task_id: "long".into(),
        argv: vec!["sleep".into(), "100".into()],
        ..Default::default()
    }))
    .await;
    s1.recv_until(&mut Vec::new(), |m| {
        matches!(m, Up::Started(_)).then_some(())
    })
    .await;
    drop(s1);

    let mut s2 = hub.next_link().await;
    let h = hello(&mut s2).await;
    assert!(h.tasks.iter().any(|t| t.task_id == "long" && t.running));
    s2.send(welcome(vec![], vec!["long".into()])).await;
    let r = s2.recv_until(&mut Vec::new(), result_for("long")).await;
    assert_eq!(r.outcome, Some(Outcome::Signal(15)));
}

#[tokio::test]
async fn a_refused_token_is_reported_as_refused() {
    let hub = Hub::start("right").await;
    let dir = tempfile::tempdir().unwrap();
    let config = hub.agent_config(dir.path(), "127.0.0.1", "wrong");
    let shared = shared();
    let mut sampler = HealthSampler::new(dir.path());
    let end = link::run(&shared, &config, &identity(), &mut sampler).await;
    match end {
        LinkEnd::Failed(LinkError::Refused(s)) => {
            assert_eq!(s.code(), tonic::Code::Unauthenticated)
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_hub_with_another_ca_is_not_trusted() {
    let hub = Hub::start("tok").await;
    let other = Hub::start("tok").await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = hub.agent_config(dir.path(), "127.0.0.1", "tok");
    config.ca_pem = other.ca_pem.clone().into_bytes();
    let shared = shared();
    let mut sampler = HealthSampler::new(dir.path());
    let end = tokio::time::timeout(
        Duration::from_secs(30),
        link::run(&shared, &config, &identity(), &mut sampler),
    )
    .await
    .unwrap();
    match end {
        LinkEnd::Failed(LinkError::Dial(e)) => {
            let text = docker_agent_agent::dial::chain(&e);
            assert!(text.to_lowercase().contains("certificate"), "{text}");
        }
        other => panic!("expected a TLS failure, got {other:?}"),
    }
}
