//! `docker-agent cp`: files and directories into and out of an agent, streamed as tar through the hub (never held whole), with modes kept and nothing written outside the path the user named.

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use docker_agent_proto::v1 as pb;
use docker_agent_proto::v1::copy_to_request::Msg as CopyMsg;
use futures::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use crate::args::CpArgs;
use crate::client::{Client, status_error};

/// The uid (and gid) of the task user in every agent image: copied-in files belong to it unless
/// `--archive` keeps the local owners.
const TASK_UID: u64 = 1000;
/// Tar stream chunk size on the wire.
const CHUNK: usize = 256 * 1024;

#[derive(Debug, PartialEq, Eq)]
enum Side {
    Local(PathBuf),
    Remote { name: String, path: String },
}

/// `NAME:PATH` is a path in an agent (relative to /workspace unless absolute); anything else is local.
/// A local path with a colon can be written `./a:b`.
fn side(text: &str) -> Side {
    if let Some((name, path)) = text.split_once(':')
        && !name.is_empty()
        && !name.contains('/')
        && !name.starts_with('.')
    {
        let path = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/workspace/{path}")
        };
        return Side::Remote {
            name: name.to_string(),
            path,
        };
    }
    Side::Local(PathBuf::from(text))
}

fn base_name(path: &str) -> Result<String> {
    Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| anyhow!("{path:?} names no file (it ends in '/' or '..', or is '/')"))
}

pub async fn cp(mut client: Client, args: CpArgs) -> Result<ExitCode> {
    match (side(&args.source), side(&args.destination)) {
        (Side::Remote { name, path }, Side::Local(dest)) => {
            copy_from(&mut client, &name, &path, &dest).await?;
        }
        (Side::Local(src), Side::Remote { name, path }) => {
            copy_to(&mut client, &src, &name, &path, args.archive).await?;
        }
        _ => bail!("cp needs exactly one side written NAME:PATH (the other is a local path)"),
    }
    Ok(ExitCode::SUCCESS)
}

async fn stat(client: &mut Client, name: &str, path: &str) -> Result<pb::PathStat> {
    Ok(client
        .stat_path(pb::PathRequest {
            name: name.to_string(),
            path: path.to_string(),
        })
        .await
        .map_err(status_error)?
        .into_inner())
}

async fn copy_from(client: &mut Client, name: &str, path: &str, dest: &Path) -> Result<()> {
    let remote = stat(client, name, path).await?;
    if !remote.exists {
        bail!("{name}:{path}: no such file or directory");
    }
    let top = base_name(path)?;
    // Into an existing directory under its own name, else as `dest` itself (as cp and docker cp do).
    let (root, rename) = if dest.is_dir() {
        (dest.to_path_buf(), top.clone())
    } else {
        if remote.is_dir && dest.exists() {
            bail!(
                "cannot copy directory {name}:{path} onto file {}",
                dest.display()
            );
        }
        let parent = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !parent.is_dir() {
            bail!("{}: no such directory", parent.display());
        }
        let rename = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| anyhow!("{} names no file", dest.display()))?;
        (parent, rename)
    };
    let mut stream = client
        .copy_from(pb::PathRequest {
            name: name.to_string(),
            path: path.to_string(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let (tx, rx) = std::sync::mpsc::sync_channel::<std::io::Result<Bytes>>(16);
    let extract =
        tokio::task::spawn_blocking(move || extract(ChannelReader::new(rx), &root, &top, &rename));
    while let Some(chunk) = stream.next().await {
        let item = chunk
            .map(|c| c.data)
            .map_err(|s| std::io::Error::other(status_error(s).to_string()));
        let failed = item.is_err();
        if tx.send(item).is_err() || failed {
            break;
        }
    }
    drop(tx);
    extract.await.context("failed to extract")?
}

/// A `Read` over chunks arriving from the async side.
struct ChannelReader {
    rx: std::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    current: Bytes,
}

impl ChannelReader {
    fn new(rx: std::sync::mpsc::Receiver<std::io::Result<Bytes>>) -> Self {
        Self {
            rx,
            current: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.recv() {
                Ok(chunk) => self.current = chunk?,
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

/// Unpacks a tar whose entries all sit under `top`, renaming `top` to `rename` inside `root`. Entries
/// elsewhere, with `..`, or reaching through a symlink out of `root` are refused.
fn extract(reader: impl Read, root: &Path, top: &str, rename: &str) -> Result<()> {
    let root = root
        .canonicalize()
        .with_context(|| format!("failed to open {}", root.display()))?;
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().context("failed to read the copy")? {
        let mut entry = entry.context("failed to read the copy")?;
        let path = entry.path().context("bad path in the copy")?.into_owned();
        let mut parts = path.components();
        match parts.next() {
            Some(Component::Normal(first)) if first == top => {}
            _ => bail!("refusing {}: outside {top}", path.display()),
        }
        let mut target = root.join(rename);
        for part in parts {
            match part {
                Component::Normal(p) => target.push(p),
                Component::CurDir => {}
                _ => bail!("refusing {}: it leaves {top}", path.display()),
            }
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("failed to create {}", parent.display()))?;
            let real = parent.canonicalize()?;
            if !real.starts_with(&root) {
                bail!(
                    "refusing {}: it leads out of {}",
                    path.display(),
                    root.display()
                );
            }
        }
        entry.set_preserve_permissions(true);
        entry.set_preserve_mtime(true);
        entry
            .unpack(&target)
            .with_context(|| format!("failed to write {}", target.display()))?;
    }
    Ok(())
}

async fn copy_to(
    client: &mut Client,
    src: &Path,
    name: &str,
    path: &str,
    archive: bool,
) -> Result<()> {
    let meta = std::fs::symlink_metadata(src)
        .with_context(|| format!("{}: no such file or directory", src.display()))?;
    let remote = stat(client, name, path).await?;
    let (dir, top) = if remote.exists && remote.is_dir {
        let top = src
            .canonicalize()?
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| anyhow!("{} names no file", src.display()))?;
        (path.to_string(), top)
    } else {
        if remote.exists && meta.is_dir() {
            bail!(
                "cannot copy directory {} onto file {name}:{path}",
                src.display()
            );
        }
        let parent = Path::new(path)
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "/".into());
        let parent_stat = stat(client, name, &parent).await?;
        if !parent_stat.is_dir {
            bail!("{name}:{parent}: no such directory");
        }
        (parent, base_name(path)?)
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let src = src.to_path_buf();
    let pack = tokio::task::spawn_blocking(move || -> Result<()> {
        let mut builder = tar::Builder::new(ChannelWriter::new(tx));
        builder.follow_symlinks(false);
        append_tree(&mut builder, &src, Path::new(&top), archive)?;
        builder.into_inner()?.flush()?;
        Ok(())
    });
    let start = pb::CopyToRequest {
        msg: Some(CopyMsg::Start(pb::PathRequest {
            name: name.to_string(),
            path: dir,
        })),
    };
    let body = futures::stream::iter([start]).chain(ReceiverStream::new(rx).map(|data| {
        pb::CopyToRequest {
            msg: Some(CopyMsg::Data(data)),
        }
    }));
    let sent = client.copy_to(body).await.map_err(status_error);
    // A packing error explains a failed upload better than the upload's own error.
    pack.await.context("failed to pack")??;
    sent?;
    Ok(())
}

/// Appends `path` (recursively) as `name`, with its modes; owners become the task user's unless
/// `archive` keeps them.
fn append_tree(
    builder: &mut tar::Builder<ChannelWriter>,
    path: &Path,
    name: &Path,
    archive: bool,
) -> Result<()> {
    let meta = std::fs::symlink_metadata(path)
        .with_context(|| format!("failed to read {}", path.display()))?;
    let mut header = tar::Header::new_gnu();
    header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
    if !archive {
        header.set_uid(TASK_UID);
        header.set_gid(TASK_UID);
    }
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(path)?;
        builder.append_link(&mut header, name, target)?;
    } else if meta.is_dir() {
        header.set_size(0);
        builder.append_data(&mut header, name, std::io::empty())?;
        let mut children: Vec<_> = std::fs::read_dir(path)?.collect::<Result<_, _>>()?;
        children.sort_by_key(|e| e.file_name());
        for child in children {
            append_tree(
                builder,
                &child.path(),
                &name.join(child.file_name()),
                archive,
            )?;
        }
    } else if meta.is_file() {
        let file = std::fs::File::open(path)
            .with_context(|| format!("failed to open {}", path.display()))?;
        builder.append_data(&mut header, name, file)?;
    } else {
        eprintln!("skipping {}: not a file, directory or link", path.display());
    }
    Ok(())
}

/// A `Write` that hands fixed-size chunks to the async side.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Bytes>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn new(tx: tokio::sync::mpsc::Sender<Bytes>) -> Self {
        Self {
            tx,
            buf: Vec::with_capacity(CHUNK),
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(chunk)
            .map_err(|_| std::io::Error::other("the copy was aborted"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides() {
        assert_eq!(
            side("a1:/etc/x"),
            Side::Remote {
                name: "a1".into(),
                path: "/etc/x".into()
            }
        );
        assert_eq!(
            side("a1:notes"),
            Side::Remote {
                name: "a1".into(),
                path: "/workspace/notes".into()
            }
        );
        assert_eq!(side("./a:b"), Side::Local("./a:b".into()));
        assert_eq!(side("/tmp/x"), Side::Local("/tmp/x".into()));
    }

    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o640);
            h.set_entry_type(tar::EntryType::Regular);
            // Raw names, so a hostile `..` reaches the extractor as is.
            h.as_gnu_mut().unwrap().name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn extraction_renames_the_top_and_refuses_anything_outside_it() {
        let dir = tempfile::tempdir().unwrap();
        let ok = tar_of(&[("src/a.txt", b"a"), ("src/sub/b.txt", b"b")]);
        extract(ok.as_slice(), dir.path(), "src", "dst").unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("dst/sub/b.txt")).unwrap(),
            b"b"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("dst/a.txt"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);
        for bad in [
            &[("other/x", &b"x"[..])][..],
            &[("src/../../evil", &b"x"[..])][..],
        ] {
            let err = extract(tar_of(bad).as_slice(), dir.path(), "src", "dst").unwrap_err();
            assert!(err.to_string().contains("refusing"), "{err}");
        }
        assert!(!dir.path().parent().unwrap().join("evil").exists());
    }

    #[test]
    fn extraction_does_not_follow_a_symlink_out_of_the_destination() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("dst")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("dst/link")).unwrap();
        let err = extract(
            tar_of(&[("src/link/x", b"x")]).as_slice(),
            dir.path(),
            "src",
            "dst",
        )
        .unwrap_err();
        assert!(err.to_string().contains("leads out"), "{err}");
        assert!(!outside.path().join("x").exists());
    }
}
