//! Errors of the control plane and their gRPC status codes.

/// Why an API call failed; [`ApiError::status`] maps it to the wire.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// A property is invalid (→ INVALID_ARGUMENT; the message starts with the field).
    #[error("{field}: {reason}")]
    Invalid {
        /// Dotted field name, e.g. `tunnel.upstream`.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A name or hostname is taken (→ ALREADY_EXISTS).
    #[error("{0}")]
    Exists(String),
    /// Unknown id or name (→ NOT_FOUND).
    #[error("{0}")]
    NotFound(String),
    /// The store failed (→ UNAVAILABLE; nothing was changed).
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The writer task is gone (shutting down).
    #[error("control plane is shutting down")]
    ShuttingDown,
}

impl ApiError {
    /// The gRPC status for this error.
    pub fn status(&self) -> tonic::Status {
        let msg = self.to_string();
        match self {
            ApiError::Invalid { .. } => tonic::Status::invalid_argument(msg),
            ApiError::Exists(_) => tonic::Status::already_exists(msg),
            ApiError::NotFound(_) => tonic::Status::not_found(msg),
            ApiError::Store(_) | ApiError::ShuttingDown => tonic::Status::unavailable(msg),
        }
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        e.status()
    }
}

/// A store failure (redb or encoding).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        StoreError(e.to_string())
    }
}

macro_rules! store_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError(e.to_string())
            }
        }
    )*};
}
store_from!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    serde_json::Error
);

/// Why the control plane could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Configuration problem (names the field).
    #[error("config: {0}")]
    Config(String),
    /// The store could not be opened.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The shared-memory region could not be created.
    #[error("shared memory {path}: {reason}")]
    Shm {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// OS or network failure.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// gRPC server failure.
    #[error("grpc: {0}")]
    Grpc(String),
}
