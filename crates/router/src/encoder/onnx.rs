//! The ONNX Runtime engine of [`super::BertEncoder`]: runs `model.onnx` (exported by
//! `switchboard models fetch`) through the `ort` crate, with the ONNX Runtime library loaded at
//! run time from the pinned `onnxruntime` wheel (or `ORT_DYLIB_PATH`).
//!
//! Only the transformer runs here; tokenisation, batching, pooling and normalisation are the
//! encoder's, shared with the candle engine.

use std::path::Path;
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::Tensor;

use crate::error::{Result, RouterError};
use crate::fetch::{self, ONNX_FILE, OnnxInfo, OrtLibrary};

/// The process-wide ONNX Runtime environment. The library can be loaded once per process; the
/// outcome (or the reason it failed) is kept.
static ENVIRONMENT: OnceLock<std::result::Result<Environment, String>> = OnceLock::new();

fn environment(lib: &OrtLibrary) -> Result<&'static Environment> {
    let env = ENVIRONMENT.get_or_init(|| {
        if lib.pinned {
            fetch::verify_ort_library(&lib.path).map_err(|e| e.to_string())?;
        }
        ort::init_from(&lib.path)
            .map_err(|e| format!("cannot load {}: {e}", lib.path.display()))?
            .with_name("switchboard-router")
            .build()
            .map_err(|e| format!("cannot create the ONNX Runtime environment: {e}"))
    });
    env.as_ref().map_err(|e| RouterError::OrtUnavailable(e.clone()))
}

/// A loaded ONNX graph of a BERT encoder.
pub(crate) struct OrtEngine {
    session: Mutex<Session>,
    onnx_sha256: String,
    threads: usize,
}

impl std::fmt::Debug for OrtEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrtEngine").field("onnx_sha256", &self.onnx_sha256).field("threads", &self.threads).finish()
    }
}

impl OrtEngine {
    /// Load `model.onnx` of `dir`, checked against the hash `models fetch` recorded for it (and
    /// the weights, whose hash the caller computed, against the ones it was built from).
    ///
    /// # Errors
    /// [`RouterError::OrtUnavailable`] when the library or the graph is missing or does not
    /// load; [`RouterError::HashMismatch`] when the graph (or the weights it was built from)
    /// is not what was recorded.
    pub(crate) fn load(dir: &Path, threads: usize, weights_sha256: &str) -> Result<Self> {
        let onnx = dir.join(ONNX_FILE);
        if !onnx.is_file() {
            return Err(RouterError::OrtUnavailable(format!(
                "no {ONNX_FILE} in {} (run `switchboard models fetch`)",
                dir.display()
            )));
        }
        let info = OnnxInfo::read(dir)?;
        let onnx_sha256 = match &info {
            Some(info) => {
                info.verify_with_weights(dir, weights_sha256)?;
                info.sha256.clone()
            }
            None => fetch::sha256_file(&onnx)?,
        };
        let recorded =
            info.and_then(|i| i.runtime_library).filter(|p| p.is_file()).map(|path| OrtLibrary { path, pinned: true });
        let lib = fetch::resolve_ort_library().or(recorded).ok_or_else(|| {
            RouterError::OrtUnavailable(format!(
                "no ONNX Runtime library: set {} or run `switchboard models fetch`",
                fetch::ORT_DYLIB_ENV
            ))
        })?;
        let env = environment(&lib)?;
        let threads = threads.max(1);
        let fail = |e: ort::Error<_>| RouterError::OrtUnavailable(format!("{}: {e}", onnx.display()));
        let session = Session::builder(env)
            .map_err(|e| RouterError::OrtUnavailable(e.to_string()))?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(fail)?
            .with_intra_threads(threads)
            .map_err(fail)?
            .with_inter_threads(1)
            .map_err(fail)?
            // The server shares its cores with the async runtime: idle pool threads sleep
            // instead of spinning.
            .with_intra_op_spinning(false)
            .map_err(fail)?
            .commit_from_file(&onnx)
            .map_err(|e| RouterError::OrtUnavailable(format!("{}: {e}", onnx.display())))?;
        for name in ["input_ids", "attention_mask", "token_type_ids"] {
            if !session.inputs().iter().any(|i| i.name() == name) {
                return Err(RouterError::OrtUnavailable(format!("{} has no input {name}", onnx.display())));
            }
        }
        Ok(Self { session: Mutex::new(session), onnx_sha256, threads })
    }

    /// sha256 of the graph file.
    pub(crate) fn onnx_sha256(&self) -> &str {
        &self.onnx_sha256
    }

    /// Intra-op threads of the session.
    pub(crate) fn threads(&self) -> usize {
        self.threads
    }

    /// Last hidden states of a padded batch, `(batch, len, hidden)` flattened.
    ///
    /// # Errors
    /// [`RouterError::Inference`] when ONNX Runtime fails.
    pub(crate) fn forward(&self, ids: &[u32], mask: &[u32], batch: usize, len: usize) -> Result<Vec<f32>> {
        let err = |e: ort::Error| RouterError::Inference(e.to_string());
        let shape = [batch as i64, len as i64];
        let ids_t =
            Tensor::from_array((shape, ids.iter().map(|&x| i64::from(x)).collect::<Vec<i64>>())).map_err(err)?;
        let mask_t =
            Tensor::from_array((shape, mask.iter().map(|&x| i64::from(x)).collect::<Vec<i64>>())).map_err(err)?;
        let types_t = Tensor::from_array((shape, vec![0i64; batch * len])).map_err(err)?;
        let mut session = self.session.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let outputs = session
            .run(ort::inputs!["input_ids" => ids_t, "attention_mask" => mask_t, "token_type_ids" => types_t])
            .map_err(err)?;
        let (out_shape, data) = outputs["last_hidden_state"].try_extract_tensor::<f32>().map_err(err)?;
        if out_shape.len() != 3 || out_shape[0] != shape[0] || out_shape[1] != shape[1] {
            return Err(RouterError::Inference(format!("unexpected output shape {out_shape:?}")));
        }
        Ok(data.to_vec())
    }
}
