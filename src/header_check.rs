//! The committed `include/libkvm.h` must be what cbindgen generates now.

#[test]
fn committed_header_matches_a_fresh_generation() {
    let fresh = std::fs::read_to_string(env!("LIBKVM_GENERATED_HEADER")).expect("build.rs wrote the header");
    let committed_path = concat!(env!("CARGO_MANIFEST_DIR"), "/include/libkvm.h");
    let committed = std::fs::read_to_string(committed_path).unwrap_or_default();
    assert!(
        fresh == committed,
        "include/libkvm.h is stale: run `make header` and commit it (diff it against {})",
        env!("LIBKVM_GENERATED_HEADER")
    );
}
