//! The host side of bpfmatrix, in the order results flow: a run boots each kernel
//! ([`run`]), the guest's lines are collected ([`collect`]) and judged by the rules
//! of [`expect`] into the result model ([`matrix`]), which [`merge`] joins across
//! CI jobs and [`report`] renders and writes (`matrix.json` among the reports).
//! Kernels come from `bpfmatrix-kernels`, guests are built and booted by
//! `bpfmatrix-vm`, and what runs inside them lives in `probes/`, whose crate
//! doc defines the words (outcome, expectation, verdict, run status).

pub mod annotate;
pub mod bench;
pub mod collect;
pub mod exec;
pub mod expect;
pub mod matrix;
pub mod merge;
pub mod modes;
pub mod objects;
pub mod programs;
pub mod report;
pub mod run;
pub mod targets;
