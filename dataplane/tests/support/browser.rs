//! Chromium driven from the tests (Debian's binary, playwright-core over
//! CDP): where things are, and a clear failure when one is missing (there
//! is no silent skip).

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Chromium's binary: `SWITCHYARD_CHROMIUM`, else Debian's.
pub fn chromium() -> PathBuf {
    std::env::var_os("SWITCHYARD_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// `tests/js`: the scripts and their node_modules.
pub fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js")
}

/// Fails, saying what to install, unless Chromium, node and
/// playwright-core are there.
pub fn require_browser() {
    let chromium = chromium();
    assert!(
        chromium.exists(),
        "Chromium not found at {}: `apt-get install -y chromium` \
         (scripts/test.sh installs it), or set SWITCHYARD_CHROMIUM",
        chromium.display()
    );
    let node = std::process::Command::new("node").arg("--version").output();
    assert!(
        matches!(&node, Ok(o) if o.status.success()),
        "`node` not found or not working ({node:?}): install Node.js"
    );
    let playwright = js_dir().join("node_modules/playwright-core/package.json");
    assert!(
        playwright.exists(),
        "{} missing: run `npm ci` in {} (scripts/test.sh does)",
        playwright.display(),
        js_dir().display()
    );
}

/// Runs a browser script (node, in `js_dir()`), killed if it runs past
/// `within`: its exit code, stdout and stderr.
pub async fn run_script(
    cmd: &mut tokio::process::Command,
    within: Duration,
) -> (i32, String, String) {
    cmd.current_dir(js_dir())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(within, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("the browser script did not finish within {within:?}"))
        .expect("node runs the browser script");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `node SCRIPT --chromium .. --cert .. --connect ..` against `edge`'s TLS
/// port: what every browser script takes; the caller adds its own options.
pub fn script_command(script: &str, edge: &super::Edge) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(js_dir().join(script))
        .arg("--chromium")
        .arg(chromium())
        .arg("--cert")
        .arg(&edge.cert_pem)
        .args(["--connect", &edge.tls_addr.ip().to_string()]);
    cmd
}
