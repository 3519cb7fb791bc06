//! The OpenAPI 3.1 document of the HTTP endpoints (SPEC §7, §13, §14): the
//! server API, the SSE stream and its tickets, and the history endpoint, with
//! the bodies' schemas generated from the Rust types of `api.rs` and
//! `history.rs` (JSON Schema 2020-12, which OpenAPI 3.1 uses as is).

use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use super::{GENERATED_NOTICE, GeneratedFile};
use crate::api::{
    ApiError, ApiErrorCode, Notified, NotifyRequest, PresenceAnswer, PublishRequest, Published, SseTicket, Stats,
    SupportStats,
};
use crate::attachment::Attachment;
use crate::error::ErrorData;
use crate::history::HistoryPage;
use crate::limits::{
    DEFAULT_MAX_ATTACHMENT_BYTES, DEFAULT_MAX_IMAGE_PIXELS, MAX_API_BODY_BYTES, MAX_ATTACHMENT_NAME_CHARS,
    MAX_HISTORY_PAGE, MAX_ID_CHARS, MAX_TOPICS_PER_CONNECTION, THUMBNAIL_MAX_SIDE,
};

const SCHEMAS: &str = "#/components/schemas/";

/// `openapi.json`.
pub(super) fn file() -> GeneratedFile {
    let mut contents = serde_json::to_string_pretty(&document()).expect("a JSON value always serializes");
    contents.push('\n');
    GeneratedFile { path: "openapi.json".into(), contents }
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("{SCHEMAS}{name}") })
}

fn json_body(name: &str) -> Value {
    json!({ "content": { "application/json": { "schema": schema_ref(name) } } })
}

/// A response with a JSON body of schema `name`.
fn answer(description: &str, name: &str) -> Value {
    let mut response = json_body(name);
    response["description"] = json!(description);
    response
}

/// The error responses of an operation, by status: every one an `ApiError`.
fn errors(codes: &[ApiErrorCode]) -> Map<String, Value> {
    codes
        .iter()
        .map(|code| {
            let description = match code {
                ApiErrorCode::InvalidRequest => "The body or a parameter breaks the schema; the message names it.",
                ApiErrorCode::Unauthorized => "No credential, or a wrong one.",
                ApiErrorCode::Forbidden => "A topic of the stream is not granted to the user.",
                ApiErrorCode::NotFound => "No such endpoint.",
                ApiErrorCode::IdempotencyConflict => "The idempotencyKey was used within 24 h for a different request.",
                ApiErrorCode::TooLarge => "The body, or an event's data, is larger than allowed.",
                ApiErrorCode::RateLimited => "Too many requests, streams or unused tickets for this user.",
                ApiErrorCode::Unavailable => "The store (or, on several nodes, Redis) does not answer; retry later.",
            };
            (code.status().to_string(), answer(&format!("`{}`: {description}", code.as_str()), "ApiError"))
        })
        .collect()
}

/// An operation: summary, description, security, request body, parameters, responses.
fn operation(
    id: &str,
    summary: &str,
    description: &str,
    security: &str,
    body: Option<&str>,
    parameters: Value,
    responses: Map<String, Value>,
) -> Value {
    let mut op = json!({
        "operationId": id,
        "summary": summary,
        "description": description,
        "security": [{ security: [] }],
        "responses": responses,
    });
    if let Some(body) = body {
        let mut request = json_body(body);
        request["required"] = json!(true);
        op["requestBody"] = request;
    }
    if parameters.as_array().is_some_and(|p| !p.is_empty()) {
        op["parameters"] = parameters;
    }
    op
}

fn ok(description: &str, name: &str, errors_of: &[ApiErrorCode]) -> Map<String, Value> {
    let mut responses = Map::new();
    responses.insert("200".into(), answer(description, name));
    responses.extend(errors(errors_of));
    responses
}

fn document() -> Value {
    use ApiErrorCode::*;
    let mut generator = SchemaSettings::draft2020_12()
        .with(|settings| {
            settings.definitions_path = "/components/schemas".into();
            settings.meta_schema = None;
        })
        .into_generator();
    for (name, schema) in [
        ("PublishRequest", generator.subschema_for::<PublishRequest>()),
        ("Published", generator.subschema_for::<Published>()),
        ("NotifyRequest", generator.subschema_for::<NotifyRequest>()),
        ("Notified", generator.subschema_for::<Notified>()),
        ("PresenceAnswer", generator.subschema_for::<PresenceAnswer>()),
        ("Stats", generator.subschema_for::<Stats>()),
        ("SupportStats", generator.subschema_for::<SupportStats>()),
        ("SseTicket", generator.subschema_for::<SseTicket>()),
        ("ApiError", generator.subschema_for::<ApiError>()),
        ("HistoryPage", generator.subschema_for::<HistoryPage>()),
        ("ErrorData", generator.subschema_for::<ErrorData>()),
        ("Attachment", generator.subschema_for::<Attachment>()),
    ] {
        assert_eq!(schema.as_value(), &schema_ref(name), "{name} is a named component");
    }
    let schemas = generator.take_definitions(true);

    let api = |id: &str, summary: &str, description: &str, body: Option<&str>, parameters: Value, responses| {
        operation(id, summary, description, "apiKey", body, parameters, responses)
    };
    let body_errors = [InvalidRequest, Unauthorized, IdempotencyConflict, TooLarge, RateLimited, Unavailable];
    let user_id = json!([{
        "name": "userId", "in": "path", "required": true,
        "description": "The user: the `sub` of its tokens.",
        "schema": { "type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS },
    }]);
    let history_errors: Map<String, Value> = [
        ("400", "afterSeq or limit is not a valid number."),
        ("401", "No valid Bearer token."),
        ("403", "The conversation is not the user's."),
        ("404", "No such conversation."),
        ("429", "Too many history requests at once (Retry-After says when to try again)."),
    ]
    .into_iter()
    .map(|(status, description)| (status.to_owned(), answer(description, "ErrorData")))
    .collect();
    let mut history_responses = Map::new();
    history_responses.insert("200".into(), answer("A page; hasMore says that another follows.", "HistoryPage"));
    history_responses.extend(history_errors);
    let user_errors = |list: &[(&str, &str)]| -> Map<String, Value> {
        list.iter().map(|(status, description)| ((*status).to_owned(), answer(description, "ErrorData"))).collect()
    };
    let mut upload_responses = Map::new();
    upload_responses.insert("201".into(), answer("Stored; chat.send names it by its id.", "Attachment"));
    upload_responses.extend(user_errors(&[
        ("400", "The body is empty or broke off, or name is not text."),
        ("401", "No valid Bearer token."),
        ("403", "The conversation is not the user's."),
        ("404", "No such conversation."),
        ("408", "The body took longer than --upload-timeout-ms to arrive."),
        (
            "409",
            "The conversation is closed (code conversation_closed), or holds --max-attachments-per-conversation \
             attachments already (code limit_reached).",
        ),
        ("413", "The file is over --max-attachment-bytes, or the picture over --max-image-pixels."),
        (
            "415",
            "The content is not a JPEG, PNG, WebP or GIF picture nor a PDF (whatever its name), or does not decode.",
        ),
        ("429", "Too many uploads at once, of this user or in total (Retry-After says when to try again)."),
        ("500", "The server could not write the file."),
        ("503", "The store does not answer; retry later."),
    ]));
    let file_errors = [
        ("401", "No valid Bearer token."),
        ("403", "The conversation is not the user's."),
        (
            "404",
            "No such conversation or attachment, one not sent yet by someone else, or (thumbnail) a PDF, which has none.",
        ),
        ("503", "The store does not answer; retry later."),
    ];
    let conversation_id = json!({ "name": "id", "in": "path", "required": true, "description": "The conversation.",
        "schema": { "type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS } });
    let attachment_id = json!({ "name": "attachment", "in": "path", "required": true,
        "description": "The attachment's id, as the upload answered it.",
        "schema": { "type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS } });
    let binary = |description: &str, types: &[&str]| -> Value {
        let content: Map<String, Value> = types
            .iter()
            .map(|t| ((*t).to_owned(), json!({ "schema": { "type": "string", "contentMediaType": t } })))
            .collect();
        json!({ "description": description, "content": content })
    };
    let mut file_responses = Map::new();
    file_responses.insert(
        "200".into(),
        binary(
            "The file as uploaded, with its sniffed Content-Type, X-Content-Type-Options: nosniff, \
             Content-Security-Policy: default-src 'none'; sandbox, Cache-Control: private and Content-Disposition \
             (inline for pictures, attachment for a PDF).",
            &["image/jpeg", "image/png", "image/webp", "image/gif", "application/pdf"],
        ),
    );
    file_responses.extend(user_errors(&file_errors));
    let mut thumbnail_responses = Map::new();
    thumbnail_responses.insert(
        "200".into(),
        binary(
            &format!("A JPEG at most {THUMBNAIL_MAX_SIDE} pixels on its longest side, with the file's headers."),
            &["image/jpeg"],
        ),
    );
    thumbnail_responses.extend(user_errors(&file_errors));
    let mut sse_responses = Map::new();
    sse_responses.insert(
        "200".into(),
        json!({
            "description": "The stream, until the token expires, the server stops or the reader falls too far behind.",
            "content": { "text/event-stream": { "schema": { "type": "string" } } },
        }),
    );
    sse_responses.extend(errors(&[InvalidRequest, Unauthorized, Forbidden, RateLimited, Unavailable]));

    json!({
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "petchat HTTP API",
            "version": "1",
            "summary": "The server API for the shop's backend, server-sent events and the history endpoint.",
            "description": format!(
                "{GENERATED_NOTICE}\n\nThe server API (`/v1/api/*`) takes `Authorization: Bearer <key>` with a key \
                 of `--api-keys`; the other endpoints take a user's JWT as a Bearer token (SPEC §1). Request bodies \
                 are JSON of at most {MAX_API_BODY_BYTES} bytes. The WebSocket protocol is described by \
                 asyncapi.yaml."
            ),
            "license": { "name": "MIT OR Apache-2.0" },
        },
        "servers": [{ "url": "/", "description": "The petchat server that serves this document." }],
        "paths": {
            "/v1/api/publish": { "post": api(
                "publish",
                "Publish a topic event",
                "Stores the event with the topic's next seq, then delivers it to every subscriber of the topic on \
                 every node (sockets and SSE streams). The same idempotencyKey on the same topic within 24 h returns \
                 the first seq and publishes nothing more.",
                Some("PublishRequest"), json!([]),
                ok("Stored and being delivered.", "Published", &body_errors),
            ) },
            "/v1/api/notify": { "post": api(
                "notify",
                "Notify a user",
                "Stores the notification with the user's next seq, then delivers it to every connection of the user \
                 on every node; it is replayed to the user's new connections until read. The same idempotencyKey for \
                 the same user within 24 h returns the first notification and notifies nothing more.",
                Some("NotifyRequest"), json!([]),
                ok("Stored and being delivered.", "Notified", &body_errors),
            ) },
            "/v1/api/presence/{userId}": { "get": api(
                "presence",
                "Whether a user is online",
                "Counts the user's connections (sockets and SSE streams) on every node. A user the server has never \
                 seen is offline.",
                None, user_id,
                ok("The user's presence.", "PresenceAnswer", &[InvalidRequest, Unauthorized, Unavailable]),
            ) },
            "/v1/api/stats": { "get": api(
                "stats",
                "The support team's figures",
                "Connections, the queue, the agents and the open conversations, across every node. The server also \
                 publishes them, with the first-response time, on the topic support:stats (SupportStats).",
                None, json!([]),
                ok("The figures now.", "Stats", &[Unauthorized, Unavailable]),
            ) },
            "/v1/sse/tickets": { "post": operation(
                "sseTicket",
                "A ticket for an EventSource",
                "Trades the user's token for a ticket that opens one SSE stream (`GET /v1/sse?ticket=`), once, \
                 within 60 s, on any node: browsers' EventSource cannot send an Authorization header, and the token \
                 never goes into a URL.",
                "userToken", None, json!([]),
                ok("A ticket.", "SseTicket", &[Unauthorized, RateLimited, Unavailable]),
            ) },
            "/v1/sse": { "get": {
                "operationId": "sse",
                "summary": "Server-sent events",
                "description": "Streams the topic events of `topics` and the user's notifications as text/event-stream: \
                    each SSE event's `event:` is the message type (`topic.event` or `notification`), its `data:` the \
                    same JSON envelope as on the WebSocket, its `id:` a cursor over every topic of the stream and the \
                    notifications. Resumed with Last-Event-ID, each later item comes exactly once; without it, the \
                    unread notifications come first, then live events only. A comment line comes after 10 s without \
                    an event. Streams count toward --max-connections-per-user. Authorized by a Bearer token or a \
                    ticket.",
                "security": [{ "userToken": [] }, {}],
                "parameters": [
                    { "name": "topics", "in": "query", "required": false,
                      "description": format!("Comma-separated topic names, at most {MAX_TOPICS_PER_CONNECTION}."),
                      "schema": { "type": "string" } },
                    { "name": "ticket", "in": "query", "required": false,
                      "description": "A ticket from POST /v1/sse/tickets, instead of the Authorization header.",
                      "schema": { "type": "string", "pattern": "^[0-9a-f]{64}$" } },
                    { "name": "Last-Event-ID", "in": "header", "required": false,
                      "description": "The id of the last event received: the stream resumes after it.",
                      "schema": { "type": "string" } },
                    { "name": "lastEventId", "in": "query", "required": false,
                      "description": "As Last-Event-ID, for a new EventSource (which cannot send the header) \
                        resuming where an earlier one stopped; the header wins when both are given.",
                      "schema": { "type": "string" } },
                ],
                "responses": sse_responses,
            } },
            "/v1/conversations/{id}/messages": { "get": {
                "operationId": "history",
                "summary": "A page of a conversation's messages",
                "description": "The messages with seq > afterSeq, in order, for the conversation's members (SPEC §7).",
                "security": [{ "userToken": [] }],
                "parameters": [
                    { "name": "id", "in": "path", "required": true, "description": "The conversation.",
                      "schema": { "type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS } },
                    { "name": "afterSeq", "in": "query", "required": false, "description": "Messages after this seq.",
                      "schema": { "type": "integer", "minimum": 0 } },
                    { "name": "limit", "in": "query", "required": false,
                      "description": format!("Messages per page, at most {MAX_HISTORY_PAGE}."),
                      "schema": { "type": "integer", "minimum": 0 } },
                ],
                "responses": history_responses,
            } },
            "/v1/conversations/{id}/attachments": { "post": {
                "operationId": "uploadAttachment",
                "summary": "Upload a photo or a PDF to a conversation",
                "description": format!(
                    "The raw file as the body (any Content-Type; the server types it by its content). Only a member \
                     of an open conversation. At most --max-attachment-bytes (default {DEFAULT_MAX_ATTACHMENT_BYTES}) \
                     bytes; a picture at most --max-image-pixels (default {DEFAULT_MAX_IMAGE_PIXELS}) pixels. The \
                     answer's id goes into chat.send's attachments; until a message sends it, only its uploader can \
                     fetch it."
                ),
                "security": [{ "userToken": [] }],
                "parameters": [
                    conversation_id.clone(),
                    { "name": "name", "in": "query", "required": false,
                      "description": format!(
                          "The file's name, shown to the members: its last path segment is kept, control characters \
                           become _, and it is cut to {MAX_ATTACHMENT_NAME_CHARS} characters."
                      ),
                      "schema": { "type": "string" } },
                ],
                "requestBody": { "required": true, "content": { "*/*": { "schema": { "type": "string" } } } },
                "responses": upload_responses,
            } },
            "/v1/conversations/{id}/attachments/{attachment}": { "get": {
                "operationId": "attachment",
                "summary": "An attachment's file",
                "description": "For the conversation's members, open or closed (an attachment not sent yet: for its \
                    uploader only). Fetch it with the Bearer header and show it through a blob URL.",
                "security": [{ "userToken": [] }],
                "parameters": [conversation_id.clone(), attachment_id.clone()],
                "responses": file_responses,
            } },
            "/v1/conversations/{id}/attachments/{attachment}/thumbnail": { "get": {
                "operationId": "attachmentThumbnail",
                "summary": "A picture's thumbnail",
                "description": "As the file, for pictures only.",
                "security": [{ "userToken": [] }],
                "parameters": [conversation_id, attachment_id],
                "responses": thumbnail_responses,
            } },
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "apiKey": { "type": "http", "scheme": "bearer",
                            "description": "A key of --api-keys (the shop's backend)." },
                "userToken": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                               "description": "A user's token (SPEC §1)." },
            },
        },
    })
}
