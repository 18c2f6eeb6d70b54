//! A recording's file on disk: appended fragment by fragment (each made durable), then
//! finalized in place (`proto::mux::mp4file`); and the recovery of files a crash left.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context;
use bytes::Bytes;
use tracing::{info, warn};

use super::MAX_SAMPLES;
use livegate_proto::mux::mp4file::{summary, tracks, BoxHeader, Gap, Index};

/// The largest `moov` or `moof` read back (livegate's are a few KiB; a fragment of a
/// 60 fps stream with every audio frame lists a few hundred samples).
const MAX_HEADER_BOX: u64 = 16 << 20;

/// A `.mp4.part` being written.
pub(crate) struct PartFile {
    path: PathBuf,
    file: Option<File>,
    len: u64,
}

impl PartFile {
    /// Creates `dir/STREAM-START.mp4.part` (and `dir`) and writes `init` (durably).
    pub(crate) async fn create(dir: &Path, stream: &str, at: SystemTime, init: Bytes) -> anyhow::Result<Self> {
        let dir = dir.to_path_buf();
        let stem = super::file_stem(stream, at);
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let path = super::free_name(&dir, &stem);
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .with_context(|| format!("creating {}", path.display()))?;
            file.write_all(&init).with_context(|| format!("writing {}", path.display()))?;
            file.sync_data().with_context(|| format!("syncing {}", path.display()))?;
            // the directory entry too: the file survives a crash
            if let Ok(d) = File::open(&dir) {
                let _ = d.sync_all();
            }
            info!(file = %path.display(), "recording to");
            Ok(Self { path, file: Some(file), len: init.len() as u64 })
        })
        .await
        .context("recording task")?
    }

    /// Where it is being written.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes written so far.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Appends a fragment; durable when this returns.
    pub(crate) async fn append(&mut self, fragment: Bytes) -> anyhow::Result<()> {
        let Some(mut file) = self.file.take() else { anyhow::bail!("{} is closed", self.path.display()) };
        let path = self.path.clone();
        let n = fragment.len() as u64;
        let file = tokio::task::spawn_blocking(move || -> anyhow::Result<File> {
            file.write_all(&fragment).with_context(|| format!("writing {}", path.display()))?;
            file.sync_data().with_context(|| format!("syncing {}", path.display()))?;
            Ok(file)
        })
        .await
        .context("recording task")??;
        self.file = Some(file);
        self.len += n;
        Ok(())
    }

    /// Finalizes the file into `….mp4`; None when it held no media (it is removed).
    pub(crate) async fn finish(mut self) -> anyhow::Result<Option<Finalized>> {
        drop(self.file.take());
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || finalize(&path)).await.context("recording task")?
    }
}

/// A finalized recording: where it is and what its `moov` says.
#[derive(Debug, Clone)]
pub struct Finalized {
    pub path: PathBuf,
    pub duration_s: f64,
    pub codecs: Vec<String>,
    pub bytes: u64,
    pub gaps: Vec<Gap>,
}

/// What livegate notes in a recording's `moov` (`mp4file::note`): its gaps.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Note {
    #[serde(default)]
    pub gaps: Vec<[f64; 2]>,
}

/// Finalizes the fragmented `path` (`….mp4.part`) in place into a regular MP4 and renames
/// it to `….mp4`: a torn last fragment (a crash mid-write) is cut off first. A file with no
/// whole fragment is removed (None).
pub fn finalize(path: &Path) -> anyhow::Result<Option<Finalized>> {
    let mut file =
        OpenOptions::new().read(true).write(true).open(path).with_context(|| format!("opening {}", path.display()))?;
    let file_len = file.metadata()?.len();
    let mut pos = 0u64;
    let mut init: Option<(u64, Vec<u8>)> = None;
    let mut index: Option<Index> = None;
    let mut headers: Vec<u64> = Vec::new();
    // where the whole part of the file ends: after the last mdat that follows a moof
    let mut good_end = 0u64;
    let mut pending_moof: Option<u64> = None;
    let mut head = [0u8; 16];
    while pos < file_len {
        file.seek(SeekFrom::Start(pos))?;
        let want = usize::try_from((file_len - pos).min(16)).unwrap_or(16);
        file.read_exact(&mut head[..want])?;
        let h = match BoxHeader::parse(&head[..want]) {
            Ok(Some(h)) if pos.checked_add(h.size).is_some_and(|end| end <= file_len) => h,
            _ => break, // torn (or garbage): the file ends before this box
        };
        match &h.kind {
            b"moov" | b"moof" => {
                if h.size > MAX_HEADER_BOX {
                    break;
                }
                let mut buf = vec![0u8; h.size as usize];
                file.seek(SeekFrom::Start(pos))?;
                file.read_exact(&mut buf)?;
                if &h.kind == b"moov" {
                    if init.is_some() {
                        break; // a second moov: not a file livegate wrote as it goes
                    }
                    index = Some(Index::new(&buf, MAX_SAMPLES).with_context(|| format!("{}: moov", path.display()))?);
                    init = Some((pos, buf));
                    good_end = pos + h.size;
                } else {
                    let Some(ix) = index.as_mut() else { break };
                    if ix.add_fragment(&buf, pos).is_err() {
                        break;
                    }
                    pending_moof = Some(pos);
                }
            }
            b"mdat" => {
                if let Some(moof) = pending_moof.take() {
                    headers.push(moof);
                    good_end = pos + h.size;
                }
            }
            _ => {
                if pending_moof.is_none() {
                    good_end = pos + h.size;
                }
            }
        }
        pos += h.size;
    }
    let (Some((moov_at, moov)), Some(index)) = (init, index) else {
        warn!(file = %path.display(), "recording holds no initialization segment; removed");
        drop(file);
        std::fs::remove_file(path)?;
        return Ok(None);
    };
    if headers.is_empty() {
        drop(file);
        std::fs::remove_file(path)?;
        return Ok(None);
    }
    if pending_moof.is_some() || good_end < file_len {
        warn!(file = %path.display(), kept = good_end, lost = file_len - good_end, "recording: a torn last fragment is cut off");
        // the index was built from whole fragments only if the last moof had its mdat: start
        // again without the torn tail
        file.set_len(good_end)?;
        drop(file);
        return finalize(path);
    }
    let video = tracks(&moov).ok().and_then(|t| t.iter().find(|t| t.video).map(|t| t.id));
    let gaps = index.gaps(video);
    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    let note = Note { gaps: gaps.iter().map(|g| [round(g.at_s), round(g.duration_s)]).collect() };
    let note = serde_json::to_vec(&note).unwrap_or_default();
    let new_moov = index.finish(&moov, &note).with_context(|| format!("{}: building moov", path.display()))?;
    let (duration_s, codecs) = summary(&new_moov).unwrap_or_default();
    // the fragmented header boxes become free space; the full moov goes at the end
    for at in std::iter::once(moov_at).chain(headers) {
        file.seek(SeekFrom::Start(at + 4))?;
        file.write_all(b"free")?;
    }
    file.seek(SeekFrom::Start(good_end))?;
    file.write_all(&new_moov)?;
    file.sync_all()?;
    drop(file);
    let done = path.with_extension("");
    let done = if done.extension().is_some_and(|e| e == "mp4") { done } else { path.with_extension("mp4") };
    std::fs::rename(path, &done)?;
    if let Some(dir) = done.parent().and_then(|d| File::open(d).ok()) {
        let _ = dir.sync_all();
    }
    let bytes = good_end + new_moov.len() as u64;
    Ok(Some(Finalized { path: done, duration_s, codecs, bytes, gaps }))
}

/// Finalizes every `.mp4.part` under `dir` (a crash left them); how many.
pub fn recover_dir(dir: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    // a bound on the walk: directories of apps and streams, not a whole disk
    let mut visited = 0;
    while let Some(d) = stack.pop() {
        visited += 1;
        if visited > 100_000 {
            warn!(dir = %dir.display(), "recording recovery: too many directories; stopped");
            break;
        }
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                stack.push(p);
            } else if t.is_file() && p.to_string_lossy().ends_with(".mp4.part") {
                match finalize(&p) {
                    Ok(Some(done)) => {
                        info!(file = %done.path.display(), "recording recovered");
                        n += 1;
                    }
                    Ok(None) => info!(file = %p.display(), "recording with no whole fragment removed"),
                    Err(e) => warn!(file = %p.display(), "recording could not be recovered: {e:#}"),
                }
            }
        }
    }
    n
}

/// Bytes free for an unprivileged writer on the filesystem of `dir` (or of its nearest
/// existing ancestor).
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let existing = dir.ancestors().find(|p| p.exists())?;
    let c = std::ffi::CString::new(existing.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a statvfs the call fills.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Ok when the filesystem of `dir` has at least `need` bytes free (or cannot say).
pub(crate) fn space_left(dir: &Path, need: u64) -> anyhow::Result<()> {
    match free_bytes(dir) {
        Some(free) if free < need => anyhow::bail!(
            "disk full: {free} bytes free on the filesystem of {}, {need} needed (what is to be written and record.min_free_bytes)",
            dir.display()
        ),
        _ => Ok(()),
    }
}

/// Applies retention to the finalized recordings under `dir/APP/*` for each app in `apps`
/// (None: every app directory but `skip`'s): older than `keep_days` deleted, then the oldest
/// while their total is over `keep_bytes`. How many files were deleted.
pub fn sweep(dir: &Path, apps: Option<&[String]>, skip: &[String], keep_days: u64, keep_bytes: u64) -> usize {
    if keep_days == 0 && keep_bytes == 0 {
        return 0;
    }
    let mut files: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
    let Ok(app_dirs) = std::fs::read_dir(dir) else { return 0 };
    for app in app_dirs.flatten() {
        let name = app.file_name().to_string_lossy().into_owned();
        let wanted = apps.map_or(!skip.contains(&name), |a| a.contains(&name));
        if !wanted || !app.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        for stream in std::fs::read_dir(app.path()).into_iter().flatten().flatten() {
            for f in std::fs::read_dir(stream.path()).into_iter().flatten().flatten() {
                let p = f.path();
                if !p.to_string_lossy().ends_with(".mp4") {
                    continue;
                }
                let Ok(meta) = f.metadata() else { continue };
                files.push((meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), meta.len(), p));
                if files.len() > 1_000_000 {
                    break;
                }
            }
        }
    }
    files.sort();
    let mut deleted = 0;
    let max_age = std::time::Duration::from_secs(keep_days.saturating_mul(86_400));
    let mut total: u64 = files.iter().map(|f| f.1).sum();
    for (mtime, len, path) in &files {
        let too_old = keep_days > 0 && mtime.elapsed().is_ok_and(|age| age > max_age);
        let too_much = keep_bytes > 0 && total > keep_bytes;
        if !(too_old || too_much) {
            continue;
        }
        match std::fs::remove_file(path) {
            Ok(()) => {
                info!(file = %path.display(), "recording deleted by retention");
                total -= len;
                deleted += 1;
            }
            Err(e) => warn!(file = %path.display(), "retention could not delete: {e}"),
        }
    }
    deleted
}
