//! The bundled scenario programs.

/// Go programs under `scenarios/`, each built with `go build ./<name>`.
pub const GO_PROGRAMS: &[&str] = &["basic"];
