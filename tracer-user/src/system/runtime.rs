//! Which runtime a traced process runs, as far as attribution cares.

use std::path::Path;

use object::{Object, ObjectSection, read::ReadCache};

/// Whether the executable at `path` is a Go program (it has Go's build-info
/// or pc-line table section). Only the headers are read.
pub fn is_go(path: &Path) -> bool {
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    let cache = ReadCache::new(file);
    let Ok(elf) = object::File::parse(&cache) else {
        return false;
    };
    elf.sections()
        .any(|s| matches!(s.name(), Ok(".go.buildinfo" | ".gopclntab")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_go_binaries() {
        assert!(
            !is_go(&std::env::current_exe().expect("exe")),
            "this test binary is Rust"
        );
        let go = std::process::Command::new("sh")
            .args(["-c", "command -v go"])
            .output();
        if let Some(out) = go.ok().filter(|o| o.status.success()) {
            let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let real = std::fs::canonicalize(&path).expect("go binary");
            assert!(is_go(&real), "{} is a Go program", real.display());
        }
    }
}
