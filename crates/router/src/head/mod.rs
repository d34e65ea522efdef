//! Classifier heads trained in Rust: logistic regression (L-BFGS), prototypes, nearest neighbours, calibration.

pub mod calibrate;
pub mod lbfgs;
pub mod logreg;
pub mod neighbours;
pub mod prototype;

pub use logreg::{LogReg, LogRegConfig};
pub use neighbours::{NeighbourThresholds, Neighbours};
pub use prototype::PrototypeHead;
