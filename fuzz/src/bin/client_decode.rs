//! AFL entry point of the `client_decode` target ([`petchat_fuzz::client_decode`]).

fn main() {
    afl::fuzz!(|data: &[u8]| petchat_fuzz::client_decode(data));
}
