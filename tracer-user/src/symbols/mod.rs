//! Addresses to names: [`symbolize`] turns user and kernel addresses into
//! function names with blazesym; [`stacks`] reads the kernel's stack map and
//! caches each stack's names, and gives them to the analysis.

pub mod stacks;
pub mod symbolize;
