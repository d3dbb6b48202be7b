//! Checks made before touching the kernel, each failing with one clear line.

use anyhow::{Result, bail};

use super::procfs;

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Effective capability bits of this process.
fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

pub fn require_privileges() -> Result<()> {
    let caps = effective_caps();
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    if (has(CAP_BPF) && has(CAP_PERFMON)) || has(CAP_SYS_ADMIN) {
        return Ok(());
    }
    bail!("tracer needs root (CAP_BPF and CAP_PERFMON) to load eBPF programs: run it with sudo");
}

/// Validates the pids to trace: each must name a live process. A thread id
/// is replaced by its process. Returns the process ids, deduplicated.
pub fn resolve_pids(pids: &[u32]) -> Result<Vec<u32>> {
    let mut out = Vec::new();
    for &pid in pids {
        if !procfs::exists(pid) || !procfs::is_alive(pid) {
            bail!("no such process: {pid}");
        }
        if procfs::is_kernel_thread(pid) {
            bail!(
                "{pid} ({}) is a kernel thread: it has no sockets of its own to trace",
                procfs::comm(pid).unwrap_or_default()
            );
        }
        let tgid = procfs::tgid(pid).unwrap_or(pid);
        if !out.contains(&tgid) {
            out.push(tgid);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_missing_pid() {
        let err = resolve_pids(&[u32::MAX - 1]).expect_err("must fail");
        assert_eq!(
            err.to_string(),
            format!("no such process: {}", u32::MAX - 1)
        );
    }

    #[test]
    fn thread_id_becomes_its_process() {
        let me = std::process::id();
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tx.send(unsafe { libc::gettid() } as u32).expect("send");
            std::thread::sleep(std::time::Duration::from_millis(200));
        });
        let tid = rx.recv().expect("tid");
        assert_eq!(resolve_pids(&[tid, me]).expect("resolve"), vec![me]);
        t.join().expect("join");
    }
}
