//! Attachments: photos and PDFs uploaded over HTTP
//! (`POST /v1/conversations/{id}/attachments`), then referenced by id from a
//! `chat.send`; `chat.message` carries their metadata.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::bounded::bounded_string;
use crate::ids::{AttachmentId, InvalidValue};
use crate::limits::{MAX_ATTACHMENT_NAME_CHARS, MAX_ATTACHMENTS_PER_MESSAGE};

bounded_string! {
    /// The display name of an attachment (the uploader's file name, as sanitized
    /// by the server): 1 to `MAX_ATTACHMENT_NAME_CHARS` characters, no control
    /// characters and no path separators (`/`, `\`). Only shown, never used as a path.
    AttachmentName,
    chars: 1, MAX_ATTACHMENT_NAME_CHARS,
    allowed: is_name_char,
    pattern: Some(r"^[^\u0000-\u001f\u007f-\u009f/\\]+$"),
}

/// Whether a character may be part of an [`AttachmentName`].
fn is_name_char(c: char) -> bool {
    !c.is_control() && c != '/' && c != '\\'
}

impl AttachmentName {
    /// The name to show for a file a client called `raw`: control characters
    /// and path separators become `_`, everything up to the last separator is
    /// dropped (a client's `C:\photos\rash.jpg` is `rash.jpg`), surrounding white
    /// space and dots are trimmed, and the result is cut to
    /// [`MAX_ATTACHMENT_NAME_CHARS`] characters keeping the extension where it
    /// can; `None` or nothing left gives `fallback`.
    pub fn sanitize(raw: Option<&str>, fallback: &str) -> Self {
        let raw = raw.unwrap_or_default();
        let base = raw.rsplit(['/', '\\']).next().unwrap_or_default();
        let cleaned: String = base.chars().map(|c| if is_name_char(c) { c } else { '_' }).collect();
        let trimmed = cleaned.trim_matches(|c: char| c.is_whitespace() || c == '.');
        let name = if trimmed.chars().count() <= MAX_ATTACHMENT_NAME_CHARS {
            trimmed.to_owned()
        } else {
            // Keep a short extension (".jpeg") so the name still says what it is.
            let extension = trimmed
                .rsplit_once('.')
                .map(|(_, ext)| ext)
                .filter(|ext| !ext.is_empty() && ext.chars().count() <= 8)
                .map(|ext| format!(".{ext}"))
                .unwrap_or_default();
            let keep = MAX_ATTACHMENT_NAME_CHARS - extension.chars().count();
            let stem: String = trimmed.chars().take(keep).collect();
            format!("{}{extension}", stem.trim_end())
        };
        Self::new(name).unwrap_or_else(|_| Self(fallback.to_owned()))
    }
}

/// What an attachment is, as the server found by its content (magic bytes),
/// never by its name or the type a client claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum AttachmentType {
    /// A JPEG photo.
    #[serde(rename = "image/jpeg")]
    Jpeg,
    /// A PNG image.
    #[serde(rename = "image/png")]
    Png,
    /// A WebP image.
    #[serde(rename = "image/webp")]
    Webp,
    /// A GIF image (its first frame is the thumbnail).
    #[serde(rename = "image/gif")]
    Gif,
    /// A PDF document (no thumbnail).
    #[serde(rename = "application/pdf")]
    Pdf,
}

impl AttachmentType {
    /// Every type, in the order the documentation lists them.
    pub const ALL: [Self; 5] = [Self::Jpeg, Self::Png, Self::Webp, Self::Gif, Self::Pdf];

    /// The media type, as the wire and the `Content-Type` of the file name it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Jpeg => "image/jpeg",
            Self::Png => "image/png",
            Self::Webp => "image/webp",
            Self::Gif => "image/gif",
            Self::Pdf => "application/pdf",
        }
    }

    /// The type a media type names, if it is one of these.
    pub fn from_wire(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// Whether it is a picture (it has dimensions and a thumbnail).
    pub const fn is_image(self) -> bool {
        !matches!(self, Self::Pdf)
    }
}

impl fmt::Display for AttachmentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An uploaded attachment: the upload's `201` body, and each entry of
/// `chat.message.attachments`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    /// Its id: `chat.send.attachments` names it, and the file is
    /// `GET /v1/conversations/{conversationId}/attachments/{id}`.
    pub id: AttachmentId,
    /// The name to show (the uploader's sanitized file name).
    pub name: AttachmentName,
    /// What it is, by its content.
    pub content_type: AttachmentType,
    /// Its size in bytes.
    pub size: u64,
    /// A picture's width in pixels, as shown (after its EXIF orientation); absent for a PDF.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// A picture's height in pixels, as shown; absent for a PDF.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
}

/// The attachments a `chat.send` references: at most
/// [`MAX_ATTACHMENTS_PER_MESSAGE`] ids, none twice, in the order to show them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct AttachmentIds(Vec<AttachmentId>);

impl AttachmentIds {
    /// Checks a list of ids.
    pub fn new(ids: Vec<AttachmentId>) -> Result<Self, InvalidValue> {
        if ids.len() > MAX_ATTACHMENTS_PER_MESSAGE {
            return Err(InvalidValue(format!(
                "has {} attachments, at most {MAX_ATTACHMENTS_PER_MESSAGE} are allowed",
                ids.len()
            )));
        }
        if let Some((i, id)) = ids.iter().enumerate().find(|(i, id)| ids[..*i].contains(id)) {
            return Err(InvalidValue(format!("names attachment {id} twice (at {i})")));
        }
        Ok(Self(ids))
    }

    /// The ids, in order.
    pub fn as_slice(&self) -> &[AttachmentId] {
        &self.0
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'de> Deserialize<'de> for AttachmentIds {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::new(Vec::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for AttachmentIds {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "AttachmentIds".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": format!(
                "Attachments uploaded to this conversation by the sender and not sent yet, in the order to show \
                 them: at most {MAX_ATTACHMENTS_PER_MESSAGE}, none twice."
            ),
            "type": "array",
            "items": generator.subschema_for::<AttachmentId>(),
            "maxItems": MAX_ATTACHMENTS_PER_MESSAGE,
            "uniqueItems": true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(raw: &str) -> String {
        AttachmentName::sanitize(Some(raw), "file").as_str().to_owned()
    }

    #[test]
    fn names_lose_paths_and_control_characters() {
        assert_eq!(name("rash.jpg"), "rash.jpg");
        assert_eq!(name("../../etc/passwd"), "passwd");
        assert_eq!(name(r"C:\photos\rash.jpg"), "rash.jpg");
        assert_eq!(name("a\u{0}b\r\nc.png"), "a_b__c.png");
        assert_eq!(name("  ..hidden.pdf. "), "hidden.pdf");
        assert_eq!(name("dir/"), "file");
        assert_eq!(name("..."), "file");
        assert_eq!(AttachmentName::sanitize(None, "photo").as_str(), "photo");
    }

    #[test]
    fn long_names_are_cut_keeping_the_extension() {
        let long = format!("{}.jpeg", "🐈".repeat(500));
        let cut = name(&long);
        assert_eq!(cut.chars().count(), MAX_ATTACHMENT_NAME_CHARS);
        assert!(cut.ends_with(".jpeg"));
        assert!(AttachmentName::new("a/b").is_err());
        assert!(AttachmentName::new("a\u{7}").is_err());
    }

    #[test]
    fn ids_are_few_and_distinct() {
        let id = |s: &str| AttachmentId::new(s).expect("valid id");
        assert!(AttachmentIds::new(vec![id("a"), id("b"), id("c"), id("d")]).is_ok());
        assert!(AttachmentIds::new(vec![id("a"), id("b"), id("c"), id("d"), id("e")]).is_err());
        assert!(AttachmentIds::new(vec![id("a"), id("a")]).is_err());
        assert_eq!(AttachmentType::from_wire("application/pdf"), Some(AttachmentType::Pdf));
        assert_eq!(AttachmentType::from_wire("text/html"), None);
    }
}
