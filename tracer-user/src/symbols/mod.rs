//! Addresses to names: [`symbolize`] turns user and kernel addresses into
//! function names with blazesym (from the symbol tables [`debuglink`]
//! finds), and Go's with [`gopclntab`]; [`stacks`]
//! reads the kernel's stack map and caches each stack's names, and gives
//! them to the analysis.

pub mod debuglink;
pub mod gopclntab;
pub mod stacks;
pub mod symbolize;
