//! Stacks as the analysis sees them: frames with names, given by whoever
//! symbolizes them (the session, with blazesym; tests, with fixed names).

use std::rc::Rc;

use tracer_common::StackKey;

/// A frame's name; shared, since the same frames recur in many stacks.
pub type Frame = Rc<str>;

/// Names of the stacks the kernel recorded.
pub trait StackNames {
    /// A stack's frames (user then kernel), root first.
    fn frames(&mut self, key: StackKey) -> Vec<Frame>;
    /// The innermost named user frame of a stack: the function that made
    /// the call a thread blocked in.
    fn user_leaf(&mut self, tgid: u32, user_stack: i32) -> Option<Frame>;
    /// A goroutine stack the sampler read, root first.
    fn goroutine_frames(&mut self, tgid: u32, stack: u32) -> Vec<Frame>;
    /// The name of a wait reason of the Go program `tgid` (`chan receive`).
    fn wait_reason(&mut self, tgid: u32, reason: u8) -> Option<String>;
    /// Where frame `frame` (root-first index) of a goroutine stack is in the
    /// source: `main.go:27`.
    fn goroutine_call_site(&mut self, tgid: u32, stack: u32, frame: usize) -> Option<String>;
}
