//! What a reader reports when it cannot produce its metrics.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// A parse failure of one `/proc` file's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

impl From<procfs_core::ProcError> for ParseError {
    fn from(e: procfs_core::ProcError) -> Self {
        ParseError(e.to_string())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot parse {}: {source}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: ParseError,
    },
    #[error("statvfs did not return within {0:?}")]
    StatvfsTimeout(Duration),
    #[error("statvfs of an earlier poll has not returned yet")]
    StatvfsBlocked,
    #[error("the reader task failed: {0}")]
    Task(String),
}
