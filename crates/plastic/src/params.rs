//! Named meta-learned parameters: their layout in one flat buffer, seeded initialisation
//! (docs/algorithm.md §3), and loading/saving by name (safetensors).

use std::collections::BTreeMap;
use std::path::Path;

use crate::config::{CellKind, InnerLrMode, NetworkConfig};
use crate::error::{Error, Result};
use crate::float::Float;
use crate::rng::Rng;

/// One named parameter tensor inside the flat buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamInfo {
    /// Name as in the reference fixtures (`in.w`, `rec.w_h`, ...).
    pub name: String,
    /// Shape; every `w` is (in, out), row-major.
    pub shape: Vec<usize>,
    /// Offset of the first element in the flat buffer.
    pub offset: usize,
    /// Whether the optimiser updates it (false for fixed weights of a `random_network`).
    pub trainable: bool,
}

impl ParamInfo {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    /// Whether it has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The element range in the flat buffer.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// The four linear maps that carry weights (and, in a plastic network, plastic weights).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerId {
    /// Input layer `in` (I → H).
    In,
    /// Recurrent map from the previous hidden state, `rec.w_h` (H → gH).
    RecH,
    /// Recurrent map from the input layer's output, `rec.w_i` (H → gH).
    RecI,
    /// Output layer `out` (H → D).
    Out,
}

impl LayerId {
    /// All layers, in buffer order.
    pub const ALL: [LayerId; 4] = [LayerId::In, LayerId::RecH, LayerId::RecI, LayerId::Out];
    fn names(self) -> (&'static str, &'static str, &'static str, &'static str) {
        match self {
            LayerId::In => ("in.w", "in.b", "in.alpha_w", "in.alpha_b"),
            LayerId::RecH => ("rec.w_h", "rec.b_h", "rec.alpha_w_h", "rec.alpha_b_h"),
            LayerId::RecI => ("rec.w_i", "rec.b_i", "rec.alpha_w_i", "rec.alpha_b_i"),
            LayerId::Out => ("out.w", "out.b", "out.alpha_w", "out.alpha_b"),
        }
    }
}

/// Where one layer's tensors live: its weight `(rows, cols)` and bias `(cols)` in the
/// parameter buffer, its α in the parameter buffer (or the shared ones-buffer), and its
/// plastic weights in the per-episode plastic buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerLayout {
    /// Input width.
    pub rows: usize,
    /// Output width.
    pub cols: usize,
    /// Offset of `W` (rows × cols) in the parameter buffer; `b` follows at `w + rows·cols`.
    pub w: usize,
    /// Offset of `b`.
    pub b: usize,
    /// Offset of α for `W` in the parameter buffer, if α is a parameter.
    pub alpha_w: Option<usize>,
    /// Offset of α for `b`, if α is a parameter.
    pub alpha_b: Option<usize>,
    /// Offset of `P_W` in the per-episode plastic buffer; `P_b` follows at `pw + rows·cols`.
    pub pw: usize,
    /// Offset of `P_b` in the plastic buffer.
    pub pb: usize,
}

impl LayerLayout {
    /// Elements of `W`.
    pub fn w_len(&self) -> usize {
        self.rows * self.cols
    }
}

/// The flat layout of a network's parameters and of its per-episode plastic state.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    infos: Vec<ParamInfo>,
    len: usize,
    /// The four linear maps, indexed by `LayerId as usize`.
    pub layers: [LayerLayout; 4],
    /// Offset of `out_weight` (D).
    pub out_weight: usize,
    /// Offsets of `layernorm.gamma` and `layernorm.beta` (H each), if LayerNorm is on.
    pub layernorm: Option<(usize, usize)>,
    /// Elements of one episode's plastic state (0 for `plasticity = none`).
    pub plastic_len: usize,
    /// The linear maps the network has: all four, or all but [`LayerId::In`] when the
    /// configuration has no input layer (whose entry in `layers` is then empty).
    pub layer_ids: &'static [LayerId],
}

impl Layout {
    /// The layout for a configuration.
    pub fn new(config: &NetworkConfig) -> Layout {
        let (i, h, d) = (
            config.input_size,
            config.hidden_size,
            config.full_output_size(),
        );
        let gh = config.gates() * h;
        let dims = [(i, h), (h, gh), (h, gh), (h, d)];
        let layer_ids: &'static [LayerId] = if config.input_layer {
            &LayerId::ALL
        } else {
            &LayerId::ALL[1..]
        };
        let mut infos = Vec::new();
        let mut len = 0;
        let mut push = |name: &str, shape: Vec<usize>, trainable: bool| {
            let info = ParamInfo {
                name: name.to_string(),
                shape,
                offset: len,
                trainable,
            };
            len += info.len();
            infos.push(info);
            len - infos.last().unwrap().len()
        };
        let fixed_trainable = !(config.random_network && config.is_plastic());
        let mut wb = [(0, 0); 4];
        for &layer in layer_ids {
            let k = layer as usize;
            let (wn, bn, _, _) = layer.names();
            let (r, c) = dims[k];
            wb[k] = (
                push(wn, vec![r, c], fixed_trainable),
                push(bn, vec![c], fixed_trainable),
            );
        }
        let mut alphas = [(None, None); 4];
        if config.has_alpha() {
            for &layer in layer_ids {
                let k = layer as usize;
                let (_, _, awn, abn) = layer.names();
                let (r, c) = dims[k];
                alphas[k] = (
                    Some(push(awn, vec![r, c], true)),
                    Some(push(abn, vec![c], true)),
                );
            }
        }
        let out_weight = push("out_weight", vec![d], true);
        let layernorm = config.layernorm.then(|| {
            (
                push("layernorm.gamma", vec![h], true),
                push("layernorm.beta", vec![h], true),
            )
        });
        let mut plastic_len = 0;
        let layers = std::array::from_fn(|k| {
            let (r, c) = if layer_ids.contains(&LayerId::ALL[k]) {
                dims[k]
            } else {
                (0, 0)
            };
            let pw = plastic_len;
            if config.is_plastic() {
                plastic_len += r * c + c;
            }
            LayerLayout {
                rows: r,
                cols: c,
                w: wb[k].0,
                b: wb[k].1,
                alpha_w: alphas[k].0,
                alpha_b: alphas[k].1,
                pw,
                pb: pw + r * c,
            }
        });
        Layout {
            infos,
            len,
            layers,
            out_weight,
            layernorm,
            plastic_len,
            layer_ids,
        }
    }

    /// Total number of parameter elements.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether there are no parameters (never, for a valid configuration).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Every parameter, in buffer order.
    pub fn infos(&self) -> &[ParamInfo] {
        &self.infos
    }
    /// The parameter called `name`.
    pub fn get(&self, name: &str) -> Option<&ParamInfo> {
        self.infos.iter().find(|p| p.name == name)
    }
    /// The parameter called `name`, or an error listing the valid names.
    pub fn require(&self, name: &str) -> Result<&ParamInfo> {
        self.get(name).ok_or_else(|| Error::UnknownParam {
            name: name.to_string(),
            valid: self.names().join(", "),
        })
    }
    /// All names, in buffer order.
    pub fn names(&self) -> Vec<&str> {
        self.infos.iter().map(|p| p.name.as_str()).collect()
    }
    /// The layout of one linear map.
    pub fn layer(&self, id: LayerId) -> &LayerLayout {
        &self.layers[id as usize]
    }
    /// A mask over the flat buffer: true where the optimiser may change the value.
    pub fn trainable_mask(&self) -> Vec<bool> {
        let mut m = vec![false; self.len];
        for p in &self.infos {
            m[p.range()].fill(p.trainable);
        }
        m
    }
}

/// Initialises a parameter buffer as docs/algorithm.md §3 from `rng`: `U(−k, k)` with
/// `k = 1/sqrt(out)` for `in`/`out` and the plastic RNN cell, `2/sqrt(4H)` for the plastic
/// LSTM, `1/sqrt(H)` for a standard (non-plastic) cell; α by `inner_lr_mode`;
/// `out_weight = 1`; LayerNorm gain 1 and bias 0.
pub fn init_params<F: Float>(config: &NetworkConfig, layout: &Layout, rng: &mut Rng) -> Vec<F> {
    let mut data = vec![F::zero(); layout.len()];
    let h = config.hidden_size as f64;
    for &id in layout.layer_ids {
        let l = layout.layer(id);
        let k = match (id, config.is_plastic(), config.rnn) {
            (LayerId::In | LayerId::Out, _, _) => 1.0 / (l.cols as f64).sqrt(),
            (_, true, CellKind::Rnn) => 1.0 / (l.cols as f64).sqrt(),
            (_, true, CellKind::Lstm) => 2.0 / (l.cols as f64).sqrt(),
            (_, false, _) => 1.0 / h.sqrt(),
        };
        for v in &mut data[l.w..l.w + l.w_len()] {
            *v = F::of(rng.uniform_in(-k, k));
        }
        for v in &mut data[l.b..l.b + l.cols] {
            *v = F::of(rng.uniform_in(-k, k));
        }
    }
    for &id in layout.layer_ids {
        let l = layout.layer(id);
        for (off, n) in [(l.alpha_w, l.w_len()), (l.alpha_b, l.cols)] {
            let Some(off) = off else { continue };
            for v in &mut data[off..off + n] {
                *v = F::of(match config.inner_lr_mode {
                    InnerLrMode::Random => rng.uniform_in(-1.0, 1.0),
                    InnerLrMode::NegUniform => -1.0,
                    InnerLrMode::Uniform | InnerLrMode::None => 1.0,
                });
            }
        }
    }
    let d = config.full_output_size();
    data[layout.out_weight..layout.out_weight + d].fill(F::one());
    if let Some((g, _)) = layout.layernorm {
        data[g..g + config.hidden_size].fill(F::one());
    }
    data
}

/// A named tensor in `f64`, as read from or written to a file.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    /// Shape.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f64>,
}

/// Fills a parameter buffer from named tensors: every parameter of the layout must be
/// present with its shape; names the layout does not have are an error.
pub fn params_from_map<F: Float>(
    layout: &Layout,
    map: &BTreeMap<String, NamedTensor>,
) -> Result<Vec<F>> {
    for name in map.keys() {
        layout.require(name)?;
    }
    let mut data = vec![F::zero(); layout.len()];
    for info in layout.infos() {
        let t = map.get(&info.name).ok_or_else(|| Error::MissingParam {
            name: info.name.clone(),
            expected: info.shape.clone(),
        })?;
        if t.shape != info.shape || t.data.len() != info.len() {
            return Err(Error::ParamShape {
                name: info.name.clone(),
                expected: info.shape.clone(),
                found: t.shape.clone(),
            });
        }
        for (d, &s) in data[info.range()].iter_mut().zip(&t.data) {
            *d = F::of(s);
        }
    }
    Ok(data)
}

/// The parameters of a buffer as named tensors.
pub fn params_to_map<F: Float>(layout: &Layout, data: &[F]) -> BTreeMap<String, NamedTensor> {
    layout
        .infos()
        .iter()
        .map(|info| {
            (
                info.name.clone(),
                NamedTensor {
                    shape: info.shape.clone(),
                    data: data[info.range()].iter().map(|v| v.f64()).collect(),
                },
            )
        })
        .collect()
}

/// Metadata key of the checksum that [`safetensors_bytes`] writes and every loader verifies.
pub const CHECKSUM_KEY: &str = "checksum";

/// The checksum of a safetensors file's content: CRC-32 (`crc32:` and 8 hex digits) of
/// every metadata entry but the checksum itself (sorted by key) and every tensor (sorted by
/// name: name, dtype, shape and data bytes), each field length-prefixed. It depends on the
/// content only, not on how the header is laid out, so a file re-saved by another tool with
/// the same content still verifies.
fn content_checksum<'a>(
    metadata: impl Iterator<Item = (&'a str, &'a str)>,
    tensors: impl Iterator<Item = (&'a str, &'a str, &'a [usize], &'a [u8])>,
) -> String {
    let mut h = crc32fast::Hasher::new();
    let mut field = |b: &[u8]| {
        h.update(&(b.len() as u64).to_le_bytes());
        h.update(b);
    };
    let mut meta: Vec<(&str, &str)> = metadata.filter(|(k, _)| *k != CHECKSUM_KEY).collect();
    meta.sort();
    for (k, v) in meta {
        field(k.as_bytes());
        field(v.as_bytes());
    }
    let mut ts: Vec<_> = tensors.collect();
    ts.sort_by(|a, b| a.0.cmp(b.0));
    for (name, dtype, shape, data) in ts {
        field(name.as_bytes());
        field(dtype.as_bytes());
        let dims: Vec<u8> = shape
            .iter()
            .flat_map(|d| (*d as u64).to_le_bytes())
            .collect();
        field(&dims);
        field(data);
    }
    format!("crc32:{:08x}", h.finalize())
}

/// Serialises named buffers (parameters, optimiser moments, ...) as safetensors bytes,
/// in the buffer's own float type (F32 or F64), with `metadata` and a checksum of the whole
/// content under [`CHECKSUM_KEY`]. The bytes are a function of the arguments only: the
/// header's keys are sorted, so the same parameters and metadata give the same file.
pub fn safetensors_bytes<F: Float>(
    layout: &Layout,
    buffers: &[(&str, &[F])],
    metadata: BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    let mut named: Vec<NamedSlice<'_, F>> = Vec::new();
    for (prefix, data) in buffers {
        for info in layout.infos() {
            named.push((
                format!("{prefix}{}", info.name),
                info.shape.clone(),
                &data[info.range()],
            ));
        }
    }
    named_safetensors_bytes(&named, metadata)
}

/// A named tensor to serialise: its name, its shape and its values.
pub type NamedSlice<'a, F> = (String, Vec<usize>, &'a [F]);

/// Serialises named tensors as safetensors bytes, as [`safetensors_bytes`] does (the
/// buffer's own float type, sorted header, a checksum under [`CHECKSUM_KEY`]), for callers
/// whose tensors are not described by a [`Layout`] (e.g. the image model's CNN).
pub fn named_safetensors_bytes<F: Float>(
    named: &[NamedSlice<'_, F>],
    metadata: BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    let dtype = if F::NAME == "f32" { "F32" } else { "F64" };
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, shape, values) in named {
        let mut b = Vec::new();
        b.try_reserve_exact(std::mem::size_of_val(*values))
            .map_err(|_| Error::Config(format!("out of memory serialising `{name}`")))?;
        for v in values.iter() {
            if F::NAME == "f32" {
                b.extend_from_slice(&(v.f64() as f32).to_le_bytes());
            } else {
                b.extend_from_slice(&v.f64().to_le_bytes());
            }
        }
        tensors.push((name.clone(), shape.clone(), b));
    }
    let mut meta = metadata;
    meta.remove(CHECKSUM_KEY);
    let sum = content_checksum(
        meta.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        tensors
            .iter()
            .map(|(n, s, b)| (n.as_str(), dtype, s.as_slice(), b.as_slice())),
    );
    meta.insert(CHECKSUM_KEY.into(), sum);
    // the header: a JSON object with sorted keys (BTreeMap), data in buffer order
    #[derive(serde::Serialize)]
    struct Entry<'a> {
        dtype: &'a str,
        shape: &'a [usize],
        data_offsets: [usize; 2],
    }
    let mut header: BTreeMap<&str, serde_json::Value> = BTreeMap::new();
    header.insert(
        "__metadata__",
        serde_json::to_value(&meta).map_err(|e| Error::Config(format!("safetensors: {e}")))?,
    );
    let mut offset = 0;
    for (name, shape, b) in &tensors {
        let entry = Entry {
            dtype,
            shape,
            data_offsets: [offset, offset + b.len()],
        };
        offset += b.len();
        header.insert(
            name,
            serde_json::to_value(&entry).map_err(|e| Error::Config(format!("safetensors: {e}")))?,
        );
    }
    let mut json =
        serde_json::to_vec(&header).map_err(|e| Error::Config(format!("safetensors: {e}")))?;
    // pad the header with spaces to a multiple of 8 bytes, as the format recommends
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut out = Vec::new();
    out.try_reserve_exact(8 + json.len() + offset)
        .map_err(|_| Error::Config("out of memory serialising parameters".into()))?;
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    for (_, _, b) in &tensors {
        out.extend_from_slice(b);
    }
    Ok(out)
}

/// Parses safetensors bytes and verifies their checksum ([`CHECKSUM_KEY`]) when they have
/// one: a file we wrote whose content changed since (a flipped bit, a torn write, an edit)
/// is an error that names the file and says it is corrupt. Files without a checksum (written
/// by older versions or by other tools) are accepted; their values are still checked to be
/// finite by [`buffer_from_safetensors`].
pub fn parse_safetensors<'a>(bytes: &'a [u8], path: &Path) -> Result<safetensors::SafeTensors<'a>> {
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| {
        Error::format(
            path,
            format!("corrupt or truncated: not a valid safetensors file ({e})"),
        )
    })?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| Error::format(path, format!("corrupt or truncated: {e}")))?;
    if let Some(expected) = meta.metadata().as_ref().and_then(|m| m.get(CHECKSUM_KEY)) {
        let views = st.tensors();
        let dtypes: Vec<String> = views
            .iter()
            .map(|(_, v)| format!("{:?}", v.dtype()))
            .collect();
        let found = content_checksum(
            meta.metadata()
                .iter()
                .flatten()
                .map(|(k, v)| (k.as_str(), v.as_str())),
            views
                .iter()
                .zip(&dtypes)
                .map(|((n, v), d)| (n.as_str(), d.as_str(), v.shape(), v.data())),
        );
        if &found != expected {
            return Err(Error::format(
                path,
                format!(
                    "corrupt: its content does not match its checksum (stored {expected}, \
                     computed {found}); the file was damaged or edited after it was written"
                ),
            ));
        }
    }
    Ok(st)
}

/// Reads one named buffer (`prefix` + parameter names) from safetensors bytes, converting
/// F32/F64 to `F`. The checksum is verified (see [`parse_safetensors`]); a missing name,
/// a wrong shape or a non-finite value (NaN, ±∞) is an error naming the parameter.
pub fn buffer_from_safetensors<F: Float>(
    layout: &Layout,
    bytes: &[u8],
    prefix: &str,
    path: &Path,
) -> Result<Vec<F>> {
    use safetensors::tensor::Dtype;
    let st = parse_safetensors(bytes, path)?;
    let mut data = Vec::new();
    data.try_reserve_exact(layout.len()).map_err(|_| {
        Error::Config(format!(
            "out of memory: {} parameters do not fit",
            layout.len()
        ))
    })?;
    data.resize(layout.len(), F::zero());
    for info in layout.infos() {
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
        let raw = t.data();
        let dst = &mut data[info.range()];
        match t.dtype() {
            Dtype::F32 => {
                for (d, c) in dst.iter_mut().zip(raw.chunks_exact(4)) {
                    *d = F::of(f32::from_le_bytes(c.try_into().unwrap()) as f64);
                }
            }
            Dtype::F64 => {
                for (d, c) in dst.iter_mut().zip(raw.chunks_exact(8)) {
                    *d = F::of(f64::from_le_bytes(c.try_into().unwrap()));
                }
            }
            other => {
                return Err(Error::format(
                    path,
                    format!("tensor `{name}` has dtype {other:?}; valid: F32, F64"),
                ))
            }
        }
        if let Some(k) = dst.iter().position(|v| !v.is_finite()) {
            return Err(Error::format(
                path,
                format!(
                    "corrupt: tensor `{name}` holds a non-finite value ({}) at element {k}; \
                     parameters must be finite",
                    dst[k]
                ),
            ));
        }
    }
    Ok(data)
}

/// Reads the metadata of safetensors bytes, after verifying their checksum (see
/// [`parse_safetensors`]).
pub fn safetensors_metadata(bytes: &[u8], path: &Path) -> Result<BTreeMap<String, String>> {
    parse_safetensors(bytes, path)?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| Error::format(path, format!("not a valid safetensors file: {e}")))?;
    Ok(meta
        .metadata()
        .clone()
        .map(|m| m.into_iter().collect())
        .unwrap_or_default())
}
