//! Project tasks: `cargo xtask setup | build | test | demo`.

mod bench;
mod cpu_account;
mod demo;
mod dist;
mod go_layouts;
mod layout;
mod setup;
mod sh;
mod soak;
mod vm;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "Set-up, build, test and demo of tracer")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what is missing: rust-src, bpf-linker 0.10.0, Go, wrk, hey, nginx, bpftrace, perf.
    Setup,
    /// Set up, then build the tracer (release) and the scenario servers.
    Build,
    /// Set up, build, run the unit tests, then the integration tests (as
    /// root), then (without a filter) the kernel-dependent ones in VMs of
    /// Debian's 6.1 and 6.12 kernels.
    Test {
        /// Only run tests whose name contains this.
        filter: Option<String>,
    },
    /// Trace a bundled scenario under load and show its chain and flame graphs.
    Demo,
    /// Run one scenario (or list them): servers, load, trace, diagnosis,
    /// and whether the diagnosis matches the expected one.
    Scenario { name: Option<String> },
    /// Build one static binary (x86_64 musl, the eBPF object embedded) and its
    /// SHA-256 into dist/.
    Dist,
    /// Boot Debian's kernels (6.1, 6.12) in QEMU and run the kernel-dependent
    /// integration tests inside each.
    VmTest {
        /// 6.1, 6.12 or all.
        #[arg(long, default_value = "all")]
        kernel: String,
        /// Only run tests whose name contains this.
        filter: Option<String>,
    },
    /// Regenerate the table of Go runtime layouts from each Go toolchain's DWARF.
    GoLayouts,
    /// Measure what tracing costs a saturated server, against bpftrace and perf.
    Bench {
        /// Rounds; each runs every configuration once.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Seconds of load per run.
        #[arg(long, default_value_t = 5)]
        seconds: u32,
        /// Keep-alive connections held open in the scale run.
        #[arg(long, default_value_t = 10_000)]
        held: u64,
        /// Connections opened and closed in the scale run.
        #[arg(long, default_value_t = 100_000)]
        churn: u64,
        /// Only the scale run.
        #[arg(long)]
        scale_only: bool,
        /// Minutes of the daemon soak run.
        #[arg(long, default_value_t = 10)]
        soak_minutes: u32,
        /// Only the daemon soak run.
        #[arg(long)]
        soak_only: bool,
    },
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Setup => setup::run(),
        Task::Build => build(),
        Task::Test { filter } => test(filter.as_deref()),
        Task::Dist => dist::run().map(|_| ()),
        Task::VmTest { kernel, filter } => {
            let kernels = vm::choose(&kernel)?;
            build()?;
            vm::run(&kernels, filter.as_deref())
        }
        Task::GoLayouts => {
            build()?;
            go_layouts::run()
        }
        Task::Demo => {
            build()?;
            demo::run(demo::DEFAULT)
        }
        Task::Scenario { name: None } => {
            for name in scenarios::catalog::SCENARIOS {
                let e = scenarios::catalog::expected(name)?;
                println!("{name:<24} {}", e.summary);
            }
            Ok(())
        }
        Task::Scenario { name: Some(name) } => {
            build()?;
            demo::run(&name)
        }
        Task::Bench {
            rounds,
            seconds,
            held,
            churn,
            scale_only,
            soak_minutes,
            soak_only,
        } => {
            build()?;
            if !sh::is_root() {
                anyhow::bail!("the bench loads eBPF programs: run cargo xtask bench as root");
            }
            bench::run(&bench::Plan {
                rounds: if scale_only || soak_only { 0 } else { rounds },
                seconds,
                held,
                churn,
                scale: !soak_only,
                soak_minutes: if scale_only { 0 } else { soak_minutes },
            })
        }
    }
}

fn build() -> Result<()> {
    setup::run()?;
    sh::cargo(&["build", "--release", "-p", "tracer-user"])?;
    for name in scenarios::catalog::go_programs() {
        scenarios::go_binary(name)?;
    }
    Ok(())
}

fn test(filter: Option<&str>) -> Result<()> {
    let started = std::time::Instant::now();
    // The core first, before setup: it must build and pass with no eBPF
    // toolchain (no bpf-linker, no nightly rust-src), as on a fresh machine.
    let mut core = vec!["test", "--release", "-p", "tracer-core"];
    if let Some(f) = filter {
        core.extend(["--", f]);
    }
    sh::cargo(&core)?;
    build()?;
    let mut unit = vec![
        "test",
        "--release",
        "--workspace",
        "--exclude",
        "tracer-ebpf",
        "--exclude",
        "tracer-core",
    ];
    let mut integration = vec![
        "test",
        "--release",
        "-p",
        "scenarios",
        "--test",
        "*",
        "--",
        "--include-ignored",
        "--test-threads=1",
    ];
    if let Some(f) = filter {
        unit.extend(["--", f]);
        integration.push(f);
    }
    sh::cargo(&unit)?;
    if !sh::is_root() {
        anyhow::bail!("the integration tests load eBPF programs: run cargo xtask test as root");
    }
    sh::cargo(&integration)?;
    eprintln!(
        "xtask: host tests passed in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    // The kernels this machine does not run, each in a VM: a full run only
    // (a filter picks tests to try, not kernels to prove).
    if filter.is_none() {
        if vm::hardware_kvm() {
            vm::run(&vm::choose("all")?, None)?;
        } else {
            eprintln!(
                "xtask: no hardware KVM here (kvm_intel or kvm_amd): the kernel VMs are left to cargo xtask vm-test, which runs them under emulation (about 35 minutes)"
            );
        }
    }
    eprintln!(
        "xtask: all tests passed in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
