//! Decode benchmark: the Python-style predecessor (a full decode per module for 8 modules,
//! then a resize per module) against imgd (a header read, one decode at the tiered size, then
//! tier resizes), on a generated corpus of full-size images.
//!
//! Run through `scripts/bench-decode.sh` (or `cargo bench -p imgd-decode --bench decode`).
//! The corpus is generated once under `target/bench-corpus/` (never committed): JPEGs of
//! 12-24 MP made from the real photos in `fixtures/photos/` upscaled with noise and texture,
//! 24 MP Bayer DNGs (`imgd_decode::synth::make_dng`), and 12 MP HEICs (`heif-enc`, when
//! installed). Prints CPU seconds per image for both, peak heap per image in flight, then
//! `jpeg_dct_speedup=X` and last `decode_cpu_ratio=X`.
#![allow(unsafe_code)] // the counting global allocator below

use image::RgbImage;
use imgd_decode::{DecodeOptions, decode_tiers_bytes, read_header_bytes, resize_long_edge};
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// Heap bytes in use and the peak since the last reset.
struct Counting;
static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only adds relaxed counters.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(l.size(), Ordering::Relaxed) + l.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        CURRENT.fetch_sub(l.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            if new > l.size() {
                let now = CURRENT.fetch_add(new - l.size(), Ordering::Relaxed) + new - l.size();
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                CURRENT.fetch_sub(l.size() - new, Ordering::Relaxed);
            }
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn reset_peak() -> usize {
    let now = CURRENT.load(Ordering::Relaxed);
    PEAK.store(now, Ordering::Relaxed);
    now
}

/// Process CPU time (all threads, user + system) from /proc/self/stat, in seconds.
fn cpu_seconds() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = s.rsplit_once(')').map_or("", |r| r.1);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// The module tiers (metadata reads the header only).
const MODULE_TIERS: [(&str, Option<u32>); 8] = [
    ("metadata", None),
    ("technical", Some(1024)),
    ("embedding", Some(448)),
    ("objects", Some(800)),
    ("caption", Some(384)),
    ("ocr", Some(960)),
    ("faces", Some(1280)),
    ("cloud", Some(1568)),
];

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }
}

/// A real photo upscaled to `w`×`h` with grain and fine texture, so that it compresses like a
/// full-size camera JPEG.
fn textured(src: &RgbImage, w: u32, h: u32, seed: u64) -> RgbImage {
    let mut img = image::imageops::resize(
        &resize_long_edge(src, src.width().max(src.height())),
        w,
        h,
        image::imageops::FilterType::Triangle,
    );
    let mut rng = Rng(seed);
    for (x, y, p) in img.enumerate_pixels_mut() {
        let tex = (((x as f32 * 0.9).sin() * (y as f32 * 0.7).cos()) * 6.0) as i32;
        let grain = (rng.next() % 17) as i32 - 8;
        for c in p.0.iter_mut() {
            *c = (*c as i32 + tex + grain).clamp(0, 255) as u8;
        }
    }
    img
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn make_corpus(dir: &Path) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    let photos = workspace_root().join("fixtures/photos");
    let sources: Vec<RgbImage> = ["xmp_test.jpg", "flower.jpg", "flower2.jpg", "hopper.jpg"]
        .iter()
        .map(|f| image::open(photos.join(f)).unwrap().into_rgb8())
        .collect();
    let sizes = [(4000, 3000), (5184, 3456), (6000, 4000), (4032, 3024)];
    let mut files = Vec::new();
    for i in 0..16usize {
        let p = dir.join(format!("photo_{i:02}.jpg"));
        if !p.exists() {
            let (w, h) = sizes[i % sizes.len()];
            let img = textured(&sources[i % sources.len()], w, h, i as u64 + 1);
            let mut out = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
                .encode_image(&img)
                .unwrap();
            std::fs::write(&p, out).unwrap();
            eprintln!("generated {} ({w}x{h})", p.display());
        }
        files.push(p);
    }
    for i in 0..3usize {
        let p = dir.join(format!("raw_{i}.dng"));
        if !p.exists() {
            let img = textured(&sources[i % sources.len()], 6000, 4000, 100 + i as u64);
            // Two with a 1024 px preview (like converter DNGs), one with a full-size preview.
            let preview = if i == 2 { 6000 } else { 1024 };
            let o = imgd_decode::synth::DngOptions {
                preview_long_edge: Some(preview),
                ..Default::default()
            };
            std::fs::write(&p, imgd_decode::synth::make_dng(&img, &o)).unwrap();
            eprintln!("generated {}", p.display());
        }
        files.push(p);
    }
    for i in 0..2usize {
        let p = dir.join(format!("phone_{i}.heic"));
        if !p.exists() {
            let src = dir.join(format!("phone_{i}_src.jpg"));
            let img = textured(
                &sources[(i + 1) % sources.len()],
                4032,
                3024,
                200 + i as u64,
            );
            img.save(&src).unwrap();
            let ok = std::process::Command::new("heif-enc")
                .args(["-q", "50", "-o"])
                .arg(&p)
                .arg(&src)
                .stdout(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            let _ = std::fs::remove_file(&src);
            if !ok {
                eprintln!("heif-enc not available: no HEIC in the corpus");
                continue;
            }
            eprintln!("generated {}", p.display());
        }
        files.push(p);
    }
    files
}

#[derive(Default)]
struct Totals {
    cpu: f64,
    wall: f64,
    peak_sum: f64,
    peak_max: usize,
    n: usize,
}

impl Totals {
    fn add(&mut self, cpu: f64, wall: f64, peak: usize) {
        self.cpu += cpu;
        self.wall += wall;
        self.peak_sum += peak as f64;
        self.peak_max = self.peak_max.max(peak);
        self.n += 1;
    }
}

/// The predecessor: every module reads and fully decodes the file, then resizes for itself.
fn baseline(path: &Path, opts: &DecodeOptions) {
    for (_, tier) in MODULE_TIERS {
        let bytes = std::fs::read(path).unwrap();
        let full = decode_tiers_bytes(&bytes, &[], opts).unwrap();
        if let Some(t) = tier {
            std::hint::black_box(resize_long_edge(&full.tiers[0].image, t));
        }
    }
}

/// imgd: one read, a header read for metadata, one decode at the tiered size, tier resizes.
fn imgd(path: &Path, opts: &DecodeOptions) -> String {
    let bytes = std::fs::read(path).unwrap();
    std::hint::black_box(read_header_bytes(&bytes, opts).unwrap());
    let tiers: Vec<u32> = MODULE_TIERS.iter().filter_map(|m| m.1).collect();
    let d = decode_tiers_bytes(&bytes, &tiers, opts).unwrap();
    d.decode_path.to_string()
}

fn measure(f: impl FnOnce()) -> (f64, f64, usize) {
    let base = reset_peak();
    let (c0, t0) = (cpu_seconds(), Instant::now());
    f();
    let (cpu, wall) = (cpu_seconds() - c0, t0.elapsed().as_secs_f64());
    (cpu, wall, PEAK.load(Ordering::Relaxed).saturating_sub(base))
}

fn main() {
    let dir = workspace_root().join("target/bench-corpus");
    let files = make_corpus(&dir);
    let opts = DecodeOptions::default();
    println!("corpus: {} images in {}", files.len(), dir.display());
    println!(
        "{:<16} {:>10} {:>9} {:>9} {:>9} {:>9}  path",
        "image", "MB", "base_cpu", "imgd_cpu", "base_MB", "imgd_MB"
    );
    let (mut base, mut ours) = (Totals::default(), Totals::default());
    let mut per_format: std::collections::BTreeMap<String, (f64, f64)> = Default::default();
    for p in &files {
        let (bc, bw, bp) = measure(|| baseline(p, &opts));
        let mut path = String::new();
        let (ic, iw, ip) = measure(|| path = imgd(p, &opts));
        base.add(bc, bw, bp);
        ours.add(ic, iw, ip);
        let kind = p.extension().unwrap().to_string_lossy().to_string();
        let e = per_format.entry(kind).or_default();
        e.0 += bc;
        e.1 += ic;
        println!(
            "{:<16} {:>10.1} {:>9.2} {:>9.2} {:>9.0} {:>9.0}  {}",
            p.file_name().unwrap().to_string_lossy(),
            std::fs::metadata(p).unwrap().len() as f64 / 1e6,
            bc,
            ic,
            bp as f64 / 1e6,
            ip as f64 / 1e6,
            path
        );
    }
    let n = files.len() as f64;
    println!(
        "baseline (8 full decodes + 7 resizes): {:.3} CPU s/image, {:.3} wall s/image, peak heap {:.0} MB/image in flight (max {:.0} MB)",
        base.cpu / n,
        base.wall / n,
        base.peak_sum / n / 1e6,
        base.peak_max as f64 / 1e6
    );
    println!(
        "imgd (1 header + 1 tiered decode + 7 tiers): {:.3} CPU s/image, {:.3} wall s/image, peak heap {:.0} MB/image in flight (max {:.0} MB)",
        ours.cpu / n,
        ours.wall / n,
        ours.peak_sum / n / 1e6,
        ours.peak_max as f64 / 1e6
    );
    println!("(heap figures count Rust allocations; libheif's own buffers are not seen)");
    for (kind, (b, i)) in &per_format {
        println!("  {kind}: baseline/imgd CPU = {:.2}", b / i.max(0.01));
    }

    // A 24 MP JPEG straight to a 1024 px tier: DCT scaling vs full decode + resize.
    let big = files
        .iter()
        .find(|p| {
            std::fs::read(p)
                .ok()
                .and_then(|b| read_header_bytes(&b, &opts).ok())
                .is_some_and(|h| h.format == imgd_decode::ImageFormat::Jpeg && h.width == 6000)
        })
        .expect("a 24 MP JPEG in the corpus");
    let bytes = std::fs::read(big).unwrap();
    // Each sample times REPS decodes in a row (the CPU clock ticks in 10 ms); the best of
    // SAMPLES samples is kept.
    const REPS: usize = 5;
    const SAMPLES: usize = 3;
    let best = |f: &mut dyn FnMut()| -> f64 {
        (0..SAMPLES)
            .map(|_| {
                measure(|| {
                    for _ in 0..REPS {
                        f();
                    }
                })
                .0 / REPS as f64
            })
            .fold(f64::MAX, f64::min)
    };
    let mut dct_path = String::new();
    let dct = best(&mut || {
        let d = decode_tiers_bytes(&bytes, &[1024], &opts).unwrap();
        dct_path = d.decode_path.to_string();
    });
    // Full decode + resize, by each full-resolution decoder at hand: imgd's full path
    // (zune-jpeg) and the libjpeg-turbo build the scaled path uses, at full scale with the
    // same (fastest) settings. The speedup is taken against the faster of the two.
    let zune_full = best(&mut || {
        let d = decode_tiers_bytes(&bytes, &[], &opts).unwrap();
        std::hint::black_box(resize_long_edge(&d.tiers[0].image, 1024));
    });
    let turbo_full = best(&mut || {
        let mut d = mozjpeg::Decompress::new_mem(&bytes).unwrap();
        d.scale(8);
        d.do_fancy_upsampling(false);
        d.dct_method(mozjpeg::DctMethod::IntegerFast);
        let mut s = d.rgb().unwrap();
        let (w, h) = (s.width() as u32, s.height() as u32);
        let px: Vec<u8> = s.read_scanlines().unwrap();
        s.finish().unwrap();
        let img = RgbImage::from_raw(w, h, px).unwrap();
        std::hint::black_box(resize_long_edge(&img, 1024));
    });
    let full = zune_full.min(turbo_full);
    println!(
        "24 MP JPEG -> 1024 px: {dct_path} {dct:.3} CPU s vs full decode + resize: zune-jpeg {zune_full:.3} CPU s, libjpeg-turbo {turbo_full:.3} CPU s"
    );
    println!(
        "  (speedup against zune-jpeg {:.2}, against libjpeg-turbo at full scale {:.2})",
        zune_full / dct.max(0.001),
        turbo_full / dct.max(0.001)
    );
    println!("jpeg_dct_speedup={:.2}", full / dct.max(0.001));
    println!("decode_cpu_ratio={:.2}", base.cpu / ours.cpu.max(0.01));
}
