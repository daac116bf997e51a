//! The store's error type, shared by every backend.
use std::error::Error as StdError;

/// A backend's own error, boxed so the trait does not depend on any database crate.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The write queue is full: refuse the request (HTTP 429/503); nothing was stored.
    #[error("store saturated: write queue of {capacity} operations is full")]
    Saturated { capacity: usize },
    /// The store was shut down (or its writer died).
    #[error("store closed")]
    Closed,
    /// The caller passed something the store cannot take.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The database's schema is newer than this binary, or a migration failed.
    #[error("schema: {0}")]
    Schema(String),
    /// A group commit failed; every operation in the batch failed with it and nothing of it is
    /// stored.
    #[error("commit failed: {0}")]
    Commit(String),
    /// The database's disk is full; nothing of the operation is stored. Trying again succeeds
    /// once space is freed.
    #[error("the store's disk is full ({0}); nothing was stored; free space on its volume")]
    DiskFull(String),
    /// The backend failed while doing `context`.
    #[error("{context}: {source}")]
    Backend {
        context: &'static str,
        #[source]
        source: BoxError,
    },
}

impl StoreError {
    /// Wraps a backend error with what the store was doing.
    pub fn backend<E>(context: &'static str) -> impl FnOnce(E) -> StoreError
    where
        E: StdError + Send + Sync + 'static,
    {
        move |source| StoreError::Backend {
            context,
            source: Box::new(source),
        }
    }

    /// Whether trying again later may succeed (saturation, a failed commit).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Saturated { .. } | StoreError::Commit(_) | StoreError::DiskFull(_)
        )
    }
}

/// The store's result type.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
