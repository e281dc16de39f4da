//! Agents cannot reach each other unless grouped, and cloud metadata addresses are unreachable from
//! any of them: checked from inside real containers with the probe, and by reading the rules in place
//! (nothing is ever sent to a metadata address).

use std::time::Duration;

use crate::support::{Hub, docker, wait_for};

/// Starts the probe's listener on `port` in `agent` (a detached task) and waits until it listens.
async fn listen(hub: &Hub, agent: &str, probe: &str, port: u16) {
    let spec = serde_json::json!({"type": "exec", "command": [probe, "listen", port.to_string()]})
        .to_string();
    let task = hub
        .cli(&["task", agent, &spec, "--detach"])
        .await
        .ok()
        .trim()
        .to_string();
    wait_for("the probe to listen", Duration::from_secs(20), || async {
        let out = hub.cli(&["task", "logs", &task]).await;
        out.stdout.contains("listening").then_some(())
    })
    .await;
}

/// Whether `probe connect ADDRESS` from `agent` got an answer.
async fn reaches(hub: &Hub, agent: &str, probe: &str, address: &str, read: bool) -> bool {
    let mut args = vec![
        "exec",
        agent,
        "--",
        probe,
        "connect",
        address,
        "--timeout-ms",
        "2000",
    ];
    if !read {
        args.push("--connect-only");
    }
    let out = hub.cli(&args).await;
    let report: serde_json::Value = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("probe report {:?} ({e}): {}", out.stdout, out.stderr));
    report["reached"].as_bool().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_reach_each_other_only_in_a_group_and_never_cloud_metadata() {
    let hub = Hub::builder().start().await;
    let group = format!("{}-g", hub.prefix);
    let (a, b) = (hub.name("a"), hub.name("b"));
    let (g1, g2) = (hub.name("g1"), hub.name("g2"));
    for name in [&a, &b] {
        hub.create(name).await;
    }
    for name in [&g1, &g2] {
        hub.cli(&["create", name, "--group", &group]).await.ok();
    }
    let mut probes = Vec::new();
    for name in [&a, &b, &g1, &g2] {
        probes.push(hub.put_probe(name).await);
    }
    let probe = &probes[0];

    // The agents' network keeps its containers apart.
    let network = docker()
        .await
        .inspect_network(&hub.network, None)
        .await
        .unwrap();
    let options = network.options.unwrap_or_default();
    assert_eq!(
        options
            .get("com.docker.network.bridge.enable_icc")
            .map(String::as_str),
        Some("false"),
        "{options:?}"
    );

    listen(&hub, &a, probe, 8000).await;
    let a_ip = hub.container_ip(&a, None).await;
    assert!(
        !reaches(&hub, &b, probe, &format!("{a_ip}:8000"), true).await,
        "one agent reached another"
    );
    // The agent itself answers there: it is the network that stops the other.
    assert!(reaches(&hub, &a, probe, "127.0.0.1:8000", true).await);
    // The hub's agent port stays reachable.
    let port = format!("host.docker.internal:{}", hub.agent_port);
    assert!(reaches(&hub, &b, probe, &port, false).await);

    // In a group, on the group's network, they reach each other; on the shared network still not.
    listen(&hub, &g1, probe, 8000).await;
    let group_network = format!("{}-group-{group}", hub.network);
    let g1_group_ip = hub.container_ip(&g1, Some(&group_network)).await;
    assert!(reaches(&hub, &g2, probe, &format!("{g1_group_ip}:8000"), true).await);
    let g1_ip = hub.container_ip(&g1, None).await;
    assert!(!reaches(&hub, &g2, probe, &format!("{g1_ip}:8000"), true).await);
    // An agent outside the group has no address on its network at all.
    assert!(
        !hub.container(&a)
            .await
            .network_settings
            .unwrap()
            .networks
            .unwrap_or_default()
            .contains_key(&group_network)
    );

    // Link-local (169.254.0.0/16, cloud metadata) has an unreachable route in every container, which
    // tasks cannot remove: they hold no capability.
    for name in [&a, &g1] {
        let routes = hub.sh(name, "cat /proc/net/route").await;
        let reject = routes.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() >= 8
                && f[1] == "0000FEA9"
                && f[7] == "0000FFFF"
                && u32::from_str_radix(f[3], 16).is_ok_and(|flags| flags & 0x0200 != 0)
        });
        assert!(
            reject,
            "no reject route for 169.254.0.0/16 in {name}:\n{routes}"
        );
        assert_eq!(
            hub.sh(
                name,
                "grep -E '^Cap(Eff|Prm|Bnd)' /proc/self/status | head -2"
            )
            .await,
            "CapPrm:\t0000000000000000\nCapEff:\t0000000000000000\n"
        );
    }
    // The agent gave NET_ADMIN up (bit 12) before it ran anything.
    let agent_caps = hub.sh(&a, "grep CapEff /proc/1/status").await;
    let eff =
        u64::from_str_radix(agent_caps.trim().trim_start_matches("CapEff:").trim(), 16).unwrap();
    assert_eq!(
        eff & (1 << 12),
        0,
        "the agent still holds NET_ADMIN: {agent_caps}"
    );

    // The group's network goes with its last member, and nothing else is left.
    for name in [&a, &b, &g1, &g2] {
        hub.cli(&["destroy", name, "--purge"]).await.ok();
    }
    assert!(
        docker()
            .await
            .inspect_network(&group_network, None)
            .await
            .is_err(),
        "the group's network was left behind"
    );
    hub.assert_nothing_left().await;
}
