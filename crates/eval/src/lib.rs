//! Evaluation of assistants: scenario tests (multi-turn conversations with expectations per turn)
//! run in process or against a running server, and their reports.
//!
//! It owns the scenario file format ([`scenario`]), what a turn did and the checks of it
//! ([`check`]), the runner and its drivers ([`run`], [`local`], [`remote`]) and the reports
//! ([`report`]: text, JSON lines, JUnit XML; [`html`]), and the record and replay of
//! conversations against another assistant version ([`replay`]). The command line is
//! `switchboard eval`.
//!
//! It must not know how the assistant is built or configured beyond its public API: the caller
//! hands the in-process driver built assistants. Key design decision: both drivers observe a turn
//! the same way, by diffing the conversation state before and after it ([`check::Observed`]), so a
//! scenario checks the same things in process and over HTTP.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod check;
pub mod html;
pub mod local;
pub mod remote;
pub mod replay;
pub mod report;
pub mod run;
pub mod scenario;

pub use check::Observed;
pub use local::InProcess;
pub use remote::Remote;
pub use run::{Driver, DriverError, RunReport, ScenarioOutcome, Summary, run_all};
pub use scenario::{Scenario, ScenarioError, load_paths};
