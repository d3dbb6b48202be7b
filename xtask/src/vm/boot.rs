//! Booting a kernel in QEMU: under KVM when it can run the guest, else
//! under TCG (emulation), saying so. The guest's console is streamed to
//! the terminal and to a log, and its last line carries the tests' result.

use std::{
    fs::File,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use super::{
    initramfs::{EXIT_MARK, UP_MARK},
    kernels::Image,
};

/// Longest a kernel's whole run may take: the tests under emulation take
/// about half of it.
const RUN_LIMIT: Duration = Duration::from_mins(50);
/// Longest a probe boot may take to print that it is up.
const PROBE_LIMIT: Duration = Duration::from_secs(40);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "KVM",
            Accel::Tcg => "TCG (emulation)",
        })
    }
}

pub struct Outcome {
    pub passed: bool,
    pub accel: Accel,
    pub log: PathBuf,
}

pub fn run(image: &Image, initrd: &Path, work: &Path) -> Result<Outcome> {
    let accel = choose_accel(image, initrd);
    let log = work.join(format!("{}.log", image.release));
    let mut file = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let child = qemu(image, initrd, accel, false)
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let label = image.release.clone();
    let exit = stream(child, RUN_LIMIT, |line| {
        let _ = writeln!(file, "{line}");
        eprintln!("[{label}] {line}");
        line.strip_prefix(EXIT_MARK)
            .and_then(|code| code.trim().parse::<i32>().ok())
    });
    if exit.is_none() {
        eprintln!(
            "xtask: the guest on {} ended without reporting the tests' result (see {})",
            image.release,
            log.display()
        );
    }
    Ok(Outcome {
        passed: exit == Some(0),
        accel,
        log,
    })
}

/// KVM when `/dev/kvm` opens and a probe boot of this kernel comes up under
/// it; TCG otherwise. Some hosts offer a KVM that cannot run an ordinary
/// guest kernel (nested virtualization without hardware support, such as
/// PVM): only booting tells.
fn choose_accel(image: &Image, initrd: &Path) -> Accel {
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        eprintln!(
            "xtask: /dev/kvm cannot be opened here: falling back to TCG, QEMU's emulation, which is 10-30x slower"
        );
        return Accel::Tcg;
    }
    let up = qemu(image, initrd, Accel::Kvm, true)
        .spawn()
        .ok()
        .and_then(|child| {
            stream(child, PROBE_LIMIT, |line| {
                line.contains(UP_MARK).then_some(())
            })
        });
    if up.is_some() {
        return Accel::Kvm;
    }
    eprintln!(
        "xtask: KVM is present but cannot boot kernel {} here (a nested KVM without hardware virtualization, such as PVM, runs only kernels built for it): falling back to TCG, QEMU's emulation, which is 10-30x slower",
        image.release
    );
    Accel::Tcg
}

fn qemu(image: &Image, initrd: &Path, accel: Accel, probe: bool) -> Command {
    let mut cmd = Command::new("qemu-system-x86_64");
    match accel {
        Accel::Kvm => cmd.args(["-accel", "kvm", "-cpu", "host"]),
        // One host thread for all vCPUs: with a thread each, the guest's
        // live code patching (static keys flipped as tracepoints attach)
        // can reach another vCPU half-done and oops it.
        Accel::Tcg => cmd.args(["-accel", "tcg,thread=single", "-cpu", "max"]),
    };
    let mut append = "console=ttyS0 quiet panic=-1 rdinit=/init".to_string();
    if probe {
        append.push_str(" tracer.probe");
    }
    // Emulation runs code 10-30x slower: servers take longer to start.
    append.push_str(match accel {
        Accel::Kvm => " tracer.slowdown=1",
        Accel::Tcg => " tracer.slowdown=10",
    });
    cmd.args([
        "-smp", "2", "-m", "4G", "-display", "none", "-serial", "stdio",
    ])
    .args(["-monitor", "none", "-no-reboot", "-kernel"])
    .arg(&image.vmlinuz)
    .arg("-initrd")
    .arg(initrd)
    .args(["-append", &append])
    .args([
        "-virtfs",
        "local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    cmd
}

/// Feeds the guest's console lines to `seen` until it returns a value, the
/// guest stops, or `limit` passes; the guest is killed in the latter case.
fn stream<T>(
    mut child: Child,
    limit: Duration,
    mut seen: impl FnMut(&str) -> Option<T>,
) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    if let Some(out) = child.stdout.take() {
        std::thread::spawn(move || {
            let mut reader = BufReader::new(out);
            let mut buf = Vec::new();
            while reader.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
                let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                buf.clear();
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    let deadline = Instant::now() + limit;
    let mut found = None;
    while found.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => found = seen(&line),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                eprintln!(
                    "xtask: the guest took over {}s: stopping it",
                    limit.as_secs()
                );
                break;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    // The guest powers itself off after its last line; a stuck one is stopped.
    let stop_by = Instant::now() + Duration::from_secs(20);
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > stop_by {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    found
}
