//! The WebSocket handshake of SPEC §1: path, subprotocols and the bearer entry.
//!
//! Pure functions over the header values, so the server and every client
//! decide the same way.

use crate::close::CloseCode;

/// The chat endpoint.
pub const PATH: &str = "/v1/ws/chat";

/// The subprotocol of this version of the protocol; the server selects it.
pub const SUBPROTOCOL: &str = "petchat.v1";

/// Prefix shared by every version's subprotocol (`petchat.v1`, `petchat.v2`…).
pub const SUBPROTOCOL_PREFIX: &str = "petchat.";

/// Prefix of the subprotocol entry that carries a token (`bearer.<JWT>`); the
/// server reads it and never selects it.
pub const BEARER_PREFIX: &str = "bearer.";

/// Query parameter that carries a token (`/v1/ws/chat?token=<JWT>`).
pub const TOKEN_QUERY_PARAM: &str = "token";

/// What the server makes of the subprotocols a client offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The subprotocol to select in the response: [`SUBPROTOCOL`] when the
    /// client offered it, none when it offered no `petchat.*` entry at all.
    pub selected: Option<&'static str>,
    /// The token of a `bearer.<JWT>` entry, if the client offered one.
    pub bearer_token: Option<String>,
}

/// Decides a handshake from the `Sec-WebSocket-Protocol` header values.
///
/// Each value may list several comma-separated entries. A client that offers
/// `petchat.v1` gets it; one that offers no `petchat.*` entry is served as v1;
/// one that offers only other `petchat.*` versions is refused with 4505.
pub fn negotiate<'a>(header_values: impl IntoIterator<Item = &'a str>) -> Result<Negotiated, CloseCode> {
    let mut offers_v1 = false;
    let mut offers_other_version = false;
    let mut bearer_token = None;
    for entry in header_values.into_iter().flat_map(|value| value.split(',')) {
        let entry = entry.trim();
        if entry == SUBPROTOCOL {
            offers_v1 = true;
        } else if let Some(token) = entry.strip_prefix(BEARER_PREFIX) {
            if bearer_token.is_none() && !token.is_empty() {
                bearer_token = Some(token.to_owned());
            }
        } else if entry.starts_with(SUBPROTOCOL_PREFIX) {
            offers_other_version = true;
        }
    }
    if offers_v1 || !offers_other_version {
        Ok(Negotiated { selected: offers_v1.then_some(SUBPROTOCOL), bearer_token })
    } else {
        Err(CloseCode::UNSUPPORTED_PROTOCOL)
    }
}

/// The `Sec-WebSocket-Protocol` value a browser offers to authenticate without
/// putting its token in the URL.
pub fn offer_with_bearer(token: &str) -> String {
    format!("{SUBPROTOCOL}, {BEARER_PREFIX}{token}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(offered: &[&str], expected: Result<(Option<&str>, Option<&str>), CloseCode>) {
        let got = negotiate(offered.iter().copied())
            .map(|n| (n.selected, n.bearer_token))
            .map(|(s, b)| (s.map(str::to_owned), b));
        let expected = expected.map(|(s, b)| (s.map(str::to_owned), b.map(str::to_owned)));
        assert_eq!(got, expected, "offered {offered:?}");
    }

    #[test]
    fn a_client_that_offers_v1_gets_v1() {
        check(&["petchat.v1"], Ok((Some("petchat.v1"), None)));
        check(&["petchat.v2, petchat.v1"], Ok((Some("petchat.v1"), None)));
    }

    #[test]
    fn the_bearer_entry_is_read_and_never_selected() {
        check(&["petchat.v1, bearer.abc.def.ghi"], Ok((Some("petchat.v1"), Some("abc.def.ghi"))));
        check(&["petchat.v1", "bearer.t"], Ok((Some("petchat.v1"), Some("t"))));
        assert_eq!(offer_with_bearer("x.y.z"), "petchat.v1, bearer.x.y.z");
    }

    #[test]
    fn a_client_that_offers_no_version_is_served_as_v1() {
        check(&[], Ok((None, None)));
        check(&["bearer.t"], Ok((None, Some("t"))));
        check(&["chat, superchat"], Ok((None, None)));
    }

    #[test]
    fn only_unknown_versions_are_refused_with_4505() {
        check(&["petchat.v2"], Err(CloseCode::UNSUPPORTED_PROTOCOL));
        check(&["petchat.v9, bearer.t"], Err(CloseCode::UNSUPPORTED_PROTOCOL));
    }
}
