//! Errors of the client library.

use petchat_protocol::session::SendError;

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is not a `ws://` or `wss://` URL.
    #[error("bad url {0:?}: expected ws://HOST[:PORT]/v1/ws/chat or wss://…")]
    BadUrl(String),
    /// The session refused the command (bad text, full outbox, closed).
    #[error(transparent)]
    Send(#[from] SendError),
    /// The client has stopped; no command is taken any more.
    #[error("the client has stopped")]
    Stopped,
    /// The on-disk outbox could not be read or written.
    #[error("outbox file {path}: {source}")]
    OutboxFile {
        /// The file.
        path: std::path::PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}
