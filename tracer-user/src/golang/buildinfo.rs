//! The Go version that built a binary, from its `.go.buildinfo` section
//! (what `go version FILE` prints), stripped binaries included.

use object::{Object, ObjectSection};

const MAGIC: &[u8] = b"\xff Go buildinf:";
/// Flag: the strings follow the header inline (Go 1.18 and later).
const INLINE_STRINGS: u8 = 2;

/// `go1.26.1`, or `None` for binaries of other languages or Go before 1.18.
pub fn version<'a, R: object::ReadRef<'a>>(elf: &object::File<'a, R>) -> Option<String> {
    let data = elf.section_by_name(".go.buildinfo")?.data().ok()?;
    parse(data)
}

fn parse(data: &[u8]) -> Option<String> {
    if !data.starts_with(MAGIC) || data.get(15)? & INLINE_STRINGS == 0 {
        return None;
    }
    let (len, used) = uvarint(data.get(32..)?)?;
    let start = 32 + used;
    let bytes = data.get(start..start + usize::try_from(len).ok()?)?;
    let v = std::str::from_utf8(bytes).ok()?;
    v.starts_with("go").then(|| v.to_string())
}

/// A little-endian base-128 varint: (value, bytes used).
fn uvarint(data: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &b) in data.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_inline_version() {
        let mut data = MAGIC.to_vec();
        data.extend([8, INLINE_STRINGS]);
        data.resize(32, 0);
        data.push(8);
        data.extend(b"go1.26.1");
        data.extend(b"\x20path\tcaddy");
        assert_eq!(parse(&data).as_deref(), Some("go1.26.1"));
        data[15] = 0;
        assert_eq!(parse(&data), None, "pre-1.18 layout");
        assert_eq!(parse(b"nothing"), None);
    }

    #[test]
    fn this_machines_go_knows_its_version() {
        let go = std::fs::canonicalize(
            String::from_utf8_lossy(
                &std::process::Command::new("sh")
                    .args(["-c", "command -v go"])
                    .output()
                    .expect("sh")
                    .stdout,
            )
            .trim(),
        )
        .expect("go on PATH (cargo xtask setup installs it)");
        let data = std::fs::read(&go).expect("read go");
        let elf = object::File::parse(&*data).expect("elf");
        let v = version(&elf).expect("a version");
        assert!(v.starts_with("go1."), "{v}");
    }
}
