//! Read-only facts about a model.

pub mod channels;
pub mod shapes;
pub mod stats;
