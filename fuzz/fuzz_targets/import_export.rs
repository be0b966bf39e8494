#![no_main]
// See onnxopt::fuzzing::import_export; crashes go to fuzz/artifacts/import_export, and the corpus in
// fuzz/corpus/import_export is replayed by `cargo test --test fuzz_corpus`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| onnxopt::fuzzing::import_export(data));
