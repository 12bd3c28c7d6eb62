//! Times JPEG decode paths on one file (development aid).
fn main() {
    let p = std::env::args().nth(1).unwrap();
    let b = std::fs::read(&p).unwrap();
    let o = imgd_decode::DecodeOptions::default();
    for t in [750u32, 1024, 1568, 100000] {
        let t0 = std::time::Instant::now();
        let mut path = String::new();
        for _ in 0..3 {
            path = imgd_decode::decode_tiers_bytes(&b, &[t], &o)
                .unwrap()
                .decode_path
                .to_string();
        }
        println!(
            "{t}: {path} {:.1} ms",
            t0.elapsed().as_secs_f64() * 1000.0 / 3.0
        );
    }
}
