//! Cloud metadata services answer on link-local addresses (169.254.169.254 on most clouds), and a
//! sandbox that reaches one can read the host's instance credentials. With `--block-link-local`, the
//! agent adds an "unreachable" route for 169.254.0.0/16 to its container's routing table at start,
//! while it still holds CAP_NET_ADMIN (the one reason the hub grants it), then gives the capability up
//! for itself and everything it will start, before any other thread exists.
//!
//! The route is the rule in place, readable in `/proc/net/route` (flag RTF_REJECT): nothing has to send
//! traffic to a metadata address to check it. It lives in the container's own network namespace, so it
//! holds on any engine, a Swarm node's included, without touching the host's firewall.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;

use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, sendto,
    socket,
};

/// The link-local range, where metadata services live.
pub const LINK_LOCAL: (Ipv4Addr, u8) = (Ipv4Addr::new(169, 254, 0, 0), 16);

const RTM_NEWROUTE: u16 = 24;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const AF_INET: u8 = 2;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_STATIC: u8 = 4;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RTN_UNREACHABLE: u8 = 7;
const RTA_DST: u16 = 1;
const NLMSG_HEADER: usize = 16;

/// Adds the unreachable route, then drops CAP_NET_ADMIN. Must run before the runtime starts threads:
/// capabilities belong to a thread, and later threads inherit the caller's.
pub fn block_and_drop_net_admin() -> io::Result<()> {
    let (dst, prefix) = LINK_LOCAL;
    let added = add_unreachable_route(dst, prefix);
    // Given up whether or not the route went in: nothing later needs it.
    drop_net_admin()?;
    added
}

/// RTM_NEWROUTE for `dst/prefix`, type unreachable, in the main table. An existing route is fine.
fn add_unreachable_route(dst: Ipv4Addr, prefix: u8) -> io::Result<()> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )?;
    let kernel = NetlinkAddr::new(0, 0);
    bind(fd.as_raw_fd(), &kernel)?;
    let request = route_request(dst, prefix, 1);
    sendto(fd.as_raw_fd(), &request, &kernel, MsgFlags::empty())?;
    let mut reply = [0u8; 512];
    let n = recv(fd.as_raw_fd(), &mut reply, MsgFlags::empty())?;
    match ack_errno(&reply[..n])? {
        0 => Ok(()),
        e if e == nix::errno::Errno::EEXIST as i32 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// The request: `nlmsghdr`, `rtmsg`, then one `RTA_DST` attribute (host byte order, but the address
/// itself in network order).
fn route_request(dst: Ipv4Addr, prefix: u8, seq: u32) -> Vec<u8> {
    let mut msg = Vec::with_capacity(36);
    let len: u32 = 36;
    msg.extend_from_slice(&len.to_ne_bytes());
    msg.extend_from_slice(&RTM_NEWROUTE.to_ne_bytes());
    let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL | NLM_F_CREATE;
    msg.extend_from_slice(&flags.to_ne_bytes());
    msg.extend_from_slice(&seq.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    // rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
    msg.extend_from_slice(&[
        AF_INET,
        prefix,
        0,
        0,
        RT_TABLE_MAIN,
        RTPROT_STATIC,
        RT_SCOPE_UNIVERSE,
        RTN_UNREACHABLE,
    ]);
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&8u16.to_ne_bytes());
    msg.extend_from_slice(&RTA_DST.to_ne_bytes());
    msg.extend_from_slice(&dst.octets());
    debug_assert_eq!(msg.len(), len as usize);
    msg
}

/// The errno of a netlink acknowledgement (0: success), from an `NLMSG_ERROR` message.
fn ack_errno(reply: &[u8]) -> io::Result<i32> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "unexpected netlink reply");
    let header = reply.get(..NLMSG_HEADER).ok_or_else(bad)?;
    let kind = u16::from_ne_bytes([header[4], header[5]]);
    if kind != NLMSG_ERROR {
        return Err(bad());
    }
    let code = reply.get(NLMSG_HEADER..NLMSG_HEADER + 4).ok_or_else(bad)?;
    let code = i32::from_ne_bytes([code[0], code[1], code[2], code[3]]);
    Ok(-code)
}

/// Drops CAP_NET_ADMIN from this thread's effective, inheritable and permitted sets. With
/// no-new-privileges (every agent container has it), no process started later can get it back, a
/// task running as root included.
fn drop_net_admin() -> io::Result<()> {
    use caps::{CapSet, Capability};
    for set in [CapSet::Effective, CapSet::Inheritable, CapSet::Permitted] {
        caps::drop(None, set, Capability::CAP_NET_ADMIN)
            .map_err(|e| io::Error::other(format!("cannot drop CAP_NET_ADMIN: {e}")))?;
    }
    Ok(())
}

/// Whether `/proc/net/route` text holds a reject route for exactly `dst/prefix`.
pub fn has_reject_route(proc_net_route: &str, dst: Ipv4Addr, prefix: u8) -> bool {
    const RTF_REJECT: u32 = 0x0200;
    let want_dst = format!("{:08X}", u32::from_ne_bytes(dst.octets()));
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    };
    let want_mask = format!("{:08X}", u32::from_ne_bytes(mask.to_be_bytes()));
    proc_net_route.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() >= 8
            && fields[1] == want_dst
            && fields[7] == want_mask
            && u32::from_str_radix(fields[3], 16).is_ok_and(|f| f & RTF_REJECT != 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_is_the_kernels_layout() {
        let msg = route_request(Ipv4Addr::new(169, 254, 0, 0), 16, 7);
        assert_eq!(msg.len(), 36);
        assert_eq!(u32::from_ne_bytes(msg[0..4].try_into().unwrap()), 36);
        assert_eq!(u16::from_ne_bytes([msg[4], msg[5]]), RTM_NEWROUTE);
        assert_eq!(u32::from_ne_bytes(msg[8..12].try_into().unwrap()), 7);
        assert_eq!(&msg[16..24], &[2, 16, 0, 0, 254, 4, 0, 7]);
        assert_eq!(&msg[28..32], &[8, 0, 1, 0][..]);
        assert_eq!(&msg[32..36], &[169, 254, 0, 0]);
    }

    #[test]
    fn acknowledgements_and_errors_are_read() {
        let mut ack = vec![0u8; 36];
        ack[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        assert_eq!(ack_errno(&ack).unwrap(), 0);
        ack[16..20].copy_from_slice(&(-17i32).to_ne_bytes());
        assert_eq!(ack_errno(&ack).unwrap(), 17);
        assert!(ack_errno(&ack[..10]).is_err());
    }

    #[test]
    fn reject_routes_are_found_in_proc_net_route() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            eth0\t00000000\t010012AC\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
            *\t0000FEA9\t00000000\t0201\t0\t0\t0\t0000FFFF\t0\t0\t0\n";
        assert!(has_reject_route(table, Ipv4Addr::new(169, 254, 0, 0), 16));
        assert!(!has_reject_route(table, Ipv4Addr::new(10, 0, 0, 0), 8));
        let without = table.replace("0201", "0001");
        assert!(!has_reject_route(
            &without,
            Ipv4Addr::new(169, 254, 0, 0),
            16
        ));
    }
}
