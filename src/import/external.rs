//! External data: tensors whose bytes live in side files next to the model
//! (`external_data` entries `location`, `offset`, `length`, as in the ONNX IR spec). Files are
//! memory-mapped once and tensors are slices of the map. A location must stay inside the model's
//! folder: absolute paths, `..` components and symlinks leading out are rejected.

use super::ImportError;
use bytes::Bytes;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Component, Path, PathBuf};

/// Maps a whole file read-only. The map is shared by every `Bytes` sliced from it.
pub fn map_file(path: &Path) -> std::io::Result<Bytes> {
    let file = File::open(path)?;
    if file.metadata()?.len() == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: the map is read-only; onnxopt never writes to a file it has mapped (outputs are
    // written to a temporary file and renamed, which leaves the mapped inode untouched). Another
    // process truncating the file while we run is outside what any reader can guard against.
    let map = unsafe { memmap2::Mmap::map(&file)? };
    Ok(Bytes::from_owner(map))
}

pub struct ExternalFiles {
    base: Option<PathBuf>,
    files: HashMap<PathBuf, Bytes>,
}

impl ExternalFiles {
    pub fn new(base: Option<PathBuf>) -> ExternalFiles {
        ExternalFiles {
            base,
            files: HashMap::new(),
        }
    }

    /// Every external-data file read so far, relative to the model's folder.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.files.keys().map(PathBuf::as_path)
    }

    pub fn read(
        &mut self,
        tensor: &str,
        entries: &[(String, String)],
    ) -> Result<Bytes, ImportError> {
        let err = |message: String| ImportError::External {
            tensor: tensor.to_string(),
            message,
        };
        let mut location = None;
        let mut offset = 0u64;
        let mut length = None;
        for (k, v) in entries {
            match k.as_str() {
                "location" => location = Some(v.clone()),
                "offset" => {
                    offset = v
                        .parse()
                        .map_err(|_| err(format!("offset '{v}' is not a number")))?
                }
                "length" => {
                    length = Some(
                        v.parse::<u64>()
                            .map_err(|_| err(format!("length '{v}' is not a number")))?,
                    )
                }
                // `checksum` and unknown keys are informative only.
                _ => {}
            }
        }
        let location = location.ok_or_else(|| err("no 'location' entry".into()))?;
        let rel = Path::new(&location);
        if location.is_empty()
            || rel
                .components()
                .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(err(format!(
                "location '{location}' must be a relative path inside the model's folder"
            )));
        }
        let base = self.base.clone().ok_or_else(|| {
            err(format!(
                "'{location}' cannot be resolved: the model was not loaded from a file"
            ))
        })?;
        let path = base.join(rel);
        if !self.files.contains_key(rel) {
            let canon_base = base
                .canonicalize()
                .map_err(|e| err(format!("model folder: {e}")))?;
            let canon = path
                .canonicalize()
                .map_err(|e| err(format!("cannot open '{}': {e}", path.display())))?;
            if !canon.starts_with(&canon_base) {
                return Err(err(format!(
                    "location '{location}' leads outside the model's folder"
                )));
            }
            if canon.is_dir() {
                return Err(err(format!("'{}' is a directory", path.display())));
            }
            let bytes = map_file(&canon)
                .map_err(|e| err(format!("cannot read '{}': {e}", path.display())))?;
            self.files.insert(rel.to_path_buf(), bytes);
        }
        let file = &self.files[rel];
        let size = file.len() as u64;
        let length = length.unwrap_or(size.saturating_sub(offset));
        match offset.checked_add(length) {
            Some(end) if end <= size => Ok(file.slice(offset as usize..end as usize)),
            _ => Err(err(format!(
                "'{}' holds {size} bytes but the tensor needs bytes {offset}..{} (file too short)",
                path.display(),
                offset as u128 + length as u128
            ))),
        }
    }
}
