//! Addresses to frame names, with blazesym: the ELF symbol tables of
//! executables and shared libraries (PIE or not; a stripped library's from
//! its separate debug file, [`super::debuglink`]), and kernel symbols from
//! kallsyms. Go executables are named from their `.gopclntab` first, which
//! stripping leaves in place.
//!
//! User addresses are turned into (file, file offset) with a snapshot of the
//! process's mappings taken while it lives, so stacks seen just before a
//! process exits still symbolize. What has no symbol shows as
//! `module+0xoffset`, never as a bare address.

use std::{
    ffi::OsStr,
    fs,
    path::{Path, PathBuf},
    rc::Rc,
};

use blazesym::{
    MaybeDefault,
    symbolize::{
        Input, Symbolizer as Blaze,
        source::{Elf, Kernel, Source},
    },
};
use rustc_hash::FxHashMap;

use super::{debuglink, gopclntab::GoTable};

/// A frame name, shared between the stacks that contain it.
pub use tracer_core::stack::Frame;

const VDSO: &str = "[vdso]";

/// One executable mapping of a process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub offset: u64,
    pub path: PathBuf,
}

/// Executable file-backed mappings from `/proc/<pid>/maps` text.
pub fn parse_maps(text: &str) -> Vec<Mapping> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (range, perms, offset) = (f.next()?, f.next()?, f.next()?);
            let path = f.nth(2)?;
            // Files, and the vDSO (whose code has no file to read symbols from).
            if !perms.contains('x') || !(path.starts_with('/') || path == VDSO) {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            Some(Mapping {
                start: u64::from_str_radix(start, 16).ok()?,
                end: u64::from_str_radix(end, 16).ok()?,
                offset: u64::from_str_radix(offset, 16).ok()?,
                path: PathBuf::from(path),
            })
        })
        .collect()
}

struct Process {
    maps: Vec<Mapping>,
    frames: FxHashMap<u64, Frame>,
}

pub struct Symbolizer {
    blaze: Blaze,
    procs: FxHashMap<u32, Process>,
    /// Go function tables by executable, `None` for files without one.
    go: FxHashMap<PathBuf, Option<GoTable>>,
    /// Where each native file's symbol table is ([`debuglink`]).
    symbol_files: FxHashMap<PathBuf, debuglink::SymbolFile>,
    kernel: FxHashMap<u64, Frame>,
    unknown: Frame,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Symbolizer {
    pub fn new() -> Self {
        Symbolizer {
            blaze: Blaze::builder()
                .enable_code_info(false)
                .enable_inlined_fns(false)
                .build(),
            procs: FxHashMap::default(),
            go: FxHashMap::default(),
            symbol_files: FxHashMap::default(),
            kernel: FxHashMap::default(),
            unknown: Rc::from("[unknown]"),
        }
    }

    /// Snapshots `pid`'s mappings now, while it lives.
    pub fn watch(&mut self, pid: u32) {
        let maps = read_maps(pid);
        let p = self.procs.entry(pid).or_insert_with(|| Process {
            maps: Vec::new(),
            frames: FxHashMap::default(),
        });
        if !maps.is_empty() {
            p.maps = maps;
        }
    }

    /// Forgets a process that exited, and the tables of files no other
    /// process maps: a service upgraded in place and restarted gets its
    /// new binary read, not the old one's table.
    pub fn forget(&mut self, pid: u32) {
        self.procs.remove(&pid);
        let in_use = |path: &PathBuf, procs: &FxHashMap<u32, Process>| {
            procs
                .values()
                .any(|p| p.maps.iter().any(|m| &m.path == path))
        };
        let procs = &self.procs;
        self.go.retain(|path, _| in_use(path, procs));
        self.symbol_files.retain(|path, _| in_use(path, procs));
    }

    /// Frame names of user addresses of `pid`, in the order given.
    pub fn user(&mut self, pid: u32, addrs: &[u64]) -> Vec<Frame> {
        if !self.procs.contains_key(&pid) {
            self.watch(pid);
        }
        let missing: Vec<u64> = {
            let p = &self.procs[&pid];
            addrs
                .iter()
                .copied()
                .filter(|a| !p.frames.contains_key(a))
                .collect()
        };
        if !missing.is_empty() {
            // An address outside every known mapping: the process mapped more since.
            if missing.iter().any(|&a| {
                self.procs[&pid]
                    .maps
                    .iter()
                    .all(|m| a < m.start || a >= m.end)
            }) {
                self.watch(pid);
            }
            self.resolve_user(pid, &missing);
        }
        let p = &self.procs[&pid];
        addrs
            .iter()
            .map(|a| {
                p.frames
                    .get(a)
                    .cloned()
                    .unwrap_or_else(|| self.unknown.clone())
            })
            .collect()
    }

    fn resolve_user(&mut self, pid: u32, addrs: &[u64]) {
        let Some(p) = self.procs.get_mut(&pid) else {
            return;
        };
        // Group by mapping so each file is symbolized in one batch.
        let mut by_file: FxHashMap<usize, Vec<(u64, u64)>> = FxHashMap::default();
        for &addr in addrs {
            match p.maps.iter().position(|m| addr >= m.start && addr < m.end) {
                Some(i) => by_file
                    .entry(i)
                    .or_default()
                    .push((addr, addr - p.maps[i].start + p.maps[i].offset)),
                None => {
                    p.frames.insert(addr, self.unknown.clone());
                }
            }
        }
        for (i, pairs) in by_file {
            let path = p.maps[i].path.clone();
            if path.as_os_str() == VDSO {
                for (addr, _) in pairs {
                    p.frames.insert(addr, Rc::from(VDSO));
                }
                continue;
            }
            let module = module_name(&path);
            let go = self
                .go
                .entry(path.clone())
                .or_insert_with(|| GoTable::open(&path));
            if let Some(table) = go {
                for (addr, off) in pairs {
                    let name = table
                        .name_at_file_offset(off)
                        .unwrap_or_else(|| format!("{module}+{off:#x}"));
                    p.frames.insert(addr, Rc::from(name));
                }
                continue;
            }
            let symbols = self
                .symbol_files
                .entry(path.clone())
                .or_insert_with(|| debuglink::symbol_file(&path));
            let mut elf = Elf::new(symbols.path.as_path());
            // Names come from symbol tables; DWARF would add lines, which
            // frames do not show, at the cost of parsing it all.
            elf.debug_syms = false;
            let source = Source::from(elf);
            let syms = if symbols.path == path {
                let offsets: Vec<u64> = pairs.iter().map(|&(_, off)| off).collect();
                self.blaze.symbolize(&source, Input::FileOffset(&offsets))
            } else {
                // A debug file: by address, since it lacks the bytes.
                let addrs: Vec<u64> = pairs
                    .iter()
                    .map(|&(_, off)| symbols.address_of(off).unwrap_or(0))
                    .collect();
                self.blaze.symbolize(&source, Input::VirtOffset(&addrs))
            }
            .unwrap_or_default();
            for (j, &(addr, off)) in pairs.iter().enumerate() {
                let name = match syms.get(j).and_then(|s| s.as_sym()) {
                    Some(sym) => Rc::from(sym.name.as_ref()),
                    None => Rc::from(format!("{module}+{off:#x}")),
                };
                p.frames.insert(addr, name);
            }
        }
    }

    /// The source line of the call a Go return address `ret` of `pid`
    /// returns from, from the executable's `.gopclntab`.
    pub fn go_call_site(&mut self, pid: u32, ret: u64) -> Option<String> {
        let m = self
            .procs
            .get(&pid)?
            .maps
            .iter()
            .find(|m| ret > m.start && ret <= m.end)?;
        let (path, offset) = (m.path.clone(), ret - m.start + m.offset);
        let table = self
            .go
            .entry(path.clone())
            .or_insert_with(|| GoTable::open(&path))
            .as_ref()?;
        table.call_site_at_file_offset(offset)
    }

    /// Frame names of kernel addresses, in the order given, suffixed `_[k]`
    /// as flame-graph tools expect for kernel frames.
    pub fn kernel(&mut self, addrs: &[u64]) -> Vec<Frame> {
        let missing: Vec<u64> = addrs
            .iter()
            .copied()
            .filter(|a| !self.kernel.contains_key(a))
            .collect();
        if !missing.is_empty() {
            let src = Kernel {
                vmlinux: MaybeDefault::None,
                debug_syms: false,
                ..Default::default()
            };
            let syms = self
                .blaze
                .symbolize(&Source::from(src), Input::AbsAddr(&missing))
                .unwrap_or_default();
            for (j, &addr) in missing.iter().enumerate() {
                let name = match syms.get(j).and_then(|s| s.as_sym()) {
                    Some(sym) => format!("{}_[k]", sym.name),
                    None => "[kernel]_[k]".to_string(),
                };
                self.kernel.insert(addr, Rc::from(name));
            }
        }
        addrs
            .iter()
            .map(|a| {
                self.kernel
                    .get(a)
                    .cloned()
                    .unwrap_or_else(|| self.unknown.clone())
            })
            .collect()
    }
}

fn read_maps(pid: u32) -> Vec<Mapping> {
    let Ok(text) = fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return Vec::new();
    };
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    parse_maps(&text)
        .into_iter()
        .map(|mut m| {
            // Files of a process in another mount namespace (a container) are
            // reached through its root; keep the path that opens from here.
            if m.path.as_os_str() != VDSO && !m.path.exists() {
                let inside = root.join(m.path.strip_prefix("/").unwrap_or(&m.path));
                if inside.exists() {
                    m.path = inside;
                }
            }
            m
        })
        .collect()
}

fn module_name(path: &Path) -> String {
    path.file_name()
        .map(OsStr::to_string_lossy)
        .map_or_else(|| path.display().to_string(), std::borrow::Cow::into_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_executable_file_mappings_only() {
        let text = "\
55d0c0a00000-55d0c0a01000 r--p 00000000 fe:01 1234 /usr/bin/prog
55d0c0a01000-55d0c0a02000 r-xp 00001000 fe:01 1234 /usr/bin/prog
7f0000000000-7f0000021000 rw-p 00000000 00:00 0
7ffd1e5f0000-7ffd1e5f2000 r-xp 00000000 00:00 0 [vdso]
7f1000000000-7f1000100000 r-xp 00028000 fe:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6
";
        let maps = parse_maps(text);
        assert_eq!(maps.len(), 3);
        assert_eq!(maps[1].path, PathBuf::from("[vdso]"));
        assert_eq!(
            maps[0],
            Mapping {
                start: 0x55d0c0a01000,
                end: 0x55d0c0a02000,
                offset: 0x1000,
                path: "/usr/bin/prog".into()
            }
        );
        assert_eq!(maps[2].offset, 0x28000);
    }

    /// Builds a C program, runs it, and names the address of one of its
    /// functions: by symbol, then with the binary stripped, as module+offset.
    #[test]
    fn symbols_of_a_program_built_here_and_of_its_stripped_copy() {
        use std::{
            io::BufRead,
            process::{Command, Stdio},
        };
        let dir = std::env::temp_dir().join(format!("tracer-sym-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        let src = dir.join("prog.c");
        fs::write(
            &src,
            "#include <stdio.h>\n#include <unistd.h>\n\
             __attribute__((noinline)) int tracer_target_fn(int x) { return x * 3 + 1; }\n\
             int main(void) { printf(\"%p\\n\", (void *)tracer_target_fn); fflush(stdout); pause(); return tracer_target_fn(1); }\n",
        )
        .expect("source");
        let prog = dir.join("prog");
        let stripped = dir.join("prog-stripped");
        let ok = Command::new("gcc")
            .args(["-O0", "-g", "-o"])
            .arg(&prog)
            .arg(&src)
            .status()
            .expect("gcc")
            .success();
        assert!(ok, "gcc failed");
        fs::copy(&prog, &stripped).expect("copy");
        assert!(
            Command::new("strip")
                .arg(&stripped)
                .status()
                .expect("strip")
                .success()
        );

        let name_of = |bin: &Path| -> (String, String) {
            let mut child = Command::new(bin)
                .stdout(Stdio::piped())
                .spawn()
                .expect("run");
            let mut line = String::new();
            std::io::BufReader::new(child.stdout.take().expect("stdout"))
                .read_line(&mut line)
                .expect("address");
            let addr =
                u64::from_str_radix(line.trim().trim_start_matches("0x"), 16).expect("hex address");
            let mut s = Symbolizer::new();
            let frame = s.user(child.id(), &[addr + 1]).remove(0).to_string();
            let maps = read_maps(child.id());
            let m = maps
                .iter()
                .find(|m| addr >= m.start && addr < m.end)
                .expect("mapping");
            let expected_offset = format!(
                "{}+{:#x}",
                module_name(&m.path),
                addr + 1 - m.start + m.offset
            );
            let _ = child.kill();
            let _ = child.wait();
            (frame, expected_offset)
        };
        let (named, _) = name_of(&prog);
        assert_eq!(named, "tracer_target_fn");
        let (bare, expected) = name_of(&stripped);
        assert!(bare.starts_with("prog-stripped+0x"), "{bare}");
        assert_eq!(bare, expected);
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    /// Debian's libc is stripped: its internal functions are named from
    /// its debug file when `libc6-dbg` is installed, else its exported
    /// ones from `.dynsym`.
    #[test]
    fn libc_functions_get_names() {
        let addr = libc::clock_nanosleep as *const () as u64;
        let mut s = Symbolizer::new();
        let frame = s.user(std::process::id(), &[addr + 1]).remove(0);
        assert!(frame.contains("clock_nanosleep"), "{frame}");
    }

    #[test]
    fn unmapped_addresses_are_unknown_not_hex() {
        let mut s = Symbolizer::new();
        let frames = s.user(std::process::id(), &[0x10]);
        assert_eq!(&*frames[0], "[unknown]");
    }

    #[test]
    fn kernel_addresses_get_names() {
        let Ok(kallsyms) = fs::read_to_string("/proc/kallsyms") else {
            return;
        };
        // Unreadable addresses (not root) are all zeros: nothing to check then.
        let Some(addr) = kallsyms
            .lines()
            .find_map(|l| {
                let mut f = l.split_whitespace();
                let addr = u64::from_str_radix(f.next()?, 16).ok()?;
                let kind = f.next()?;
                (f.next()? == "schedule" && (kind == "T" || kind == "t")).then_some(addr)
            })
            .filter(|&a| a != 0)
        else {
            return;
        };
        let mut s = Symbolizer::new();
        assert_eq!(&*s.kernel(&[addr + 4])[0], "schedule_[k]");
    }
}
