//! Making sense of the aggregates: what each cause was, in words
//! ([`causes`]), where handlers spend their CPU ([`hotspot`]), and the
//! one-line [`diagnose`] built from the [`facts`] of a run.

pub mod causes;
pub mod diagnose;
pub mod facts;
pub mod hotspot;
mod syscall_names;
