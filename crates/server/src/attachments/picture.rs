//! A picture's dimensions and thumbnail, decoded under limits so that no
//! file (a decompression bomb: a small file of a huge picture) can make the
//! server allocate more than the pixels it allows.

use std::io::{BufReader, Cursor};
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};
use petchat_protocol::AttachmentType;
use petchat_protocol::limits::THUMBNAIL_MAX_SIDE;

/// Quality of the thumbnails' JPEG encoding (1–100).
const THUMBNAIL_QUALITY: u8 = 80;

/// What decoding a picture gave.
#[derive(Debug)]
pub(super) struct Decoded {
    /// Its width as shown (after its EXIF orientation).
    pub width: u32,
    /// Its height as shown.
    pub height: u32,
    /// Its thumbnail, a JPEG at most `THUMBNAIL_MAX_SIDE` on its longest side.
    pub thumbnail: Vec<u8>,
}

/// Why a picture was refused.
#[derive(Debug, thiserror::Error)]
pub(super) enum PictureError {
    /// More pixels than `--max-image-pixels`.
    #[error("the picture is {width} × {height} pixels; at most {max} pixels are allowed")]
    TooManyPixels {
        /// Its width.
        width: u32,
        /// Its height.
        height: u32,
        /// The limit.
        max: u64,
    },
    /// It starts like a picture but does not decode as one.
    #[error("the file is not a readable {0} picture: {1}")]
    Unreadable(AttachmentType, String),
    /// The file could not be read.
    #[error("reading the file: {0}")]
    Io(#[from] std::io::Error),
}

/// Decodes the picture in `path` (of the sniffed `kind`) and makes its
/// thumbnail, refusing pictures of more than `max_pixels`. Blocking: run it
/// on a blocking thread.
pub(super) fn decode(path: &Path, kind: AttachmentType, max_pixels: u64) -> Result<Decoded, PictureError> {
    let format = match kind {
        AttachmentType::Jpeg => ImageFormat::Jpeg,
        AttachmentType::Png => ImageFormat::Png,
        AttachmentType::Webp => ImageFormat::WebP,
        AttachmentType::Gif => ImageFormat::Gif,
        AttachmentType::Pdf => return Err(PictureError::Unreadable(kind, "a PDF is not a picture".into())),
    };
    let unreadable = |e: image::ImageError| match e {
        image::ImageError::Limits(_) => PictureError::Unreadable(kind, "it needs more memory than allowed".into()),
        other => PictureError::Unreadable(kind, other.to_string()),
    };
    let mut reader = ImageReader::with_format(BufReader::new(std::fs::File::open(path)?), format);
    let mut limits = Limits::default();
    // Four bytes per pixel at most (RGBA8; 16-bit formats are converted
    // within the same budget or refused), plus room for the decoder's buffers.
    limits.max_alloc = Some(max_pixels.saturating_mul(4).saturating_add(16 << 20));
    reader.limits(limits.clone());
    let mut decoder = reader.into_decoder().map_err(unreadable)?;
    let (width, height) = decoder.dimensions();
    if u64::from(width) * u64::from(height) > max_pixels {
        return Err(PictureError::TooManyPixels { width, height, max: max_pixels });
    }
    decoder.set_limits(limits).map_err(unreadable)?;
    let orientation = decoder.orientation().map_err(unreadable)?;
    let mut picture = DynamicImage::from_decoder(decoder).map_err(unreadable)?;
    picture.apply_orientation(orientation);
    let (width, height) = (picture.width(), picture.height());
    // `thumbnail` would also enlarge a small picture: those are kept as they are.
    let small = if width.max(height) > THUMBNAIL_MAX_SIDE {
        let small = picture.thumbnail(THUMBNAIL_MAX_SIDE, THUMBNAIL_MAX_SIDE);
        drop(picture);
        small
    } else {
        picture
    };
    let mut thumbnail = Vec::new();
    let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(Cursor::new(&mut thumbnail), THUMBNAIL_QUALITY);
    on_white(&small).write_with_encoder(encoder).map_err(unreadable)?;
    Ok(Decoded { width, height, thumbnail })
}

/// The picture as RGB, transparent parts over white (JPEG has no alpha, and
/// a transparent PNG's hidden colour is often black).
fn on_white(picture: &DynamicImage) -> RgbImage {
    let rgba = picture.to_rgba8();
    RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let [r, g, b, a] = rgba.get_pixel(x, y).0;
        let blend = |c: u8| ((u16::from(c) * u16::from(a) + 255 * (255 - u16::from(a))) / 255) as u8;
        image::Rgb([blend(r), blend(g), blend(b)])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let picture = RgbImage::from_fn(width, height, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 128]));
        let mut bytes = Vec::new();
        picture.write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png).expect("encodes");
        bytes
    }

    fn file(bytes: &[u8]) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), bytes).expect("written");
        file
    }

    #[test]
    fn a_picture_gives_its_size_and_a_small_jpeg() {
        let file = file(&png(1200, 600));
        let decoded = decode(file.path(), AttachmentType::Png, 10_000_000).expect("decodes");
        assert_eq!((decoded.width, decoded.height), (1200, 600));
        let thumb = image::load_from_memory_with_format(&decoded.thumbnail, ImageFormat::Jpeg).expect("a JPEG");
        assert_eq!((thumb.width(), thumb.height()), (THUMBNAIL_MAX_SIDE, THUMBNAIL_MAX_SIDE / 2));
    }

    #[test]
    fn too_many_pixels_are_refused_before_decoding() {
        let file = file(&png(200, 200));
        let error = decode(file.path(), AttachmentType::Png, 39_999).expect_err("over the limit");
        assert!(matches!(error, PictureError::TooManyPixels { width: 200, height: 200, .. }), "{error}");
    }

    #[test]
    fn a_header_that_promises_a_huge_picture_is_refused() {
        // A valid PNG header claiming 100000 × 100000 pixels, and nothing after it.
        let mut bomb = png(1, 1);
        bomb[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        bomb[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        let file = file(&bomb);
        assert!(decode(file.path(), AttachmentType::Png, 25_000_000).is_err());
    }

    #[test]
    fn a_file_that_only_starts_like_a_picture_is_unreadable() {
        let file = file(b"\x89PNG\r\n\x1a\nthis is not a png at all");
        let error = decode(file.path(), AttachmentType::Png, 25_000_000).expect_err("garbage");
        assert!(matches!(error, PictureError::Unreadable(..)), "{error}");
    }
}
