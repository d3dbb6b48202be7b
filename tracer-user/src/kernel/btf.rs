//! Offsets of the kernel struct fields the kernel programs read, resolved
//! from the running kernel's BTF: never guessed, never hard-coded.

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use btf_rs::{Btf, Type};
use tracer_common::KernelOffsets;

pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// The hidden subcommand that resolves offsets in a child process: parsing
/// the kernel's BTF with btf-rs peaks near 80 MB, which the tracer itself
/// should not carry (or have counted against it) while it runs.
pub const CHILD_COMMAND: &str = "__kernel-offsets";

/// What the kernel programs need from BTF: struct offsets, and the drop
/// reason meaning "accept queue full" (`u32::MAX` if this kernel has none).
pub struct KernelFacts {
    pub offsets: KernelOffsets,
    pub listen_overflow_reason: u32,
}

/// Resolves the offsets in a short-lived child process.
pub fn facts_via_child() -> Result<KernelFacts> {
    let exe = std::env::current_exe().context("finding the tracer's own executable")?;
    let out = std::process::Command::new(exe)
        .arg(CHILD_COMMAND)
        .output()
        .context("resolving kernel struct offsets")?;
    if !out.status.success() {
        bail!(
            "{}",
            String::from_utf8_lossy(&out.stderr)
                .trim()
                .trim_start_matches("tracer: ")
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let reason = text
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{OVERFLOW_REASON} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(u32::MAX);
    Ok(KernelFacts {
        offsets: decode(&text)?,
        listen_overflow_reason: reason,
    })
}

const OVERFLOW_REASON: &str = "listen_overflow_reason";

/// The child's side: prints the offsets, one `name value` per line.
pub fn print_offsets() -> Result<()> {
    let btf = load()?;
    let o = offsets(&btf)?;
    print!("{}", encode(&o));
    if let Some(v) = enum_value(
        &btf,
        "skb_drop_reason",
        "SKB_DROP_REASON_TCP_LISTEN_OVERFLOW",
    ) {
        println!("{OVERFLOW_REASON} {v}");
    }
    Ok(())
}

/// Every offset, by name: what crosses from the child process as text.
macro_rules! each_offset {
    ($o:expr, $f:ident) => {
        [
            $f!($o, pt_regs_di),
            $f!($o, pt_regs_si),
            $f!($o, pt_regs_orig_ax),
            $f!($o, task_pid),
            $f!($o, task_tgid),
            $f!($o, sock_protocol),
            $f!($o, sock_ack_backlog),
            $f!($o, sock_max_ack_backlog),
            $f!($o, sock_drops),
            $f!($o, skc_family),
            $f!($o, skc_num),
            $f!($o, skc_dport),
            $f!($o, skc_rcv_saddr),
            $f!($o, skc_daddr),
            $f!($o, skc_v6_rcv_saddr),
            $f!($o, skc_v6_daddr),
            $f!($o, task_files),
            $f!($o, files_fdt),
            $f!($o, fdtable_fd),
            $f!($o, fdtable_max_fds),
            $f!($o, file_private_data),
            $f!($o, file_inode),
            $f!($o, inode_mode),
            $f!($o, socket_sk),
            $f!($o, task_fsbase),
            $f!($o, mptcp_first),
        ]
    };
}

fn fields(o: &KernelOffsets) -> [(&'static str, u32); 26] {
    macro_rules! read {
        ($o:expr, $n:ident) => {
            (stringify!($n), $o.$n)
        };
    }
    each_offset!(o, read)
}

fn fields_mut(o: &mut KernelOffsets) -> [(&'static str, &mut u32); 26] {
    macro_rules! slot {
        ($o:expr, $n:ident) => {
            (stringify!($n), &mut $o.$n)
        };
    }
    each_offset!(o, slot)
}

fn encode(o: &KernelOffsets) -> String {
    use std::fmt::Write as _;
    fields(o).iter().fold(String::new(), |mut out, (k, v)| {
        let _ = writeln!(out, "{k} {v}");
        out
    })
}

fn decode(text: &str) -> Result<KernelOffsets> {
    let values: std::collections::HashMap<&str, u32> = text
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
        .collect();
    let mut o = KernelOffsets::DEFAULT;
    for (name, slot) in fields_mut(&mut o) {
        *slot = *values
            .get(name)
            .ok_or_else(|| anyhow!("kernel offsets: {name} missing"))?;
    }
    Ok(o)
}

/// Loads this kernel's BTF, or says which feature is missing.
pub fn load() -> Result<Btf> {
    if !Path::new(VMLINUX).exists() {
        bail!(
            "this kernel has no BTF ({VMLINUX}): tracer needs a kernel built with CONFIG_DEBUG_INFO_BTF"
        );
    }
    Btf::from_file(VMLINUX).map_err(|e| anyhow!("reading {VMLINUX}: {e}"))
}

/// Resolves every offset the programs use. Missing optional fields are
/// marked unknown; missing required ones are an error naming the field.
pub fn offsets(btf: &Btf) -> Result<KernelOffsets> {
    let required = |s: &str, f: &str| {
        field_offset(btf, s, f).with_context(|| format!("kernel BTF: struct {s}.{f}"))
    };
    let optional = |s: &str, f: &str| field_offset(btf, s, f).unwrap_or(KernelOffsets::UNKNOWN);
    // `struct sock` starts with its `struct sock_common`, where addresses live.
    let common = required("sock", "__sk_common")?;
    let in_common = |f: &str| required("sock_common", f).map(|o| common + o);
    Ok(KernelOffsets {
        pt_regs_di: required("pt_regs", "di")?,
        pt_regs_si: required("pt_regs", "si")?,
        pt_regs_orig_ax: required("pt_regs", "orig_ax")?,
        task_pid: required("task_struct", "pid")?,
        task_tgid: required("task_struct", "tgid")?,
        sock_protocol: optional("sock", "sk_protocol"),
        sock_ack_backlog: optional("sock", "sk_ack_backlog"),
        sock_max_ack_backlog: optional("sock", "sk_max_ack_backlog"),
        sock_drops: optional("sock", "sk_drops"),
        skc_family: in_common("skc_family")?,
        skc_num: in_common("skc_num")?,
        skc_dport: in_common("skc_dport")?,
        skc_rcv_saddr: in_common("skc_rcv_saddr")?,
        skc_daddr: in_common("skc_daddr")?,
        skc_v6_rcv_saddr: optional("sock_common", "skc_v6_rcv_saddr")
            .checked_add(common)
            .unwrap_or(KernelOffsets::UNKNOWN),
        skc_v6_daddr: optional("sock_common", "skc_v6_daddr")
            .checked_add(common)
            .unwrap_or(KernelOffsets::UNKNOWN),
        task_files: optional("task_struct", "files"),
        files_fdt: optional("files_struct", "fdt"),
        fdtable_fd: optional("fdtable", "fd"),
        fdtable_max_fds: optional("fdtable", "max_fds"),
        file_private_data: optional("file", "private_data"),
        file_inode: optional("file", "f_inode"),
        inode_mode: optional("inode", "i_mode"),
        socket_sk: optional("socket", "sk"),
        task_fsbase: required("task_struct", "thread")? + required("thread_struct", "fsbase")?,
        mptcp_first: optional("mptcp_sock", "first"),
    })
}

/// Value of an enumerator in this kernel's BTF (`SKB_DROP_REASON_TCP_LISTEN_OVERFLOW`).
pub fn enum_value(btf: &Btf, enumeration: &str, name: &str) -> Option<u32> {
    btf.resolve_types_by_name(enumeration)
        .ok()?
        .into_iter()
        .find_map(|t| match t {
            Type::Enum(e) => e
                .members
                .iter()
                .find(|m| btf.resolve_name(*m).is_ok_and(|n| n == name))
                .map(btf_rs::EnumMember::val),
            _ => None,
        })
}

/// Byte offset of `field` in `struct name`, looking through anonymous
/// structs and unions. Bitfields are refused: they cannot be read as bytes.
pub fn field_offset(btf: &Btf, name: &str, field: &str) -> Result<u32> {
    let types = btf
        .resolve_types_by_name(name)
        .map_err(|e| anyhow!("no type {name}: {e}"))?;
    let st = types
        .into_iter()
        .find_map(|t| match t {
            Type::Struct(s) => Some(s),
            _ => None,
        })
        .ok_or_else(|| anyhow!("{name} is not a struct"))?;
    find_in(btf, &st, field, 0)?.ok_or_else(|| anyhow!("struct {name} has no field {field}"))
}

fn find_in(btf: &Btf, st: &btf_rs::Struct, field: &str, base_bits: u32) -> Result<Option<u32>> {
    for m in &st.members {
        let name = btf.resolve_name(m).unwrap_or_default();
        let bits = base_bits + m.bit_offset();
        if name == field {
            if m.bitfield_size().is_some_and(|s| s != 0) || !bits.is_multiple_of(8) {
                bail!("field {field} is a bitfield");
            }
            return Ok(Some(bits / 8));
        }
        if name.is_empty() {
            let (Type::Struct(inner) | Type::Union(inner)) =
                btf.resolve_chained_type(m).map_err(|e| anyhow!("{e}"))?
            else {
                continue;
            };
            if let Some(off) = find_in(btf, &inner, field, bits)? {
                return Ok(Some(off));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_survive_the_trip_from_the_child() {
        let mut o = KernelOffsets::DEFAULT;
        o.task_pid = 2468;
        o.skc_num = 14;
        let back = decode(&encode(&o)).expect("decode");
        assert_eq!(fields(&back), fields(&o));
        assert!(
            decode("pt_regs_di 112\n").is_err(),
            "missing fields are an error"
        );
    }

    #[test]
    fn resolves_this_kernels_offsets() {
        if !Path::new(VMLINUX).exists() {
            eprintln!("no {VMLINUX} here: nothing to resolve");
            return;
        }
        let btf = load().expect("btf");
        let o = offsets(&btf).expect("offsets");
        // The x86_64 pt_regs layout is uapi: BTF must agree with it.
        assert_eq!(
            (o.pt_regs_di, o.pt_regs_si, o.pt_regs_orig_ax),
            (112, 104, 120)
        );
        assert!(o.task_pid > 0 && o.task_pid < 8192);
        assert_eq!(
            o.task_tgid,
            o.task_pid + 4,
            "pid_t pid; pid_t tgid; are neighbours"
        );
        assert_eq!(
            o.skc_dport + 2,
            o.skc_num,
            "skc_dport and skc_num share a 32-bit word"
        );
        assert_eq!(o.skc_daddr, 0, "skc_daddr opens sock_common");
        // sock_common sits at the start of sock: the backlog fields are further in.
        assert!(o.sock_ack_backlog > 16 && o.sock_ack_backlog != KernelOffsets::UNKNOWN);
        assert!(field_offset(&btf, "sock", "no_such_field").is_err());
        // Found through the anonymous unions of sock_common.
        assert!(field_offset(&btf, "sock_common", "skc_daddr").is_ok());
        assert!(o.socket_sk != KernelOffsets::UNKNOWN && o.fdtable_fd != KernelOffsets::UNKNOWN);
        let reason = enum_value(
            &btf,
            "skb_drop_reason",
            "SKB_DROP_REASON_TCP_LISTEN_OVERFLOW",
        );
        assert!(
            reason.is_some_and(|r| r > 0),
            "this kernel names the accept-queue overflow drop"
        );
    }
}
