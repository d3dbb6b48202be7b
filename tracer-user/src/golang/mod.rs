//! Reading Go programs from outside: the version that built a binary
//! ([`buildinfo`]), where its runtime keeps a goroutine's state, wait
//! reason and saved registers ([`layout`], from DWARF or the table of
//! [`known`] versions), and the [`sampler`] that reads them from outside.

pub mod buildinfo;
pub mod known;
pub mod layout;
pub mod sampler;

/// `tracer __go-layout BINARY`: the layout of a Go binary with DWARF, as a
/// row of the known-versions table (`cargo xtask go-layouts` runs it for
/// each Go toolchain).
pub fn print_layout(path: &std::path::Path) -> anyhow::Result<()> {
    let l = layout::Layout::of(path)?;
    let version =
        l.version.as_deref().and_then(known::minor).ok_or_else(|| {
            anyhow::anyhow!("{}: no Go version in its build info", path.display())
        })?;
    println!("    Known {{");
    println!("        minor: {version:?},");
    println!(
        "        g: [{}, {}, {}, {}],",
        l.goid, l.atomicstatus, l.waitreason, l.sched
    );
    println!(
        "        gobuf: [{}, {}, {}],",
        l.gobuf_sp, l.gobuf_pc, l.gobuf_bp
    );
    println!("        wait_reasons: &[");
    for r in &l.wait_reasons {
        println!("            {r:?},");
    }
    println!("        ],");
    println!("    }},");
    Ok(())
}
