//! Linux errno values the chain logic tells apart (positive; syscalls
//! return them negated).

/// Interrupted by a signal: nothing happened.
pub const EINTR: i64 = 4;
/// Would block: nothing happened.
pub const EAGAIN: i64 = 11;
