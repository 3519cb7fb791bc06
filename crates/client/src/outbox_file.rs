//! The outbox on disk, so a message typed while the server is down survives
//! a restart of the CLI.

use std::path::{Path, PathBuf};

use petchat_protocol::SendChat;

use crate::error::ClientError;

/// A JSON file holding the outbox, rewritten atomically after every change.
#[derive(Debug, Clone)]
pub struct OutboxFile {
    path: PathBuf,
}

impl OutboxFile {
    /// The outbox stored at `path` (created on first write).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The messages saved last time; none if the file does not exist.
    pub fn load(&self) -> Result<Vec<SendChat>, ClientError> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| self.error(std::io::Error::other(e))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(self.error(e)),
        }
    }

    /// Replaces the file with `messages` (write to a temporary file, then rename).
    pub fn save<'a>(&self, messages: impl Iterator<Item = &'a SendChat>) -> Result<(), ClientError> {
        let messages: Vec<&SendChat> = messages.collect();
        let text = serde_json::to_string_pretty(&messages).expect("wire types always serialize");
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &self.path)).map_err(|e| self.error(e))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn error(&self, source: std::io::Error) -> ClientError {
        ClientError::OutboxFile { path: self.path.clone(), source }
    }
}
