//! Classifier heads trained in Rust: logistic regression (L-BFGS), prototypes, calibration.

pub mod calibrate;
pub mod lbfgs;
pub mod logreg;
pub mod prototype;

pub use logreg::{LogReg, LogRegConfig};
pub use prototype::PrototypeHead;
