//! A traced process as the session follows it and the report lists it.

use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Process {
    pub pid: u32,
    pub comm: String,
    /// Whether the process exited while traced.
    pub exited: bool,
}
