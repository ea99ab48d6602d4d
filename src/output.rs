//! Crash-safe output: every file and folder lorb writes for the user (adapters, train logs,
//! training checkpoints) is written so that a crash at any instant leaves either the old
//! content or all of the new, never a mix: files through a temporary file and a rename, folders
//! through a fresh sibling folder published by renames. A test hook injects a fault before any
//! file operation, as if the process died there ([`fail_file_ops_after`]).

use crate::error::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

thread_local! {
    static FILE_OPS_LEFT: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// Fault injection for tests: lorb's output file operations (each create, rename and removal)
/// on this thread fail from the `n`-th one on, as if the process died there (`None`: never).
#[doc(hidden)]
pub fn fail_file_ops_after(n: Option<usize>) {
    FILE_OPS_LEFT.with(|c| c.set(n));
}

/// Called before each output file operation (the fault-injection point).
pub(crate) fn file_op(what: &Path) -> Result<()> {
    FILE_OPS_LEFT.with(|c| match c.get() {
        Some(0) => Err(Error::io(what, std::io::Error::other("injected fault before a file operation"))),
        Some(n) => {
            c.set(Some(n - 1));
            Ok(())
        }
        None => Ok(()),
    })
}

/// Creates `path` with `data`, synced to disk (one output file operation).
fn write_synced(path: &Path, data: &[u8]) -> Result<()> {
    file_op(path)?;
    let mut f = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    f.write_all(data).and_then(|_| f.sync_all()).map_err(|e| Error::io(path, e))
}

/// Writes `data` to `path` through a temporary file beside it (synced) and a rename: a reader,
/// or a crash, sees the old file or the new one.
pub fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_file_name(format!(".{}.part", path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()));
    write_synced(&tmp, data)?;
    file_op(path)?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Removes a file that a published state no longer names (a missing one is fine).
pub(crate) fn remove_file(path: &Path) -> Result<()> {
    file_op(path)?;
    let _ = std::fs::remove_file(path);
    Ok(())
}

/// Files lorb writes into an output folder (adapters, train logs and curves, full fine-tuning
/// weights).
const OUTPUT_FILES: [&str; 5] = ["adapter_config.json", "adapter_model.safetensors", "train_log.json", "train_curves.svg", "model.safetensors"];

/// The sibling folder a new output is written into before it is published (`.NAME.new`), and
/// the one an old output is moved to while it is replaced (`.NAME.old`).
fn sibling(dir: &Path, suffix: &str) -> Result<PathBuf> {
    let name = dir.file_name().ok_or_else(|| Error::Input(format!("{}: not a folder name", dir.display())))?;
    Ok(dir.with_file_name(format!(".{}.{suffix}", name.to_string_lossy())))
}

/// Best effort: makes renames in `dir` durable where the platform can sync a folder.
fn sync_dir(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

/// Checks an output folder before any work, so that a long run is never lost to a bad path: it
/// must be new or empty, or (with `force`) a folder of lorb's own output files, which the run
/// then replaces ([`write_dir`]; they stay until then). The folder is created and its parent
/// probed for writing. A folder missing beside a complete `.NAME.new` (a replacement cut
/// between its two renames) is refused, naming where the output is.
pub fn prepare_out_dir(dir: &Path, force: bool) -> Result<()> {
    let new = sibling(dir, "new")?;
    if !dir.exists() && new.exists() {
        return Err(Error::Input(format!("--out {}: an earlier write was interrupted while it replaced this folder; its complete output is in {}: rename that folder to keep it, or delete it", dir.display(), new.display())));
    }
    if dir.exists() {
        if !dir.is_dir() {
            return Err(Error::Input(format!("--out {}: exists and is not a folder", dir.display())));
        }
        let names: Vec<String> = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        if let Some(other) = names.iter().find(|n| !OUTPUT_FILES.contains(&n.as_str())) {
            return Err(Error::Input(format!("--out {}: the folder holds {other:?}, which lorb did not write; choose a new or empty folder", dir.display())));
        }
        if !names.is_empty() && !force {
            return Err(Error::Input(format!("--out {}: an adapter is already there; pass --force to replace it", dir.display())));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    // Beside an existing folder, a `.NAME.new` is a write cut before it was published: stale.
    if new.exists() {
        std::fs::remove_dir_all(&new).map_err(|e| Error::io(&new, e))?;
    }
    std::fs::create_dir_all(&new).map_err(|e| Error::io(&new, e))?;
    std::fs::remove_dir(&new).map_err(|e| Error::io(&new, e))
}

/// Writes `files` as the folder `dir`, as one unit: all of them into a fresh sibling folder
/// (`.NAME.new`, each file synced), which is then published by renames. `dir` holds either its
/// old files or all of the new ones, never a mix. Replacing an existing `dir` takes two renames
/// (old out of the way, new in); a crash between them leaves `dir` missing and the complete new
/// output in `.NAME.new` ([`prepare_out_dir`] then says so). Output folders hold only lorb's
/// files ([`prepare_out_dir`] refuses others), so the old folder is then removed.
pub fn write_dir(dir: &Path, files: &[(&str, &[u8])]) -> Result<()> {
    let (new, old) = (sibling(dir, "new")?, sibling(dir, "old")?);
    for d in [&new, &old] {
        if d.exists() {
            file_op(d)?;
            std::fs::remove_dir_all(d).map_err(|e| Error::io(d, e))?;
        }
    }
    file_op(&new)?;
    std::fs::create_dir_all(&new).map_err(|e| Error::io(&new, e))?;
    for (name, data) in files {
        write_synced(&new.join(name), data)?;
    }
    sync_dir(&new);
    let replaced = match std::fs::read_dir(dir).map(|mut entries| entries.next().is_some()) {
        Ok(true) => {
            file_op(dir)?;
            std::fs::rename(dir, &old).map_err(|e| Error::io(dir, e))?;
            true
        }
        Ok(false) => {
            file_op(dir)?;
            std::fs::remove_dir(dir).map_err(|e| Error::io(dir, e))?;
            false
        }
        Err(_) => false,
    };
    file_op(dir)?;
    std::fs::rename(&new, dir).map_err(|e| Error::io(dir, e))?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent);
    }
    if replaced {
        file_op(&old)?;
        std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
    }
    Ok(())
}
