//! Decoding reads like the spec: each refusal names its code, its field and the
//! request it answers.

use petchat_protocol::{ClientEnvelope, ClientMessage, ErrorCode, ServerEnvelope, ServerMessage, Timestamp};

/// Decodes `frame` and compares the refusal with (code, field, refId).
fn check(frame: &str, code: ErrorCode, field: Option<&str>, ref_id: Option<&str>) {
    let err = ClientEnvelope::decode(frame).expect_err(frame);
    assert_eq!(err.code(), code, "{frame}: {err}");
    assert_eq!(err.field(), field, "{frame}: {err}");
    assert_eq!(err.ref_id().map(|id| id.as_str()), ref_id, "{frame}: {err}");
    if let Some(field) = field {
        assert!(err.message().contains(field), "the message names the field: {err}");
    }
    let data = err.to_error_data();
    assert_eq!((data.code, data.ref_id.as_ref().map(|id| id.as_str())), (code, ref_id));
}

const UUID: &str = "0b6f8a3e-5c1d-4f3a-9e2b-7d4c1a9f6e21";

#[test]
fn the_envelope_is_checked_in_a_fixed_order() {
    check("{", ErrorCode::InvalidJson, None, None);
    check("[]", ErrorCode::InvalidMessage, None, None);
    check(r#"{"id":5,"type":"nope"}"#, ErrorCode::InvalidMessage, Some("id"), None);
    check(r#"{"id":"r1"}"#, ErrorCode::InvalidMessage, Some("type"), Some("r1"));
    check(r#"{"id":"r1","type":"nope"}"#, ErrorCode::UnknownType, Some("type"), Some("r1"));
    check(r#"{"id":"r1","type":"ping"}"#, ErrorCode::InvalidMessage, Some("data"), Some("r1"));
    check(r#"{"id":"r1","type":"ping","data":null}"#, ErrorCode::InvalidMessage, Some("data"), Some("r1"));
    check(
        r#"{"id":"r1","type":"ping","data":{},"timestamp":3}"#,
        ErrorCode::InvalidMessage,
        Some("timestamp"),
        Some("r1"),
    );
}

#[test]
fn data_errors_name_the_field_inside_data() {
    check(
        r#"{"id":"r2","type":"chat.send","data":{}}"#,
        ErrorCode::InvalidMessage,
        Some("data.conversationId"),
        Some("r2"),
    );
    let frame = r#"{"type":"chat.send","data":{"conversationId":"c","clientMessageId":"x","text":"hi"}}"#;
    check(frame, ErrorCode::InvalidMessage, Some("data.clientMessageId"), None);
    let frame =
        format!(r#"{{"type":"chat.send","data":{{"conversationId":"c","clientMessageId":"{UUID}","text":"  "}}}}"#);
    check(&frame, ErrorCode::InvalidMessage, Some("data.text"), None);
    check(
        r#"{"type":"message.read","data":{"conversationId":"c","upToSeq":0}}"#,
        ErrorCode::InvalidMessage,
        Some("data.upToSeq"),
        None,
    );
    check(r#"{"type":"conversation.open","data":{"topic":""}}"#, ErrorCode::InvalidMessage, Some("data.topic"), None);
}

#[test]
fn a_text_too_long_after_trimming_has_its_own_code() {
    let text = "x".repeat(4001);
    let frame = format!(
        r#"{{"id":"r3","type":"chat.send","data":{{"conversationId":"c","clientMessageId":"{UUID}","text":"{text}"}}}}"#
    );
    check(&frame, ErrorCode::TextTooLong, Some("data.text"), Some("r3"));

    let padded = format!("   {}   ", "x".repeat(4000));
    let frame = format!(
        r#"{{"type":"chat.send","data":{{"conversationId":"c","clientMessageId":"{UUID}","text":"{padded}"}}}}"#
    );
    let envelope = ClientEnvelope::decode(&frame).expect("4000 characters after trimming");
    let ClientMessage::ChatSend(send) = envelope.message else { panic!("chat.send") };
    assert_eq!(send.text.as_str().len(), 4000, "the text is stored trimmed");
}

#[test]
fn unknown_fields_are_ignored_for_forward_compatibility() {
    let envelope = ClientEnvelope::decode(r#"{"type":"ping","data":{"later":1},"trace":"x"}"#).expect("accepted");
    assert!(matches!(envelope.message, ClientMessage::Ping(_)));
}

#[test]
fn a_client_cannot_send_a_server_type_and_a_server_frame_needs_a_timestamp() {
    check(r#"{"type":"pong","data":{}}"#, ErrorCode::UnknownType, Some("type"), None);
    let err = ServerEnvelope::decode(r#"{"type":"pong","data":{}}"#).expect_err("no timestamp");
    assert_eq!((err.code(), err.field()), (ErrorCode::InvalidMessage, Some("timestamp")));
}

#[test]
fn the_server_encodes_type_id_data_timestamp() {
    let ts = Timestamp::from_unix_ms(1_795_342_530_123).expect("in range");
    let frame = ServerEnvelope::new(ServerMessage::Pong(Default::default()), ts)
        .with_id(Some(petchat_protocol::RequestId::new("hb-1").expect("id")))
        .encode();
    assert_eq!(frame, r#"{"type":"pong","id":"hb-1","data":{},"timestamp":"2026-11-22T10:15:30.123Z"}"#);
}
