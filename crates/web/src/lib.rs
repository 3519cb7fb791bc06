//! The browser client (wasm) and its pages: placeholder until the browser client lands.
