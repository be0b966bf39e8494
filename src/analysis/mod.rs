//! Read-only facts about a model.

pub mod shapes;
pub mod stats;
