//! What `/proc` tells about traced processes: names, threads, children, and
//! the ports they listen on.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::Path,
};

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("no such process: {0}")]
    NoSuchProcess(u32),
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

fn read(path: &str) -> Result<String, ProcError> {
    fs::read_to_string(path).map_err(|source| ProcError::Io {
        path: path.to_string(),
        source,
    })
}

pub fn exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// A process that has exited but was not yet reaped still has a /proc entry.
pub fn is_alive(pid: u32) -> bool {
    match read(&format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                != Some("Z")
        }
        Err(_) => false,
    }
}

/// CPU time `pid` used so far, all its threads, user and system
/// (`/proc/PID/stat`, in clock ticks of 10 ms).
pub fn cpu_time(pid: u32) -> Option<std::time::Duration> {
    let stat = read(&format!("/proc/{pid}/stat")).ok()?;
    // After the command: state is the 1st field, utime the 12th, stime the 13th.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut f = rest.split_whitespace().skip(11);
    let ticks: u64 = f.next()?.parse::<u64>().ok()? + f.next()?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .ok()?
        .max(1);
    Some(std::time::Duration::from_nanos(ticks * 1_000_000_000 / hz))
}

/// CPU time this process used so far, user and system, to the microsecond.
pub fn own_cpu_time() -> std::time::Duration {
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &raw mut u);
        u
    };
    let us = |t: libc::timeval| {
        u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000 + u64::try_from(t.tv_usec).unwrap_or(0)
    };
    std::time::Duration::from_micros(us(usage.ru_utime) + us(usage.ru_stime))
}

/// Whether `pid` is a kernel thread (`PF_KTHREAD` in its flags): no user
/// code, no sockets of its own to trace.
pub fn is_kernel_thread(pid: u32) -> bool {
    const PF_KTHREAD: u64 = 0x0020_0000;
    read(&format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // Fields after the command: state is the 3rd field, flags the 9th.
            let (_, rest) = stat.rsplit_once(')')?;
            rest.split_whitespace().nth(6)?.parse::<u64>().ok()
        })
        .is_some_and(|flags| flags & PF_KTHREAD != 0)
}

pub fn comm(pid: u32) -> Result<String, ProcError> {
    if !exists(pid) {
        return Err(ProcError::NoSuchProcess(pid));
    }
    Ok(read(&format!("/proc/{pid}/comm"))?.trim_end().to_string())
}

/// The thread group id of `pid`: differs from `pid` when it names a thread.
pub fn tgid(pid: u32) -> Option<u32> {
    let status = read(&format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// All descendant processes of `pid` (not threads), depth first.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut stack = vec![pid];
    while let Some(p) = stack.pop() {
        let Ok(tasks) = fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let path = task.path().join("children");
            let Ok(children) = fs::read_to_string(&path) else {
                continue;
            };
            for child in children
                .split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok())
            {
                if !out.contains(&child) {
                    out.push(child);
                    stack.push(child);
                }
            }
        }
    }
    out
}

/// Socket inode of each fd of `pid` that is a socket.
fn socket_fds(pid: u32) -> HashMap<u64, i32> {
    let mut out = HashMap::new();
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if let Some(inode) = fs::read_link(entry.path())
            .ok()
            .and_then(|l| socket_inode(&l.to_string_lossy()))
        {
            out.insert(inode, fd);
        }
    }
    out
}

fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// TCP states of `/proc/net/tcp` used here.
#[cfg(test)]
pub const TCP_ESTABLISHED: u8 = 0x01;
pub const TCP_LISTEN: u8 = 0x0A;

/// One line of `/proc/<pid>/net/tcp{,6}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpSocket {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: u8,
    /// Bytes in the send queue: not yet sent, or sent and not acknowledged.
    pub unsent: u32,
    pub inode: u64,
}

/// The TCP sockets visible in `pid`'s network namespace, by inode.
fn tcp_sockets(pid: u32) -> HashMap<u64, TcpSocket> {
    let mut out = HashMap::new();
    for file in ["tcp", "tcp6"] {
        let Ok(text) = read(&format!("/proc/{pid}/net/{file}")) else {
            continue;
        };
        for sock in text.lines().skip(1).filter_map(parse_tcp_line) {
            out.insert(sock.inode, sock);
        }
    }
    out
}

fn parse_tcp_line(line: &str) -> Option<TcpSocket> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let local = parse_hex_addr(f.get(1)?)?;
    let remote = parse_hex_addr(f.get(2)?)?;
    let state = u8::from_str_radix(f.get(3)?, 16).ok()?;
    let (tx, _rx) = f.get(4)?.split_once(':')?;
    let unsent = u32::from_str_radix(tx, 16).ok()?;
    let inode = f.get(9)?.parse().ok()?;
    Some(TcpSocket {
        local,
        remote,
        state,
        unsent,
        inode,
    })
}

/// `0100007F:1F90` (IPv4) or 32 hex digits (IPv6), in the kernel's
/// native-endian 32-bit words, then a hex port.
fn parse_hex_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Vec<u32> = (0..ip.len() / 8)
        .map(|i| u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16).map(u32::from_be))
        .collect::<Result<_, _>>()
        .ok()?;
    let ip = match words.as_slice() {
        [w] => IpAddr::V4(Ipv4Addr::from(w.to_be_bytes())),
        [a, b, c, d] => {
            let mut bytes = [0u8; 16];
            for (i, w) in [a, b, c, d].iter().enumerate() {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_be_bytes());
            }
            let v6 = Ipv6Addr::from(bytes);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// `TcpExt` counters of `/proc/<pid>/net/netstat` (the process's network
/// namespace), by name.
pub fn tcp_ext(pid: u32) -> HashMap<String, u64> {
    let Ok(text) = read(&format!("/proc/{pid}/net/netstat")) else {
        return HashMap::new();
    };
    parse_tcp_ext(&text)
}

fn parse_tcp_ext(text: &str) -> HashMap<String, u64> {
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return HashMap::new();
    };
    names
        .split_whitespace()
        .skip(1)
        .zip(values.split_whitespace().skip(1))
        .filter_map(|(n, v)| Some((n.to_string(), v.parse().ok()?)))
        .collect()
}

/// Peers of the TCP connections, in the network namespaces of `pids`, that
/// still hold bytes in their send queue: a response not yet taken by its reader.
pub fn peers_with_unsent_bytes(pids: &[u32]) -> HashSet<SocketAddr> {
    let mut seen_ns = HashSet::new();
    let mut out = HashSet::new();
    for &pid in pids {
        let ns = fs::read_link(format!("/proc/{pid}/ns/net")).ok();
        if !seen_ns.insert(ns) {
            continue;
        }
        out.extend(
            tcp_sockets(pid)
                .values()
                .filter(|s| s.state != TCP_LISTEN && s.unsent > 0)
                .map(|s| s.remote),
        );
    }
    out
}

/// Listening TCP ports of `pid`.
pub fn listeners(pid: u32) -> Vec<u16> {
    let fds = socket_fds(pid);
    let ports: BTreeSet<u16> = tcp_sockets(pid)
        .values()
        .filter(|s| s.state == TCP_LISTEN && fds.contains_key(&s.inode))
        .map(|s| s.local.port())
        .collect();
    ports.into_iter().collect()
}

/// Every process (not thread) now.
pub fn all_pids() -> Vec<u32> {
    fs::read_dir("/proc")
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The path of `pid`'s executable, without the ` (deleted)` the kernel
/// adds once the file was replaced (a service upgraded in place).
pub fn exe_path(pid: u32) -> Option<String> {
    let link = fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let path = link.to_string_lossy();
    Some(path.strip_suffix(" (deleted)").unwrap_or(&path).to_string())
}

/// The network namespace of `pid`, as the inode of `/proc/PID/ns/net`.
pub fn netns(pid: u32) -> Option<u64> {
    let link = fs::read_link(format!("/proc/{pid}/ns/net")).ok()?;
    link.to_string_lossy()
        .strip_prefix("net:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Inodes of the TCP sockets listening on any of `ports` in `pid`'s
/// network namespace.
pub fn listening_inodes(pid: u32, ports: &[u16]) -> BTreeSet<u64> {
    tcp_sockets(pid)
        .values()
        .filter(|s| s.state == TCP_LISTEN && ports.contains(&s.local.port()))
        .map(|s| s.inode)
        .collect()
}

/// Whether `pid` holds any of `inodes` among its fds.
pub fn holds_any_socket(pid: u32, inodes: &BTreeSet<u64>) -> bool {
    socket_fds(pid).keys().any(|i| inodes.contains(i))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_threads_are_told_apart() {
        assert!(is_kernel_thread(2), "pid 2 is kthreadd");
        assert!(!is_kernel_thread(std::process::id()));
        assert!(!is_kernel_thread(4_000_000), "no such process");
    }

    #[test]
    fn parses_ipv4_line() {
        let line = "   1: 0100007F:1F90 0100007F:D6A4 01 00010400:00000000 00:00000000 00000000     0        0 41234 1 0000000000000000 20 4 30 10 -1";
        let s = parse_tcp_line(line).expect("line");
        assert_eq!(s.local, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(s.remote, "127.0.0.1:54948".parse().expect("addr"));
        assert_eq!(
            (s.state, s.inode, s.unsent),
            (TCP_ESTABLISHED, 41234, 66560)
        );
    }

    #[test]
    fn parses_ipv6_and_mapped_ipv4() {
        let any = parse_hex_addr("00000000000000000000000000000000:1F90").expect("addr");
        assert_eq!(any, "[::]:8080".parse().expect("addr"));
        let mapped = parse_hex_addr("0000000000000000FFFF00000100007F:0050").expect("addr");
        assert_eq!(mapped, "127.0.0.1:80".parse().expect("addr"));
        let lo = parse_hex_addr("00000000000000000000000001000000:0050").expect("addr");
        assert_eq!(lo, "[::1]:80".parse().expect("addr"));
    }

    #[test]
    fn parses_tcp_ext_counters() {
        let text = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\nTcpExt: 0 12 14\nIpExt: InNoRoutes\nIpExt: 0\n";
        let c = parse_tcp_ext(text);
        assert_eq!((c["ListenOverflows"], c["ListenDrops"]), (12, 14));
        assert!(
            !tcp_ext(std::process::id()).is_empty(),
            "this machine has /proc/<pid>/net/netstat"
        );
    }

    #[test]
    fn cpu_times_add_up() {
        let me = std::process::id();
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(50) {
            std::hint::black_box(0u64);
        }
        let own = own_cpu_time();
        let stat = cpu_time(me).expect("own stat");
        assert!(own >= std::time::Duration::from_millis(40), "{own:?}");
        // Ticks of 10 ms, read a moment apart.
        assert!(
            stat + std::time::Duration::from_millis(30) >= own,
            "{stat:?} vs {own:?}"
        );
    }

    #[test]
    fn this_process_is_alive_and_named() {
        let me = std::process::id();
        assert!(is_alive(me));
        assert_eq!(tgid(me), Some(me));
        assert!(!comm(me).expect("comm").is_empty());
    }

    #[test]
    fn finds_own_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        assert!(listeners(std::process::id()).contains(&port));
    }
}
