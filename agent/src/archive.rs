//! `docker-agent-agent archive`: the container's side of `docker-agent cp` where the hub cannot reach
//! the container's engine (a Swarm node's). The hub runs it as an ordinary exec task over the agent's
//! own link, so it runs as the task user, works on `--network none`, and its tar stream is the task's
//! stdin or stdout.

use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::args::ArchiveOp;

/// Exit code of `stat` when nothing is at the path: the hub's "no such file", not a failure.
pub const EX_NOT_FOUND: u8 = 2;

/// Runs one archive operation; errors go to stderr in one line, which the hub passes on.
pub fn run(op: ArchiveOp) -> ExitCode {
    let result = match op {
        ArchiveOp::Stat { path } => return stat(&path),
        ArchiveOp::Create { path } => create(&path, io::stdout().lock()),
        ArchiveOp::Extract { dir } => extract(io::stdin().lock(), &dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// `dir SIZE MODE` or `file SIZE MODE` (mode in octal): what is at `path`, through a final symlink,
/// as `docker cp` decides whether a destination is a directory.
fn stat(path: &Path) -> ExitCode {
    let meta = match std::fs::metadata(path).or_else(|_| std::fs::symlink_metadata(path)) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return ExitCode::from(EX_NOT_FOUND),
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    let kind = if meta.is_dir() { "dir" } else { "file" };
    println!("{kind} {} {:o}", meta.len(), meta.mode() & 0o7777);
    ExitCode::SUCCESS
}

/// A tar of `path` on `out`, its entries under `path`'s base name (as the engine's archive API names
/// them). Symlinks are archived as links, never followed; sockets cannot be, and are skipped.
pub fn create(path: &Path, out: impl Write) -> io::Result<()> {
    let name = path
        .file_name()
        .map(PathBuf::from)
        .ok_or_else(|| io::Error::other(format!("{} names no file", path.display())))?;
    let mut builder = tar::Builder::new(BufWriter::with_capacity(256 << 10, out));
    builder.follow_symlinks(false);
    append(&mut builder, path, &name)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    builder.into_inner()?.flush()
}

fn append<W: Write>(builder: &mut tar::Builder<W>, path: &Path, name: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.file_type().is_socket() {
        eprintln!("{}: a socket cannot be archived; skipped", path.display());
        return Ok(());
    }
    if !meta.is_dir() {
        return builder.append_path_with_name(path, name);
    }
    builder.append_dir(name, path)?;
    let mut children: Vec<_> = std::fs::read_dir(path)?
        .map(|entry| entry.map(|e| e.file_name()))
        .collect::<io::Result<_>>()?;
    // A stable order: the same tree gives the same archive.
    children.sort();
    for child in children {
        append(builder, &path.join(&child), &name.join(&child))?;
    }
    Ok(())
}

/// Extracts a tar from `input` into the existing directory `dir`, modes and times kept. Entries that
/// would land outside `dir` (`..`, absolute paths, through a symlink) are refused by the tar crate's
/// checks. Owners are kept only when running as root; otherwise everything belongs to the task user.
pub fn extract(input: impl Read, dir: &Path) -> io::Result<()> {
    if !dir.is_dir() {
        return Err(io::Error::other(format!(
            "{}: not a directory",
            dir.display()
        )));
    }
    let mut archive = tar::Archive::new(input);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    archive.set_unpack_xattrs(false);
    archive.set_preserve_ownerships(nix::unistd::geteuid().is_root());
    archive.unpack(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_goes_out_and_comes_back_with_its_modes_and_links() {
        let src = tempfile::tempdir().unwrap();
        let tree = src.path().join("tree");
        std::fs::create_dir_all(tree.join("sub")).unwrap();
        std::fs::write(tree.join("sub/run.sh"), b"#!/bin/sh\necho hi\n").unwrap();
        std::fs::set_permissions(
            tree.join("sub/run.sh"),
            std::os::unix::fs::PermissionsExt::from_mode(0o750),
        )
        .unwrap();
        std::os::unix::fs::symlink("/etc/passwd", tree.join("link")).unwrap();
        let mut tar = Vec::new();
        create(&tree, &mut tar).unwrap();

        let dst = tempfile::tempdir().unwrap();
        extract(&tar[..], dst.path()).unwrap();
        let copied = dst.path().join("tree");
        assert_eq!(
            std::fs::read(copied.join("sub/run.sh")).unwrap(),
            b"#!/bin/sh\necho hi\n"
        );
        let mode = std::fs::metadata(copied.join("sub/run.sh")).unwrap().mode();
        assert_eq!(mode & 0o777, 0o750);
        // The link is kept as a link, not followed.
        assert_eq!(
            std::fs::read_link(copied.join("link")).unwrap(),
            Path::new("/etc/passwd")
        );
    }

    #[test]
    fn entries_leaving_the_directory_are_refused() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(4);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        // `append_data` refuses `..` itself, so the name goes into the header raw.
        header.as_gnu_mut().unwrap().name[..9].copy_from_slice(b"../escape");
        header.set_cksum();
        builder.append(&header, &b"evil"[..]).unwrap();
        let tar = builder.into_inner().unwrap();

        let outer = tempfile::tempdir().unwrap();
        let dir = outer.path().join("in");
        std::fs::create_dir(&dir).unwrap();
        let _ = extract(&tar[..], &dir);
        assert!(!outer.path().join("escape").exists());
    }

    #[test]
    fn extracting_into_a_missing_directory_says_so() {
        let err = extract(&b""[..], Path::new("/nonexistent/dir")).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
    }
}
