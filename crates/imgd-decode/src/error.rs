//! The one error type of the crate.

use crate::format::ImageFormat;

/// Why an image could not be read or decoded.
///
/// Every message names the problem with the file in words a user can act on; none of the
/// variants is ever produced by a panic escaping (see [`DecodeError::Panicked`]).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The file could not be opened or read.
    #[error("cannot read the file: {0}")]
    Io(#[from] std::io::Error),
    /// The file has zero bytes.
    #[error("the file is empty (0 bytes)")]
    Empty,
    /// The magic bytes match no supported image format.
    #[error("not a supported image format (first bytes: {magic})")]
    UnknownFormat {
        /// The first bytes of the file, as hex.
        magic: String,
    },
    /// The file ends before the image data does.
    #[error("the {format} file is truncated: {message}")]
    Truncated {
        /// The format sniffed from the magic bytes.
        format: ImageFormat,
        /// What the decoder reported.
        message: String,
    },
    /// The file is damaged or not valid for its format.
    #[error("the {format} file is corrupt: {message}")]
    Corrupt {
        /// The format sniffed from the magic bytes.
        format: ImageFormat,
        /// What the decoder reported.
        message: String,
    },
    /// The header claims more pixels than the configured limit (a decompression bomb guard).
    #[error(
        "the image is too large: {width}x{height} is {} megapixels, over the limit of {} megapixels",
        (*width as u64 * *height as u64) / 1_000_000,
        limit / 1_000_000
    )]
    TooLarge {
        /// Width claimed by the header.
        width: u32,
        /// Height claimed by the header.
        height: u32,
        /// The configured pixel limit.
        limit: u64,
    },
    /// The path is not a regular file (a FIFO, a device, a socket, a folder): it is never read.
    #[error("not a regular file: the path is {kind}")]
    NotAFile {
        /// What the path is, in words (`"a FIFO"`, `"a character device"`, ...).
        kind: &'static str,
    },
    /// The file is bigger than the configured file-size limit.
    #[error("the file is too large: {size} bytes, over the limit of {limit} bytes")]
    FileTooLarge {
        /// File size in bytes.
        size: u64,
        /// The configured limit in bytes.
        limit: u64,
    },
    /// A valid file using a feature this build cannot decode.
    #[error("unsupported {format} image: {message}")]
    Unsupported {
        /// The format sniffed from the magic bytes.
        format: ImageFormat,
        /// What is not supported.
        message: String,
    },
    /// A decoder panicked on this file; the panic was caught.
    #[error("the decoder crashed on this file (caught panic: {message})")]
    Panicked {
        /// The panic payload, when it was a string.
        message: String,
    },
}

impl DecodeError {
    /// A short stable name of the variant (`"io"`, `"truncated"`, `"too_large"`, ...), for
    /// metrics labels and JSON output.
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::Io(_) => "io",
            DecodeError::Empty => "empty",
            DecodeError::UnknownFormat { .. } => "unknown_format",
            DecodeError::Truncated { .. } => "truncated",
            DecodeError::Corrupt { .. } => "corrupt",
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::FileTooLarge { .. } => "file_too_large",
            DecodeError::NotAFile { .. } => "not_a_file",
            DecodeError::Unsupported { .. } => "unsupported",
            DecodeError::Panicked { .. } => "panicked",
        }
    }

    /// Whether trying again cannot help: the file itself is the problem (its content, size or
    /// kind). Only read errors (a disk or network share that failed, permissions) may pass.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, DecodeError::Io(_))
    }

    /// Whether the file is gone (deleted or renamed since it was registered).
    pub fn is_missing(&self) -> bool {
        matches!(self, DecodeError::Io(e) if e.kind() == std::io::ErrorKind::NotFound)
    }

    pub(crate) fn truncated(format: ImageFormat, message: impl Into<String>) -> Self {
        DecodeError::Truncated {
            format,
            message: message.into(),
        }
    }

    pub(crate) fn corrupt(format: ImageFormat, message: impl Into<String>) -> Self {
        DecodeError::Corrupt {
            format,
            message: message.into(),
        }
    }

    pub(crate) fn unsupported(format: ImageFormat, message: impl Into<String>) -> Self {
        DecodeError::Unsupported {
            format,
            message: message.into(),
        }
    }
}

/// Maps an `image` crate error to a [`DecodeError`] for a file of `format`.
pub(crate) fn from_image_error(format: ImageFormat, e: image::ImageError) -> DecodeError {
    use image::ImageError as E;
    match e {
        E::Limits(l) => DecodeError::corrupt(format, format!("decoder limit exceeded: {l}")),
        E::Unsupported(u) => DecodeError::unsupported(format, u.to_string()),
        E::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            DecodeError::truncated(format, io.to_string())
        }
        other => {
            let msg = other.to_string();
            if looks_truncated(&msg) {
                DecodeError::truncated(format, msg)
            } else {
                DecodeError::corrupt(format, msg)
            }
        }
    }
}

pub(crate) fn looks_truncated(msg: &str) -> bool {
    let m = msg.to_ascii_lowercase();
    m.contains("eof")
        || m.contains("end of file")
        || m.contains("unexpected end")
        || m.contains("truncat")
        || m.contains("not enough data")
        || m.contains("premature end")
        || m.contains("fill whole buffer")
}
