//! The error type of the writers and readers.

use std::io;

/// What can go wrong while writing or reading a profile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The underlying writer or reader failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// inferno refused to draw the flame graph.
    #[error("drawing the flame graph: {0}")]
    Svg(String),
}
