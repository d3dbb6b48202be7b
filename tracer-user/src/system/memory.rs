//! Handing freed memory back to the system.
//!
//! glibc keeps what a program frees for its next allocations. The tracer
//! frees a lot at a few moments (the kernel's BTF parsed while loading the
//! programs, a Go binary's DWARF read for its layout, tables emptied after
//! thousands of connections closed); kept, that memory showed as a resident
//! size that differed by 15 MB from run to run, depending on how the
//! allocations of the moment happened to fall.

/// Returns the free pages of every arena to the system.
#[cfg(target_env = "gnu")]
pub fn give_back_freed() {
    // SAFETY: malloc_trim has no preconditions.
    unsafe { libc::malloc_trim(0) };
}

/// musl's allocator (the static build's) returns freed pages by itself.
#[cfg(not(target_env = "gnu"))]
pub fn give_back_freed() {}
