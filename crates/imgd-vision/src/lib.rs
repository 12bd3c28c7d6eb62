//! Image-model plumbing shared by the model crates, whatever runtime runs them: PIL's resize
//! reproduced bit for bit ([`pil`]), which the Hugging Face image processors of CLIP, BLIP,
//! TrOCR and GroundingDINO all use, and the fingerprint that versions results by weights
//! ([`fingerprint`]).

#![deny(missing_docs)]

pub mod pil;

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use sha2::{Digest, Sha256};

/// A fingerprint of a weights file: 16 hex digits of a SHA-256 over its length, its first MiB
/// and 16 samples of 64 KiB spread over the rest. Cheap on multi-GB files, and it changes
/// whenever the weights are replaced, which is what versioning results by model needs.
pub fn fingerprint(path: &Path) -> std::io::Result<String> {
    const HEAD: u64 = 1 << 20;
    const SAMPLE: u64 = 64 << 10;
    const SAMPLES: u64 = 16;
    let mut file = fs::File::open(path)?;
    let len = file.metadata()?.len();
    let mut hasher = Sha256::new();
    hasher.update(len.to_le_bytes());
    let mut buf = Vec::new();
    let mut read_at = |offset: u64, count: u64, hasher: &mut Sha256| -> std::io::Result<()> {
        buf.clear();
        file.seek(SeekFrom::Start(offset))?;
        (&mut file).take(count).read_to_end(&mut buf)?;
        hasher.update(&buf);
        Ok(())
    };
    read_at(0, HEAD, &mut hasher)?;
    if len > HEAD {
        for i in 0..SAMPLES {
            let offset = HEAD + (len - HEAD) * i / SAMPLES;
            read_at(offset, SAMPLE, &mut hasher)?;
        }
    }
    let digest = hasher.finalize();
    Ok(digest[..8].iter().map(|b| format!("{b:02x}")).collect())
}
