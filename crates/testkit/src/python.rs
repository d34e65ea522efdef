//! The Python test environment of tests that drive Switchboard against official Python SDKs: a
//! venv named by `SWITCHBOARD_VENV` with the pinned `tests/python/*/requirements.txt` (built by
//! `scripts/test`). Without it such tests say SKIPPED on stderr and pass.

use std::path::PathBuf;

/// Says why a test is skipped on the process's stderr, past the test harness's output capture.
pub fn skipped(why: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
}

/// The venv's Python, when it can `import module` (else `None`, having said why).
pub fn venv_python(module: &str) -> Option<PathBuf> {
    let Some(venv) = std::env::var_os("SWITCHBOARD_VENV").filter(|v| !v.is_empty()) else {
        skipped(&format!("SWITCHBOARD_VENV is not set (this test needs the Python `{module}`)"));
        return None;
    };
    let py = PathBuf::from(venv).join("bin").join("python");
    let ok = std::process::Command::new(&py)
        .args(["-c", &format!("import {module}")])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        skipped(&format!(
            "{} cannot import `{module}` (pip install -r tests/python/interop/requirements.txt)",
            py.display()
        ));
        return None;
    }
    Some(py)
}

/// `tests/python/interop/mcp_server.py`, the MCP server on the official Python SDK that the MCP
/// client tests drive.
pub fn mcp_server_script() -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/interop/mcp_server.py");
    p.canonicalize().unwrap_or(p).display().to_string()
}
