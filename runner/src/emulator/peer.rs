//! Who is on the other end of a loopback connection: its socket's owner, from
//! `/proc/net/tcp`.
//!
//! The Runtime, Extensions, Telemetry and Logs APIs listen on loopback, and every local
//! user can see listening ports (and their owners) in `/proc/net/tcp`. In Lambda only
//! the sandbox's own processes can reach them; here, with several function users in one
//! task, each connection is admitted only from the run's own user (a function's process
//! and its extensions), looked up by the connecting socket's address.

use std::net::{IpAddr, SocketAddr};

/// Who may connect to a run's loopback APIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Anyone (a local run where the function is the runner's own user).
    Anyone,
    /// Only processes of this user (the function's, under the sandbox).
    User(u32),
}

impl Admission {
    /// Whether the connection from `peer` to `local` may be served; a refusal is logged
    /// with the connecting user.
    pub(crate) fn admits(self, local: SocketAddr, peer: SocketAddr) -> bool {
        let Admission::User(allowed) = self else {
            return true;
        };
        let owner = socket_owner(local, peer);
        if owner == Some(allowed) {
            return true;
        }
        match owner {
            Some(uid) => tracing::warn!(
                peer = %peer,
                peer_uid = uid,
                function_uid = allowed,
                "refused a connection to the run's loopback APIs from another user"
            ),
            None => tracing::warn!(
                peer = %peer,
                function_uid = allowed,
                "refused a connection to the run's loopback APIs from another user (its owner is not in /proc/net/tcp)"
            ),
        }
        false
    }
}

/// The user owning the socket at `peer` connected to `local` (both IPv4 loopback
/// addresses), from `/proc/net/tcp`.
pub(crate) fn socket_owner(local: SocketAddr, peer: SocketAddr) -> Option<u32> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    owner_in(&table, local, peer)
}

/// The uid of the row whose local address is `peer` and remote address is `local`.
fn owner_in(table: &str, local: SocketAddr, peer: SocketAddr) -> Option<u32> {
    let (want_local, want_remote) = (proc_address(peer)?, proc_address(local)?);
    table.lines().skip(1).find_map(|row| {
        let fields: Vec<&str> = row.split_whitespace().collect();
        // sl local_address rem_address st tx:rx tr:when retrnsmt uid ...
        (fields.len() > 7 && fields[1] == want_local && fields[2] == want_remote)
            .then(|| fields[7].parse().ok())
            .flatten()
    })
}

/// An IPv4 socket address as `/proc/net/tcp` writes it: the address as a 32-bit number
/// in the host's byte order, then the port, both in upper-case hex.
fn proc_address(addr: SocketAddr) -> Option<String> {
    let IpAddr::V4(ip) = addr.ip() else {
        return None;
    };
    Some(format!("{:08X}:{:04X}", u32::from_ne_bytes(ip.octets()), addr.port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_of_the_connecting_socket_is_found() {
        // As the kernel writes it on the little-endian machines Lambda and Fargate run
        // (x86_64, arm64): 127.0.0.1 is 0100007F.
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:A0B4 00000000:0000 0A 00000000:00000000 00:00000000 00000000 10001        0 111 1 0 100 0 0 10 0\n   1: 0100007F:D431 0100007F:A0B4 01 00000000:00000000 00:00000000 00000000 20003        0 222 1 0 20 4 30 10 -1\n   2: 0100007F:A0B4 0100007F:D431 01 00000000:00000000 00:00000000 00000000 10001        0 333 1 0 20 4 30 10 -1\n";
        let server: SocketAddr = "127.0.0.1:41140".parse().unwrap();
        let client: SocketAddr = "127.0.0.1:54321".parse().unwrap();
        assert_eq!(
            owner_in(table, server, client),
            Some(20_003),
            "the client's row, not the server's"
        );
        assert_eq!(owner_in(table, server, "127.0.0.1:1".parse().unwrap()), None);
    }

    #[test]
    fn a_live_connection_is_owned_by_this_process_user() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let local = listener.local_addr().unwrap();
        let client = std::net::TcpStream::connect(local).unwrap();
        let (_server_side, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        // SAFETY: getuid has no preconditions and cannot fail.
        let me = unsafe { libc::getuid() };
        assert_eq!(socket_owner(local, peer), Some(me));
        assert!(Admission::User(me).admits(local, peer));
        assert!(!Admission::User(me + 1).admits(local, peer));
        assert!(Admission::Anyone.admits(local, peer));
    }
}
