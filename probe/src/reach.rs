//! Reachability between agents: a listener that names its host, and a client that reports whether it
//! got an answer.

use std::process::ExitCode;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

pub async fn listen(port: u16) -> anyhow::Result<ExitCode> {
    let listener = TcpListener::bind(("0.0.0.0", port)).await?;
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let line = format!("hello from {}\n", host.trim());
    println!("listening");
    loop {
        let (mut stream, _) = listener.accept().await?;
        let line = line.clone();
        tokio::spawn(async move {
            let _ = stream.write_all(line.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

pub async fn connect(address: &str, timeout_ms: u64, read: bool) -> anyhow::Result<ExitCode> {
    let addr = crate::resolve(address)?;
    let attempt = async {
        let stream = TcpStream::connect(addr).await?;
        let mut line = String::new();
        if read {
            BufReader::new(stream).read_line(&mut line).await?;
        }
        Ok::<_, std::io::Error>(line)
    };
    match tokio::time::timeout(Duration::from_millis(timeout_ms), attempt).await {
        Ok(Ok(line)) => {
            println!("{{\"reached\":true,\"answer\":{:?}}}", line.trim());
            Ok(ExitCode::SUCCESS)
        }
        Ok(Err(e)) => {
            println!("{{\"reached\":false,\"error\":{:?}}}", e.to_string());
            Ok(ExitCode::FAILURE)
        }
        Err(_) => {
            println!("{{\"reached\":false,\"error\":\"timed out after {timeout_ms} ms\"}}");
            Ok(ExitCode::FAILURE)
        }
    }
}
