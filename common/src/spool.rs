//! A disk spool of records (opaque byte strings), kept in segment files so they survive a
//! restart or a power cut: the agent's MQTT messages while the broker is away, the gateway's
//! line-protocol batches while the database is down.
//!
//! Layout: `<spool_dir>/<16 hex digits>.seg`, oldest first. A record is
//! `len: u32 LE | crc32(body): u32 LE | body`. A torn record at the end of a segment (power
//! cut mid-write) fails its length or checksum and the segment is truncated there when the
//! spool is opened.
//!
//! Bound: the segments' total size stays under `max_bytes`; to make room, the oldest segment
//! is deleted and its unsent records are counted as dropped. Segments are small
//! (`max_bytes / 16`, between 64 KiB and 4 MiB) so a deletion loses little and reading never
//! holds much in memory: records are read one at a time with positioned reads.
//!
//! Delivery: records are handed out in order and a segment is deleted once every record in it
//! was acknowledged. After a lost connection the read position goes back to the first record
//! not acknowledged. On clean shutdown the read position is saved in `cursor`, so a restart
//! does not resend what was delivered.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const HEADER: u64 = 8;

/// The largest segment. A segment is a file created, and its name forced to disk, when the
/// last one is full: at 256 KiB a gateway spooling a fleet's 20 MB/s of line protocol (10,000 nodes)
/// would do that eighty times a second; at 4 MiB five. Reading never holds a segment in memory (one record
/// at a time), so size costs nothing there; a full spool drops its oldest sixteenth at most.
const SEGMENT_MAX: u64 = 4 << 20;

/// Where a record sits; handed out with it and given back on acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RecordPos {
    pub seg: u64,
    pub offset: u64,
    /// How many records of the segment come before this one.
    pub index: u64,
}

impl RecordPos {
    fn start(seg: u64) -> Self {
        RecordPos {
            seg,
            offset: 0,
            index: 0,
        }
    }
}

#[derive(Debug)]
struct Segment {
    id: u64,
    bytes: u64,
    records: u64,
    /// Records handed out and not yet acknowledged.
    unacked: u64,
}

#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_max: u64,
    segments: VecDeque<Segment>,
    writer: Option<File>,
    reader: Option<(u64, File)>,
    /// Next record to hand out.
    read: RecordPos,
    total: u64,
    dropped: u64,
    dirty: bool,
}

fn seg_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.seg"))
}

fn encode(body: &[u8]) -> Vec<u8> {
    let mut rec = Vec::with_capacity(HEADER as usize + body.len());
    rec.extend_from_slice(&(body.len() as u32).to_le_bytes());
    rec.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    rec.extend_from_slice(body);
    rec
}

/// Reads the record at `offset`: its body and total length, or `None` if it is torn.
fn read_record(f: &File, offset: u64, end: u64) -> io::Result<Option<(Vec<u8>, u64)>> {
    if offset + HEADER > end {
        return Ok(None);
    }
    let mut h = [0u8; HEADER as usize];
    f.read_exact_at(&mut h, offset)?;
    let len = u64::from(u32::from_le_bytes([h[0], h[1], h[2], h[3]]));
    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    if offset + HEADER + len > end {
        return Ok(None);
    }
    let mut body = vec![0u8; len as usize];
    f.read_exact_at(&mut body, offset + HEADER)?;
    if crc32fast::hash(&body) != crc {
        return Ok(None);
    }
    Ok(Some((body, HEADER + len)))
}

impl Spool {
    /// Opens (or creates) the spool, checking every record; torn tails are cut off.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Spool> {
        std::fs::create_dir_all(dir)?;
        let mut ids: Vec<u64> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let hex = name.strip_suffix(".seg")?;
                (hex.len() == 16).then(|| u64::from_str_radix(hex, 16).ok())?
            })
            .collect();
        ids.sort_unstable();
        let mut segments = VecDeque::new();
        for id in ids {
            let path = seg_path(dir, id);
            let f = OpenOptions::new().read(true).write(true).open(&path)?;
            let len = f.metadata()?.len();
            let (mut off, mut records) = (0u64, 0u64);
            while let Some((_, n)) = read_record(&f, off, len)? {
                off += n;
                records += 1;
            }
            if off < len {
                tracing::warn!(segment = %path.display(), kept = off, cut = len - off,
                    "spool segment has a torn tail (power cut?); cutting it off");
                f.set_len(off)?;
                f.sync_all()?;
            }
            if records == 0 {
                std::fs::remove_file(&path)?;
                continue;
            }
            segments.push_back(Segment {
                id,
                bytes: off,
                records,
                unacked: 0,
            });
        }
        let total = segments.iter().map(|s| s.bytes).sum();
        let mut spool = Spool {
            dir: dir.to_owned(),
            max_bytes,
            segment_max: (max_bytes / 16).clamp(64 << 10, SEGMENT_MAX),
            read: RecordPos::start(segments.front().map(|s| s.id).unwrap_or(0)),
            segments,
            writer: None,
            reader: None,
            total,
            dropped: 0,
            dirty: false,
        };
        spool.apply_cursor()?;
        Ok(spool)
    }

    fn cursor_path(&self) -> PathBuf {
        self.dir.join("cursor")
    }

    /// Skips what a previous run delivered (saved by [`Spool::save_cursor`]).
    fn apply_cursor(&mut self) -> io::Result<()> {
        let path = self.cursor_path();
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(());
        };
        let mut it = text.split_ascii_whitespace().map(|v| v.parse::<u64>());
        if let (Some(Ok(seg)), Some(Ok(offset)), Some(Ok(index))) =
            (it.next(), it.next(), it.next())
        {
            if let Some(s) = self.segments.iter().find(|s| s.id == seg) {
                if offset <= s.bytes && index <= s.records {
                    while self.segments.front().is_some_and(|s| s.id < seg) {
                        self.delete_front()?;
                    }
                    self.read = RecordPos { seg, offset, index };
                }
            }
        }
        std::fs::remove_file(path)
    }

    /// Saves the read position, so the next run starts there (call on clean shutdown, after
    /// [`Spool::rewind`]).
    pub fn save_cursor(&mut self) -> io::Result<()> {
        self.sync()?;
        if self.segments.is_empty() {
            return Ok(());
        }
        let tmp = self.dir.join("cursor.tmp");
        std::fs::write(
            &tmp,
            format!(
                "{} {} {}\n",
                self.read.seg, self.read.offset, self.read.index
            ),
        )?;
        std::fs::rename(tmp, self.cursor_path())
    }

    /// Appends a record and forces it to disk; returns how many older records were dropped to
    /// make room.
    pub fn append(&mut self, body: &[u8]) -> io::Result<u64> {
        let dropped = self.append_unsynced(body)?;
        self.sync_or_warn();
        Ok(dropped)
    }

    /// Forces what was appended to disk. A failure is logged, not returned: the records are
    /// in their segment already (a caller keeping them elsewhere too would send them twice).
    /// Whether it succeeded.
    pub fn sync_or_warn(&mut self) -> bool {
        match self.sync() {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, dir = %self.dir.display(),
                    "cannot force the spool to disk; a power cut now may lose its last records");
                false
            }
        }
    }

    /// Appends a record without forcing it to disk (several appends, then one
    /// [`Spool::sync_or_warn`]); returns how many older records were dropped to make room.
    pub fn append_unsynced(&mut self, body: &[u8]) -> io::Result<u64> {
        let rec = encode(body);
        let len = rec.len() as u64;
        let mut dropped = 0;
        while self.total + len > self.max_bytes && !self.segments.is_empty() {
            dropped += self.drop_oldest()?;
        }
        let need_new = match self.segments.back() {
            None => true,
            Some(s) => self.writer.is_none() || (s.bytes > 0 && s.bytes + len > self.segment_max),
        };
        if need_new {
            let id = self.segments.back().map(|s| s.id + 1).unwrap_or(1);
            self.sync()?;
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(seg_path(&self.dir, id))?;
            if self.segments.is_empty() {
                self.read = RecordPos::start(id);
            }
            // the new file's name on disk too, not only its data (a power cut right after
            // could otherwise lose the whole segment on some filesystems)
            if let Ok(d) = File::open(&self.dir) {
                let _ = d.sync_all();
            }
            self.segments.push_back(Segment {
                id,
                bytes: 0,
                records: 0,
                unacked: 0,
            });
            self.writer = Some(f);
        }
        self.dropped += dropped;
        if let (Some(w), Some(s)) = (self.writer.as_mut(), self.segments.back_mut()) {
            if let Err(e) = w.write_all(&rec) {
                // A full disk takes part of a record: cut it off, or every record appended
                // after it would be read from the wrong offset. If even that fails, this
                // segment takes no more (the next append starts a new one).
                if w.set_len(s.bytes).is_err() {
                    self.writer = None;
                }
                return Err(e);
            }
            s.bytes += len;
            s.records += 1;
            self.total += len;
            self.dirty = true;
        }
        Ok(dropped)
    }

    /// A second handle on the segment being written, to force what was appended so far to
    /// disk away from the caller's event loop (a group commit: appends go on meanwhile, and the
    /// next job covers them). `None`: nothing waits to be forced. A failed clone is returned and
    /// the records stay waiting.
    pub fn sync_job(&mut self) -> Option<io::Result<File>> {
        if !self.dirty {
            return None;
        }
        let f = self.writer.as_ref()?.try_clone();
        if f.is_ok() {
            self.dirty = false;
        }
        Some(f)
    }

    /// A sync job failed: what it should have forced waits for the next.
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// Forces appended records to disk.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.dirty {
            if let Some(w) = &self.writer {
                w.sync_data()?;
            }
            self.dirty = false;
        }
        Ok(())
    }

    /// Deletes the oldest segment; returns how many of its records were never handed out.
    fn drop_oldest(&mut self) -> io::Result<u64> {
        let Some(front) = self.segments.front() else {
            return Ok(0);
        };
        let unsent = if self.read.seg > front.id {
            0
        } else if self.read.seg == front.id {
            front.records - self.read.index.min(front.records)
        } else {
            front.records
        };
        let id = front.id;
        self.delete_front()?;
        if self.read.seg <= id {
            self.read = RecordPos::start(self.segments.front().map(|s| s.id).unwrap_or(id + 1));
        }
        Ok(unsent)
    }

    fn delete_front(&mut self) -> io::Result<()> {
        if let Some(s) = self.segments.pop_front() {
            self.total -= s.bytes;
            if self.reader.as_ref().is_some_and(|(id, _)| *id == s.id) {
                self.reader = None;
            }
            if self.segments.is_empty() {
                self.writer = None;
            }
            match std::fs::remove_file(seg_path(&self.dir, s.id)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// The next record not yet handed out.
    pub fn next_record(&mut self) -> io::Result<Option<(Vec<u8>, RecordPos)>> {
        loop {
            let Some(idx) = self.segments.iter().position(|s| s.id >= self.read.seg) else {
                return Ok(None);
            };
            let seg_id = self.segments[idx].id;
            if seg_id != self.read.seg {
                self.read = RecordPos::start(seg_id);
            }
            let end = self.segments[idx].bytes;
            if self.read.offset >= end {
                match self.segments.get(idx + 1) {
                    Some(next) => {
                        self.read = RecordPos::start(next.id);
                        continue;
                    }
                    None => return Ok(None),
                }
            }
            if self.reader.as_ref().is_none_or(|(id, _)| *id != seg_id) {
                self.reader = Some((seg_id, File::open(seg_path(&self.dir, seg_id))?));
            }
            let Some((_, f)) = self.reader.as_ref() else {
                return Ok(None);
            };
            let pos = self.read;
            match read_record(f, pos.offset, end)? {
                Some((m, n)) => {
                    self.read.offset += n;
                    self.read.index += 1;
                    self.segments[idx].unacked += 1;
                    return Ok(Some((m, pos)));
                }
                None => {
                    // Changed under us since open: give up the rest of this segment.
                    let lost = self.segments[idx].records.saturating_sub(self.read.index);
                    tracing::warn!(
                        segment = seg_id,
                        lost,
                        "unreadable spool record; skipping the rest of its segment"
                    );
                    self.dropped += lost;
                    self.read.offset = end;
                }
            }
        }
    }

    /// A record handed out was acknowledged by the broker.
    pub fn ack(&mut self, pos: RecordPos) -> io::Result<()> {
        if let Some(s) = self.segments.iter_mut().find(|s| s.id == pos.seg) {
            s.unacked = s.unacked.saturating_sub(1);
        }
        // Delete segments fully read and acknowledged, oldest first.
        while let Some(front) = self.segments.front() {
            let fully_read = self.read.seg > front.id
                || (self.read.seg == front.id && self.read.offset >= front.bytes);
            if !(fully_read && front.unacked == 0) {
                break;
            }
            self.delete_front()?;
        }
        Ok(())
    }

    /// After a lost connection: hand out again from `first_unacked` (the oldest record still
    /// in flight), or keep the read position if none was.
    pub fn rewind(&mut self, first_unacked: Option<RecordPos>) {
        for s in self.segments.iter_mut() {
            s.unacked = 0;
        }
        if let Some(pos) = first_unacked.filter(|p| *p < self.read) {
            self.read = pos;
        }
    }

    /// True when every record has been handed out.
    pub fn is_drained(&self) -> bool {
        match self.segments.back() {
            None => true,
            Some(last) => {
                self.read.seg > last.id
                    || (self.read.seg == last.id && self.read.offset >= last.bytes)
            }
        }
    }

    pub fn bytes(&self) -> u64 {
        self.total
    }

    /// Records dropped (to stay under the cap, or unreadable) since the last call.
    pub fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(i: usize, size: usize) -> Vec<u8> {
        let mut v = format!("record {i}:").into_bytes();
        v.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, size));
        v
    }

    fn drain(s: &mut Spool) -> Vec<Vec<u8>> {
        let mut out = vec![];
        while let Some((m, pos)) = s.next_record().unwrap() {
            s.ack(pos).unwrap();
            out.push(m);
        }
        out
    }

    #[test]
    fn append_then_read_in_order_and_delete_when_acked() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        let msgs: Vec<_> = (0..2000).map(|i| msg(i, 100)).collect();
        for m in &msgs {
            assert_eq!(s.append(m).unwrap(), 0);
        }
        assert!(s.bytes() > 0);
        assert!(!s.is_drained());
        assert_eq!(drain(&mut s), msgs);
        assert!(s.is_drained());
        assert_eq!(s.bytes(), 0);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn survives_reopen_and_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
            for i in 0..10 {
                s.append(&msg(i, 50)).unwrap();
            }
            s.sync().unwrap();
        }
        // A power cut mid-write leaves half a record at the end.
        let seg = seg_path(dir.path(), 1);
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&encode(&msg(99, 50))[..20]).unwrap();
        drop(f);
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        let got = drain(&mut s);
        assert_eq!(got, (0..10).map(|i| msg(i, 50)).collect::<Vec<_>>());
    }

    #[test]
    fn corrupt_record_is_detected_by_checksum() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
            for i in 0..3 {
                s.append(&msg(i, 50)).unwrap();
            }
            s.sync().unwrap();
        }
        let seg = seg_path(dir.path(), 1);
        let mut bytes = std::fs::read(&seg).unwrap();
        let rec = encode(&msg(0, 50)).len();
        bytes[rec + 30] ^= 0xff; // inside the second record's body
        std::fs::write(&seg, bytes).unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(drain(&mut s), vec![msg(0, 50)]);
    }

    #[test]
    fn cap_drops_oldest_segments_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        let mut dropped = 0;
        for i in 0..3000 {
            dropped += s.append(&msg(i, 1000)).unwrap();
        }
        assert!(s.bytes() <= 1 << 20);
        assert!(dropped > 0);
        assert_eq!(s.take_dropped(), dropped);
        let got = drain(&mut s);
        assert_eq!(got.len() as u64 + dropped, 3000);
        // What is left is the newest, in order.
        assert_eq!(got.last(), Some(&msg(2999, 1000)));
        let first = got.first().unwrap().clone();
        let start = (0..3000).position(|i| msg(i, 1000) == first).unwrap();
        assert_eq!(got, (start..3000).map(|i| msg(i, 1000)).collect::<Vec<_>>());
    }

    #[test]
    fn rewind_resends_unacknowledged_records() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        for i in 0..5 {
            s.append(&msg(i, 10)).unwrap();
        }
        let (_, p0) = s.next_record().unwrap().unwrap();
        s.ack(p0).unwrap();
        let (_, p1) = s.next_record().unwrap().unwrap();
        let (_, _p2) = s.next_record().unwrap().unwrap();
        // Connection lost with records 1 and 2 in flight.
        s.rewind(Some(p1));
        assert_eq!(
            drain(&mut s),
            (1..5).map(|i| msg(i, 10)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn cursor_skips_what_was_delivered_before_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
            for i in 0..6 {
                s.append(&msg(i, 10)).unwrap();
            }
            for _ in 0..3 {
                let (_, p) = s.next_record().unwrap().unwrap();
                s.ack(p).unwrap();
            }
            let (_, p3) = s.next_record().unwrap().unwrap();
            s.rewind(Some(p3));
            s.save_cursor().unwrap();
        }
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(
            drain(&mut s),
            (3..6).map(|i| msg(i, 10)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn appends_after_drain_start_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        s.append(&msg(0, 10)).unwrap();
        assert_eq!(drain(&mut s).len(), 1);
        s.append(&msg(1, 10)).unwrap();
        assert_eq!(drain(&mut s), vec![msg(1, 10)]);
    }
}
