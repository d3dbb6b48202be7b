//! The kernels tested, fetched from Debian's archive and unpacked under
//! `target/vm`: never installed on the host, whose boot loader they would
//! otherwise join.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::sh;

pub struct Kernel {
    /// What `--kernel` takes.
    pub label: &'static str,
    /// The package name with its varying part as `*`: the newest match is used.
    pattern: &'static str,
}

pub const KERNELS: &[Kernel] = &[
    // Debian 12's own kernel.
    Kernel {
        label: "6.1",
        pattern: "linux-image-6.1.0-*-amd64",
    },
    // Debian 12's newer kernel (from its security archive).
    Kernel {
        label: "6.12",
        pattern: "linux-image-6.12.*+deb12-amd64",
    },
];

/// A kernel unpacked: its image, modules and release name.
pub struct Image {
    pub release: String,
    pub root: PathBuf,
    pub vmlinuz: PathBuf,
}

pub fn choose(which: &str) -> Result<Vec<&'static Kernel>> {
    if which == "all" {
        return Ok(KERNELS.iter().collect());
    }
    match KERNELS.iter().find(|k| k.label == which) {
        Some(k) => Ok(vec![k]),
        None => bail!(
            "no kernel {which}: choose {} or all",
            KERNELS
                .iter()
                .map(|k| k.label)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Downloads and unpacks the newest package of `kernel` (once), with a
/// module index for the initramfs to be built from.
pub fn fetch(kernel: &Kernel, work: &Path) -> Result<Image> {
    let package = newest(kernel)?;
    let root = work.join(&package);
    let release = package.trim_start_matches("linux-image-").to_string();
    let vmlinuz = root.join(format!("boot/vmlinuz-{release}"));
    if !vmlinuz.exists() {
        let debs = work.join("debs");
        fs::create_dir_all(&debs)?;
        sh::run(
            Command::new("apt-get")
                .args(["download", "-q", &package])
                .current_dir(&debs),
        )?;
        let deb = fs::read_dir(&debs)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{package}_")))
            })
            .with_context(|| format!("apt-get download left no {package} package"))?;
        sh::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
        sh::run(Command::new("depmod").arg("-b").arg(&root).arg(&release))?;
        let _ = fs::remove_file(&deb);
    }
    Ok(Image {
        release,
        root,
        vmlinuz,
    })
}

/// The newest package in the archive matching the kernel's pattern.
fn newest(kernel: &Kernel) -> Result<String> {
    let (prefix, suffix) = kernel
        .pattern
        .split_once('*')
        .context("kernel pattern without *")?;
    let search = |update: bool| -> Result<Vec<String>> {
        if update {
            sh::run(Command::new("apt-get").args(["update", "-q"]))?;
        }
        let regex = format!(
            "^{}.*{}$",
            prefix.replace('.', "\\.").replace('+', "\\+"),
            suffix.replace('.', "\\.").replace('+', "\\+")
        );
        let out = sh::output("apt-cache", &["search", "--names-only", &regex]).unwrap_or_default();
        Ok(out
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|name| {
                name.strip_prefix(prefix)
                    .and_then(|rest| rest.strip_suffix(suffix))
                    .is_some_and(|v| v.chars().all(|c| c.is_ascii_digit() || c == '.'))
            })
            .map(str::to_string)
            .collect())
    };
    let mut found = search(false)?;
    if found.is_empty() {
        found = search(true)?;
    }
    found
        .into_iter()
        .max_by_key(|name| version_key(name))
        .with_context(|| {
            format!(
                "Debian's archive has no {} for kernel {}",
                kernel.pattern, kernel.label
            )
        })
}

/// The numbers in a package name, for comparing versions.
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_abi_numbers_sort_last() {
        let mut names = [
            "linux-image-6.1.0-56-amd64",
            "linux-image-6.1.0-9-amd64",
            "linux-image-6.1.0-50-amd64",
        ];
        names.sort_by_key(|n| version_key(n));
        assert_eq!(names[2], "linux-image-6.1.0-56-amd64");
        assert!(
            version_key("linux-image-6.12.117+deb12-amd64")
                > version_key("linux-image-6.12.99+deb12-amd64")
        );
    }

    #[test]
    fn unknown_kernels_are_refused_with_the_choices() {
        let err = choose("5.10")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("6.1, 6.12 or all"), "{err}");
        assert_eq!(choose("all").map_or(0, |k| k.len()), 2);
    }
}
