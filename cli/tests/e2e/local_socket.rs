//! The operator socket in the data dir: the CLI's way in on this host, owner-only, token-checked, and
//! replaced by the TCP port when it is missing.

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;

use crate::support::Hub;

/// One HTTP/1.1 request over the socket; returns the status line.
fn status_line(socket: &Path, request: &str) -> String {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    String::from_utf8_lossy(&reply)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_uses_the_socket_and_falls_back_to_the_tcp_port() {
    let mut hub = Hub::builder().start().await;
    let socket = hub.home().join("hub.sock");
    let meta = std::fs::metadata(&socket).expect("the hub made its socket");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    // Plaintext on the socket still needs the admin token.
    let request = |auth: &str| {
        format!("GET /api/v1/agents HTTP/1.1\r\nhost: localhost\r\n{auth}connection: close\r\n\r\n")
    };
    assert!(
        status_line(&socket, &request("")).contains(" 401 "),
        "no token must be refused"
    );
    let token = format!("authorization: Bearer {}\r\n", hub.admin_token());
    assert!(status_line(&socket, &request(&token)).contains(" 200 "));

    // With the endpoint file pointing nowhere, commands still work: they go through the socket.
    let name = hub.name("sock");
    hub.create(&name).await;
    let endpoint_path = hub.home().join("hub.json");
    let endpoint = std::fs::read_to_string(&endpoint_path).unwrap();
    let nowhere = endpoint.replace(&hub.operator_addr(), "127.0.0.1:1");
    std::fs::write(&endpoint_path, &nowhere).unwrap();
    let out = hub.cli(&["exec", &name, "--", "echo", "via-socket"]).await;
    assert_eq!(out.ok(), "via-socket\n");
    // Without the socket they use the TCP port the endpoint file names: here, a closed one.
    std::fs::remove_file(&socket).unwrap();
    hub.cli(&["list"])
        .await
        .fails_with("cannot reach the hub at 127.0.0.1:1");
    std::fs::write(&endpoint_path, &endpoint).unwrap();
    let out = hub.cli(&["exec", &name, "--", "echo", "via-tcp"]).await;
    assert_eq!(out.ok(), "via-tcp\n");

    hub.cli(&["destroy", &name, "--purge"]).await.ok();
    // Whatever a crashed hub left at the path is replaced by the next one.
    hub.kill();
    std::fs::write(&socket, b"stale").unwrap();
    hub.restart().await;
    assert!(std::fs::metadata(&socket).unwrap().file_type().is_socket());
    hub.cli(&["list"]).await.ok();
    // A clean stop removes the socket with the endpoint file.
    assert!(hub.terminate().success());
    assert!(!socket.exists(), "the socket is removed on a clean stop");
    assert!(!endpoint_path.exists());
}
