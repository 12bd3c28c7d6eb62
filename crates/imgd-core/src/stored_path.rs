//! File paths as the database stores them: text, losslessly, for any Unix file name.
//!
//! A path that is valid UTF-8 is stored as it is. A byte of a name that is not valid UTF-8
//! (a file copied from an old Latin-1 system, say) is stored as one character of Unicode's
//! private use plane 16, `U+10FF00 + byte`, so the stored text keeps the path's folder prefix
//! (folder rescans and sorting still work) and decodes back to the very same bytes.
//! [`display`] writes those bytes as `\xHH` for people. A valid name that already holds one of
//! those 128 characters would be ambiguous, so [`encode`] refuses it.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The first of the characters that stand for single bytes (`U+10FF80` is byte `0x80`).
const BYTE_BASE: u32 = 0x10_FF00;

/// Why a path cannot be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the name holds a character in U+10FF80..U+10FFFF, which imgd reserves to store bytes \
     that are not UTF-8"
)]
pub struct ReservedCharacter;

fn reserved(c: char) -> bool {
    (BYTE_BASE + 0x80..=BYTE_BASE + 0xFF).contains(&u32::from(c))
}

/// The stored text of `path` (this host's spelling of it, through the installed
/// [`path_map`](crate::path_map)).
pub fn encode(path: &Path) -> Result<String, ReservedCharacter> {
    let text = encode_here(path)?;
    Ok(match crate::path_map::installed().to_stored(&text) {
        std::borrow::Cow::Borrowed(_) => text,
        std::borrow::Cow::Owned(mapped) => mapped,
    })
}

fn encode_here(path: &Path) -> Result<String, ReservedCharacter> {
    let bytes = path.as_os_str().as_bytes();
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        if chunk.valid().chars().any(reserved) {
            return Err(ReservedCharacter);
        }
        out.push_str(chunk.valid());
        for &byte in chunk.invalid() {
            out.push(char::from_u32(BYTE_BASE + u32::from(byte)).expect("a valid scalar value"));
        }
    }
    Ok(out)
}

/// The path a stored text stands for on this host.
pub fn decode(stored: &str) -> PathBuf {
    let local = crate::path_map::installed().to_local(stored);
    let stored = local.as_ref();
    if !stored.chars().any(reserved) {
        return PathBuf::from(stored);
    }
    let mut bytes = Vec::with_capacity(stored.len());
    for c in stored.chars() {
        if reserved(c) {
            bytes.push((u32::from(c) - BYTE_BASE) as u8);
        } else {
            let mut buf = [0u8; 4];
            bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
    }
    PathBuf::from(OsStr::from_bytes(&bytes))
}

/// A stored path for people, as this host names it: bytes that are not UTF-8 as `\xHH`.
pub fn display(stored: &str) -> String {
    let local = crate::path_map::installed().to_local(stored);
    let stored = local.as_ref();
    if !stored.chars().any(reserved) {
        return stored.to_string();
    }
    stored
        .chars()
        .map(|c| {
            if reserved(c) {
                format!("\\x{:02x}", u32::from(c) - BYTE_BASE)
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_paths_are_stored_as_they_are() {
        let path = Path::new("/photos/été/IMG_0042.JPG");
        assert_eq!(encode(path).unwrap(), "/photos/été/IMG_0042.JPG");
        assert_eq!(decode("/photos/été/IMG_0042.JPG"), path);
    }

    #[test]
    fn other_bytes_round_trip_and_keep_the_folder_prefix() {
        let raw = b"/photos/caf\xe9/\xff\xfeIMG.jpg";
        let path = Path::new(OsStr::from_bytes(raw));
        let stored = encode(path).unwrap();
        assert!(stored.starts_with("/photos/caf"));
        assert_eq!(decode(&stored).as_os_str().as_bytes(), raw);
        assert_eq!(display(&stored), "/photos/caf\\xe9/\\xff\\xfeIMG.jpg");
    }

    #[test]
    fn a_reserved_character_in_a_valid_name_is_refused() {
        let name = format!("/photos/{}.jpg", char::from_u32(0x10FF90).unwrap());
        assert_eq!(encode(Path::new(&name)), Err(ReservedCharacter));
        // Its neighbours are ordinary characters.
        let fine = format!("/photos/{}.jpg", char::from_u32(0x10FF7F).unwrap());
        assert_eq!(encode(Path::new(&fine)).unwrap(), fine);
    }
}
