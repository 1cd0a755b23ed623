//! The error type of the writers and readers.

use std::io;

/// What can go wrong while writing or reading a profile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The underlying writer or reader failed. Transparent, so a reason is not
    /// printed twice by whoever shows the chain of causes.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// inferno refused to draw the flame graph.
    #[error("drawing the flame graph: {0}")]
    Svg(String),
}
