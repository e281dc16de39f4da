//! Hardening against hostile clients and containers: a read-only root filesystem that still works
//! (and survives a restart); hostile profile files, oversized messages and tasks refused in one line
//! with nothing stored; connection floods and slow-loris clients cut off while others are served.

use std::time::Duration;

use docker_agent_proto::v1 as pb;
use docker_agent_proto::v1::control_service_client::ControlServiceClient;
use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::auth::{agent_listener, operator_channel};
use crate::support::Hub;
use crate::support::web::Api;

const READ_ONLY_PROFILE: &str = r#"
name = "t-ro"
description = "read-only root"
read_only_root = true

[resources]
cpus = 0.5
memory = "256m"
pids = 128

[[files]]
path = "/workspace/conf/app.conf"
content = "mode = strict\n"

[[setup_tasks]]
command = "echo ran >> /workspace/setup-count"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_root_keeps_workspace_and_tmp_writable_and_setup_runs_once() {
    let hub = Hub::builder().start().await;
    let profile = format!("{}-ro", hub.prefix);
    hub.write_profile(
        &format!("{profile}.toml"),
        &READ_ONLY_PROFILE.replace("t-ro", &profile),
    );
    let name = hub.name("ro");
    hub.cli(&["create", &name, "--profile", &profile])
        .await
        .ok();

    let host = hub.container(&name).await.host_config.unwrap();
    assert_eq!(host.readonly_rootfs, Some(true));
    let tmpfs = host.tmpfs.unwrap_or_default();
    assert!(tmpfs.contains_key("/tmp"), "{tmpfs:?}");
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
    // Exactly the documented few, for the agent (profiles/README.md, Security notes); NET_ADMIN only
    // until it has made link-local addresses unreachable (`isolation.rs` checks it is gone).
    let mut caps = host.cap_add.unwrap_or_default();
    caps.sort();
    assert_eq!(
        caps,
        [
            "CHOWN",
            "DAC_OVERRIDE",
            "FOWNER",
            "KILL",
            "NET_ADMIN",
            "SETGID",
            "SETUID"
        ]
    );
    assert!(
        host.security_opt
            .unwrap_or_default()
            .iter()
            .any(|o| o.starts_with("no-new-privileges"))
    );
    assert_eq!(host.memory, Some(256 << 20));
    assert_eq!(host.nano_cpus, Some(500_000_000));
    assert_eq!(host.pids_limit, Some(128));

    // The root filesystem refuses writes, even where the task user could write before.
    for path in ["/etc/x", "/usr/local/bin/x", "/home/agent/x", "/var/tmp/x"] {
        let out = hub.cli(&["exec", &name, "--", "touch", path]).await;
        assert_ne!(out.code(), 0, "{path} was writable");
        assert!(
            out.stderr.contains("Read-only file system") || out.stdout.contains("Read-only"),
            "{path}: {}{}",
            out.stdout,
            out.stderr
        );
    }
    assert_eq!(
        hub.sh(
            &name,
            "touch /tmp/x /workspace/x && stat -c '%a' /tmp && id -un"
        )
        .await,
        "1777\nagent\n"
    );
    // A task holds no capability at all, and cannot gain one.
    assert_eq!(
        hub.sh(
            &name,
            "grep -E '^(CapEff|CapPrm|NoNewPrivs)' /proc/self/status"
        )
        .await,
        "CapPrm:\t0000000000000000\nCapEff:\t0000000000000000\nNoNewPrivs:\t1\n"
    );
    assert_eq!(
        hub.sh(&name, "cat /workspace/conf/app.conf").await,
        "mode = strict\n"
    );
    assert_eq!(hub.sh(&name, "cat /workspace/setup-count").await, "ran\n");
    // Uploaded per volume, the credentials still sit in a directory tasks cannot even list.
    let listing = hub
        .cli(&["exec", &name, "--", "ls", "/etc/docker-agent"])
        .await;
    assert_ne!(listing.code(), 0, "{}", listing.stdout);
    assert!(
        listing.stderr.contains("Permission denied"),
        "{}",
        listing.stderr
    );

    // The setup's progress is kept on the credentials volume: a restart does not run it again.
    hub.cli(&["restart", &name]).await.ok();
    assert_eq!(hub.sh(&name, "cat /workspace/setup-count").await, "ran\n");
    assert_eq!(
        hub.cli(&["status", &name, "--json"]).await.json()["lifecycle"],
        "ready"
    );
    let shown = hub.cli(&["profiles", "show", &profile]).await;
    assert!(shown.ok().contains("read_only_root = true"));

    hub.cli(&["destroy", &name, "--purge"]).await.ok();
    hub.assert_nothing_left().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_profile_files_are_refused_in_one_line_and_make_nothing() {
    let hub = Hub::builder().start().await;
    let p = &hub.prefix;
    let deep_toml = format!("name = {}{}\n", "[".repeat(50_000), "]".repeat(50_000));
    let deep_json = format!("{}{}", "{\"a\":".repeat(50_000), "}".repeat(50_000));
    let huge = format!(
        "name = \"{p}-huge\"\ndescription = \"{}\"\n",
        "x".repeat(2 << 20)
    );
    let long_value = format!("name = \"{p}-long\"\nuser = \"{}\"\n", "u".repeat(100_000));
    let cases = [
        (format!("{p}-deep.toml"), deep_toml),
        (format!("{p}-deepj.json"), deep_json),
        (format!("{p}-huge.toml"), huge),
        (format!("{p}-long.toml"), long_value),
        (
            format!("{p}-types.toml"),
            format!("name = \"{p}-types\"\n[resources]\nmemory = [1]\n"),
        ),
        (
            format!("{p}-unknown.json"),
            format!("{{\"name\": \"{p}-unknown\", \"privileged\": true}}"),
        ),
        (
            format!("{p}-escape.toml"),
            format!(
                "name = \"{p}-escape\"\n[[files]]\npath = \"/workspace/../etc/shadow\"\ncontent = \"\"\n"
            ),
        ),
        (format!("{p}-binary.toml"), "\u{0}\u{1}\u{2}".to_string()),
    ];
    for (file, text) in &cases {
        hub.write_profile(file, text);
    }
    for (file, _) in &cases {
        let profile = file.rsplit_once('.').unwrap().0;
        let name = hub.name("hp");
        let out = hub.cli(&["create", &name, "--profile", profile]).await;
        assert_ne!(out.code(), 0, "{file} was accepted");
        assert_eq!(out.stderr.lines().count(), 1, "{file}: {}", out.stderr);
        assert!(
            out.stderr.len() < 600,
            "{file}: {} bytes of error",
            out.stderr.len()
        );
        assert!(out.stderr.contains(file.as_str()), "{file}: {}", out.stderr);
    }
    // The listing names every broken file, one line each, and the hub is still up.
    let listed = hub.cli(&["profiles"]).await;
    assert_ne!(listed.code(), 0);
    for (file, _) in &cases {
        assert!(listed.stderr.contains(file.as_str()) || listed.stdout.contains(file.as_str()));
    }
    hub.cli(&["list"]).await.ok();
    hub.assert_nothing_left().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_messages_and_tasks_are_refused_clearly_and_store_nothing() {
    let hub = Hub::builder().start().await;
    let name = hub.name("big");
    hub.create(&name).await;
    let op = operator_channel(&hub).await;
    let submit = |script: String| {
        let (op, name, admin) = (op.clone(), name.clone(), hub.admin_token());
        async move {
            let mut request = tonic::Request::new(pb::SubmitTaskRequest {
                agent: name,
                spec: Some(pb::TaskSpec {
                    shell: script,
                    ..Default::default()
                }),
            });
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {admin}").parse().unwrap());
            ControlServiceClient::new(op).submit_task(request).await
        }
    };
    // Over the gRPC message limit: refused by the server before anything reads it.
    let status = submit("x".repeat(5 << 20)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("too large"), "{status:?}");
    // Under it, but more than exec takes: refused with the way around it.
    let status = submit(format!("echo {}", "x".repeat(200 << 10)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("128 KiB"), "{status:?}");
    assert!(status.message().len() < 200, "{status:?}");
    // The same over HTTP.
    let api = Api::new(&hub);
    let (code, body) = api
        .post(
            &format!("/api/v1/agents/{name}/tasks"),
            &json!({"type": "exec", "command": format!("echo {}", "y".repeat(300 << 10))}),
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("128 KiB")
    );
    // Nothing was stored, and the agent and hub carry on.
    let tasks = hub.cli(&["task", "list", &name, "--json"]).await.json();
    assert_eq!(tasks.as_array().map(Vec::len), Some(0), "{tasks}");
    assert_eq!(hub.sh(&name, "echo still here").await, "still here\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_floods_on_the_agent_listener_are_capped_and_timed_out() {
    let hub = Hub::builder().start().await;
    let (ip, port) = agent_listener(&hub).await;
    // 100 connections from one address that never start TLS (so never say hello), kept at 100 —
    // each one the hub closes is opened again — for as long as the real agent below takes.
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let flood = tokio::spawn(async move {
        let mut open: Vec<TcpStream> = Vec::new();
        let mut closed_by_hub = 0usize;
        loop {
            while open.len() < 100 {
                match TcpStream::connect((ip, port)).await {
                    Ok(s) => open.push(s),
                    // Refused connections are reset, which can reach us before the connect returns.
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => closed_by_hub += 1,
                    Err(e) => panic!("connect: {e}"),
                }
            }
            let mut buf = [0u8; 16];
            let before = open.len();
            open.retain(|s| match s.try_read(&mut buf) {
                // Nothing to read yet: still open.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
                // End of stream or a reset: the hub closed it. (It never sends before TLS.)
                _ => false,
            });
            closed_by_hub += before - open.len();
            tokio::select! {
                _ = stopped.changed() => return (open, closed_by_hub),
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    });
    // Meanwhile a real agent, from its own address, connects and works.
    let name = hub.name("flood");
    hub.create(&name).await;
    assert_eq!(hub.sh(&name, "echo through").await, "through\n");
    stop.send(true).unwrap();
    let (open, closed_by_hub) = flood.await.unwrap();
    // Past the per-address cap, connections are closed at once.
    assert!(closed_by_hub >= 68, "the hub closed only {closed_by_hub}");
    // The rest are closed when their handshake deadline passes. The bound is generous; the deadline
    // is 10 s.
    let closed = futures::future::join_all(open.into_iter().map(|mut s| async move {
        let mut buf = [0u8; 16];
        matches!(
            tokio::time::timeout(Duration::from_secs(60), s.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        )
    }))
    .await;
    assert!(
        closed.iter().all(|c| *c),
        "{} of {} still open",
        closed.iter().filter(|c| !**c).count(),
        closed.len()
    );
    let log = hub.log_tail_all();
    assert!(
        log.contains(
            "agent side refused new connections: this source holds 4 unauthenticated connections"
        ),
        "{log}"
    );
    // Refused past its share, the flooding address is cut off: closed, and refused at once.
    assert!(log.contains("cut off for"), "{log}");
    // The agent's own connection was never among them.
    assert_eq!(hub.sh(&name, "echo after").await, "after\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_loris_clients_are_cut_off_and_others_are_served() {
    let hub = Hub::builder().start().await;
    let addr = hub.operator_addr();
    // Headers a line at a time, never finished.
    let headers = async {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .await
            .unwrap();
        for i in 0..60 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if s.write_all(format!("X-Slow-{i}: 1\r\n").as_bytes())
                .await
                .is_err()
            {
                return true;
            }
            let mut buf = [0u8; 256];
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(10), s.read(&mut buf)).await
            {
                return n == 0 || String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408");
            }
        }
        false
    };
    // A body promised in full and sent a byte a second.
    let body = async {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "POST /api/v1/agents HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{{",
            hub.admin_token()
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let mut reply = Vec::new();
        for _ in 0..60 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let mut buf = [0u8; 512];
            match tokio::time::timeout(Duration::from_millis(10), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => {
                    // The answer closes the connection: read it whole.
                    reply.extend_from_slice(&buf[..n]);
                    let _ =
                        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut reply))
                            .await;
                    break;
                }
                Err(_) => {}
            }
            if s.write_all(b" ").await.is_err() {
                break;
            }
        }
        String::from_utf8_lossy(&reply).into_owned()
    };
    // Without the token, a promised body is never waited for: refused at once.
    let unauthenticated = async {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"POST /api/v1/agents HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{")
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("an answer before the body")
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    // Others are served while both hang on.
    let others = async {
        let api = Api::new(&hub);
        for _ in 0..5 {
            assert_eq!(api.get("/api/v1/agents").await.0, StatusCode::OK);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    let (headers_cut, body_reply, refused, ()) =
        tokio::join!(headers, body, unauthenticated, others);
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    assert!(
        headers_cut,
        "a client that never finished its headers was kept"
    );
    assert!(body_reply.starts_with("HTTP/1.1 408"), "{body_reply}");
    assert!(
        body_reply.contains("did not arrive within 15 s"),
        "{body_reply}"
    );
    assert!(hub.cli(&["list"]).await.status.success());
}
