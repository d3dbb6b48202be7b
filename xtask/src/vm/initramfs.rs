//! The guest's initramfs: static busybox, the modules that reach the host's
//! files (virtio, 9p, overlay) decompressed for busybox's insmod, `/init`
//! that mounts the host's root under a tmpfs overlay, and the script run
//! there.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};
use scenarios::workspace_root;

use super::{NOT_UNDER_EMULATION, kernels::Image};

/// Modules the guest needs before it can see the host's files; a kernel
/// that builds one in simply lists no file for it.
const MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p", "overlay"];

/// The line the guest prints last: the tests' exit code.
pub const EXIT_MARK: &str = "tracer-vm: exit ";
/// The line the guest prints once its init runs: it booted.
pub const UP_MARK: &str = "tracer-vm: up";

/// Builds `target/vm/<release>.initrd` running `tests` (filtered) in the guest.
pub fn build(
    image: &Image,
    tests: &[(&str, PathBuf)],
    filter: Option<&str>,
    work: &Path,
) -> Result<PathBuf> {
    let dir = work.join(format!("{}.initrd.d", image.release));
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    fs::create_dir_all(dir.join("bin"))?;
    fs::create_dir_all(dir.join("modules"))?;
    fs::copy("/bin/busybox", dir.join("bin/busybox")).context("copying /bin/busybox")?;
    let mut order = String::new();
    for module in module_files(image)? {
        let name = decompress(&module, &dir.join("modules"))?;
        let _ = writeln!(order, "{name}");
    }
    fs::write(dir.join("modules/order"), order)?;
    write_exec(&dir.join("init"), INIT)?;
    write_exec(&dir.join("stage2"), &stage2(tests, filter))?;
    let out = work.join(format!("{}.initrd", image.release));
    let archive = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "find . | cpio -o -H newc --quiet | gzip -1 > '{}'",
            out.display()
        ))
        .current_dir(&dir)
        .status()
        .context("running cpio")?;
    if !archive.success() {
        bail!("packing the initramfs failed: {archive}");
    }
    Ok(out)
}

/// The module files to load, dependencies first, from the unpacked
/// kernel's module index.
fn module_files(image: &Image) -> Result<Vec<PathBuf>> {
    let out = Command::new("modprobe")
        .arg("-d")
        .arg(&image.root)
        .args(["-S", &image.release, "--show-depends", "-a"])
        .args(MODULES)
        .stderr(Stdio::inherit())
        .output()
        .context("running modprobe --show-depends")?;
    if !out.status.success() {
        bail!(
            "modprobe cannot resolve {} for {}",
            MODULES.join(" "),
            image.release
        );
    }
    let mut files: Vec<PathBuf> = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(path) = line.strip_prefix("insmod ") {
            let path = PathBuf::from(path.trim());
            if !files.contains(&path) {
                files.push(path);
            }
        }
    }
    Ok(files)
}

/// Copies a module into `dir` uncompressed; returns its file name.
fn decompress(module: &Path, dir: &Path) -> Result<String> {
    let file = module
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("module path {}", module.display()))?;
    let (name, tool) = match file.rsplit_once('.') {
        Some((stem, "xz")) => (stem, Some("xz")),
        Some((stem, "zst")) => (stem, Some("zstd")),
        _ => (file, None),
    };
    let target = dir.join(name);
    match tool {
        None => {
            fs::copy(module, &target)?;
        }
        Some(tool) => {
            let out = Command::new(tool)
                .args(["-dc"])
                .arg(module)
                .output()
                .with_context(|| format!("running {tool}"))?;
            if !out.status.success() {
                bail!("{tool} could not decompress {}", module.display());
            }
            fs::write(&target, out.stdout)?;
        }
    }
    Ok(name.to_string())
}

fn write_exec(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::write(path, text)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// Mounts the host's root read-only under a tmpfs overlay and switches to
/// it. `tracer.probe` on the command line stops right after booting: how
/// the host learns whether this accelerator can run the kernel at all.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /host /rw /root
mount -t proc proc /proc
mount -t devtmpfs dev /dev
echo "tracer-vm: up"
if grep -q tracer.probe /proc/cmdline; then echo o > /proc/sysrq-trigger; sleep 60; fi
for m in $(cat /modules/order); do insmod /modules/$m || echo "tracer-vm: insmod $m failed"; done
mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288,ro,cache=loose host /host || echo "tracer-vm: cannot mount the host's files"
mount -t tmpfs -o size=75% tmpfs /rw
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work /root || echo "tracer-vm: overlay failed"
cp /stage2 /root/tracer-vm-stage2
umount /proc
exec switch_root /root /bin/sh /tracer-vm-stage2
echo "tracer-vm: exit 125"
echo o > /proc/sysrq-trigger
"#;

/// The script run on the host's files: fresh kernel file systems, the
/// loopback interface, then each test binary in turn. `/tmp` stays the
/// host's (written to the overlay): a checkout may live there.
/// `tracer.slowdown=N` on the kernel command line stretches the tests'
/// waits (not their tolerances).
fn stage2(tests: &[(&str, PathBuf)], filter: Option<&str>) -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let mut s = format!(
        r#"mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
ip link set lo up
ulimit -n 1048576
export PATH='{path}' HOME='{home}'
# How much slower than the host the guest runs: the tests' waits stretch.
export TRACER_TEST_SLOWDOWN=$(sed -n 's/.*tracer.slowdown=\([0-9]*\).*/\1/p' /proc/cmdline)
echo "tracer-vm: kernel $(uname -r)"
cd '{}'
status=0
"#,
        workspace_root().join("scenarios").display()
    );
    let filter = filter.map(|f| format!(" '{f}'")).unwrap_or_default();
    for (target, test) in tests {
        let skips = NOT_UNDER_EMULATION
            .iter()
            .filter(|(t, ..)| t == target)
            .fold(String::new(), |mut out, (_, name, _)| {
                let _ = write!(out, " --skip {name}");
                out
            });
        if !skips.is_empty() {
            let _ = writeln!(
                s,
                "skip=; [ \"$TRACER_TEST_SLOWDOWN\" -gt 1 ] && skip='{skips}' && echo \"tracer-vm: under emulation, {target} runs without{skips}\""
            );
        }
        let skip = if skips.is_empty() { "" } else { " $skip" };
        let _ = writeln!(
            s,
            "'{}' --include-ignored --test-threads=1{filter}{skip} || status=1",
            test.display()
        );
    }
    s.push_str("echo \"tracer-vm: exit $status\"\necho o > /proc/sysrq-trigger\nsleep 60\n");
    s
}
