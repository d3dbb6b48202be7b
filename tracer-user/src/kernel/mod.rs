//! The kernel side, seen from userspace: the programs and how each attaches
//! ([`programs`]), loading and attaching them with this kernel's offsets
//! ([`btf`], [`tracefs`]) and the maps they share ([`probes`]), and the
//! ring buffer's records decoded into events ([`decode`]).

pub mod btf;
pub mod decode;
pub mod probes;
pub mod programs;
pub mod tracefs;
