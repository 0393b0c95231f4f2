//! Counters that must survive restarts: the agent run and the connection sequence number
//! (`seq` of birth and Will). Kept in `<state_dir>/agent-state.json`, replaced atomically.
//!
//! If the state directory cannot be written, the agent keeps running with counters seeded from
//! the clock (still increasing across restarts while the clock is sane) and says so.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    pub run: u64,
    pub conn_seq: u64,
}

#[derive(Debug)]
pub struct State {
    path: Option<PathBuf>,
    counters: Counters,
    /// Whether the broker accepted a connection with the current `conn_seq` (only then can a
    /// Will with it exist, and only then must the next connection use a new one).
    seq_used: bool,
}

impl State {
    /// Loads the counters and starts a new run.
    pub fn open(dir: &Path, now_ms: i64) -> State {
        let path = dir.join("agent-state.json");
        let loaded = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Counters>(&b).ok());
        let mut s = State {
            path: Some(path),
            counters: loaded.unwrap_or_default(),
            seq_used: true,
        };
        s.counters.run += 1;
        if let Err(e) = s.save() {
            tracing::error!(dir = %dir.display(), error = %e,
                "cannot keep counters in state_dir; seeding them from the clock instead");
            s.path = None;
            let seed = now_ms.max(0) as u64;
            s.counters = Counters {
                run: seed / 1000,
                conn_seq: seed,
            };
        }
        s
    }

    fn save(&self) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(&self.counters).unwrap_or_default())?;
        std::fs::rename(&tmp, path)
    }

    pub fn run(&self) -> u64 {
        self.counters.run
    }

    /// The `seq` for the next connection attempt: a new one if the broker accepted the last.
    pub fn seq_for_attempt(&mut self) -> u64 {
        if self.seq_used {
            self.counters.conn_seq += 1;
            self.seq_used = false;
            if let Err(e) = self.save() {
                tracing::warn!(error = %e, "cannot save the connection sequence number");
            }
        }
        self.counters.conn_seq
    }

    /// The broker accepted the connection that used the current `seq`.
    pub fn mark_connected(&mut self) {
        self.seq_used = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_and_seq_grow_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = State::open(dir.path(), 0);
        assert_eq!(a.run(), 1);
        let s1 = a.seq_for_attempt();
        assert_eq!(a.seq_for_attempt(), s1, "refused attempt reuses its seq");
        a.mark_connected();
        let s2 = a.seq_for_attempt();
        assert_eq!(s2, s1 + 1);
        a.mark_connected();
        drop(a);
        let mut b = State::open(dir.path(), 0);
        assert_eq!(b.run(), 2);
        assert!(b.seq_for_attempt() > s2);
    }

    #[test]
    fn unwritable_dir_falls_back_to_the_clock() {
        let mut s = State::open(Path::new("/proc/no-such-dir"), 1_764_180_000_000);
        assert_eq!(s.run(), 1_764_180_000);
        assert_eq!(s.seq_for_attempt(), 1_764_180_000_001);
    }
}
