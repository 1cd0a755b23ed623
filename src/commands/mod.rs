//! The subcommands, each a thin file that puts the stages together: options in,
//! [`crate::capture`] → [`crate::symbolize`] → [`crate::output`] (or the
//! [`crate::daemon`]) through, exit code out.

pub mod continuous;
pub mod convert;
pub mod list;
pub mod query;
pub mod record;
