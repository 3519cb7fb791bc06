//! The native petchat client and the `petchat` CLI: placeholder until the client lands.
