//! Builds the kernel programs (tracer-ebpf) for the BPF target and leaves the
//! object in OUT_DIR, where `include_bytes_aligned!` embeds it in the binary.

fn main() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow::anyhow!("tracer-user has no parent directory"))?
        .join("tracer-ebpf");
    let root = root
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("non-UTF-8 path {}", root.display()))?;
    // Stable's rust-src builds BPF too when a machine has no nightly (RUSTC_BOOTSTRAP=1).
    let toolchain = match std::env::var("TRACER_EBPF_TOOLCHAIN") {
        Ok(name) if !name.is_empty() => {
            aya_build::Toolchain::Custom(Box::leak(name.into_boxed_str()))
        }
        _ => aya_build::Toolchain::Nightly,
    };
    println!("cargo:rerun-if-env-changed=TRACER_EBPF_TOOLCHAIN");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "tracer-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        toolchain,
    )
}
