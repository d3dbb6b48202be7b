//! What the host tells about the traced processes, outside the kernel
//! programs: `/proc` ([`procfs`]), the checks made before tracing
//! ([`preflight`]), and the runtime an executable was built with
//! ([`runtime`]); and handing freed memory back to it ([`memory`]).

pub mod memory;
pub mod preflight;
pub mod procfs;
pub mod runtime;
