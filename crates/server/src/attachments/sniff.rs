//! What a file is, by its first bytes (its magic number), never by its name
//! or the type a client claims.
//!
//! A table of five signatures rather than a crate such as `infer`: petchat
//! accepts exactly these types, each signature is fixed by its format's
//! specification (cited per row), and a picture is then decoded in full
//! anyway (`picture.rs`), so a file that only starts like a PNG is refused
//! there. A general detector would know hundreds of types only to refuse them.

use petchat_protocol::AttachmentType;

/// Bytes [`sniff`] needs to tell every type apart (WebP's is the longest).
pub(super) const SNIFF_BYTES: usize = 12;

/// The type the first bytes of a file show, or `None` for anything else
/// (including a prefix shorter than [`SNIFF_BYTES`] that is not a whole file).
pub(super) fn sniff(head: &[u8]) -> Option<AttachmentType> {
    // JPEG (ITU T.81 / JFIF): SOI marker then the first segment's marker.
    if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Some(AttachmentType::Jpeg);
    }
    // PNG (ISO 15948 §5.2): the eight-byte signature.
    if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Some(AttachmentType::Png);
    }
    // GIF (GIF89a spec §17): "GIF87a" or "GIF89a".
    if head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a") {
        return Some(AttachmentType::Gif);
    }
    // WebP (RFC 9649 §2.4): a RIFF container whose form type is "WEBP".
    if head.len() >= SNIFF_BYTES && head.starts_with(b"RIFF") && &head[8..12] == b"WEBP" {
        return Some(AttachmentType::Webp);
    }
    // PDF (ISO 32000-1 §7.5.2): the header "%PDF-" at the start of the file.
    if head.starts_with(b"%PDF-") {
        return Some(AttachmentType::Pdf);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_type_is_known_by_its_magic_bytes() {
        assert_eq!(sniff(b"\xFF\xD8\xFF\xE0\x00\x10JFIF\x00"), Some(AttachmentType::Jpeg));
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR"), Some(AttachmentType::Png));
        assert_eq!(sniff(b"GIF89a\x01\x00\x01\x00"), Some(AttachmentType::Gif));
        assert_eq!(sniff(b"RIFF\x24\x00\x00\x00WEBPVP8 "), Some(AttachmentType::Webp));
        assert_eq!(sniff(b"%PDF-1.7\n%\xe2\xe3"), Some(AttachmentType::Pdf));
    }

    #[test]
    fn anything_else_is_refused_whatever_its_name() {
        // A Windows executable, an HTML page, an SVG (script inside), a ZIP,
        // a RIFF that is a WAV, text that merely mentions PDF, nothing at all.
        for head in [
            &b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00"[..],
            b"<!DOCTYPE html><script>",
            b"<svg xmlns=\"http://www.w3.org/2000/svg\">",
            b"PK\x03\x04\x14\x00\x00\x00",
            b"RIFF\x24\x00\x00\x00WAVEfmt ",
            b" %PDF-1.7",
            b"\x89PN",
            b"",
        ] {
            assert_eq!(sniff(head), None, "{head:?}");
        }
    }
}
