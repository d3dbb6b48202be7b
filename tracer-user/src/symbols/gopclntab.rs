//! Function names of Go programs from `.gopclntab`, the table the Go
//! runtime itself needs for tracebacks: stripping (`-ldflags=-s -w`, or
//! `strip`) removes `.symtab` and DWARF but never this, so stripped Go
//! binaries (Caddy, Traefik, most released Go servers) still name their
//! frames.
//!
//! The layout is Go 1.18's and later (magic `0xfffffff0`, `0xfffffff1` from
//! 1.20): a header, a function table of (entry offset, `_func` offset)
//! pairs sorted by entry, and the names. Only the function table is kept in
//! memory (8 bytes a function); a name is read from the file when asked for
//! (the symbolizer caches names per address).

use std::{fs::File, os::unix::fs::FileExt, path::Path};

use object::{Object, ObjectSection, ObjectSegment, read::ReadCache};

/// Go 1.18 and 1.19.
const MAGIC_118: u32 = 0xffff_fff0;
/// Go 1.20 and later.
const MAGIC_120: u32 = 0xffff_fff1;
/// A name longer than this is cut (Go's generic instantiations get long).
const NAME_MAX: usize = 1024;

/// The `.gopclntab` of one executable.
pub struct GoTable {
    file: File,
    /// File offset of the section.
    section: u64,
    /// Offsets inside the section, from its header.
    funcnames: u64,
    cutab: u64,
    filetab: u64,
    pctab: u64,
    pcln: u64,
    /// Virtual address that function entry offsets count from.
    text_start: u64,
    /// (entry offset, `_func` offset), sorted by entry; the last entry
    /// marks the end of the last function.
    functab: Vec<(u32, u32)>,
    /// (file offset, size, virtual address) of each loaded segment.
    segments: Vec<(u64, u64, u64)>,
}

impl GoTable {
    /// The table of the executable at `path`, if it is a Go program built
    /// by Go 1.18 or later.
    pub fn open(path: &Path) -> Option<GoTable> {
        let file = File::open(path).ok()?;
        let cache = ReadCache::new(&file);
        let elf = object::File::parse(&cache).ok()?;
        let section = elf.section_by_name(".gopclntab")?;
        let (offset, _) = section.file_range()?;
        let text = elf.section_by_name(".text").map(|s| s.address());
        let segments = elf
            .segments()
            .filter_map(|s| {
                let (off, size) = s.file_range();
                (size > 0).then(|| (off, size, s.address()))
            })
            .collect();
        drop(elf);
        drop(cache);
        let mut header = [0u8; 72];
        file.read_exact_at(&mut header, offset).ok()?;
        let magic = u32::from_le_bytes(header[0..4].try_into().ok()?);
        // 1-byte instructions (x86) and 8-byte pointers only.
        if !(magic == MAGIC_118 || magic == MAGIC_120) || header[6] != 1 || header[7] != 8 {
            return None;
        }
        let word = |i: usize| -> Option<u64> {
            Some(u64::from_le_bytes(
                header[8 + 8 * i..16 + 8 * i].try_into().ok()?,
            ))
        };
        let nfunc = usize::try_from(word(0)?).ok()?;
        // A PIE's header holds 0 here until relocated: the text section starts there.
        let text_start = match word(2)? {
            0 => text?,
            t => t,
        };
        let (funcnames, cutab, filetab, pctab, pcln) =
            (word(3)?, word(4)?, word(5)?, word(6)?, word(7)?);
        let mut raw = vec![0u8; (nfunc + 1).checked_mul(8)?];
        file.read_exact_at(&mut raw, offset + pcln).ok()?;
        let functab = raw
            .chunks_exact(8)
            .map(|c| {
                let entry = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                let func = u32::from_le_bytes([c[4], c[5], c[6], c[7]]);
                (entry, func)
            })
            .collect();
        Some(GoTable {
            file,
            section: offset,
            funcnames,
            cutab,
            filetab,
            pctab,
            pcln,
            text_start,
            functab,
            segments,
        })
    }

    /// The virtual address of file offset `offset` of the executable.
    fn vaddr(&self, offset: u64) -> Option<u64> {
        let &(seg_off, _, vaddr) = self
            .segments
            .iter()
            .find(|&&(off, size, _)| offset >= off && offset < off + size)?;
        Some(offset - seg_off + vaddr)
    }

    /// The function at file offset `offset` of the executable.
    pub fn name_at_file_offset(&self, offset: u64) -> Option<String> {
        self.name_at(self.vaddr(offset)?)
    }

    /// The source line of the call that return address `ret` (a file
    /// offset) returns from: `mutex-contention/main.go:27`. `None` when the
    /// call sits in code inlined from another file (`sync.(*Mutex).Lock`
    /// inlined into the caller): the caller's own line would need the
    /// inline tree, and the inlined file's line is not the caller's.
    pub fn call_site_at_file_offset(&self, ret: u64) -> Option<String> {
        let call = self.vaddr(ret)?.checked_sub(1)?;
        let (file, line) = self.line_at(call)?;
        let (_, entry) = self.func_at(call)?;
        let (own_file, _) = self.line_at(self.text_start + u64::from(entry))?;
        if file != own_file {
            return None;
        }
        // The last two parts of the path say which file without its whole build path.
        let mut parts: Vec<&str> = file.rsplitn(3, '/').take(2).collect();
        parts.reverse();
        Some(format!("{}:{line}", parts.join("/")))
    }

    /// The `_func` record of the function at `addr`, and its entry offset.
    fn func_at(&self, addr: u64) -> Option<(u64, u32)> {
        let off = u32::try_from(addr.checked_sub(self.text_start)?).ok()?;
        let (last, funcs) = self.functab.split_last()?;
        if off >= last.0 {
            return None;
        }
        let i = funcs
            .partition_point(|&(entry, _)| entry <= off)
            .checked_sub(1)?;
        Some((self.section + self.pcln + u64::from(funcs[i].1), funcs[i].0))
    }

    fn u32_at(&self, at: u64) -> Option<u32> {
        let mut b = [0u8; 4];
        self.file.read_exact_at(&mut b, at).ok()?;
        Some(u32::from_le_bytes(b))
    }

    /// A NUL-terminated string at file offset `at`.
    fn string_at(&self, at: u64) -> Option<String> {
        let mut buf = vec![0u8; NAME_MAX];
        let n = self.file.read_at(&mut buf, at).ok()?;
        let end = buf[..n].iter().position(|&b| b == 0).unwrap_or(n);
        let s = std::str::from_utf8(&buf[..end]).ok()?;
        (!s.is_empty()).then(|| s.to_string())
    }

    /// The function at virtual address `addr`, as the executable was linked.
    pub fn name_at(&self, addr: u64) -> Option<String> {
        // `_func`: entryOff u32, then nameOff i32.
        let (func, _) = self.func_at(addr)?;
        let name_off = u64::try_from(self.u32_at(func + 4)?.cast_signed()).ok()?;
        self.string_at(self.section + self.funcnames + name_off)
    }

    /// (file, line) of the instruction at `addr`, from the function's
    /// pc-value tables (`_func.pcfile` at 20, `.pcln` at 24, `.cuOffset` at 32).
    pub fn line_at(&self, addr: u64) -> Option<(String, u32)> {
        let (func, entry) = self.func_at(addr)?;
        let target = addr - self.text_start;
        let pcfile = self.u32_at(func + 20)?;
        let pcln = self.u32_at(func + 24)?;
        let cu = self.u32_at(func + 32)?;
        let fileno = u64::try_from(self.pc_value(pcfile, entry, target)?).ok()?;
        let line = u32::try_from(self.pc_value(pcln, entry, target)?).ok()?;
        let file_off = self.u32_at(self.section + self.cutab + 4 * (u64::from(cu) + fileno))?;
        let file = self.string_at(self.section + self.filetab + u64::from(file_off))?;
        Some((file, line))
    }

    /// The value a pc-value table (at `table` in pctab) gives for `target`
    /// (an offset from the text start, in a function entering at `entry`).
    fn pc_value(&self, table: u32, entry: u32, target: u64) -> Option<i32> {
        // Tables are short (a few bytes a line); read a generous window.
        let mut buf = vec![0u8; 4096];
        let n = self
            .file
            .read_at(&mut buf, self.section + self.pctab + u64::from(table))
            .ok()?;
        decode_pc_value(&buf[..n], u64::from(entry), target)
    }

    /// Functions in the table.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.functab.len().saturating_sub(1)
    }
}

/// Walks a Go pc-value table: pairs of (value delta, zig-zag varint; pc
/// delta, varint), starting at value -1 and the function's entry. Returns
/// the value in force at `target`.
fn decode_pc_value(table: &[u8], entry: u64, target: u64) -> Option<i32> {
    let mut pos = 0;
    let mut varint = || -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *table.get(pos)?;
            pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    };
    let (mut value, mut pc, mut first) = (-1i64, entry, true);
    loop {
        let delta = varint()?;
        if delta == 0 && !first {
            return None;
        }
        first = false;
        let delta = if delta & 1 == 0 {
            (delta >> 1) as i64
        } else {
            !((delta >> 1) as i64)
        };
        value += delta;
        pc += varint()?;
        if target < pc {
            return i32::try_from(value).ok();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    /// Builds a small Go program twice, with symbols and stripped; the
    /// stripped one's table must name what the symbols name, at the same
    /// addresses (`-s -w` leaves the code where it was).
    #[test]
    fn a_stripped_go_binary_names_its_functions() {
        let dir = std::env::temp_dir().join(format!("tracer-gopclntab-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(
            dir.join("main.go"),
            "package main\n\nimport \"fmt\"\n\n//go:noinline\nfunc spin(n int) int { s := 0; for i := 0; i < n; i++ { s += i }; return s }\n\nfunc main() { fmt.Println(spin(10)) }\n",
        )
        .expect("main.go");
        std::fs::write(dir.join("go.mod"), "module spin\n\ngo 1.19\n").expect("go.mod");
        let build = |out: &str, flags: &[&str]| {
            let status = Command::new("go")
                .arg("build")
                .args(flags)
                .args(["-o", out, "."])
                .current_dir(&dir)
                .env("GOCACHE", dir.join("cache"))
                .env("GOFLAGS", "-buildvcs=false")
                .status()
                .expect("go (cargo xtask setup installs it)");
            assert!(status.success(), "go build {flags:?}");
            dir.join(out)
        };
        let full = build("full", &[]);
        let stripped = build("stripped", &["-ldflags=-s -w"]);

        let data = std::fs::read(&full).expect("full binary");
        let elf = object::File::parse(&*data).expect("elf");
        use object::{ObjectSymbol, ObjectSymbolTable};
        let symtab = elf.symbol_table().expect("the full build has symbols");
        let addr = |name: &str| {
            symtab
                .symbols()
                .find(|s| s.name() == Ok(name))
                .map_or_else(|| panic!("{name} in the symbol table"), |s| s.address())
        };
        let stripped_elf = std::fs::read(&stripped).expect("stripped binary");
        assert!(
            object::File::parse(&*stripped_elf)
                .expect("elf")
                .symbol_table()
                .is_none(),
            "-s removes .symtab"
        );

        let table = GoTable::open(&stripped).expect("a Go 1.18+ table");
        assert!(table.len() > 1000, "{} functions", table.len());
        for name in ["main.spin", "main.main", "runtime.gopark", "fmt.Fprintln"] {
            let a = addr(name);
            assert_eq!(table.name_at(a).as_deref(), Some(name));
            assert_eq!(table.name_at(a + 1).as_deref(), Some(name), "inside {name}");
        }
        // main.spin is on line 6 of main.go; main.main on line 8.
        let (file, line) = table.line_at(addr("main.spin")).expect("a line");
        assert!(file.ends_with("/main.go"), "{file}");
        assert_eq!(line, 6);
        assert_eq!(
            table.line_at(addr("main.main") + 1).map(|(_, l)| l),
            Some(8)
        );
        assert!(table.name_at(0).is_none());
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn pc_value_tables_decode() {
        // value -1 -> 10 over pc [0, 4), -> 12 over [4, 10): deltas +11 (zig-zag 22), +2 (4).
        let table = [22, 4, 4, 6, 0];
        assert_eq!(decode_pc_value(&table, 0, 0), Some(10));
        assert_eq!(decode_pc_value(&table, 0, 3), Some(10));
        assert_eq!(decode_pc_value(&table, 0, 4), Some(12));
        assert_eq!(decode_pc_value(&table, 0, 10), None, "past the end");
    }

    #[test]
    fn other_files_have_no_table() {
        assert!(GoTable::open(&std::env::current_exe().expect("exe")).is_none());
        assert!(GoTable::open(Path::new("/nonexistent")).is_none());
    }
}
