//! The files of an image-task run folder, shared by the `fsc` trainer ([`crate::run`]) and
//! the pretraining trainer ([`crate::pretrain::run`]): named flat buffers through the core's
//! safetensors writer and checksum-verifying parser, the resumable checkpoint (parameters,
//! state buffers, best so far, AdamW moments, a JSON state and the configuration as
//! metadata), `progress.tsv` kept consistent with the checkpoint, and a new folder's
//! preparation.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use plastic::io::write_atomic;
use plastic::optim::AdamW;
use plastic::params::ParamInfo;
use plastic::{Error, Float, Result};

/// Named flat buffers as safetensors bytes, in `F`'s own float type, through the core's
/// writer (sorted header, checksum of the whole content).
pub(crate) fn tensors_bytes<F: Float>(
    groups: &[(&str, &[ParamInfo], &[F])],
    metadata: BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    let mut named = Vec::new();
    for (prefix, infos, data) in groups {
        for info in infos.iter() {
            named.push((
                format!("{prefix}{}", info.name),
                info.shape.clone(),
                &data[info.range()],
            ));
        }
    }
    plastic::params::named_safetensors_bytes(&named, metadata)
}

/// Reads the named buffer `prefix` + every name of `infos` from safetensors, as `F`; a
/// missing name, a wrong shape, another dtype or a non-finite value is an error naming it.
pub(crate) fn tensors_read<F: Float>(
    st: &safetensors::SafeTensors,
    prefix: &str,
    infos: &[ParamInfo],
    path: &Path,
) -> Result<Vec<F>> {
    use safetensors::tensor::Dtype;
    let len = infos.iter().map(|i| i.offset + i.len()).max().unwrap_or(0);
    let mut data = vec![F::zero(); len];
    for info in infos {
        let name = format!("{prefix}{}", info.name);
        let t = st.tensor(&name).map_err(|_| Error::MissingParam {
            name: name.clone(),
            expected: info.shape.clone(),
        })?;
        if t.shape() != info.shape.as_slice() {
            return Err(Error::ParamShape {
                name,
                expected: info.shape.clone(),
                found: t.shape().to_vec(),
            });
        }
        let dst = &mut data[info.range()];
        match t.dtype() {
            Dtype::F32 => {
                for (d, c) in dst.iter_mut().zip(t.data().chunks_exact(4)) {
                    *d = F::of(f32::from_le_bytes(c.try_into().expect("4 bytes")) as f64);
                }
            }
            Dtype::F64 => {
                for (d, c) in dst.iter_mut().zip(t.data().chunks_exact(8)) {
                    *d = F::of(f64::from_le_bytes(c.try_into().expect("8 bytes")));
                }
            }
            other => {
                return Err(Error::format(
                    path,
                    format!("tensor `{name}` has dtype {other:?}; valid: F32, F64"),
                ))
            }
        }
        if let Some(i) = dst.iter().position(|v| !v.f64().is_finite()) {
            return Err(Error::format(
                path,
                format!("corrupt: tensor `{name}` has a non-finite value at element {i}"),
            ));
        }
    }
    Ok(data)
}

/// The safetensors metadata of already-parsed bytes.
pub(crate) fn metadata(bytes: &[u8], path: &Path) -> Result<BTreeMap<String, String>> {
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| Error::format(path, format!("corrupt or truncated: {e}")))?;
    Ok(header
        .metadata()
        .clone()
        .map(|m| m.into_iter().collect())
        .unwrap_or_default())
}

/// What a training checkpoint holds besides its metadata.
pub(crate) struct Checkpoint<F> {
    /// The parameters.
    pub params: Vec<F>,
    /// The state buffers (BatchNorm running statistics).
    pub buffers: Vec<F>,
    /// The best parameters so far.
    pub best_params: Vec<F>,
    /// Their state buffers.
    pub best_buffers: Vec<F>,
    /// AdamW's moments (m, v, v_max), in parameter order.
    pub moments: [Vec<F>; 3],
    /// The metadata (`state`, `config`, ...).
    pub meta: BTreeMap<String, String>,
}

/// Writes a checkpoint atomically: `param.`, `buffer.`, `best.`, `best_buffer.`,
/// `adam_m.`, `adam_v.`, `adam_vmax.` + names, with `meta`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_checkpoint<F: Float>(
    path: &Path,
    p: &[ParamInfo],
    b: &[ParamInfo],
    params: &[F],
    buffers: &[F],
    best_params: &[F],
    best_buffers: &[F],
    opt: &AdamW<F>,
    meta: BTreeMap<String, String>,
) -> Result<()> {
    let bytes = tensors_bytes(
        &[
            ("param.", p, params),
            ("buffer.", b, buffers),
            ("best.", p, best_params),
            ("best_buffer.", b, best_buffers),
            ("adam_m.", p, &opt.m),
            ("adam_v.", p, &opt.v),
            ("adam_vmax.", p, &opt.v_max),
        ],
        meta,
    )?;
    write_atomic(path, &bytes)
}

/// Reads a checkpoint written by [`write_checkpoint`]; anything wrong with it is an error
/// that names the file and says it is corrupt or truncated.
pub(crate) fn read_checkpoint<F: Float>(
    path: &Path,
    p: &[ParamInfo],
    b: &[ParamInfo],
) -> Result<Checkpoint<F>> {
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    let corrupt = |m: String| Error::format(path, format!("corrupt or truncated checkpoint: {m}"));
    let st =
        plastic::params::parse_safetensors(&bytes, path).map_err(|e| corrupt(e.to_string()))?;
    let meta = metadata(&bytes, path).map_err(|e| corrupt(e.to_string()))?;
    let read = |prefix: &str, infos: &[ParamInfo]| {
        tensors_read::<F>(&st, prefix, infos, path).map_err(|e| corrupt(e.to_string()))
    };
    Ok(Checkpoint {
        params: read("param.", p)?,
        buffers: read("buffer.", b)?,
        best_params: read("best.", p)?,
        best_buffers: read("best_buffer.", b)?,
        moments: [
            read("adam_m.", p)?,
            read("adam_v.", p)?,
            read("adam_vmax.", p)?,
        ],
        meta,
    })
}

/// The metadata a trainer stores in its checkpoint: its state as JSON under `state` and its
/// resolved configuration under `config`.
pub(crate) fn checkpoint_meta(
    state: &impl serde::Serialize,
    config_toml: String,
) -> BTreeMap<String, String> {
    let mut meta = BTreeMap::new();
    meta.insert(
        "state".into(),
        serde_json::to_string(state).expect("serialisable"),
    );
    meta.insert("config".into(), config_toml);
    meta
}

/// The trainer state and the configuration text of a checkpoint's metadata (written by
/// [`checkpoint_meta`]); a missing or unreadable entry is an error that names the file and
/// says it is corrupt.
pub(crate) fn checkpoint_state<'m, S: serde::de::DeserializeOwned>(
    meta: &'m BTreeMap<String, String>,
    path: &Path,
) -> Result<(S, &'m str)> {
    let corrupt = |m: String| Error::format(path, format!("corrupt or truncated checkpoint: {m}"));
    let state = meta
        .get("state")
        .ok_or_else(|| corrupt("no state".into()))?;
    let state = serde_json::from_str(state).map_err(|e| corrupt(e.to_string()))?;
    let config = meta
        .get("config")
        .ok_or_else(|| corrupt("no config".into()))?;
    Ok((state, config))
}

/// The error for a checkpoint whose configuration is not the run folder's `config.toml`.
pub(crate) fn config_mismatch(path: &Path, config_file: &str) -> Error {
    Error::Config(format!(
        "{} was written by a different configuration than {config_file}; refusing to mix them",
        path.display()
    ))
}

/// Writes parameters and state buffers under their own names (a `best.safetensors`).
pub(crate) fn write_named<F: Float>(
    path: &Path,
    p: &[ParamInfo],
    params: &[F],
    b: &[ParamInfo],
    buffers: &[F],
    meta: BTreeMap<String, String>,
) -> Result<()> {
    let bytes = tensors_bytes(&[("", p, params), ("", b, buffers)], meta)?;
    write_atomic(path, &bytes)
}

/// Rewrites `progress.tsv` with `header` and only the rows whose step is at most `last`
/// (the rows a checkpoint covers).
pub(crate) fn trim_progress(path: &Path, header: &str, last: usize) -> Result<()> {
    let text = fs::read_to_string(path).unwrap_or_default();
    let mut kept = vec![header.to_string()];
    for line in text.lines().skip(1) {
        let step = line
            .split('\t')
            .next()
            .and_then(|s| s.parse::<usize>().ok());
        if step.is_some_and(|s| s <= last) {
            kept.push(line.to_string());
        }
    }
    write_atomic(path, (kept.join("\n") + "\n").as_bytes())
}

/// Prepares a new run folder: refuses a non-empty one unless `overwrite`, in which case the
/// run files `names` are removed (nothing else).
pub(crate) fn prepare_new(dir: &Path, overwrite: bool, names: &[&str]) -> Result<()> {
    if dir.exists() {
        let nonempty = fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .next()
            .is_some();
        if nonempty && !overwrite {
            return Err(Error::Config(format!(
                "{} already exists; use --resume to continue it or --overwrite to replace it",
                dir.display()
            )));
        }
        for name in names {
            let p = dir.join(name);
            if p.exists() {
                fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
            }
        }
    }
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))
}
