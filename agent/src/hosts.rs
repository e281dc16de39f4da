//! Name resolution for the hub's host that works without NSS: an IP literal, then /etc/hosts (parsed here), then DNS.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("cannot resolve {host:?}: {source}")]
    Lookup {
        host: String,
        source: std::io::Error,
    },
    #[error("cannot resolve {0:?}: no address found")]
    NoAddress(String),
}

/// Addresses `/etc/hosts`-formatted `text` gives for `name`, in file order. Names compare case-insensitively.
pub fn lookup_hosts(text: &str, name: &str) -> Vec<IpAddr> {
    let mut found = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut fields = line.split_whitespace();
        let Some(addr) = fields.next() else { continue };
        // Zone-scoped IPv6 (fe80::1%eth0) does not parse and is useless for dialing the hub anyway.
        let Ok(ip) = addr.parse::<IpAddr>() else {
            continue;
        };
        if fields.any(|alias| alias.eq_ignore_ascii_case(name)) && !found.contains(&ip) {
            found.push(ip);
        }
    }
    found
}

/// Resolves `host` into socket addresses: literal IP, else `hosts_file`, else the system resolver.
pub async fn resolve_with(
    host: &str,
    port: u16,
    hosts_file: &Path,
) -> Result<Vec<SocketAddr>, ResolveError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    // A missing or unreadable hosts file just means "ask DNS". Read synchronously: it is tiny, and
    // tokio::fs would start a blocking-pool thread (stack and all) on every reconnect.
    if let Ok(text) = std::fs::read_to_string(hosts_file) {
        let ips = lookup_hosts(&text, bare);
        if !ips.is_empty() {
            return Ok(ips
                .into_iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect());
        }
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
        .await
        .map_err(|source| ResolveError::Lookup {
            host: host.to_owned(),
            source,
        })?
        .collect();
    if addrs.is_empty() {
        return Err(ResolveError::NoAddress(host.to_owned()));
    }
    Ok(addrs)
}

pub async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, ResolveError> {
    resolve_with(host, port, Path::new("/etc/hosts")).await
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTS: &str = "\
127.0.0.1\tlocalhost
::1     localhost ip6-localhost ip6-loopback
# 10.9.9.9 host.docker.internal
fe80::1%lo0 linklocal
172.17.0.1 host.docker.internal gateway.docker.internal # trailing comment
not-an-ip host.docker.internal
192.168.65.254  Host.Docker.Internal
172.17.0.1 host.docker.internal
";

    #[test]
    fn parses_hosts() {
        let v4: IpAddr = "172.17.0.1".parse().unwrap();
        let other: IpAddr = "192.168.65.254".parse().unwrap();
        assert_eq!(lookup_hosts(HOSTS, "host.docker.internal"), vec![v4, other]);
        assert_eq!(lookup_hosts(HOSTS, "gateway.docker.internal"), vec![v4]);
        assert_eq!(
            lookup_hosts(HOSTS, "localhost"),
            vec![
                "127.0.0.1".parse::<IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );
        assert!(lookup_hosts(HOSTS, "linklocal").is_empty());
        assert!(lookup_hosts(HOSTS, "missing").is_empty());
        assert!(lookup_hosts("", "localhost").is_empty());
    }

    #[tokio::test]
    async fn resolves_ip_literals_and_hosts_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hosts");
        std::fs::write(&file, HOSTS).unwrap();
        let got = resolve_with("10.1.2.3", 7443, &file).await.unwrap();
        assert_eq!(got, vec!["10.1.2.3:7443".parse().unwrap()]);
        let got = resolve_with("[::1]", 7443, &file).await.unwrap();
        assert_eq!(got, vec!["[::1]:7443".parse().unwrap()]);
        let got = resolve_with("gateway.docker.internal", 7443, &file)
            .await
            .unwrap();
        assert_eq!(got, vec!["172.17.0.1:7443".parse().unwrap()]);
    }
}
