//! The `phash` module: two 64-bit perceptual hashes of each image, computed on the decode
//! threads from a small tier, and near-duplicate grouping by their Hamming distance. It finds
//! resized, recompressed and lightly cropped copies of a photo without a model.
//!
//! - **pHash** ([`perceptual_hash`]): the grayscale image scaled to 32 × 32, its 2-D DCT, the
//!   8 × 8 lowest frequencies, one bit each for above or below their median (HashAlg::Median
//!   over a DCT in `image_hasher`). Robust to scaling, compression and small edits.
//! - **dHash** ([`difference_hash`]): the grayscale image scaled to 9 × 8, one bit per pair of
//!   horizontal neighbours for which is brighter. Cheap, and catches what pHash blurs.
//!
//! Both are stored as signed 64-bit integers holding the hash's bits (`result_phash.phash`,
//! `.dhash`). [`near_duplicate_groups`] links images whose pHashes differ in at most
//! `max_distance` bits, found through a multi-index over bit chunks rather than by comparing
//! every pair.

#![deny(missing_docs)]

use image::RgbImage;
use image_hasher::{HashAlg, Hasher, HasherConfig};
use imgd_core::{Migration, Module, ModuleSpec, ResultKey, ResultRow, RunsOn, SqlValue};
use imgd_infer::runner::{CpuAnalysis, CpuInput};

/// The default largest pHash distance, in bits, between near-duplicates: resized,
/// recompressed and 5 %-cropped copies of the test photos stay within it, different photos
/// stay far outside (see `tests/near_duplicates.rs`).
pub const DEFAULT_MAX_DISTANCE: u32 = 10;

/// The `phash` module's declaration.
pub static PHASH_SPEC: ModuleSpec = ModuleSpec {
    name: "phash",
    bit: 9,
    summary: "perceptual hashes (pHash and dHash) for near-duplicates without a model",
    // Both hashes scale the image to 32 px or less: the smallest tier serves.
    tier: Some(256),
    runs_on: RunsOn::DecodeThreads,
    queued_by_default: true,
    result_table: "result_phash",
    result_key: ResultKey::Image,
    migrations: &[Migration {
        version: 5,
        name: "0005_phash",
        sql: include_str!("../migrations/0005_phash.sql"),
        postgres: Some(include_str!("../migrations/0005_phash.pg.sql")),
    }],
    search_text: &[],
    gate: None,
    store_hook: None,
};

/// The `phash` module.
pub const PHASH: Module = Module::of(&PHASH_SPEC);

fn hash_with(hasher: &Hasher, image: &RgbImage) -> u64 {
    let hash = hasher.hash_image(image);
    let mut bits = [0u8; 8];
    bits.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_be_bytes(bits)
}

/// The 64-bit DCT perceptual hash of `image`.
pub fn perceptual_hash(image: &RgbImage) -> u64 {
    let hasher = HasherConfig::new()
        .hash_size(8, 8)
        .hash_alg(HashAlg::Median)
        .preproc_dct()
        .to_hasher();
    hash_with(&hasher, image)
}

/// The 64-bit difference hash of `image`.
pub fn difference_hash(image: &RgbImage) -> u64 {
    let hasher = HasherConfig::new()
        .hash_size(8, 8)
        .hash_alg(HashAlg::Gradient)
        .to_hasher();
    hash_with(&hasher, image)
}

/// The number of bits in which two hashes differ.
pub fn distance(a: u64, b: u64) -> u32 {
    (a ^ b).count_ones()
}

/// The `result_phash` row of an image with these hashes.
pub fn to_row(phash: u64, dhash: u64) -> ResultRow {
    ResultRow {
        module: PHASH,
        model_id: None,
        model_version: None,
        columns: vec![
            ("phash", SqlValue::Integer(phash as i64)),
            ("dhash", SqlValue::Integer(dhash as i64)),
        ],
        data: serde_json::json!({
            "phash": format!("{phash:016x}"),
            "dhash": format!("{dhash:016x}"),
        }),
        vectors: Vec::new(),
    }
}

/// The `phash` module on the decode threads.
#[derive(Debug, Clone, Copy, Default)]
pub struct PerceptualHashes;

impl CpuAnalysis for PerceptualHashes {
    fn module(&self) -> Module {
        PHASH
    }

    fn analyse(&self, input: &CpuInput<'_>) -> Result<ResultRow, String> {
        let tier = input
            .tier
            .ok_or_else(|| "no decoded tier for phash".to_string())?;
        Ok(to_row(perceptual_hash(tier), difference_hash(tier)))
    }
}

/// A group of near-duplicate images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashGroup {
    /// Its images, in ascending id order.
    pub image_ids: Vec<i64>,
    /// The largest distance among the pairs that link the group.
    pub max_distance: u32,
}

/// Groups the images whose hashes differ in at most `max_distance` bits (linked transitively),
/// largest groups first; images without a near-duplicate are left out.
///
/// Two hashes within `d` bits agree entirely on at least one of `d + 1` disjoint bit chunks
/// (pigeonhole), so only images sharing a chunk value are compared.
pub fn near_duplicate_groups(hashes: &[(i64, u64)], max_distance: u32) -> Vec<HashGroup> {
    let n = hashes.len();
    let mut parent: Vec<usize> = (0..n).collect();
    let mut linked_at = vec![0u32; n];
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let chunks = (max_distance as usize + 1).min(64);
    for chunk in 0..chunks {
        let start = chunk * 64 / chunks;
        let end = (chunk + 1) * 64 / chunks;
        let mask = if end - start == 64 {
            u64::MAX
        } else {
            ((1u64 << (end - start)) - 1) << start
        };
        let mut buckets: std::collections::HashMap<u64, Vec<usize>> =
            std::collections::HashMap::new();
        for (i, (_, hash)) in hashes.iter().enumerate() {
            buckets.entry(hash & mask).or_default().push(i);
        }
        for members in buckets.values() {
            for (k, &a) in members.iter().enumerate() {
                // A pair sharing several chunks is measured again: cheaper than remembering it.
                for &b in &members[k + 1..] {
                    let d = distance(hashes[a].1, hashes[b].1);
                    if d <= max_distance {
                        let (ra, rb) = (root(&mut parent, a), root(&mut parent, b));
                        let linked = linked_at[ra].max(linked_at[rb]).max(d);
                        parent[ra] = rb;
                        linked_at[rb] = linked;
                    }
                }
            }
        }
    }
    let mut groups: std::collections::HashMap<usize, Vec<i64>> = std::collections::HashMap::new();
    for (i, (image_id, _)) in hashes.iter().enumerate() {
        let r = root(&mut parent, i);
        groups.entry(r).or_default().push(*image_id);
    }
    let mut out: Vec<HashGroup> = groups
        .into_iter()
        .filter(|(_, ids)| ids.len() > 1)
        .map(|(r, mut image_ids)| {
            image_ids.sort_unstable();
            HashGroup {
                image_ids,
                max_distance: linked_at[r],
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.image_ids
            .len()
            .cmp(&a.image_ids.len())
            .then(a.image_ids.cmp(&b.image_ids))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_link_hashes_within_the_distance_and_only_them() {
        let base = 0x0123_4567_89ab_cdefu64;
        let hashes = [
            (1, base),
            (2, base ^ 0b1011),        // 3 bits from 1
            (3, base ^ (0b111 << 40)), // 3 bits from 1, 6 from 2
            (4, !base),                // 64 bits from 1
            (5, !base ^ 1),            // 1 bit from 4
            (6, base.rotate_left(17)), // far from all
        ];
        let groups = near_duplicate_groups(&hashes, 4);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].image_ids, [1, 2, 3]);
        assert_eq!(groups[0].max_distance, 3);
        assert_eq!(groups[1].image_ids, [4, 5]);
        assert_eq!(groups[1].max_distance, 1);
        assert!(near_duplicate_groups(&hashes, 0).is_empty());
        // A pair 6 bits apart is found with a wide enough distance, in any chunking.
        let wide = near_duplicate_groups(&hashes[..3], 6);
        assert_eq!(wide[0].image_ids, [1, 2, 3]);
    }

    #[test]
    fn a_flat_image_and_its_row() {
        let grey = RgbImage::from_pixel(64, 48, image::Rgb([128, 128, 128]));
        let row = PerceptualHashes
            .analyse(&CpuInput {
                exif: None,
                width: 64,
                height: 48,
                tier: Some(&grey),
            })
            .unwrap();
        assert_eq!(row.module, PHASH);
        assert_eq!(row.columns[0].0, "phash");
        assert!(
            PerceptualHashes
                .analyse(&CpuInput {
                    exif: None,
                    width: 1,
                    height: 1,
                    tier: None
                })
                .is_err()
        );
    }
}
