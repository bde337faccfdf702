//! Atomic writes, the one implementation in the workspace: a file or a whole directory is built
//! under a temporary name beside its target, synced, and renamed into place, so a reader (or a
//! resumed run) sees either the old complete artifact or the new one, never a torn one.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// A file being written; it appears under its final name only on [`AtomicFile::commit`].
/// Dropped without commit, the temporary file is removed.
pub struct AtomicFile {
    target: PathBuf,
    temp: PathBuf,
    writer: Option<BufWriter<File>>,
}

impl AtomicFile {
    /// Starts writing `target` (its directory must exist).
    pub fn create(target: &Path) -> Result<AtomicFile> {
        let temp = temp_name(target, writer_tag());
        let file = File::create(&temp).at(&temp)?;
        Ok(AtomicFile { target: target.to_path_buf(), temp, writer: Some(BufWriter::with_capacity(1 << 20, file)) })
    }

    /// The writer.
    pub fn writer(&mut self) -> &mut BufWriter<File> {
        self.writer.as_mut().expect("not yet committed")
    }

    /// Flushes, syncs and renames into place.
    pub fn commit(mut self) -> Result<()> {
        let writer = self.writer.take().expect("committed once");
        let file = writer.into_inner().map_err(|e| e.into_error()).at(&self.temp)?;
        file.sync_all().at(&self.temp)?;
        std::fs::rename(&self.temp, &self.target).at(&self.target)?;
        sync_parent(&self.target)
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.writer.is_some() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.writer().write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.writer().flush()
    }
}

/// This process's part of temporary file names: the host and the process id, since on storage
/// that several machines share (a cluster's run directory) process ids alone may coincide.
fn writer_tag() -> &'static str {
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TAG.get_or_init(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let host: String = host.trim().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
        format!("tmp-{host}-{}", std::process::id())
    })
}

/// Writes `bytes` to `target` atomically.
pub fn write_file(target: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = AtomicFile::create(target)?;
    file.writer().write_all(bytes).at(target)?;
    file.commit()
}

/// Removes `path` if it exists (an output that no longer describes what is beside it).
pub fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).at(path),
        _ => Ok(()),
    }
}

/// Writes `value` as pretty JSON to `target` atomically.
pub fn write_json<T: serde::Serialize>(target: &Path, value: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).expect("artifact types serialize");
    bytes.push(b'\n');
    write_file(target, &bytes)
}

/// Writes `target` atomically through a library that only takes a path (safetensors, say):
/// `write` receives the temporary path; on success the file is synced and renamed into place.
pub fn write_via<E: From<Error>>(target: &Path, write: impl FnOnce(&Path) -> Result<(), E>) -> Result<(), E> {
    let temp = temp_name(target, writer_tag());
    let result = write(&temp).and_then(|()| {
        File::open(&temp).and_then(|f| f.sync_all()).at(&temp)?;
        std::fs::rename(&temp, target).at(target)?;
        Ok(sync_parent(target)?)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// A directory built under a temporary sibling name and swapped into place by
/// [`AtomicDir::commit`]. A leftover from a killed run is removed when the next one starts;
/// dropped without commit, the temporary directory is removed.
pub struct AtomicDir {
    target: PathBuf,
    temp: PathBuf,
    committed: bool,
}

impl AtomicDir {
    /// Starts building `target` (its parent is created when missing).
    pub fn create(target: &Path) -> Result<AtomicDir> {
        if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).at(parent)?;
        }
        let temp = temp_name(target, "tmp-dir");
        if temp.exists() {
            std::fs::remove_dir_all(&temp).at(&temp)?;
        }
        std::fs::create_dir(&temp).at(&temp)?;
        Ok(AtomicDir { target: target.to_path_buf(), temp, committed: false })
    }

    /// Where to write the directory's contents.
    pub fn path(&self) -> &Path {
        &self.temp
    }

    /// Syncs every file, then replaces `target` (whatever was there) with the new directory.
    pub fn commit(mut self) -> Result<()> {
        sync_tree(&self.temp)?;
        let old = temp_name(&self.target, "old");
        if old.exists() {
            std::fs::remove_dir_all(&old).at(&old)?;
        }
        let replaced = self.target.exists();
        if replaced {
            std::fs::rename(&self.target, &old).at(&self.target)?;
        }
        std::fs::rename(&self.temp, &self.target).at(&self.target)?;
        self.committed = true;
        sync_parent(&self.target)?;
        // The new directory is in place; an old copy that cannot be removed is only clutter.
        if replaced && let Err(e) = std::fs::remove_dir_all(&old) {
            tracing::warn!(path = %old.display(), "could not remove the replaced directory: {e}");
        }
        Ok(())
    }
}

impl Drop for AtomicDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.temp);
        }
    }
}

/// Refuses to let a command replace `dir` unless it is missing, empty, or an artifact of the
/// command's own kind (`is_kind`); never deletes what a user pointed at by mistake.
pub fn check_replaceable(dir: &Path, kind: &str, is_kind: impl Fn(&Path) -> bool) -> Result<()> {
    let Ok(mut entries) = std::fs::read_dir(dir) else {
        if dir.exists() {
            return Err(Error::Config {
                field: "out".into(),
                reason: format!("{} exists and is not a directory; choose another --out", dir.display()),
            });
        }
        return Ok(());
    };
    if entries.next().is_none() || is_kind(dir) {
        return Ok(());
    }
    Err(Error::Config {
        field: "out".into(),
        reason: format!(
            "{} is not empty and is not a {kind}; refusing to replace it (choose a new --out, or remove it yourself)",
            dir.display()
        ),
    })
}

/// `.<name>.<suffix>` beside `target`.
fn temp_name(target: &Path, suffix: &str) -> PathBuf {
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    target.with_file_name(format!(".{name}.{suffix}"))
}

/// Makes a rename durable: syncs the directory holding `path` (best effort where the platform
/// cannot open directories).
fn sync_parent(path: &Path) -> Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(dir) = File::open(parent) {
        dir.sync_all().at(parent)?;
    }
    Ok(())
}

fn sync_tree(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).at(dir)? {
        let path = entry.at(dir)?.path();
        if path.is_dir() {
            sync_tree(&path)?;
        } else {
            File::open(&path).and_then(|f| f.sync_all()).at(&path)?;
        }
    }
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}
