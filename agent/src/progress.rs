//! The setup progress file (`<state-dir>/setup-done`): how many setup steps already succeeded, rewritten atomically after each one.
//!
//! Absent means none. Anything but a decimal count (surrounding whitespace allowed) is an error, not
//! zero: the file is only ever replaced whole, so garbage means someone or something else wrote it,
//! and guessing zero would run again steps that already succeeded.

use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "setup-done";

#[derive(Debug, thiserror::Error)]
pub enum ProgressError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "{path} holds {content:?}, not a count of steps: write the number of setup steps that succeeded into it, or delete it to run them all again"
    )]
    Garbage { path: PathBuf, content: String },
    #[error("cannot record setup progress in {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// The count in the file's text, or None when it is not a plain decimal number.
pub fn parse(text: &str) -> Option<u32> {
    let t = text.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse().ok()
}

pub fn path_in(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE_NAME)
}

/// How many steps already succeeded: 0 when the file does not exist.
pub fn read(state_dir: &Path) -> Result<u32, ProgressError> {
    let path = path_in(state_dir);
    let text = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(source) => return Err(ProgressError::Read { path, source }),
    };
    let text = String::from_utf8_lossy(&text);
    parse(&text).ok_or_else(|| ProgressError::Garbage {
        content: text.chars().take(64).collect(),
        path,
    })
}

/// Replaces the file with `count` (temporary file, fsync, rename, fsync of the directory), so a crash
/// leaves either the old count or the new one. Creates the state directory (0700) if missing.
pub fn write(state_dir: &Path, count: u32) -> Result<(), ProgressError> {
    let path = path_in(state_dir);
    let fail = |source| ProgressError::Write {
        path: path.clone(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .map_err(fail)?;
    let tmp = state_dir.join(format!(".{FILE_NAME}.tmp"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(fail)?;
    file.write_all(format!("{count}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(fail)?;
    drop(file);
    std::fs::rename(&tmp, &path).map_err(fail)?;
    // The rename is durable only once the directory entry is.
    std::fs::File::open(state_dir)
        .and_then(|d| d.sync_all())
        .map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn parses_a_plain_count_only() {
        assert_eq!(parse("0"), Some(0));
        assert_eq!(parse("3\n"), Some(3));
        assert_eq!(parse("  12 \r\n"), Some(12));
        for bad in [
            "",
            "\n",
            "-1",
            "+1",
            "1.0",
            "two",
            "1 2",
            "0x1",
            "99999999999",
        ] {
            assert_eq!(parse(bad), None, "{bad:?} accepted");
        }
    }

    #[test]
    fn absent_is_zero_and_garbage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), 0);
        assert_eq!(read(&dir.path().join("no/such/dir")).unwrap(), 0);
        std::fs::write(path_in(dir.path()), "oops").unwrap();
        let err = read(dir.path()).unwrap_err();
        assert!(matches!(err, ProgressError::Garbage { .. }), "{err}");
        assert!(err.to_string().contains("\"oops\""), "{err}");
        std::fs::write(path_in(dir.path()), "2\n").unwrap();
        assert_eq!(read(dir.path()).unwrap(), 2);
    }

    #[test]
    fn write_creates_the_directory_and_replaces_the_count() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("var/lib/docker-agent");
        write(&state, 1).unwrap();
        assert_eq!(
            std::fs::metadata(&state).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(read(&state).unwrap(), 1);
        write(&state, 2).unwrap();
        assert_eq!(std::fs::read_to_string(path_in(&state)).unwrap(), "2\n");
        let names: Vec<_> = std::fs::read_dir(&state)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [FILE_NAME], "no temporary file left behind");
    }

    #[test]
    fn write_failure_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, "").unwrap();
        let err = write(&file, 1).unwrap_err();
        assert!(matches!(err, ProgressError::Write { .. }), "{err}");
    }
}
