//! Read-only facts about a model.

pub mod stats;
