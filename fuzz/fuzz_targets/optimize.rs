#![no_main]
// See onnxopt::fuzzing::optimize; crashes go to fuzz/artifacts/optimize, and the corpus in
// fuzz/corpus/optimize is replayed by `cargo test --test fuzz_corpus`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| onnxopt::fuzzing::optimize(data));
