//! The session's loop: drain the ring buffer into the tracker, fan finished
//! requests out to the open windows, and do the periodic work (forks,
//! exits, symbolizing) until the duration ends, a signal, or every traced
//! process exits.

use std::time::Duration;

use anyhow::Result;
use aya::maps::{MapData, RingBuf};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
    time::{MissedTickBehavior, interval, sleep},
};
use tracer_core::track::{Finished, Tracker};

use super::{attached::Session, window::OpenWindow};
use crate::kernel::decode;

/// What the caller of the session's loop adds to it: `record` adds
/// nothing; the daemon opens and cuts windows on demand, finds new
/// processes, and feeds its metrics.
pub trait Driver {
    /// A request finished (after the open windows took it).
    fn finished(&mut self, _finished: &Finished) {}
    /// The periodic look, after the session's own periodic work.
    fn check(&mut self, _session: &mut Session, _windows: &mut Vec<OpenWindow>) -> Result<()> {
        Ok(())
    }
    /// Whether the loop goes on once every traced process has exited (the
    /// daemon waits for new ones).
    fn outlives_processes(&self) -> bool {
        false
    }
}

/// Traces until the end, adding nothing.
pub struct Plain;

impl Driver for Plain {}

/// How often the ring buffer is drained when no wake-up came.
const DRAIN_EVERY: Duration = Duration::from_millis(10);
/// How often traced processes are checked for exit and new children, and
/// new stacks symbolized.
const CHECK_EVERY: Duration = Duration::from_millis(250);
/// How often the goroutines serving Go requests are looked at: a 5 ms wait
/// is seen at least twice.
const GOROUTINES_EVERY: Duration = Duration::from_millis(2);

pub enum StopReason {
    Duration,
    Signal,
    AllExited,
}

impl Session {
    /// Follows the traced processes until the duration ends, a signal, or
    /// they all exit.
    pub fn follow(
        &mut self,
        windows: &mut Vec<OpenWindow>,
        duration: Option<Duration>,
        driver: &mut dyn Driver,
    ) -> Result<StopReason> {
        let ring = self
            .probes
            .take_ring()
            .ok_or_else(|| anyhow::anyhow!("ring buffer already taken"))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(self.follow_ring(ring, windows, duration, driver))
    }

    async fn follow_ring(
        &mut self,
        ring: RingBuf<MapData>,
        windows: &mut Vec<OpenWindow>,
        duration: Option<Duration>,
        driver: &mut dyn Driver,
    ) -> Result<StopReason> {
        // SAFETY: the ring buffer owns its fd, which outlives the registration
        // (both end with `ring` at the end of this function).
        let mut ring = unsafe { AsyncFd::register(ring) }
            .map_err(|e| anyhow::anyhow!("polling the ring buffer: {e}"))?;
        let mut drain_tick = interval(DRAIN_EVERY);
        drain_tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut check_tick = interval(CHECK_EVERY);
        let mut goroutine_tick = interval(GOROUTINES_EVERY);
        goroutine_tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut open = Vec::new();
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sigterm = signal(SignalKind::terminate())?;
        // A closed terminal (ssh dropped) stops the trace like Ctrl-C: the
        // report is written, not lost.
        let mut sighup = signal(SignalKind::hangup())?;
        let deadline = sleep(duration.unwrap_or(Duration::from_secs(u64::MAX / 4)));
        tokio::pin!(deadline);

        let reason = loop {
            // Looks only while Go requests are being served: a quiet
            // server costs no wake-ups. (The set changes only at a drain,
            // after which this is evaluated again.)
            let serving = !self.sampler.is_empty() && self.tracker.serves_goroutines();
            if !serving {
                self.sampler.rest();
            }
            tokio::select! {
                guard = ring.readable_mut() => {
                    let mut guard = guard?;
                    drain(guard.get_inner_mut(), &mut self.tracker, windows, driver);
                    guard.clear_ready();
                }
                _ = drain_tick.tick() => drain(ring.get_mut(), &mut self.tracker, windows, driver),
                _ = goroutine_tick.tick(), if serving => {
                    self.sample_goroutines(&mut open);
                }
                _ = check_tick.tick() => {
                    drain(ring.get_mut(), &mut self.tracker, windows, driver);
                    let all_exited = self.check()?;
                    driver.check(self, windows)?;
                    if all_exited && !driver.outlives_processes() {
                        break StopReason::AllExited;
                    }
                }
                _ = sigint.recv() => break StopReason::Signal,
                _ = sigterm.recv() => break StopReason::Signal,
                _ = sighup.recv() => break StopReason::Signal,
                () = &mut deadline => break StopReason::Duration,
            }
        };
        drain(ring.get_mut(), &mut self.tracker, windows, driver);
        Ok(reason)
    }
}

fn drain(
    ring: &mut RingBuf<MapData>,
    tracker: &mut Tracker,
    windows: &mut [OpenWindow],
    driver: &mut dyn Driver,
) {
    while let Some(item) = ring.next() {
        if let Some(event) = decode::decode(&item) {
            tracker.handle(event);
            // At once, so the tracker never holds more than an event's worth
            // (thousands of connections closing together finish thousands).
            fan_out(tracker, windows, driver);
        }
    }
}

/// Hands the requests the tracker finished to every open window, then to
/// the driver.
pub fn fan_out(tracker: &mut Tracker, windows: &mut [OpenWindow], driver: &mut dyn Driver) {
    for finished in tracker.take_finished() {
        for w in windows.iter_mut() {
            w.record(&finished);
        }
        driver.finished(&finished);
    }
}
