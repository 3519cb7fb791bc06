//! The petchat chat server (axum + tokio): placeholder until the server lands.
