//! File helpers: atomic writes, so that a kill never leaves half a file.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Hidden test hook: with `PLASTIC_TEST_WRITE_PAUSE_MS=N` in the environment, every atomic
/// write pauses `N` ms halfway through its temporary file, so that a test can kill the
/// process inside a write (`crates/plastic-cli/tests/kill_resume.rs`). Unset: no pause.
const WRITE_PAUSE_ENV: &str = "PLASTIC_TEST_WRITE_PAUSE_MS";

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, flushed and
/// synced, then renamed over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| Error::format(path, "not a file path"))?
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        let pause = std::env::var(WRITE_PAUSE_ENV)
            .ok()
            .and_then(|v| v.parse::<u64>().ok());
        let half = if pause.is_some() { bytes.len() / 2 } else { 0 };
        f.write_all(&bytes[..half])?;
        if let Some(ms) = pause {
            f.flush()?;
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        f.write_all(&bytes[half..])?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}
