//! A session with its programs attached: the kernel side, the tracker fed
//! by it, the stacks it names, and the processes it follows.

use anyhow::{Context, Result};
use tracer_core::track::Tracker;

use super::{
    clock,
    overhead::{CpuClocks, Steering},
    settings::{Settings, Target},
    targets::{Observers, Targets},
};
use crate::{
    golang::sampler::Sampler,
    kernel::{
        probes::{self, Probes, Totals},
        tracefs,
    },
    symbols::stacks::Stacks,
    system::memory,
};

/// Ring-buffer bytes that force an early wake-up of the reader.
const WAKEUP_BYTES: u64 = 512 * 1024;

/// Everything a running session holds.
pub struct Session {
    pub probes: Probes,
    pub totals: Totals,
    pub tracker: Tracker,
    pub stacks: Stacks,
    pub targets: Targets,
    pub sampler: Sampler,
    /// Warnings of the attach (hooks this kernel lacks), for every report.
    pub warnings: Vec<String>,
    /// The overhead budget.
    pub steering: Steering,
}

impl Session {
    /// Loads and attaches the kernel programs.
    pub fn attach(settings: &Settings) -> Result<Session> {
        if tracefs::ensure_mounted()? {
            eprintln!("tracer: mounted tracefs on {}", tracefs::ROOT);
        }
        clock::bump_memlock_limit();
        let config = probes::Config {
            wakeup_bytes: WAKEUP_BYTES,
            freq: settings.freq,
            off_cpu: settings.off_cpu,
            children: settings.children,
            min_block_ns: settings.min_block.as_nanos() as u64,
        };
        let (mut probes, warnings) = Probes::load(config)?;
        for w in &warnings {
            eprintln!("tracer: warning: {w}");
        }
        let (stack_map, totals) = probes
            .take_tables()
            .context("stack tables already taken")?
            .split();
        Ok(Session {
            probes,
            totals,
            tracker: Tracker::new(),
            stacks: Stacks::new(stack_map),
            targets: Targets::default(),
            sampler: Sampler::new(settings.goroutines),
            warnings,
            steering: Steering::new(settings.max_overhead_pct),
        })
    }

    /// The traced processes, and what must learn of each new one.
    fn targets_and_observers(&mut self) -> (&mut Targets, Observers<'_>) {
        (
            &mut self.targets,
            Observers {
                probes: &mut self.probes,
                stacks: &mut self.stacks,
                tracker: &mut self.tracker,
                sampler: &mut self.sampler,
                warnings: &mut self.warnings,
            },
        )
    }

    /// Traces one more process (and its descendants with `children`),
    /// found while tracing.
    pub fn trace_more(&mut self, pid: u32, children: bool) -> Result<()> {
        let (targets, mut o) = self.targets_and_observers();
        targets.add(pid, &mut o)?;
        if children {
            for child in crate::system::procfs::descendants(pid) {
                targets.add(child, &mut o)?;
            }
        }
        memory::give_back_freed();
        Ok(())
    }

    /// Forgets the processes that exited.
    pub fn forget_exited(&mut self) {
        let (targets, mut o) = self.targets_and_observers();
        if targets.forget_exited(&mut o) {
            memory::give_back_freed();
        }
    }

    /// Empties the stack tables, in the kernel and here: only while no
    /// window is open (windows count from the tables' values at opening).
    pub fn reset_stacks(&mut self) {
        self.totals.clear_stacks();
        self.stacks.reset();
        memory::give_back_freed();
    }

    /// Detaches every program.
    pub fn detach(self) {
        self.probes.detach();
    }

    /// Starts tracing the target.
    pub fn start(&mut self, target: Target, pids: &[u32], children: bool) -> Result<()> {
        let (targets, mut o) = self.targets_and_observers();
        targets.start(target, pids, children, &mut o)?;
        // Loading the programs parsed the kernel's BTF, and each Go
        // binary's layout was read from its DWARF: all of it freed now.
        memory::give_back_freed();
        Ok(())
    }

    /// Looks at the goroutines serving Go requests now.
    pub fn sample_goroutines(&mut self, open: &mut Vec<(u32, u64)>) {
        self.tracker.serving_goroutines(open);
        let waits = self
            .sampler
            .tick(open, clock::monotonic_ns(), &mut self.stacks);
        for (g, wait) in waits {
            self.tracker.push_go_wait(g, wait);
        }
    }

    /// Periodic work off the event path: adopt forked children, notice
    /// exits, name new stacks while their processes live. Returns whether
    /// every traced process is gone.
    pub fn check(&mut self) -> Result<bool> {
        let (targets, mut o) = self.targets_and_observers();
        let adopted = targets.adopt_forks(&mut o)?;
        self.tracker.sweep(clock::monotonic_ns());
        if self.tracker.compact() || adopted {
            memory::give_back_freed();
        }
        self.stacks.note_all(self.tracker.take_new_stacks());
        self.stacks.resolve_pending();
        self.targets.note_exits(&mut self.probes);
        if self.steering.due() {
            let clocks = CpuClocks::read(self);
            self.steering
                .steer(clocks, &mut self.probes, &mut self.tracker)?;
        }
        Ok(self.targets.all_exited())
    }
}
