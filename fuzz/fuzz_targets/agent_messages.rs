//! Fuzz target: the hub's side of an agent stream (hello → welcome, then the session loop) fed whatever an agent could send, on an in-memory store with the fake driver.
//!
//! Input: a sequence of frames, each a `u16` little-endian length and that many bytes of an encoded
//! `AgentMessage`. A frame that does not decode ends the stream with an error, as tonic would.
#![no_main]

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use docker_agent_hub::core::Core;
use docker_agent_hub::driver::fake::FakeDriver;
use docker_agent_hub::lifecycle::Lifecycle;
use docker_agent_hub::store::{NewAgent, NewTask, Store, TaskRecord, TaskState};
use docker_agent_proto::v1::agent_message::Msg as AgentMsg;
use docker_agent_proto::v1::hub_message::Msg;
use docker_agent_proto::v1::{
    AgentMessage, HubMessage, Stream, SystemInfo, TaskResult, TaskSpec, task_result::Outcome,
};
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// The agent whose stream this is, and another one whose task it must never touch. Ids are short so
/// the fuzzer can hit them; the seeds in `fuzz/seeds/agent_messages` use them.
const AGENT: &str = "a1";
const OTHER: &str = "a2";
/// What the store says the agent's last process was (a hello with it is a reconnect, not a restart).
const INSTANCE: &str = "i1";
const QUEUED: &str = "t1";
const DISPATCHED: &str = "t2";
const RUNNING: &str = "t3";
const FINISHED: &str = "t4";
/// Running, with a cancel on record.
const CANCELLING: &str = "t5";
const FOREIGN: &str = "x1";
/// As in `grpc/agent_svc.rs`.
const OUTBOUND_QUEUE: usize = 1024;

fn frames(data: &[u8]) -> Vec<Result<AgentMessage, tonic::Status>> {
    let mut messages = Vec::new();
    let mut rest = data;
    while let [lo, hi, tail @ ..] = rest {
        let len = u16::from_le_bytes([*lo, *hi]) as usize;
        if len > tail.len() {
            break;
        }
        let (frame, tail) = tail.split_at(len);
        rest = tail;
        match AgentMessage::decode(frame) {
            Ok(m) => messages.push(Ok(m)),
            Err(e) => {
                messages.push(Err(tonic::Status::internal(e.to_string())));
                break;
            }
        }
    }
    messages
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a tokio runtime")
    })
}

fn work_dir() -> &'static std::path::Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("a temporary directory"))
        .path()
}

fn new_agent(id: &str, name: &str) -> NewAgent {
    NewAgent {
        id: id.into(),
        name: name.into(),
        profile: "minimal".into(),
        image: "img".into(),
        container_name: format!("c-{name}"),
        volume: format!("v-{name}"),
        token_hash: vec![1, 2, 3],
        cpus: 1.0,
        memory_bytes: 1 << 30,
        pids: 512,
        env: BTreeMap::new(),
        max_task_output: 0,
        max_agent_output: 0,
    }
}

fn add_task(store: &Store, id: &str, agent_id: &str) {
    store
        .insert_task(&NewTask {
            id: id.into(),
            agent_id: agent_id.into(),
            spec: TaskSpec {
                argv: vec!["true".into()],
                ..Default::default()
            },
        })
        .expect("insert task");
}

/// A core with the agent connected once before (instance `INSTANCE`) and a task in every state.
fn core() -> Arc<Core> {
    let core = Core::for_tests(Arc::new(FakeDriver::default()), work_dir());
    let store = &core.store;
    store.insert_agent(&new_agent(AGENT, "fuzz")).unwrap();
    store.insert_agent(&new_agent(OTHER, "other")).unwrap();
    store.set_lifecycle(AGENT, Lifecycle::Ready, "").unwrap();
    store
        .set_agent_identity(AGENT, INSTANCE, "0.1.0", &SystemInfo::default())
        .unwrap();
    for id in [QUEUED, DISPATCHED, RUNNING, FINISHED, CANCELLING] {
        add_task(store, id, AGENT);
    }
    add_task(store, FOREIGN, OTHER);
    for id in [DISPATCHED, RUNNING, FINISHED, CANCELLING, FOREIGN] {
        assert!(store.mark_dispatched(id).unwrap());
    }
    for id in [RUNNING, FINISHED, CANCELLING, FOREIGN] {
        store.mark_started(id, 1_000).unwrap();
    }
    store.request_cancel(CANCELLING).unwrap();
    for (task, agent) in [(RUNNING, AGENT), (FINISHED, AGENT), (FOREIGN, OTHER)] {
        let data = bytes::Bytes::from_static(b"hello\n");
        store
            .append_output(task, agent, Stream::Stdout, 0, &data)
            .unwrap()
            .expect("own task");
    }
    let result = TaskResult {
        task_id: FINISHED.into(),
        outcome: Some(Outcome::ExitCode(0)),
        stdout_len: 6,
        ..Default::default()
    };
    assert!(store.finish_task(FINISHED, &result).unwrap());
    core
}

/// The parts of a task an agent's messages could change.
fn fingerprint(t: &TaskRecord) -> impl PartialEq + std::fmt::Debug {
    (
        t.agent_id.clone(),
        t.state,
        t.dispatched_at,
        t.started_at,
        t.finished_at,
        t.result.clone(),
        t.error.clone(),
        t.cancel_requested,
        t.stdout_len,
        t.stderr_len,
    )
}

/// What `grpc/agent_svc.rs` does with an authenticated agent's stream, minus the network.
async fn session(messages: Vec<Result<AgentMessage, tonic::Status>>) {
    let core = core();
    let agent = core.store.agent_by_id(AGENT).unwrap().expect("the agent");
    let foreign = core.store.task(FOREIGN).unwrap().expect("foreign task");
    let foreign_output = core.store.output_after(FOREIGN, 0, 100).unwrap();
    let finished = core.store.task(FINISHED).unwrap().expect("finished task");

    let (tx, mut rx) = tokio::sync::mpsc::channel(OUTBOUND_QUEUE);
    let mut messages = messages.into_iter().peekable();
    let first_hello = messages.next_if(|m| {
        matches!(
            m,
            Ok(AgentMessage {
                msg: Some(AgentMsg::Hello(_))
            })
        )
    });
    let (instance, setup) = match first_hello {
        Some(Ok(AgentMessage {
            msg: Some(AgentMsg::Hello(hello)),
        })) => {
            if hello.agent_id != agent.id {
                // The service refuses a hello naming another agent before it changes anything.
                return;
            }
            let Ok(welcome) = core.welcome_for(&agent, &hello) else {
                return;
            };
            tx.try_send(Box::new(HubMessage {
                msg: Some(Msg::Welcome(welcome)),
            }))
            .unwrap();
            for run in core.claim_queued(&agent.id, OUTBOUND_QUEUE - 1).unwrap() {
                tx.try_send(Box::new(HubMessage { msg: Some(run) }))
                    .unwrap();
            }
            (hello.instance_id, hello.setup)
        }
        // No hello first: the middle of a session whose hello went through earlier. The real service
        // refuses such a stream, but the session loop must cope with any message at any point.
        _ => (INSTANCE.to_string(), None),
    };
    let generation = core
        .registry
        .register(&agent.id, &instance, tx)
        .expect("nothing else is registered");
    // The agent's side: reads everything the hub sends, so no send ever waits on a full queue.
    let outbound = tokio::spawn(async move {
        let mut sent = Vec::new();
        while let Some(m) = rx.recv().await {
            sent.push(*m);
        }
        sent
    });
    // Its errors are logged and the session goes on, as in the service.
    let _ = core.agent_registered(&agent, setup.as_ref()).await;
    core.clone()
        .run_link(
            agent,
            generation,
            futures::stream::iter(messages),
            Default::default(),
        )
        .await;
    // The session unregistered itself, which dropped the last sender.
    assert!(!core.registry.is_connected(AGENT));
    let sent = outbound.await.expect("the reader");

    // Another agent's task is beyond the reach of this agent's stream.
    let after = core.store.task(FOREIGN).unwrap().expect("foreign task");
    assert_eq!(fingerprint(&after), fingerprint(&foreign));
    assert_eq!(
        core.store.output_after(FOREIGN, 0, 100).unwrap(),
        foreign_output
    );
    // An ended task stays ended with the result it had.
    let after = core.store.task(FINISHED).unwrap().expect("finished task");
    assert_eq!(after.state, TaskState::Finished);
    assert_eq!(after.result, finished.result);
    for m in sent {
        match m.msg {
            Some(Msg::Run(run)) => {
                let task = core.store.task(&run.task_id).unwrap().expect("run task");
                assert_eq!(task.agent_id, AGENT, "ran another agent's task");
            }
            // The agent frees its spool up to an ack: the hub must have stored everything before it.
            Some(Msg::Ack(ack)) => {
                let task = core.store.task(&ack.task_id).unwrap().expect("acked task");
                assert_eq!(task.agent_id, AGENT, "acked another agent's task: {ack:?}");
                assert!(
                    ack.stdout_offset <= task.stdout_len && ack.stderr_offset <= task.stderr_len,
                    "acked past the stored output: {ack:?}, stored {}/{}",
                    task.stdout_len,
                    task.stderr_len
                );
            }
            _ => {}
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let messages = frames(data);
    // For reading a crash input: `FUZZ_PRINT=1 cargo +nightly fuzz run agent_messages FILE`.
    if std::env::var_os("FUZZ_PRINT").is_some() {
        eprintln!("{messages:#?}");
    }
    runtime().block_on(session(messages));
});
