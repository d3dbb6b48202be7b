//! `cargo xtask vm-test`: Debian's own kernels booted in QEMU, with the
//! kernel-dependent integration tests run inside.
//!
//! The guest's root file system is this machine's, shared read-only over
//! virtio-9p under a tmpfs overlay: the tracer, the test binaries, Go,
//! Python, wrk and hey are the very files the host tests use, and nothing
//! is copied. A small initramfs (static busybox and the 9p and overlay
//! modules of the kernel under test) mounts it and hands over to a script
//! that runs the tests and reports their exit code on the console.

mod boot;
mod initramfs;
mod kernels;

use std::{path::PathBuf, time::Instant};

use anyhow::{Result, bail};
use scenarios::workspace_root;

use crate::sh;
pub use kernels::Kernel;

/// The integration test targets run in each guest: those whose outcome
/// hangs on the kernel's hooks, struct layouts and drop reasons.
pub const IN_VM: &[&str] = &["kernels", "seed_scenarios", "go_chain", "faults"];

/// Tests left out on an emulated CPU, and why: their premise is a load
/// rate that emulation, 10-30x slower, cannot reach. (target, test, why)
pub const NOT_UNDER_EMULATION: &[(&str, &str, &str)] = &[
    (
        "faults",
        "lost_records_invent_no_requests",
        "fills the ring buffer with two seconds of wrk while the tracer is stopped",
    ),
    (
        "faults",
        "over_budget_a_share_of_connections_is_traced_and_counts_hold",
        "needs a load heavy enough to put the tracer over its overhead budget",
    ),
];

/// The kernels named by `--kernel` (`6.1`, `6.12` or `all`), checked
/// before anything is built.
pub fn choose(kernel: &str) -> Result<Vec<&'static Kernel>> {
    if !sh::is_root() {
        bail!(
            "the tests in the VM load eBPF programs, and setting up installs packages: run cargo xtask vm-test as root"
        );
    }
    kernels::choose(kernel)
}

/// Whether this host has hardware virtualization (KVM's Intel or AMD
/// module), under which the VMs run at full speed; other KVMs (nested PVM)
/// cannot boot Debian's kernels, and emulation is too slow for every test run.
pub fn hardware_kvm() -> bool {
    ["kvm_intel", "kvm_amd"]
        .iter()
        .any(|m| std::path::Path::new("/sys/module").join(m).exists())
        && std::path::Path::new("/dev/kvm").exists()
}

/// Boots each kernel and runs [`IN_VM`] in it.
pub fn run(chosen: &[&Kernel], filter: Option<&str>) -> Result<()> {
    crate::setup::vm_packages()?;
    let tests = test_binaries()?;
    let work = workspace_root().join("target/vm");
    let mut failed = Vec::new();
    for &k in chosen {
        let started = Instant::now();
        let image = kernels::fetch(k, &work)?;
        let initrd = initramfs::build(&image, &tests, filter, &work)?;
        let outcome = boot::run(&image, &initrd, &work)?;
        eprintln!(
            "xtask: kernel {} ({}): {} in {:.0}s under {}",
            k.label,
            image.release,
            if outcome.passed { "passed" } else { "FAILED" },
            started.elapsed().as_secs_f64(),
            outcome.accel
        );
        if !outcome.passed {
            failed.push(format!("{} ({})", k.label, outcome.log.display()));
        }
    }
    if !failed.is_empty() {
        bail!("tests failed in the VM on kernel {}", failed.join(", "));
    }
    Ok(())
}

/// The test executables of [`IN_VM`], built for the host.
fn test_binaries() -> Result<Vec<(&'static str, PathBuf)>> {
    let mut args = vec![
        "test",
        "--release",
        "-p",
        "scenarios",
        "--no-run",
        "--message-format=json",
    ];
    for target in IN_VM {
        args.extend(["--test", target]);
    }
    let json = sh::cargo_output(&args)?;
    let mut found = Vec::new();
    for line in json.lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(name), Some(exe)) = (msg["target"]["name"].as_str(), msg["executable"].as_str())
        else {
            continue;
        };
        if let Some(target) = IN_VM.iter().find(|t| **t == name) {
            found.push((*target, PathBuf::from(exe)));
        }
    }
    if found.len() != IN_VM.len() {
        bail!(
            "cargo built {} of the {} test binaries the VM runs",
            found.len(),
            IN_VM.len()
        );
    }
    Ok(found)
}
