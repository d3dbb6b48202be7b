//! Which processes the daemon traces: the pids given, the processes of the
//! executables given (`--exe`: the file name or the full path of
//! `/proc/PID/exe`, not the 15-character `comm`), and those listening on
//! the ports given. Looked for again every few seconds, so a process that
//! starts later, or a service restarted under a new pid, is traced.

use std::{
    collections::{BTreeSet, HashMap},
    path::Path,
    time::{Duration, Instant},
};

use crate::system::procfs;

/// How often processes are looked for.
const LOOK_EVERY: Duration = Duration::from_secs(2);

pub struct Wanted {
    pub pids: Vec<u32>,
    pub exes: Vec<String>,
    pub ports: Vec<u16>,
    last_look: Option<Instant>,
    /// The listening sockets of the ports at the last look, in every
    /// network namespace: fds are scanned only when these change.
    port_inodes: BTreeSet<u64>,
}

impl Wanted {
    pub fn new(pids: Vec<u32>, exes: Vec<String>, ports: Vec<u16>) -> Wanted {
        Wanted {
            pids,
            exes,
            ports,
            last_look: None,
            port_inodes: BTreeSet::new(),
        }
    }

    /// What the command line asked for, for messages.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self.pids.iter().map(|p| format!("pid {p}")).collect();
        parts.extend(self.exes.iter().map(|e| format!("executable {e}")));
        parts.extend(self.ports.iter().map(|p| format!("port {p}")));
        parts.join(", ")
    }

    /// The processes that match now and are not in `traced`; empty when it
    /// is not time to look yet.
    pub fn look(&mut self, traced: &[u32]) -> Vec<u32> {
        if self.last_look.is_some_and(|at| at.elapsed() < LOOK_EVERY) {
            return Vec::new();
        }
        self.last_look = Some(Instant::now());
        let mut found: Vec<u32> = self
            .pids
            .iter()
            .copied()
            .filter(|&p| procfs::is_alive(p))
            .collect();
        let all = procfs::all_pids();
        // Listeners of each network namespace (a container's are in its
        // own), read once per namespace.
        let mut by_netns: HashMap<u64, BTreeSet<u64>> = HashMap::new();
        if !self.ports.is_empty() {
            for &pid in &all {
                if let Some(ns) = procfs::netns(pid) {
                    by_netns
                        .entry(ns)
                        .or_insert_with(|| procfs::listening_inodes(pid, &self.ports));
                }
            }
        }
        let inodes: BTreeSet<u64> = by_netns.values().flatten().copied().collect();
        let scan_ports = !inodes.is_empty() && inodes != self.port_inodes;
        self.port_inodes = inodes;
        if !self.exes.is_empty() || scan_ports {
            for pid in all {
                if pid == std::process::id() || traced.contains(&pid) {
                    continue;
                }
                let exe_matches = !self.exes.is_empty()
                    && procfs::exe_path(pid).is_some_and(|path| matches_exe(&self.exes, &path));
                let listens = scan_ports
                    && procfs::netns(pid)
                        .and_then(|ns| by_netns.get(&ns))
                        .is_some_and(|inodes| {
                            !inodes.is_empty() && procfs::holds_any_socket(pid, inodes)
                        });
                if exe_matches || listens {
                    found.push(pid);
                }
            }
        }
        found.retain(|p| !traced.contains(p) && !procfs::is_kernel_thread(*p));
        found.sort_unstable();
        found.dedup();
        found
    }
}

/// Whether an executable's path is one of `wanted`: by full path, or by
/// file name.
fn matches_exe(wanted: &[String], path: &str) -> bool {
    let name = Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    wanted.iter().any(|w| w == path || *w == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executables_match_by_name_or_full_path() {
        let wanted = vec!["caddy".to_string(), "/opt/api/server".to_string()];
        assert!(matches_exe(&wanted, "/usr/bin/caddy"));
        assert!(matches_exe(&wanted, "/opt/api/server"));
        assert!(!matches_exe(&wanted, "/usr/local/bin/server"));
        assert!(!matches_exe(&wanted, "/usr/bin/caddy-old"));
    }

    #[test]
    fn this_process_is_found_by_its_executable() {
        let exe = procfs::exe_path(std::process::id()).expect("own exe");
        let mut w = Wanted::new(Vec::new(), vec![exe], Vec::new());
        // The tracer never traces itself.
        assert!(w.look(&[]).is_empty());
    }
}
