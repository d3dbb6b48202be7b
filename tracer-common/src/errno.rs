//! Linux errno values the chain logic tells apart (positive; syscalls
//! return them negated).

/// Interrupted by a signal: nothing happened.
pub const EINTR: i64 = 4;
/// Would block: nothing happened.
pub const EAGAIN: i64 = 11;
/// Exists: for a stack, its slot in the stack map holds another stack.
pub const EEXIST: i64 = 17;
/// Bad address: for a stack, an empty one (a kernel stack taken in user
/// mode), not a loss.
pub const EFAULT: i64 = 14;
