//! AFL entry point of the `server_decode` target ([`petchat_fuzz::server_decode`]).

fn main() {
    afl::fuzz!(|data: &[u8]| petchat_fuzz::server_decode(data));
}
