#![no_main]
// See onnxopt::fuzzing::sample_inputs; crashes go to fuzz/artifacts/sample_inputs, and the corpus in
// fuzz/corpus/sample_inputs is replayed by `cargo test --test fuzz_corpus`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| onnxopt::fuzzing::sample_inputs(data));
