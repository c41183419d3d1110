//! What a minion's helper remembers between rounds: restarts it made (for
//! the restart count and the back-off) and the last result of each
//! container's liveness probe. `kctl apply` converges with an empty one.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The first restart is immediate; then the wait doubles up to the cap.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A container that stayed up this long after its back-off ended is no
/// longer crash-looping: its next restart is immediate again.
const RESET_AFTER: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
struct Backoff {
    count: u32,
    delay: Duration,
    not_before: Instant,
}

#[derive(Debug, Default)]
pub struct Supervisor {
    restarts: HashMap<String, Backoff>,
    /// Last liveness result per container id (true: healthy).
    health: HashMap<String, bool>,
    /// When the helper first saw each (container, restart count) running:
    /// probes wait `initialDelaySeconds` from there.
    running_since: HashMap<(String, u32), Instant>,
    /// The restart count each container was last seen running with: a
    /// higher one means it was started again in place.
    starts_seen: HashMap<String, u32>,
}

impl Supervisor {
    /// May the container be restarted now, or is it backing off?
    pub fn may_restart(&self, id: &str, now: Instant) -> bool {
        self.restarts.get(id).is_none_or(|b| now >= b.not_before)
    }

    /// Records a restart and lengthens the back-off.
    pub fn restarted(&mut self, id: &str, now: Instant) {
        let entry = self.restarts.entry(id.to_string()).or_insert(Backoff {
            count: 0,
            delay: FIRST_BACKOFF / 2,
            not_before: now,
        });
        entry.count += 1;
        if now.saturating_duration_since(entry.not_before) >= RESET_AFTER {
            entry.delay = FIRST_BACKOFF / 2;
        }
        entry.delay = (entry.delay * 2).min(MAX_BACKOFF);
        entry.not_before = now + entry.delay;
        // A restarted container is unproven until probed again.
        self.health.remove(id);
    }

    /// Restarts the helper made of this container.
    pub fn restarts(&self, id: &str) -> u32 {
        self.restarts.get(id).map_or(0, |b| b.count)
    }

    pub fn set_health(&mut self, id: &str, healthy: bool) {
        self.health.insert(id.to_string(), healthy);
    }

    pub fn health(&self, id: &str) -> Option<bool> {
        self.health.get(id).copied()
    }

    /// Whether the container runs again since it was last seen running
    /// (its restart count grew: Docker's policy or this helper started it
    /// anew). Not on first sight: its start then was kctl's own, which ran
    /// what follows a start, or is long past.
    pub fn started_again(&mut self, id: &str, restart_count: u32) -> bool {
        let before = self.starts_seen.insert(id.to_string(), restart_count);
        before.is_some_and(|before| restart_count > before)
    }

    /// How long this run of the container has been seen running.
    pub fn running_for(&mut self, id: &str, restarts: u32, now: Instant) -> Duration {
        now - *self
            .running_since
            .entry((id.to_string(), restarts))
            .or_insert(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_to_a_cap() {
        let mut s = Supervisor::default();
        let t0 = Instant::now();
        assert!(s.may_restart("c", t0), "the first restart is immediate");
        s.restarted("c", t0);
        assert!(!s.may_restart("c", t0));
        assert!(s.may_restart("c", t0 + Duration::from_secs(1)));
        // Crash-looping: each exit right after its back-off ends.
        let mut delays = Vec::new();
        for _ in 0..9 {
            let now = s.restarts["c"].not_before;
            s.restarted("c", now);
            delays.push(s.restarts["c"].delay.as_secs());
        }
        assert_eq!(delays, [2, 4, 8, 16, 32, 60, 60, 60, 60]);
        assert_eq!(s.restarts("c"), 10);
        // After running a while, the next restart starts the back-off over.
        let later = s.restarts["c"].not_before + Duration::from_secs(30);
        assert!(s.may_restart("c", later));
        s.restarted("c", later);
        assert_eq!(s.restarts["c"].delay.as_secs(), 1);
        assert_eq!(s.restarts("other"), 0);
    }

    #[test]
    fn restart_forgets_health() {
        let mut s = Supervisor::default();
        s.set_health("c", false);
        assert_eq!(s.health("c"), Some(false));
        s.restarted("c", Instant::now());
        assert_eq!(s.health("c"), None);
    }
}
