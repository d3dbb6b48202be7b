//! Kernel side of the tracer: tracepoint programs that see the blocking chain
//! of the traced processes' connections and stream it to userspace.
//!
//! Everything here is a filter and a copy. Filtering happens before any
//! ring-buffer reservation: by traced tgid for syscalls, by tracked socket or
//! listening port for softirq events. Interpretation lives in userspace.
#![no_std]
#![no_main]

mod io;
mod listen;
mod maps;
mod net;
mod sched;
mod sock;
mod util;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
