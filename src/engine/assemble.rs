//! Building an engine: the one place that does it, for the daemon, the replay, the tests and the
//! benchmarks. What the pipeline definition says (its stages, the ARC sealer, the re-queue
//! marker, how long handed-on recipients are remembered) is taken from it here, so that no caller
//! can leave a part out or write a default of its own; a caller adds only what is its own (the
//! delivery kick, the verdict database, a fixed clock, stages of a test's own).

use std::sync::Mutex;

use super::{isolation, Engine, WorkDirs};
use crate::intake::queuefile::QueuefileDir;
use crate::outside::Clock;
use crate::pipeline::build;
use crate::pipeline::config::{default_retention, PipelineConfig};
use crate::requeue::{KickQueue, Marker, TargetSpool, Transform};
use crate::sinks::quarantine::QuarantineStore;
use crate::spool::{IdFormat, IdMinter};
use crate::stages::arc::Sealer;
use crate::stages::Stage;
use crate::state::verdicts::VerdictDb;
use crate::state::StateDb;

pub struct EngineBuilder<'e> {
    pipeline: PipelineConfig,
    db: StateDb<'e>,
    dirs: WorkDirs,
    intake: QueuefileDir,
    target: TargetSpool,
    stages: Option<Vec<Box<dyn Stage>>>,
    sealer: Option<Option<Sealer>>,
    clock: Clock,
    minter_pid: Option<u64>,
    kicks: Option<KickQueue>,
    verdicts: Option<(VerdictDb, u64)>,
}

impl<'e> EngineBuilder<'e> {
    /// An engine for `pipeline`, working in `dirs`, taking pairs from `intake` and re-queueing
    /// into `target`, with its journal in `db`.
    pub fn new(
        pipeline: PipelineConfig,
        db: StateDb<'e>,
        dirs: WorkDirs,
        intake: QueuefileDir,
        target: TargetSpool,
    ) -> EngineBuilder<'e> {
        EngineBuilder {
            pipeline,
            db,
            dirs,
            intake,
            target,
            stages: None,
            sealer: None,
            clock: Clock::System,
            minter_pid: None,
            kicks: None,
            verdicts: None,
        }
    }

    /// These stages instead of the ones the pipeline defines (a test's own).
    pub fn stages(mut self, stages: Vec<Box<dyn Stage>>) -> Self {
        self.stages = Some(stages);
        self
    }

    /// The stages and ARC sealer already built from this same pipeline (the daemon builds them
    /// to check the whole definition before anything starts; they are not built twice).
    pub fn built(mut self, stages: Vec<Box<dyn Stage>>, sealer: Option<Sealer>) -> Self {
        self.stages = Some(stages);
        self.sealer = Some(sealer);
        self
    }

    /// Another clock than the system's (a replay's fixed one). Everything in the engine that
    /// reads the time reads this one: claims, deferrals, retention, recovery, the ARC seal's
    /// `t=`, the stages' timings, and the minting of new message ids.
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Mint new message ids with this process id in them instead of our own (a replay's fixed
    /// one, so that its ids are the same on every run).
    pub fn minter_pid(mut self, pid: u64) -> Self {
        self.minter_pid = Some(pid);
        self
    }

    /// Hand committed messages over for their delivery kick.
    pub fn kicks(mut self, kicks: Option<KickQueue>) -> Self {
        self.kicks = kicks;
        self
    }

    /// Record verdicts for Exim's lookup, kept this many seconds.
    pub fn verdicts(mut self, verdicts: Option<(VerdictDb, u64)>) -> Self {
        self.verdicts = verdicts;
        self
    }

    /// The engine; an error names what in the pipeline definition could not be built.
    pub fn build(self) -> Result<Engine<'e>, String> {
        let stages = match self.stages {
            Some(s) => s,
            None => build::stages(&self.pipeline).map_err(|e| e.to_string())?,
        };
        let sealer = match self.sealer {
            Some(s) => s,
            None => build::arc_sealer(&self.pipeline).map_err(|e| e.to_string())?,
        };
        let (marker, retention_secs) = match &self.pipeline.requeue {
            Some(r) => (Marker::named(&r.marker, "yes")?, r.dedupe_retention_secs),
            None => (Marker::default(), default_retention()),
        };
        Ok(Engine {
            quarantine: QuarantineStore::new(&self.dirs.quarantine),
            pipeline: self.pipeline,
            stages,
            db: self.db,
            dirs: self.dirs,
            intake: self.intake,
            target: self.target,
            transform: Transform { marker, ..Transform::default() },
            minters: Mutex::new([IdFormat::Old16, IdFormat::New23].map(|f| {
                let minter = IdMinter::new(f).with_clock(self.clock.id_clock());
                match self.minter_pid {
                    Some(pid) => minter.with_pid(pid),
                    None => minter,
                }
            })),
            kicks: self.kicks,
            retention_secs,
            verdicts: self.verdicts,
            sealer,
            clock: self.clock,
            in_flight: Mutex::default(),
            in_flight_done: std::sync::Condvar::new(),
            isolation: Mutex::<isolation::Isolation>::default(),
            run: 0,
            scan_pool: Mutex::default(),
        })
    }
}
