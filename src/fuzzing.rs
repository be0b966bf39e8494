//! Entry points shared by the cargo-fuzz targets (`fuzz/`) and the corpus replay test
//! (`tests/fuzz_corpus.rs`): each takes arbitrary bytes and must return — never panic, never
//! hang — whatever the bytes are. Errors are fine; they are the expected answer to garbage.

use crate::ir::DataType;
use std::io::Write;

/// bytes → import → validate → export → import again; a model that imports must export, and its
/// export must import to the same IR.
pub fn import_export(data: &[u8]) {
    let Ok(m) = crate::import::from_bytes(bytes::Bytes::copy_from_slice(data), None) else {
        return;
    };
    if crate::ir::validate::validate(&m).is_err() {
        return;
    }
    let Ok(out) = crate::export::to_bytes_inline(&m) else {
        return;
    };
    let back = crate::import::from_bytes(out.into(), None).expect("exported bytes import");
    assert_eq!(
        crate::ir::dump::dump_model(&m),
        crate::ir::dump::dump_model(&back),
        "import → export → import changed the model"
    );
}

/// Sample-input parsing: the bytes as an `.npy`, an `.npz` and an ONNX `TensorProto` `.pb`, for a
/// model with one float input `x` of shape [2, 3] and one output `y`.
pub fn sample_inputs(data: &[u8]) {
    let _ = crate::import::tensor_from_bytes(bytes::Bytes::copy_from_slice(data));
    let Ok(dir) = tempfile::tempdir() else { return };
    let specs = vec![crate::inputs::InputSpec {
        name: "x".into(),
        dtype: DataType::FLOAT,
        dims: Some(vec![crate::ir::Dim::Fixed(2), crate::ir::Dim::Fixed(3)]),
    }];
    let outputs = vec![("y".to_string(), DataType::FLOAT)];
    for name in ["x.npy", "s.npz", "input_0.pb"] {
        let path = dir.path().join(name);
        if std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(data))
            .is_err()
        {
            return;
        }
        let _ = crate::inputs::load(&path, &specs, &outputs);
    }
}

/// A (mutated) model through the lossless optimizer and back out; what it writes must import.
pub fn optimize(data: &[u8]) {
    let Ok(m) = crate::import::from_bytes(bytes::Bytes::copy_from_slice(data), None) else {
        return;
    };
    if crate::ir::validate::validate(&m).is_err() {
        return;
    }
    if let Ok((o, _, _)) = crate::optimize::run_passes(&m, &Default::default()) {
        let out = crate::export::to_bytes_inline(&o).expect("optimized model exports");
        crate::import::from_bytes(out.into(), None).expect("optimized model imports");
    }
}
