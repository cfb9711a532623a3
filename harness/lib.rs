//! The host side of bpfmatrix: expectations derived from documented kernel facts,
//! the collection of what guests send home, the result model, the orchestration of
//! a run and the reports. Kernels come from `bpfmatrix-kernels`, guests are built
//! and booted by `bpfmatrix-vm`, and what runs inside them lives in `probes/`.

pub mod bench;
pub mod collect;
pub mod document;
pub mod expect;
pub mod matrix;
pub mod output;
pub mod report;
pub mod run;
pub mod targets;
