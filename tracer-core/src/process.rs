//! A traced process as the session follows it and the report lists it.

use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Process {
    pub pid: u32,
    pub comm: String,
    /// Whether the process exited while traced.
    pub exited: bool,
}

/// How the command of `tracer exec` ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CommandOutcome {
    pub command: Vec<String>,
    /// It ended by itself while traced; else the tracer stopped it at the end.
    pub exited_by_itself: bool,
    pub exit_code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
}

impl CommandOutcome {
    /// `exited with status 3 while traced`, `was stopped by the tracer at the end`.
    pub fn describe(&self) -> String {
        if !self.exited_by_itself {
            return "was stopped by the tracer at the end".to_string();
        }
        match (self.exit_code, self.signal) {
            (Some(code), _) => format!("exited with status {code} while traced"),
            (None, Some(sig)) => format!("was killed by signal {sig} while traced"),
            (None, None) => "ended while traced".to_string(),
        }
    }
}
