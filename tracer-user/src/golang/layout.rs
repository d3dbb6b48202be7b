//! Where the Go runtime keeps what the goroutine sampler reads: the fields of
//! `runtime.g` and `runtime.gobuf`, and the names of the wait reasons.
//!
//! From the binary itself when it has DWARF and a symbol table (the offsets
//! from DWARF, the names from `runtime.waitReasonStrings`); else from the
//! table of known Go versions (`known.rs`), chosen by the version in the
//! binary's build info.

use std::path::Path;

use gimli::{AttributeValue, EndianSlice, LittleEndian};
use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol, read::ReadCache};

use super::{buildinfo, known};

/// Offsets and names for one Go binary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The Go version that built it (`go1.26.1`), when known.
    pub version: Option<String>,
    /// Offsets in `runtime.g`.
    pub goid: u32,
    pub atomicstatus: u32,
    pub waitreason: u32,
    pub sched: u32,
    /// Offsets in `runtime.gobuf`.
    pub gobuf_sp: u32,
    pub gobuf_pc: u32,
    pub gobuf_bp: u32,
    /// `runtime.waitReasonStrings`: a wait reason's name by its value.
    pub wait_reasons: Vec<String>,
    /// Where the layout came from: `DWARF` or `table`.
    pub source: &'static str,
}

/// Why a Go binary's goroutines cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("cannot read {0}")]
    Unreadable(String),
    #[error("not a Go program")]
    NotGo,
    #[error(
        "Go version {0} is not among the known layouts (Go 1.19, 1.21 to 1.27) and the binary has no DWARF: goroutine waits are not sampled"
    )]
    UnknownVersion(String),
}

impl Layout {
    /// The layout of the Go program at `path`.
    pub fn of(path: &Path) -> Result<Layout, LayoutError> {
        let unreadable = || LayoutError::Unreadable(path.display().to_string());
        // Read on demand: a Go server's binary can be larger than the
        // tracer's whole working set.
        let file = std::fs::File::open(path).map_err(|_| unreadable())?;
        let cache = ReadCache::new(file);
        let elf = object::File::parse(&cache).map_err(|_| unreadable())?;
        let version = buildinfo::version(&elf);
        if version.is_none() && elf.section_by_name(".gopclntab").is_none() {
            return Err(LayoutError::NotGo);
        }
        if let Some(layout) = from_dwarf(&elf) {
            return Ok(Layout { version, ..layout });
        }
        let version = version.ok_or(LayoutError::NotGo)?;
        known::layout(&version).ok_or(LayoutError::UnknownVersion(version))
    }
}

type Elf<'a> = object::File<'a, &'a ReadCache<std::fs::File>>;

/// The layout from the binary's DWARF and symbol table.
fn from_dwarf(elf: &Elf) -> Option<Layout> {
    let g = struct_members(elf, "runtime.g")?;
    let gobuf = struct_members(elf, "runtime.gobuf")?;
    let field = |members: &[(String, u32)], name: &str| {
        members
            .iter()
            .find(|(n, _)| n == name)
            .map(|&(_, offset)| offset)
    };
    Some(Layout {
        version: None,
        goid: field(&g, "goid")?,
        atomicstatus: field(&g, "atomicstatus")?,
        waitreason: field(&g, "waitreason")?,
        sched: field(&g, "sched")?,
        gobuf_sp: field(&gobuf, "sp")?,
        gobuf_pc: field(&gobuf, "pc")?,
        gobuf_bp: field(&gobuf, "bp")?,
        wait_reasons: wait_reason_strings(elf)?,
        source: "DWARF",
    })
}

type Reader<'a> = EndianSlice<'a, LittleEndian>;

/// (name, offset) of each member of the struct `name`, from DWARF.
fn struct_members(elf: &Elf, name: &str) -> Option<Vec<(String, u32)>> {
    let load = |id: gimli::SectionId| -> Result<std::borrow::Cow<[u8]>, gimli::Error> {
        Ok(elf
            .section_by_name(id.name())
            .and_then(|s| s.uncompressed_data().ok())
            .unwrap_or_default())
    };
    let sections = gimli::DwarfSections::load(load).ok()?;
    let dwarf = sections.borrow(|section| EndianSlice::new(section, LittleEndian));
    let mut units = dwarf.units();
    while let Ok(Some(header)) = units.next() {
        let Ok(unit) = dwarf.unit(header) else {
            continue;
        };
        let mut entries = unit.entries();
        while let Ok(Some(entry)) = entries.next_dfs() {
            if entry.tag() != gimli::DW_TAG_structure_type
                || attr_name(&dwarf, &unit, entry).as_deref() != Some(name)
            {
                continue;
            }
            let mut members = Vec::new();
            let mut tree = unit.entries_tree(Some(entry.offset())).ok()?;
            let root = tree.root().ok()?;
            let mut children = root.children();
            while let Ok(Some(child)) = children.next() {
                let e = child.entry();
                if e.tag() != gimli::DW_TAG_member {
                    continue;
                }
                let offset = match e.attr_value(gimli::DW_AT_data_member_location) {
                    Some(AttributeValue::Udata(v)) => u32::try_from(v).ok(),
                    Some(AttributeValue::Data1(v)) => Some(u32::from(v)),
                    Some(AttributeValue::Data2(v)) => Some(u32::from(v)),
                    Some(AttributeValue::Data4(v)) => Some(v),
                    _ => None,
                };
                if let (Some(n), Some(o)) = (attr_name(&dwarf, &unit, e), offset) {
                    members.push((n, o));
                }
            }
            return (!members.is_empty()).then_some(members);
        }
    }
    None
}

fn attr_name(
    dwarf: &gimli::Dwarf<Reader>,
    unit: &gimli::Unit<Reader>,
    entry: &gimli::DebuggingInformationEntry<Reader>,
) -> Option<String> {
    let value = entry.attr_value(gimli::DW_AT_name)?;
    let s = dwarf.attr_string(unit, value).ok()?;
    Some(s.to_string_lossy().into_owned())
}

/// `runtime.waitReasonStrings`, an array of Go strings, read from the file.
fn wait_reason_strings(elf: &Elf) -> Option<Vec<String>> {
    let sym = elf
        .symbols()
        .find(|s| s.name() == Ok("runtime.waitReasonStrings"))?;
    let raw = read_vaddr(elf, sym.address(), sym.size())?;
    raw.chunks_exact(16)
        .map(|c| {
            let ptr = u64::from_le_bytes(c[0..8].try_into().ok()?);
            let len = u64::from_le_bytes(c[8..16].try_into().ok()?);
            if len == 0 {
                return Some(String::new());
            }
            let bytes = read_vaddr(elf, ptr, len)?;
            Some(String::from_utf8_lossy(bytes).into_owned())
        })
        .collect()
}

/// `size` bytes at virtual address `addr` of the file's loaded segments.
fn read_vaddr<'a>(elf: &Elf<'a>, addr: u64, size: u64) -> Option<&'a [u8]> {
    elf.segments().find_map(|seg| {
        let start = seg.address();
        let (_, file_size) = seg.file_range();
        if addr < start || addr + size > start + file_size {
            return None;
        }
        seg.data_range(addr, size).ok().flatten()
    })
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    /// Builds a program with `go`, with DWARF and stripped, and checks that
    /// the layout read from DWARF is the known table's row for its version,
    /// and that the stripped build gets that row.
    fn check_toolchain(go: &Path, tag: &str) {
        let dir = std::env::temp_dir().join(format!("tracer-layout-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(
            dir.join("main.go"),
            "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(1) }\n",
        )
        .expect("main.go");
        std::fs::write(dir.join("go.mod"), "module layout\n\ngo 1.19\n").expect("go.mod");
        let build = |out: &str, flags: &[&str]| {
            let status = Command::new(go)
                .arg("build")
                .args(flags)
                .args(["-o", out, "."])
                .current_dir(&dir)
                .env("GOFLAGS", "-buildvcs=false")
                .env("GOTOOLCHAIN", "local")
                .status()
                .expect("go (cargo xtask setup installs it)");
            assert!(status.success(), "go build {flags:?}");
            dir.join(out)
        };
        let full = Layout::of(&build("full", &[])).expect("layout from DWARF");
        assert_eq!(full.source, "DWARF");
        let version = full.version.clone().expect("build info");
        let table = known::layout(&version).expect("a known version");
        assert_eq!(
            Layout {
                source: "table",
                ..full.clone()
            },
            table,
            "{version}: the table's row is what DWARF says"
        );
        assert!(
            full.wait_reasons.iter().any(|r| r == "chan receive"),
            "{full:?}"
        );
        let stripped = Layout::of(&build("stripped", &["-ldflags=-s -w"])).expect("layout");
        assert_eq!(stripped, table, "{version}: stripped builds use the table");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn go_1_19_layout_matches_its_dwarf() {
        check_toolchain(Path::new("go"), "debian");
    }

    #[test]
    fn newest_go_layout_matches_its_dwarf() {
        let go = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tools/go1.27/bin/go");
        check_toolchain(&go, "newest");
    }

    #[test]
    fn other_programs_are_not_go() {
        assert!(matches!(
            Layout::of(&std::env::current_exe().expect("exe")),
            Err(LayoutError::NotGo)
        ));
    }
}
