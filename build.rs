//! Generates the C header from the exported items with cbindgen.
//!
//! The fresh header goes to `$OUT_DIR/libkvm.h`; a unit test compares it with
//! the committed `include/libkvm.h`, so an exported change that forgets the
//! header fails `cargo test`. `make header` (run by `make`) sets
//! `LIBKVM_WRITE_HEADER=1` to refresh the committed copy.

use std::env;
use std::path::PathBuf;

fn main() {
    let crate_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));

    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=LIBKVM_WRITE_HEADER");

    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml is valid");
    let bindings = cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen can read the crate");

    let fresh = out_dir.join("libkvm.h");
    bindings.write_to_file(&fresh);
    println!("cargo:rustc-env=LIBKVM_GENERATED_HEADER={}", fresh.display());

    if env::var_os("LIBKVM_WRITE_HEADER").is_some_and(|v| v == "1") {
        bindings.write_to_file(crate_dir.join("include/libkvm.h"));
    }
}
