//! Checks that libjpeg-turbo (mozjpeg-sys) was built with its SIMD code on x86/x86_64.
//!
//! mozjpeg-sys only prints a warning and builds the plain-C decoder when the `nasm` assembler
//! is missing, which makes DCT-scaled JPEG decodes about twice as slow. This script reads the
//! `jconfig.h` that mozjpeg-sys generated (its include directories reach dependents as
//! `DEP_JPEG_INCLUDE`) and fails the build unless it defines `WITH_SIMD`. Setting
//! `IMGD_JPEG_NO_SIMD=1` accepts the plain-C build instead (with a warning).

use std::path::PathBuf;

const OPT_OUT: &str = "IMGD_JPEG_NO_SIMD";

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed={OPT_OUT}");
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if arch != "x86_64" && arch != "x86" {
        // Elsewhere mozjpeg-sys needs no nasm (NEON is built by the C compiler) or has no SIMD.
        return;
    }
    let include = std::env::var_os("DEP_JPEG_INCLUDE").unwrap_or_default();
    let jconfig: Option<PathBuf> = std::env::split_paths(&include)
        .map(|d| d.join("jconfig.h"))
        .find(|p| p.is_file());
    let Some(jconfig) = jconfig else {
        panic!(
            "imgd-decode: mozjpeg-sys did not report its include directory (DEP_JPEG_INCLUDE), \
             so whether libjpeg-turbo has SIMD cannot be checked"
        );
    };
    println!("cargo::rerun-if-changed={}", jconfig.display());
    let text = std::fs::read_to_string(&jconfig).unwrap_or_default();
    if text.lines().any(|l| l.trim() == "#define WITH_SIMD 1") {
        return;
    }
    if std::env::var(OPT_OUT).is_ok_and(|v| v == "1") {
        println!(
            "cargo::warning=libjpeg-turbo is built without SIMD ({OPT_OUT}=1): \
             DCT-scaled JPEG decodes run about twice as slow"
        );
        return;
    }
    panic!(
        "\n\nimgd-decode: libjpeg-turbo (mozjpeg-sys) was built without its SIMD code, which \
         needs the `nasm` assembler on PATH.\n\
         Install it (Debian: `apt-get install nasm`, or `scripts/setup.sh --deps`), then rebuild \
         mozjpeg-sys: `cargo clean -p mozjpeg-sys` (its build is cached without SIMD).\n\
         To build without SIMD on purpose (DCT-scaled JPEG decodes about twice as slow), set \
         {OPT_OUT}=1.\n\n"
    );
}
