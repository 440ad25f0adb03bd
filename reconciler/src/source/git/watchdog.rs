//! The fetch deadline for the phases where libgit2 calls nothing of ours. libgit2's
//! timeouts are per read, and its transfer-progress callback fires only every 100 KB of
//! pack: a server sending 1 byte/s is never stopped by either. At the deadline this
//! watchdog shuts down (`shutdown(2)`, not `close`: libgit2 still owns and closes the fd)
//! the fetch's TCP connections to the remote, found in /proc/self/fd and /proc/net/tcp{,6}
//! by the remote's address; libgit2's blocked read then fails at once and the fetch
//! returns. Connections to the remote that existed before the fetch started are left alone.
//!
//! Its one thread is joined by [`Watchdog::finish`].

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

pub(super) struct Watchdog {
    done: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<bool>>,
}

impl Watchdog {
    /// Watches connections to `host:port` until [`Watchdog::finish`] or `deadline`.
    pub fn start(host: &str, port: u16, deadline: Instant) -> Watchdog {
        let remotes: Vec<SocketAddr> = (host, port)
            .to_socket_addrs()
            .map(|a| a.collect())
            .unwrap_or_default();
        let before = sockets_to(&remotes);
        let done = Arc::new((Mutex::new(false), Condvar::new()));
        let d = done.clone();
        let thread = std::thread::Builder::new()
            .name("git-deadline".into())
            .spawn(move || watch(&d, deadline, &remotes, &before))
            .ok();
        Watchdog { done, thread }
    }

    /// Stops the watchdog; true when it cut the fetch's connections at the deadline.
    pub fn finish(mut self) -> bool {
        let (lock, cv) = &*self.done;
        if let Ok(mut d) = lock.lock() {
            *d = true;
        }
        cv.notify_all();
        self.thread
            .take()
            .map(|t| t.join().unwrap_or(false))
            .unwrap_or(false)
    }
}

fn watch(
    done: &(Mutex<bool>, Condvar),
    deadline: Instant,
    remotes: &[SocketAddr],
    before: &BTreeSet<(i32, u64)>,
) -> bool {
    let (lock, cv) = done;
    let Ok(mut finished) = lock.lock() else {
        return false;
    };
    loop {
        if *finished {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        match cv.wait_timeout(finished, deadline - now) {
            Ok((g, _)) => finished = g,
            Err(_) => return false,
        }
    }
    let mut cut = false;
    for (fd, inode) in sockets_to(remotes) {
        if !before.contains(&(fd, inode)) {
            // SAFETY: shutdown(2) on a socket fd does not free it; at worst a just-reused
            // fd number to the same remote is shut down (its fetch fails and retries).
            unsafe {
                libc::shutdown(fd, libc::SHUT_RDWR);
            }
            cut = true;
        }
    }
    cut
}

/// This process's socket fds (with their inodes) connected to one of `remotes`.
fn sockets_to(remotes: &[SocketAddr]) -> BTreeSet<(i32, u64)> {
    let inodes = tcp_inodes_to(remotes);
    let mut out = BTreeSet::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return out;
    };
    for e in dir.filter_map(Result::ok) {
        let Ok(fd) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(link) = std::fs::read_link(e.path()) else {
            continue;
        };
        let link = link.to_string_lossy();
        let Some(inode) = link
            .strip_prefix("socket:[")
            .and_then(|s| s.strip_suffix(']'))
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        if inodes.contains(&inode) {
            out.insert((fd, inode));
        }
    }
    out
}

/// Inodes of the TCP sockets whose remote end is one of `remotes`.
fn tcp_inodes_to(remotes: &[SocketAddr]) -> BTreeSet<u64> {
    let mut out = BTreeSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(rem), Some(inode)) = (f.get(2), f.get(9)) else {
                continue;
            };
            if let (Some(addr), Ok(inode)) = (parse_addr(rem), inode.parse::<u64>())
                && remotes.contains(&addr)
            {
                out.insert(inode);
            }
        }
    }
    out
}

/// `0100007F:1F90` (IPv4) or 32 hex digits `:port` (IPv6), as the kernel prints them
/// (each 32-bit word in host order, little-endian here).
fn parse_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Option<Vec<[u8; 4]>> = (0..ip.len() / 8)
        .map(|i| {
            u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16)
                .ok()
                .map(u32::to_le_bytes)
        })
        .collect();
    let bytes: Vec<u8> = words?.concat();
    let ip = match bytes.len() {
        4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        16 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&bytes);
            let v6 = Ipv6Addr::from(a);
            // An IPv4 peer of a dual-stack socket.
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_addresses() {
        assert_eq!(
            parse_addr("0100007F:1F90"),
            Some("127.0.0.1:8080".parse().expect("addr"))
        );
        assert_eq!(
            parse_addr("0000000000000000FFFF00000100007F:0016"),
            Some("127.0.0.1:22".parse().expect("addr"))
        );
        assert_eq!(
            parse_addr("00000000000000000000000001000000:01BB"),
            Some("[::1]:443".parse().expect("addr"))
        );
        assert_eq!(parse_addr("zz:1"), None);
    }
}
