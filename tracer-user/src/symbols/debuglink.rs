//! Where a native file's function names are: its own symbol table, or the
//! separate debug file of its build id that distributions ship for
//! stripped libraries (`/usr/lib/debug/.build-id/93/ac61....debug` for
//! Debian's libc, from `libc6-dbg`).
//!
//! Only the symbol table is read, never the DWARF: naming frames needs
//! function names alone, and parsing a library's DWARF (libc's: 11 MB of
//! heap) for them made the tracer's size jump the first time a stack
//! passed through it.

use std::{
    fmt::Write as _,
    fs::File,
    path::{Path, PathBuf},
};

use object::{Object, ObjectSegment, read::ReadCache};

const DEBUG_ROOT: &str = "/usr/lib/debug/.build-id";

/// Where a file's function names are looked up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SymbolFile {
    /// The file whose `.symtab` (or `.dynsym`) names the functions: the
    /// file itself when it has a symbol table or nothing better exists,
    /// else its build id's debug file.
    pub path: PathBuf,
    /// The original file's loadable segments, (file offset, size, address):
    /// a debug file has the addresses but not the bytes, so offsets in the
    /// original are turned into addresses.
    segments: Vec<(u64, u64, u64)>,
}

impl SymbolFile {
    /// The address (as linked) of `offset` in the original file.
    pub fn address_of(&self, offset: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|&&(start, size, _)| offset >= start && offset < start + size)
            .map(|&(start, _, addr)| offset - start + addr)
    }
}

pub fn symbol_file(path: &Path) -> SymbolFile {
    let itself = || SymbolFile {
        path: path.to_path_buf(),
        segments: Vec::new(),
    };
    let Ok(file) = File::open(path) else {
        return itself();
    };
    let cache = ReadCache::new(file);
    let Ok(elf) = object::File::parse(&cache) else {
        return itself();
    };
    let segments = elf
        .segments()
        .map(|s| {
            let (offset, size) = s.file_range();
            (offset, size, s.address())
        })
        .collect();
    let debug = (elf.symbol_table().is_none())
        .then(|| elf.build_id().ok().flatten().map(debug_file))
        .flatten()
        .filter(|p| p.exists());
    match debug {
        Some(path) => SymbolFile { path, segments },
        None => itself(),
    }
}

/// `/usr/lib/debug/.build-id/<first byte>/<the rest>.debug`.
fn debug_file(build_id: &[u8]) -> PathBuf {
    let hex = build_id.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    });
    let (dir, rest) = hex.split_at(2.min(hex.len()));
    Path::new(DEBUG_ROOT)
        .join(dir)
        .join(format!("{rest}.debug"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_ids_name_their_debug_file() {
        assert_eq!(
            debug_file(&[0x93, 0xac, 0x61, 0x0e]),
            Path::new("/usr/lib/debug/.build-id/93/ac610e.debug")
        );
    }

    #[test]
    fn a_file_with_its_own_symbols_is_its_own_symbol_file() {
        let me = std::env::current_exe().expect("test binary");
        assert_eq!(symbol_file(&me).path, me);
        let none = Path::new("/nonexistent/lib.so");
        assert_eq!(symbol_file(none).path, none);
    }
}
