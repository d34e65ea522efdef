//! Running scenarios: a [`Driver`] plays each turn against an assistant (in process, or over
//! HTTP) and reports the conversation state around it; the runner checks every expectation and
//! collects results.

use crate::check::{Observed, check};
use crate::scenario::{Action, Scenario};
use serde::Serialize;
use std::future::Future;
use std::time::{Duration, Instant};
use switchboard_guard::Detector;

/// A driver could not play a turn (transport, a missing approval, an engine error).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DriverError(pub String);

impl DriverError {
    /// An error from any displayable cause.
    pub fn msg(e: impl std::fmt::Display) -> Self {
        Self(e.to_string())
    }
}

/// Plays scenario turns against one assistant.
pub trait Driver {
    /// A conversation in progress.
    type Conversation;

    /// Opens a fresh conversation for the scenario (and, where the driver can, fresh seed data).
    fn open(&self, scenario: &Scenario) -> impl Future<Output = Result<Self::Conversation, DriverError>>;

    /// Plays one turn and observes what it did.
    fn play(
        &self,
        conversation: &mut Self::Conversation,
        action: Action<'_>,
    ) -> impl Future<Output = Result<Observed, DriverError>>;
}

/// The result of one turn.
#[derive(Debug, Clone, Serialize)]
pub struct TurnOutcome {
    /// 1-based.
    pub turn: usize,
    /// `user: ...` or `approve: true|false`.
    pub input: String,
    /// What the turn did (absent when the driver failed).
    pub observed: Option<Observed>,
    /// Failed checks (or the driver's error).
    pub failures: Vec<String>,
}

/// The result of one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioOutcome {
    /// Its name.
    pub name: String,
    /// Its file.
    pub file: String,
    /// Every check of every turn held.
    pub passed: bool,
    /// The turns played (a driver error stops the scenario).
    pub turns: Vec<TurnOutcome>,
    /// Wall-clock time of the whole scenario.
    pub duration_ms: f64,
}

impl ScenarioOutcome {
    /// Failure messages, each prefixed with its turn.
    pub fn failure_lines(&self) -> Vec<String> {
        self.turns.iter().flat_map(|t| t.failures.iter().map(move |f| format!("turn {}: {f}", t.turn))).collect()
    }
}

/// Counts over a run.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Summary {
    /// Scenarios run.
    pub scenarios: usize,
    /// Passed.
    pub passed: usize,
    /// Failed.
    pub failed: usize,
}

/// All results of a run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Per scenario, in the order run.
    pub scenarios: Vec<ScenarioOutcome>,
    /// Where it ran (`in process (...)` or the server URL).
    pub target: String,
    /// Wall-clock time of the run.
    pub duration_ms: f64,
}

impl RunReport {
    /// The counts.
    pub fn summary(&self) -> Summary {
        let passed = self.scenarios.iter().filter(|s| s.passed).count();
        Summary { scenarios: self.scenarios.len(), passed, failed: self.scenarios.len() - passed }
    }
}

/// Upper bound on one turn, so a hung assistant fails its scenario instead of the whole run.
pub const TURN_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs one scenario.
pub async fn run_scenario<D: Driver>(driver: &D, scenario: &Scenario, detector: &Detector) -> ScenarioOutcome {
    let started = Instant::now();
    let mut turns = Vec::new();
    let mut conversation = match tokio::time::timeout(TURN_TIMEOUT, driver.open(scenario)).await {
        Ok(Ok(c)) => Some(c),
        Ok(Err(e)) => {
            turns.push(error_turn(0, "open a conversation", e.to_string()));
            None
        }
        Err(_) => {
            turns.push(error_turn(0, "open a conversation", format!("timed out after {TURN_TIMEOUT:?}")));
            None
        }
    };
    if let Some(conv) = conversation.as_mut() {
        for (i, t) in scenario.turns.iter().enumerate() {
            match tokio::time::timeout(TURN_TIMEOUT, driver.play(conv, t.action())).await {
                Ok(Ok(obs)) => {
                    let failures = check(&t.expect, &obs, detector);
                    turns.push(TurnOutcome { turn: i + 1, input: t.label(), observed: Some(obs), failures });
                }
                Ok(Err(e)) => {
                    turns.push(error_turn(i + 1, &t.label(), e.to_string()));
                    break;
                }
                Err(_) => {
                    turns.push(error_turn(i + 1, &t.label(), format!("timed out after {TURN_TIMEOUT:?}")));
                    break;
                }
            }
        }
    }
    let passed = turns.len() == scenario.turns.len() && turns.iter().all(|t| t.failures.is_empty());
    ScenarioOutcome {
        name: scenario.name.clone(),
        file: scenario.file.display().to_string(),
        passed,
        turns,
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
    }
}

fn error_turn(turn: usize, input: &str, error: String) -> TurnOutcome {
    TurnOutcome { turn, input: input.to_string(), observed: None, failures: vec![format!("error: {error}")] }
}

/// Runs scenarios one after the other (each on its own conversation), calling `progress` after each.
pub async fn run_all<D: Driver>(
    driver: &D,
    scenarios: &[Scenario],
    target: &str,
    mut progress: impl FnMut(&ScenarioOutcome),
) -> RunReport {
    let started = Instant::now();
    let detector = Detector::default();
    let mut out = Vec::with_capacity(scenarios.len());
    for s in scenarios {
        let r = run_scenario(driver, s, &detector).await;
        progress(&r);
        out.push(r);
    }
    RunReport { scenarios: out, target: target.to_string(), duration_ms: started.elapsed().as_secs_f64() * 1000.0 }
}
