//! The connection flood of a hostile sandbox: as many connections to the hub as it lets in, each held
//! open doing nothing (or half a TLS handshake, or a finished one), a new one opened whenever one is
//! closed. Reports how many were let in, how long the hub let them live, and how many it closed.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Semaphore;

use crate::args::{Hold, Target};

#[derive(Debug, Default)]
struct Stats {
    attempts: AtomicU64,
    connect_errors: AtomicU64,
    handshakes: AtomicU64,
    handshake_errors: AtomicU64,
    /// Closed by the hub within a second of being opened (refused at accept, or cut off at once).
    closed_at_once: AtomicU64,
    /// Closed by the hub later (a deadline, a cut-off).
    closed_later: AtomicU64,
    /// Still open when the flood ended.
    survived: AtomicU64,
    open: AtomicU64,
    max_open: AtomicU64,
    longest_ms: AtomicU64,
}

pub async fn run(
    target: &Target,
    hold: Hold,
    connections: usize,
    seconds: u64,
) -> anyhow::Result<ExitCode> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    let stats = Arc::new(Stats::default());
    let slots = Arc::new(Semaphore::new(connections.max(1)));
    let tls = Arc::new(crate::impersonate::blind_tls());
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot?,
            () = tokio::time::sleep_until(deadline) => break,
        };
        let (target, stats, tls) = (target.clone(), stats.clone(), tls.clone());
        tasks.spawn(async move {
            hold_one(&target, hold, &stats, &tls, deadline).await;
            drop(slot);
        });
        // Finished tasks are reaped as we go, so the set stays the size of what is open.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
    println!(
        "{{\"attempts\":{},\"connect_errors\":{},\"handshakes\":{},\"handshake_errors\":{},\"closed_at_once\":{},\"closed_later\":{},\"survived\":{},\"max_open\":{},\"longest_ms\":{}}}",
        n(&stats.attempts),
        n(&stats.connect_errors),
        n(&stats.handshakes),
        n(&stats.handshake_errors),
        n(&stats.closed_at_once),
        n(&stats.closed_later),
        n(&stats.survived),
        n(&stats.max_open),
        n(&stats.longest_ms),
    );
    Ok(ExitCode::SUCCESS)
}

/// A connection to the target, as a boxed byte stream.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub(crate) async fn connect(target: &Target) -> std::io::Result<Box<dyn Io>> {
    if let Some(path) = &target.socket {
        return Ok(Box::new(tokio::net::UnixStream::connect(path).await?));
    }
    let address = target.tcp.as_deref().unwrap_or_default();
    let addr = crate::resolve(address).map_err(std::io::Error::other)?;
    Ok(Box::new(tokio::net::TcpStream::connect(addr).await?))
}

async fn hold_one(
    target: &Target,
    hold: Hold,
    stats: &Stats,
    tls: &Arc<rustls::ClientConfig>,
    deadline: tokio::time::Instant,
) {
    stats.attempts.fetch_add(1, Ordering::Relaxed);
    let mut stream = match connect(target).await {
        Ok(s) => s,
        Err(_) => {
            stats.connect_errors.fetch_add(1, Ordering::Relaxed);
            // A refused connect returns at once; without a pause this loop would only burn our own CPU.
            tokio::time::sleep(Duration::from_millis(5)).await;
            return;
        }
    };
    let opened = Instant::now();
    let open = stats.open.fetch_add(1, Ordering::Relaxed) + 1;
    stats.max_open.fetch_max(open, Ordering::Relaxed);
    let closed = async {
        match hold {
            Hold::Silent => wait_closed(&mut stream).await,
            Hold::PartialTls => {
                // A TLS record header announcing a handshake, and nothing after it.
                let _ = stream.write_all(&[0x16, 0x03, 0x01]).await;
                wait_closed(&mut stream).await;
            }
            Hold::Tls => {
                let connector = tokio_rustls::TlsConnector::from(tls.clone());
                let name = ServerName::try_from("host.docker.internal").expect("a valid name");
                match connector.connect(name, stream).await {
                    Ok(mut tls) => {
                        stats.handshakes.fetch_add(1, Ordering::Relaxed);
                        wait_closed(&mut tls).await;
                    }
                    Err(_) => {
                        stats.handshake_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    };
    let by_hub = tokio::select! {
        () = closed => true,
        () = tokio::time::sleep_until(deadline) => false,
    };
    let lived = opened.elapsed();
    stats.open.fetch_sub(1, Ordering::Relaxed);
    stats
        .longest_ms
        .fetch_max(lived.as_millis() as u64, Ordering::Relaxed);
    let counter = match (by_hub, lived < Duration::from_secs(1)) {
        (false, _) => &stats.survived,
        (true, true) => &stats.closed_at_once,
        (true, false) => &stats.closed_later,
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Reads (and drops) until the peer closes the connection or it fails.
async fn wait_closed<S: AsyncRead + Unpin>(stream: &mut S) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}
