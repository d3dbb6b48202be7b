//! tracefs: mounted on demand (as perf and bpftrace do), and read for the
//! layout of tracepoint records whose fields moved between kernel versions.

use std::{ffi::CString, fs, path::Path};

pub const ROOT: &str = "/sys/kernel/tracing";

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error("tracefs is not mounted and mounting it on {ROOT} failed: {0}")]
    Mount(std::io::Error),
    #[error("this kernel has no tracepoint {0} (see {ROOT}/events)")]
    MissingTracepoint(String),
    #[error("tracepoint {tracepoint} has no field {field} in its format")]
    MissingField { tracepoint: String, field: String },
}

/// Mounts tracefs on /sys/kernel/tracing if it is not there yet.
/// Returns whether it had to be mounted.
pub fn ensure_mounted() -> Result<bool, TracefsError> {
    if Path::new(ROOT).join("events").is_dir() {
        return Ok(false);
    }
    let cstr = |s: &str| CString::new(s).map_err(|e| TracefsError::Mount(std::io::Error::other(e)));
    let (src, target, fstype) = (cstr("tracefs")?, cstr(ROOT)?, cstr("tracefs")?);
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(TracefsError::Mount(std::io::Error::last_os_error()));
    }
    Ok(true)
}

/// Whether `group/event` exists on this kernel.
pub fn has_tracepoint(group: &str, event: &str) -> bool {
    Path::new(ROOT)
        .join("events")
        .join(group)
        .join(event)
        .is_dir()
}

/// Byte offset of `field` in the record of tracepoint `group/event`.
pub fn field_offset(group: &str, event: &str, field: &str) -> Result<u32, TracefsError> {
    let tracepoint = format!("{group}/{event}");
    let path = Path::new(ROOT)
        .join("events")
        .join(group)
        .join(event)
        .join("format");
    let text = fs::read_to_string(path)
        .map_err(|_| TracefsError::MissingTracepoint(tracepoint.clone()))?;
    parse_field_offset(&text, field).ok_or(TracefsError::MissingField {
        tracepoint,
        field: field.to_string(),
    })
}

fn parse_field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let decl = line.trim().strip_prefix("field:")?.split(';').next()?;
        let name = decl.rsplit([' ', '*']).next()?.split('[').next()?;
        if name != field {
            return None;
        }
        let offset = line
            .split(';')
            .find_map(|p| p.trim().strip_prefix("offset:"))?;
        offset.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORK: &str = "name: sched_process_fork
ID: 312
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;
\tfield:pid_t parent_pid;\toffset:12;\tsize:4;\tsigned:1;
\tfield:__data_loc char[] child_comm;\toffset:16;\tsize:4;\tsigned:0;
\tfield:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;
";

    #[test]
    fn finds_field_offsets() {
        assert_eq!(parse_field_offset(FORK, "child_pid"), Some(20));
        assert_eq!(parse_field_offset(FORK, "child_comm"), Some(16));
        assert_eq!(parse_field_offset(FORK, "parent_pid"), Some(12));
        assert_eq!(parse_field_offset(FORK, "nope"), None);
    }

    #[test]
    fn finds_array_and_pointer_fields() {
        let f = "\tfield:__u8 saddr[4];\toffset:32;\tsize:4;\tsigned:0;\n\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;";
        assert_eq!(parse_field_offset(f, "saddr"), Some(32));
        assert_eq!(parse_field_offset(f, "skaddr"), Some(8));
    }
}
