//! Scenarios: servers that reproduce real blocking problems, the load that
//! makes them show, and the harness that runs `tracer` against them.
//!
//! Used by the integration tests (`scenarios/tests`) and by `cargo xtask`.

pub mod catalog;
pub mod drivers;
pub mod harness;
pub mod load;
pub mod report;
pub mod scale;

pub use harness::{
    Server, TracerRun, free_port, go_binary, go_binary_newest, go_binary_stripped, http_get,
    pypi_tool, tracer_bin, workspace_root,
};
