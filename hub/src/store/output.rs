//! Task output bytes: one append-only file per task, framed records in arrival order. SQLite keeps how
//! much of each file is committed; bytes past that (a crash mid-write) are cut off when the file is
//! next opened, and the agent resends them because they were never acknowledged.
//!
//! Why files: SQLite blobs cap output at ~100 MB/s on a typical disk (every byte goes through the WAL
//! and a checkpoint); an append to a file is a memory copy into the page cache.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;
use docker_agent_proto::v1::Stream;

use super::{Result, StoreError};

/// stream (1 byte) · offset in the stream (8) · length (4), little-endian, then the data.
const HEADER: usize = 13;
/// Open append handles kept at most (one per task still producing output).
const MAX_OPEN: usize = 256;
/// Each time a file grows by this much, the kernel is told to start writing the new bytes to disk.
const WRITEBACK_STEP: u64 = 4 << 20;
/// Pages further than this behind a file's end, already sent to disk, leave the page cache.
///
/// Why: a stream of output otherwise fills the page cache with fresh pages, each one allocated, charged
/// and later written back and reclaimed; a file that keeps only its last few MiB cached reuses the same
/// few pages, and writing 1 GiB of output costs the hub half the CPU (0.8 s → 0.4 s of system time here).
/// The bytes also reach the disk within megabytes rather than after the kernel's 30 s dirty expiry.
const CACHED_TAIL: u64 = 2 * WRITEBACK_STEP;
/// Ranges given to the kernel end on a multiple of this (any page size up to 64 KiB).
const PAGE_ALIGN: u64 = 64 << 10;

/// One piece of stored output. `seq` is the file position after it: increasing, so watchers resume
/// from the last `seq` they saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChunk {
    pub seq: i64,
    pub stream: Stream,
    pub offset: u64,
    pub data: Bytes,
}

#[derive(Debug)]
pub(super) struct OutputFiles {
    dir: PathBuf,
    /// Open append handles of tasks still producing output.
    handles: Mutex<HashMap<String, Appender>>,
    /// Keeps a private directory alive for in-memory stores (tests).
    _temp: Option<tempfile::TempDir>,
}

/// An open output file and how far its write-behind has got.
#[derive(Debug)]
struct Appender {
    file: File,
    /// Writeback has been started for everything below this.
    flushed: u64,
    /// Everything below this has been dropped from the page cache.
    uncached: u64,
}

impl Appender {
    fn new(file: File, len: u64) -> Self {
        Self {
            file,
            flushed: len,
            uncached: len,
        }
    }

    /// Starts writeback of what was written since the last step, and drops from the page cache what an
    /// earlier step sent. Best effort: a failure only leaves pages cached (and written back as usual).
    fn write_behind(&mut self, end: u64) {
        if end < self.flushed + WRITEBACK_STEP {
            return;
        }
        self.sync_range(self.flushed, end, libc::SYNC_FILE_RANGE_WRITE);
        self.flushed = end;
        // Whole pages only: the kernel keeps a page the range ends inside, and the next range starts after it.
        let old = end.saturating_sub(CACHED_TAIL) & !(PAGE_ALIGN - 1);
        if old > self.uncached {
            // The kernel keeps pages it is still writing; their writeback began a step ago, so this wait
            // is usually over at once. When the disk is slower than the output, it is what holds the
            // session back (the agent keeps the output meanwhile), instead of the page cache filling
            // with dirty pages.
            self.sync_range(
                self.uncached,
                old,
                libc::SYNC_FILE_RANGE_WAIT_BEFORE
                    | libc::SYNC_FILE_RANGE_WRITE
                    | libc::SYNC_FILE_RANGE_WAIT_AFTER,
            );
            let _ = nix::fcntl::posix_fadvise(
                &self.file,
                self.uncached as i64,
                (old - self.uncached) as i64,
                nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
            );
            self.uncached = old;
        }
    }

    /// `sync_file_range(2)` on bytes `from..to`; best effort, like the rest of the write-behind. The
    /// hub's one raw system call: nix does not wrap it, and nothing else starts writeback of a range
    /// without waiting for it.
    #[allow(unsafe_code)]
    fn sync_range(&self, from: u64, to: u64, flags: libc::c_uint) {
        // SAFETY: a descriptor we hold open and plain integers; nothing of ours is touched.
        unsafe {
            libc::sync_file_range(
                self.file.as_raw_fd(),
                from as libc::off64_t,
                (to - from) as libc::off64_t,
                flags,
            );
        }
    }
}

fn io(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Output(format!("{}: {e}", path.display()))
}

impl OutputFiles {
    pub(super) fn open(dir: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        Ok(Self {
            dir,
            handles: Mutex::default(),
            _temp: None,
        })
    }

    pub(super) fn temporary() -> Result<Self> {
        let temp = tempfile::tempdir().map_err(|e| StoreError::Output(e.to_string()))?;
        let mut files = Self::open(temp.path().to_path_buf())?;
        files._temp = Some(temp);
        Ok(files)
    }

    pub(super) fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    fn path(&self, task_id: &str) -> PathBuf {
        // Task ids are hex uuids; anything else never reaches a path.
        let safe: String = task_id
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect();
        self.dir.join(format!("{safe}.out"))
    }

    /// Writes one record at `at` (the committed length) and returns the new committed length.
    pub(super) fn write(
        &self,
        task_id: &str,
        at: u64,
        stream: Stream,
        offset: u64,
        data: &[u8],
    ) -> Result<u64> {
        let mut handles = self.handles.lock().unwrap_or_else(|p| p.into_inner());
        if handles.len() >= MAX_OPEN && !handles.contains_key(task_id) {
            // Reopening is always safe (it cuts back to the committed length), so a full cache is simply emptied.
            handles.clear();
        }
        if !handles.contains_key(task_id) {
            let path = self.path(task_id);
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| io(&path, e))?;
            let len = file.metadata().map_err(|e| io(&path, e))?.len();
            if len < at {
                // The database says more was committed than the file holds (a power loss before the page
                // cache reached the disk). Padding it would turn the hole into garbage records.
                return Err(StoreError::Corrupt(format!(
                    "{} holds {len} bytes but {at} were committed",
                    path.display()
                )));
            }
            // Anything past the committed length is a write the store never recorded.
            file.set_len(at).map_err(|e| io(&path, e))?;
            handles.insert(task_id.to_string(), Appender::new(file, at));
        }
        let appender = handles.get_mut(task_id).expect("inserted above");
        let file = &appender.file;
        let mut header = [0u8; HEADER];
        header[0] = stream as u8;
        header[1..9].copy_from_slice(&offset.to_le_bytes());
        header[9..13].copy_from_slice(&(data.len() as u32).to_le_bytes());
        // Two writes rather than one copy of the data into a record buffer.
        file.write_all_at(&header, at)
            .and_then(|()| file.write_all_at(data, at + HEADER as u64))
            .map_err(|e| io(&self.path(task_id), e))?;
        let end = at + (HEADER + data.len()) as u64;
        appender.write_behind(end);
        Ok(end)
    }

    /// Deletes the task's output file (its row is gone). Best effort: a file that stays is only
    /// space, and the next pass does not see it again.
    pub(super) fn remove(&self, task_id: &str) {
        self.close(task_id);
        if let Err(e) = std::fs::remove_file(self.path(task_id))
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(task = task_id, error = %e, "cannot delete a pruned task's output file");
        }
    }

    /// Closes the task's handle; its output is complete.
    pub(super) fn close(&self, task_id: &str) {
        self.handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(task_id);
    }

    /// Records from file position `after` up to `committed`, at most `limit` of them.
    /// The record boundary from which the rest of the file holds at most `keep` bytes of output (or
    /// only the last record, when that alone is larger). Reads record headers only.
    pub(super) fn tail_start(&self, task_id: &str, committed: u64, keep: u64) -> Result<u64> {
        if committed == 0 {
            return Ok(0);
        }
        let path = self.path(task_id);
        let file = File::open(&path).map_err(|e| io(&path, e))?;
        let mut records = Vec::new();
        let mut pos = 0u64;
        let mut header = [0u8; HEADER];
        while pos + HEADER as u64 <= committed {
            file.read_exact_at(&mut header, pos)
                .map_err(|e| io(&path, e))?;
            let len = u32::from_le_bytes(header[9..13].try_into().expect("4 bytes")) as u64;
            records.push((pos, len));
            pos += HEADER as u64 + len;
        }
        let mut start = records.last().map_or(0, |r| r.0);
        let mut kept = 0u64;
        for &(at, len) in records.iter().rev() {
            kept += len;
            if kept > keep && at != start {
                break;
            }
            start = at;
        }
        Ok(start)
    }

    pub(super) fn read(
        &self,
        task_id: &str,
        after: u64,
        committed: u64,
        limit: usize,
    ) -> Result<Vec<StoredChunk>> {
        if after >= committed {
            return Ok(Vec::new());
        }
        let path = self.path(task_id);
        let mut file = File::open(&path).map_err(|e| io(&path, e))?;
        file.seek(SeekFrom::Start(after))
            .map_err(|e| io(&path, e))?;
        let mut reader =
            std::io::BufReader::with_capacity(256 * 1024, file.take(committed - after));
        let mut chunks = Vec::new();
        let mut pos = after;
        while pos < committed && chunks.len() < limit {
            let corrupt = || {
                StoreError::Corrupt(format!(
                    "{}: a record runs past the committed length",
                    path.display()
                ))
            };
            if committed - pos < HEADER as u64 {
                return Err(corrupt());
            }
            let mut header = [0u8; HEADER];
            reader.read_exact(&mut header).map_err(|e| io(&path, e))?;
            let stream = Stream::try_from(header[0] as i32).unwrap_or(Stream::Unspecified);
            let offset = u64::from_le_bytes(header[1..9].try_into().expect("8 bytes"));
            let len = u32::from_le_bytes(header[9..13].try_into().expect("4 bytes")) as usize;
            if (len as u64) > committed - pos - HEADER as u64 {
                return Err(corrupt());
            }
            let mut data = vec![0u8; len];
            reader.read_exact(&mut data).map_err(|e| io(&path, e))?;
            pos += (HEADER + len) as u64;
            chunks.push(StoredChunk {
                seq: pos as i64,
                stream,
                offset,
                data: data.into(),
            });
        }
        Ok(chunks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_uncommitted_tails_are_cut() {
        let files = OutputFiles::temporary().unwrap();
        let end1 = files.write("t1", 0, Stream::Stdout, 0, b"hello").unwrap();
        let end2 = files.write("t1", end1, Stream::Stderr, 0, b"oops").unwrap();
        let all = files.read("t1", 0, end2, 10).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].data, &b"hello"[..]);
        assert_eq!(all[1].stream, Stream::Stderr);
        assert_eq!(all[1].seq as u64, end2);
        // Resume after the first record.
        let rest = files.read("t1", all[0].seq as u64, end2, 10).unwrap();
        assert_eq!(rest, all[1..]);
        // A write the store never committed (a crash) is cut off when the file is reopened.
        files.write("t1", end2, Stream::Stdout, 5, b"lost").unwrap();
        files.close("t1");
        let end3 = files
            .write("t1", end2, Stream::Stdout, 5, b" world")
            .unwrap();
        let tail = files.read("t1", end2, end3, 10).unwrap();
        assert_eq!(tail.len(), 1);
        assert_eq!(tail[0].data, &b" world"[..]);
        assert_eq!(std::fs::metadata(files.path("t1")).unwrap().len(), end3);
    }

    #[test]
    fn a_file_shorter_than_committed_is_corrupt_not_padded() {
        let files = OutputFiles::temporary().unwrap();
        let end = files.write("t2", 0, Stream::Stdout, 0, b"abc").unwrap();
        files.close("t2");
        let err = files
            .write("t2", end + 100, Stream::Stdout, 3, b"d")
            .unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
        // A committed length that cuts a record in half is refused too, without allocating its length.
        assert!(files.read("t2", 0, end - 1, 10).is_err());
        assert!(files.read("t2", 0, 5, 10).is_err());
    }

    #[test]
    fn the_tail_starts_at_a_record_holding_at_most_keep_bytes() {
        let files = OutputFiles::temporary().unwrap();
        let mut end = 0;
        let mut starts = Vec::new();
        for i in 0..5u64 {
            starts.push(end);
            end = files
                .write("t3", end, Stream::Stdout, i * 10, &[b'x'; 10])
                .unwrap();
        }
        assert_eq!(files.tail_start("t3", end, 25).unwrap(), starts[3]);
        assert_eq!(files.tail_start("t3", end, 1000).unwrap(), 0);
        // The last record is kept even when it alone is larger.
        assert_eq!(files.tail_start("t3", end, 3).unwrap(), starts[4]);
        assert_eq!(files.tail_start("none", 0, 3).unwrap(), 0);
    }

    /// How many of the file's bytes are in the page cache (util-linux's `fincore`).
    fn cached_bytes(path: &Path) -> u64 {
        let out = std::process::Command::new("fincore")
            .args(["--bytes", "--noheadings", "--raw", "--output", "RES"])
            .arg(path)
            .output()
            .expect("fincore (util-linux) runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    }

    #[test]
    fn a_long_output_keeps_only_its_tail_in_the_page_cache() {
        let files = OutputFiles::temporary().unwrap();
        let record = vec![b'x'; 64 << 10];
        let mut end = 0;
        let write_mib = |files: &OutputFiles, end: &mut u64, mib: usize| {
            for _ in 0..mib * 16 {
                *end = files
                    .write("long", *end, Stream::Stdout, 0, &record)
                    .unwrap();
            }
        };
        write_mib(&files, &mut end, 16);
        let path = files.path("long");
        // Of 16 MiB written, at most the 8 MiB tail and the step being written back stay cached.
        let cached = cached_bytes(&path);
        assert!(
            cached <= CACHED_TAIL + WRITEBACK_STEP,
            "{cached} of 16 MiB still in the page cache"
        );
        // The bytes are all still there, and read back from the disk.
        let first = files.read("long", 0, end, 1).unwrap();
        assert_eq!(first[0].data, record);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), end);
    }
}
