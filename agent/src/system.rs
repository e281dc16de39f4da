//! What the agent tells the hub about its container in Hello: hostname, OS, kernel, architecture.

use docker_agent_proto::v1::SystemInfo;

/// `PRETTY_NAME` from an os-release file, unquoted.
pub fn parse_pretty_name(os_release: &str) -> Option<String> {
    let value = os_release
        .lines()
        .find_map(|l| l.trim().strip_prefix("PRETTY_NAME="))?
        .trim();
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
        .unwrap_or(value);
    Some(value.replace("\\\"", "\"")).filter(|v| !v.is_empty())
}

fn os_name() -> String {
    ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .find_map(|p| parse_pretty_name(&std::fs::read_to_string(p).ok()?))
        .unwrap_or_else(|| "unknown".to_owned())
}

pub fn system_info() -> SystemInfo {
    SystemInfo {
        hostname: sysinfo::System::host_name().unwrap_or_default(),
        os: os_name(),
        kernel: sysinfo::System::kernel_version().unwrap_or_default(),
        arch: std::env::consts::ARCH.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_os_release() {
        let debian =
            "PRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\nNAME=\"Debian GNU/Linux\"\nID=debian\n";
        assert_eq!(
            parse_pretty_name(debian).unwrap(),
            "Debian GNU/Linux 13 (trixie)"
        );
        assert_eq!(parse_pretty_name("PRETTY_NAME=Alpine\n").unwrap(), "Alpine");
        assert_eq!(
            parse_pretty_name("PRETTY_NAME='Quoted'\n").unwrap(),
            "Quoted"
        );
        assert_eq!(parse_pretty_name("NAME=x\n"), None);
        assert_eq!(parse_pretty_name("PRETTY_NAME=\"\"\n"), None);
    }

    #[test]
    fn reports_something_on_this_host() {
        let info = system_info();
        assert!(!info.arch.is_empty());
        assert!(!info.kernel.is_empty());
    }
}
