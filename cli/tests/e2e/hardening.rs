//! Hardened containers and hostile profiles: a read-only root filesystem that still works (and
//! survives a restart), and profile files an attacker would write refused in one line with nothing made.

use crate::support::Hub;

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
    assert!(
        hub.leftovers().await.is_empty(),
        "{:?}",
        hub.leftovers().await
    );
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
    assert!(
        hub.leftovers().await.is_empty(),
        "{:?}",
        hub.leftovers().await
    );
}
