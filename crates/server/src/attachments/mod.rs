//! Attachments over HTTP (docs/protocol.md, "Attachments"): a member uploads
//! a photo or a PDF to a conversation (`POST
//! /v1/conversations/{id}/attachments`), a `chat.send` then names it by id,
//! and members fetch the file and its thumbnail.
//!
//! An upload is streamed to a temporary file in `--attachments-dir` under a
//! hard cap (nothing beyond `--max-attachment-bytes` is read or held), typed
//! by its first bytes ([`sniff`]), decoded under limits when it is a picture
//! ([`picture`]), renamed to its id and only then recorded in the store. The
//! files are named by id, never by the client's name, and served with the
//! sniffed type, `nosniff` and a sandboxing CSP, so that no upload can run
//! script on the chat's origin.

mod picture;
mod sniff;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::header::{
    AUTHORIZATION, CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_SECURITY_POLICY, CONTENT_TYPE,
    RETRY_AFTER, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use petchat_protocol::token::Claims;
use petchat_protocol::{
    Attachment, AttachmentId, AttachmentName, AttachmentType, ConversationId, ConversationStatus, ErrorCode, ErrorData,
    Timestamp,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, error, warn};

use crate::AppState;
use crate::config::AttachmentSettings;
use crate::gate::Gate;
use crate::store::{Applied, AttachmentRecord, ConversationRecord, Store, Write};

/// What the attachment routes share: where the files are and the limits.
pub(crate) struct Attachments {
    /// The directory of the files (`--attachments-dir`).
    dir: PathBuf,
    /// The limits, as configured.
    settings: AttachmentSettings,
    /// Bounds the uploads received at once, in total and per user.
    uploads: Gate,
    /// Bounds the pictures decoded at once (each may take up to
    /// `--max-image-pixels` × 4 bytes): one per core.
    decodes: tokio::sync::Semaphore,
}

impl Attachments {
    /// Opens (creating it if missing) the directory of the files.
    pub(crate) fn open(dir: PathBuf, settings: AttachmentSettings) -> std::io::Result<Arc<Self>> {
        std::fs::create_dir_all(&dir)?;
        remove_stale_parts(&dir, settings.upload_timeout());
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        Ok(Arc::new(Self {
            uploads: Gate::new(settings.max_uploads, settings.max_uploads_per_user),
            decodes: tokio::sync::Semaphore::new(cores),
            dir,
            settings,
        }))
    }

    fn file(&self, id: &AttachmentId) -> PathBuf {
        self.dir.join(id.as_str())
    }

    fn thumbnail(&self, id: &AttachmentId) -> PathBuf {
        self.dir.join(format!("{}.thumb.jpg", id.as_str()))
    }

    /// Removes an attachment's file and thumbnail (either may be missing).
    async fn remove_files(&self, id: &AttachmentId) {
        for path in [self.file(id), self.thumbnail(id)] {
            match tokio::fs::remove_file(&path).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    warn!(error = %e, path = %path.display(), "attachments: removing a file failed");
                }
                _ => {}
            }
        }
    }
}

/// Removes the partial files (`.ID.part`) an earlier process left when it
/// stopped in the middle of an upload; those younger than an upload may take
/// can be another node's, on a shared directory, and stay.
fn remove_stale_parts(dir: &Path, upload_timeout: std::time::Duration) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let partial = name.to_str().is_some_and(|name| name.starts_with('.') && name.ends_with(".part"));
        let stale = || {
            let modified = entry.metadata().and_then(|m| m.modified()).ok();
            modified.and_then(|at| at.elapsed().ok()).is_some_and(|age| age > upload_timeout)
        };
        if partial
            && stale()
            && let Err(e) = std::fs::remove_file(entry.path())
        {
            warn!(error = %e, path = %entry.path().display(), "attachments: removing a partial upload failed");
        }
    }
}

/// Most uploads one sweep forgets before it looks again (so that one
/// transaction never holds the writer long).
const SWEEP_BATCH: usize = 256;

/// Deletes, every [`AttachmentSettings::unsent_sweep`] until `stop`, the
/// uploads no message sent within `--unsent-attachment-ms` (docs/protocol.md,
/// "Attachments"): the store forgets them first, so that no `chat.send` can
/// name one any more, then their files go. Nodes sharing a database and a
/// directory sweep side by side, each forgetting rows no other one took.
pub(crate) fn sweep_unsent(
    attachments: Arc<Attachments>,
    store: Arc<dyn Store>,
    stop: tokio_util::sync::CancellationToken,
) {
    let (every, unsent_for) = (attachments.settings.unsent_sweep(), attachments.settings.unsent_attachment());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = crate::hub::frames::now().as_unix_ms();
            let before = now.saturating_sub(i64::try_from(unsent_for.as_millis()).unwrap_or(i64::MAX));
            let Some(before) = Timestamp::from_unix_ms(before.max(0)) else { continue };
            loop {
                let forgotten = match store.forget_unsent_attachments(before, SWEEP_BATCH).await {
                    Ok(forgotten) => forgotten,
                    Err(e) => {
                        warn!(error = %e, "attachments: forgetting the unsent uploads failed");
                        break;
                    }
                };
                for id in &forgotten {
                    attachments.remove_files(id).await;
                }
                metrics::counter!("petchat_attachments_unsent_deleted_total").increment(forgotten.len() as u64);
                if forgotten.len() < SWEEP_BATCH || stop.is_cancelled() {
                    break;
                }
            }
        }
    });
}

/// The upload's query.
#[derive(Debug, Deserialize)]
pub(crate) struct UploadQuery {
    /// The file's name, for display only.
    name: Option<String>,
}

/// `POST /v1/conversations/{id}/attachments?name=`: the raw file as the body,
/// the same token as a Bearer header; only a member of an open conversation.
pub(crate) async fn upload(
    State(app): State<AppState>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    query: Result<Query<UploadQuery>, axum::extract::rejection::QueryRejection>,
    body: Body,
) -> Response {
    let attachments = &app.attachments;
    let max_bytes = attachments.settings.max_attachment_bytes;
    let Some(claims) = claims(&app, &headers) else {
        return refuse(StatusCode::UNAUTHORIZED, ErrorCode::Forbidden, "a valid Bearer token is required");
    };
    let Ok(Query(query)) = query else {
        return refuse(StatusCode::BAD_REQUEST, ErrorCode::InvalidMessage, "name must be text");
    };
    let declared = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > max_bytes) {
        return too_big(max_bytes);
    }
    let Ok(conversation_id) = ConversationId::new(id) else {
        return refuse(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such conversation");
    };
    let Some(_pass) = attachments.uploads.enter(&claims.sub) else {
        metrics::counter!("petchat_attachment_uploads_refused_total", "reason" => "busy").increment(1);
        let mut response =
            refuse(StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited, "too many uploads at once; retry shortly");
        response.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    };
    let conversation = match member_conversation(&app, &claims, &conversation_id).await {
        Ok(conversation) => conversation,
        Err(refusal) => return refusal,
    };
    if conversation.status == ConversationStatus::Closed {
        return refuse(StatusCode::CONFLICT, ErrorCode::ConversationClosed, "the conversation is closed");
    }

    let id = AttachmentId::new(uuid::Uuid::now_v7().to_string()).expect("a UUID is a valid id");
    let part = Part::new(attachments.dir.join(format!(".{id}.part")));
    let received = tokio::time::timeout(attachments.settings.upload_timeout(), receive(body, &part.path, max_bytes));
    let received = match received.await {
        Err(_) => {
            return refuse(StatusCode::REQUEST_TIMEOUT, ErrorCode::InvalidMessage, "the upload took too long");
        }
        Ok(Err(refusal)) => return refusal,
        Ok(Ok(received)) => received,
    };
    let (width, height, thumbnail) = if received.kind.is_image() {
        let Ok(_decoding) = attachments.decodes.acquire().await else {
            return refuse(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Internal, "the server is stopping");
        };
        let (path, kind, max) = (part.path.clone(), received.kind, attachments.settings.max_image_pixels);
        match tokio::task::spawn_blocking(move || picture::decode(&path, kind, max)).await {
            Ok(Ok(decoded)) => (Some(decoded.width), Some(decoded.height), Some(decoded.thumbnail)),
            Ok(Err(e @ picture::PictureError::TooManyPixels { .. })) => {
                metrics::counter!("petchat_attachment_uploads_refused_total", "reason" => "pixels").increment(1);
                return refuse(StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::InvalidMessage, &e.to_string());
            }
            Ok(Err(e @ picture::PictureError::Unreadable(..))) => {
                metrics::counter!("petchat_attachment_uploads_refused_total", "reason" => "type").increment(1);
                return refuse(StatusCode::UNSUPPORTED_MEDIA_TYPE, ErrorCode::InvalidMessage, &e.to_string());
            }
            Ok(Err(picture::PictureError::Io(e))) => return internal("reading the upload failed", &e),
            Err(e) => return internal("decoding the upload failed", &e),
        }
    } else {
        (None, None, None)
    };
    // The files are in place before the store knows them, so that a stored
    // attachment always has its file; a failure below removes them again.
    let thumb = Part::new(attachments.thumbnail(&id));
    if let Some(thumbnail) = thumbnail
        && let Err(e) =
            write_atomically(&attachments.dir.join(format!(".{id}.thumb.part")), &thumb.path, &thumbnail).await
    {
        return internal("writing the thumbnail failed", &e);
    }
    let file = Part::new(attachments.file(&id));
    if let Err(e) = tokio::fs::rename(&part.path, &file.path).await {
        return internal("storing the upload failed", &e);
    }
    part.keep();
    let fallback = if received.kind.is_image() { "photo" } else { "document.pdf" };
    let attachment = Attachment {
        id,
        name: AttachmentName::sanitize(query.name.as_deref(), fallback),
        content_type: received.kind,
        size: received.size,
        width,
        height,
    };
    let record = AttachmentRecord {
        attachment: attachment.clone(),
        conversation_id,
        uploader: claims.sub.clone(),
        uploader_role: claims.role,
        sha256: received.sha256,
        created_at: crate::hub::frames::now(),
        message_id: None,
    };
    let max_per_conversation = attachments.settings.max_attachments_per_conversation;
    let write = Write::CreateAttachment { record, max_per_conversation };
    // A refusal drops `file` and `thumb`, which removes them.
    match app.store.apply(&[write]).await.map(|mut applied| applied.pop()) {
        Ok(Some(Applied::Done)) => {
            file.keep();
            thumb.keep();
            metrics::counter!("petchat_attachment_uploads_total").increment(1);
            (StatusCode::CREATED, Json(attachment)).into_response()
        }
        Ok(Some(Applied::Closed)) => {
            refuse(StatusCode::CONFLICT, ErrorCode::ConversationClosed, "the conversation is closed")
        }
        Ok(Some(Applied::AttachmentsFull)) => refuse(
            StatusCode::CONFLICT,
            ErrorCode::LimitReached,
            &format!("this conversation holds its most attachments ({max_per_conversation})"),
        ),
        Ok(_) => refuse(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such conversation"),
        Err(e) => {
            error!(error = %e, "attachments: storing the metadata failed");
            refuse(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Internal, "the upload could not be stored; retry")
        }
    }
}

/// `GET /v1/conversations/{id}/attachments/{attachment}`: the file, to the
/// conversation's members (an attachment not sent yet: to its uploader only).
pub(crate) async fn file(
    State(app): State<AppState>,
    UrlPath((conversation, attachment)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let record = match readable(&app, &headers, conversation, attachment).await {
        Ok(record) => record,
        Err(refusal) => return refusal,
    };
    let kind = record.attachment.content_type;
    let disposition = if kind.is_image() { "inline" } else { "attachment" };
    let path = app.attachments.file(&record.attachment.id);
    serve(&path, kind.as_str(), &content_disposition(disposition, record.attachment.name.as_str())).await
}

/// `GET /v1/conversations/{id}/attachments/{attachment}/thumbnail`: a
/// picture's thumbnail (a JPEG at most 320 pixels on its longest side), to
/// whoever may read the file; a PDF has none (404, code `not_found`).
pub(crate) async fn thumbnail(
    State(app): State<AppState>,
    UrlPath((conversation, attachment)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let record = match readable(&app, &headers, conversation, attachment).await {
        Ok(record) => record,
        Err(refusal) => return refusal,
    };
    if !record.attachment.content_type.is_image() {
        return refuse(StatusCode::NOT_FOUND, ErrorCode::NotFound, "a PDF has no thumbnail");
    }
    let path = app.attachments.thumbnail(&record.attachment.id);
    let name = format!("thumbnail-{}.jpg", record.attachment.id);
    serve(&path, AttachmentType::Jpeg.as_str(), &content_disposition("inline", &name)).await
}

/// What [`receive`] read.
struct Received {
    kind: AttachmentType,
    size: u64,
    sha256: String,
}

/// Streams `body` into `path`: at most `max_bytes` (413 beyond, having read no
/// more than that), typed by its first bytes (415 for anything else, refused
/// as soon as they are in).
async fn receive(body: Body, path: &Path, max_bytes: u64) -> Result<Received, Response> {
    let mut file =
        tokio::fs::File::create(path).await.map_err(|e| internal("creating the upload's file failed", &e))?;
    let mut stream = body.into_data_stream();
    let mut head: Vec<u8> = Vec::with_capacity(sniff::SNIFF_BYTES);
    let mut kind = None;
    let mut size: u64 = 0;
    let mut hasher = Sha256::new();
    while let Some(chunk) = stream.next().await {
        let chunk: Bytes = chunk.map_err(|e| {
            debug!(error = %e, "attachments: the upload's body broke off");
            refuse(StatusCode::BAD_REQUEST, ErrorCode::InvalidMessage, "the upload's body broke off")
        })?;
        size = size.saturating_add(chunk.len() as u64);
        if size > max_bytes {
            return Err(too_big(max_bytes));
        }
        if kind.is_none() {
            let wanted = sniff::SNIFF_BYTES - head.len();
            head.extend_from_slice(&chunk[..chunk.len().min(wanted)]);
            if head.len() == sniff::SNIFF_BYTES {
                kind = Some(sniff::sniff(&head).ok_or_else(not_supported)?);
            }
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(|e| internal("writing the upload failed", &e))?;
    }
    // A file shorter than the sniffed prefix is typed by what there is.
    let kind = match kind {
        Some(kind) => kind,
        None if size == 0 => {
            return Err(refuse(StatusCode::BAD_REQUEST, ErrorCode::InvalidMessage, "the upload is empty"));
        }
        None => sniff::sniff(&head).ok_or_else(not_supported)?,
    };
    file.sync_all().await.map_err(|e| internal("writing the upload failed", &e))?;
    let sha256 = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(Received { kind, size, sha256 })
}

/// The token's claims, if the request carries a valid Bearer token.
fn claims(app: &AppState, headers: &HeaderMap) -> Option<Claims> {
    let token = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(crate::http::bearer_token)?;
    app.keys.verify(token).ok()
}

/// The conversation, if the caller is its customer or its assigned agent.
async fn member_conversation(
    app: &AppState,
    claims: &Claims,
    id: &ConversationId,
) -> Result<ConversationRecord, Response> {
    match app.store.conversation(id).await {
        Ok(Some(rec)) if rec.has_member(&claims.sub, claims.role) => Ok(rec),
        Ok(Some(_)) => Err(refuse(StatusCode::FORBIDDEN, ErrorCode::Forbidden, "this conversation is not yours")),
        Ok(None) => Err(refuse(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such conversation")),
        Err(e) => {
            error!(error = %e, "attachments: reading the conversation failed");
            Err(refuse(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Internal, "the conversation could not be read"))
        }
    }
}

/// The attachment, if the caller may read it: a member of its conversation
/// (open or closed), and for one not sent yet, its uploader.
async fn readable(
    app: &AppState,
    headers: &HeaderMap,
    conversation: String,
    attachment: String,
) -> Result<AttachmentRecord, Response> {
    let Some(claims) = claims(app, headers) else {
        return Err(refuse(StatusCode::UNAUTHORIZED, ErrorCode::Forbidden, "a valid Bearer token is required"));
    };
    let not_found = || refuse(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such attachment");
    let (Ok(conversation), Ok(attachment)) = (ConversationId::new(conversation), AttachmentId::new(attachment)) else {
        return Err(not_found());
    };
    member_conversation(app, &claims, &conversation).await?;
    match app.store.attachment(&conversation, &attachment).await {
        Ok(Some(record))
            if record.message_id.is_some()
                || (record.uploader == claims.sub && record.uploader_role == claims.role) =>
        {
            Ok(record)
        }
        Ok(_) => Err(not_found()),
        Err(e) => {
            error!(error = %e, "attachments: reading the attachment failed");
            Err(refuse(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Internal, "the attachment could not be read"))
        }
    }
}

/// Bytes of a file read and handed to the connection at a time.
const CHUNK_BYTES: usize = 64 * 1024;

/// Streams a file (never whole in memory) with the headers that keep a
/// browser from reading it as anything but `content_type`.
async fn serve(path: &Path, content_type: &'static str, disposition: &str) -> Response {
    let file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            error!(path = %path.display(), "attachments: a stored attachment has no file");
            return refuse(StatusCode::NOT_FOUND, ErrorCode::NotFound, "the attachment's file is missing");
        }
        Err(e) => return internal("opening the attachment failed", &e),
    };
    let length = match file.metadata().await {
        Ok(meta) => meta.len(),
        Err(e) => return internal("reading the attachment failed", &e),
    };
    let chunks = futures_util::stream::unfold(file, |mut file| async move {
        let mut buffer = vec![0; CHUNK_BYTES];
        match file.read(&mut buffer).await {
            Ok(0) => None,
            Ok(n) => {
                buffer.truncate(n);
                Some((Ok::<_, std::io::Error>(Bytes::from(buffer)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    });
    let mut response = Body::from_stream(chunks).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("private, max-age=86400, immutable"));
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'none'; sandbox"));
    headers.insert(HeaderName::from_static("cross-origin-resource-policy"), HeaderValue::from_static("same-origin"));
    if let Ok(value) = HeaderValue::from_str(disposition) {
        headers.insert(CONTENT_DISPOSITION, value);
    }
    response
}

/// `inline` or `attachment` with the name twice: an ASCII fallback and the
/// UTF-8 name (RFC 6266 §4.3, RFC 8187).
fn content_disposition(kind: &str, name: &str) -> String {
    let ascii: String =
        name.chars().map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' { c } else { '_' }).collect();
    let mut encoded = String::with_capacity(name.len() * 3);
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    format!("{kind}; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

/// Writes `bytes` to `part`, then renames it to `path`.
async fn write_atomically(part: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = tokio::fs::File::create(part).await?;
    file.write_all(bytes).await?;
    file.sync_all().await?;
    drop(file);
    tokio::fs::rename(part, path).await
}

/// A file that is removed when dropped, unless kept.
struct Part {
    path: PathBuf,
    keep: bool,
}

impl Part {
    fn new(path: PathBuf) -> Self {
        Self { path, keep: false }
    }

    fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for Part {
    fn drop(&mut self) {
        if !self.keep {
            // It may not exist (never written, or renamed away): nothing to do then.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn too_big(max_bytes: u64) -> Response {
    metrics::counter!("petchat_attachment_uploads_refused_total", "reason" => "too_big").increment(1);
    refuse(StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::InvalidMessage, &format!("the file is over {max_bytes} bytes"))
}

fn not_supported() -> Response {
    metrics::counter!("petchat_attachment_uploads_refused_total", "reason" => "type").increment(1);
    refuse(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorCode::InvalidMessage,
        "only JPEG, PNG, WebP and GIF pictures and PDF documents may be attached (judged by their content)",
    )
}

fn internal(what: &str, error: &dyn std::fmt::Display) -> Response {
    error!(error = %error, "attachments: {what}");
    refuse(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal, what)
}

fn refuse(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    (status, Json(ErrorData { code, message: message.to_owned(), ref_id: None, retry_after_ms: None })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_disposition_carries_any_name_safely() {
        assert_eq!(
            content_disposition("inline", "rash.jpg"),
            "inline; filename=\"rash.jpg\"; filename*=UTF-8''rash.jpg"
        );
        assert_eq!(
            content_disposition("attachment", "Rechnung \"März\".pdf"),
            "attachment; filename=\"Rechnung _M_rz_.pdf\"; filename*=UTF-8''Rechnung%20%22M%C3%A4rz%22.pdf"
        );
    }
}
