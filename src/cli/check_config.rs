//! `spoolsift check-config FILE...`: load each pipeline definition and build its stages, saying
//! exactly what is wrong (file, line, reason). Exit 0 when all are valid, 1 otherwise. With
//! `--probe`, also try what each one relies on (see `probe.rs`).

use std::path::PathBuf;

use super::exit;
use crate::pipeline::{self, PipelineConfig};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Also try what the pipeline relies on: directories, the Exim command, an EICAR message
    /// through every antivirus stage, dccifd, the published ARC key (one line per check).
    #[arg(long)]
    probe: bool,
}

pub fn run(args: &Args) -> i32 {
    let mut bad = 0;
    for f in &args.files {
        let checked = PipelineConfig::load(f)
            .and_then(|c| c.check_layout(true).map(|()| c))
            .and_then(|c| pipeline::build::stages(&c).map(|s| (c, s)));
        match checked {
            Ok((cfg, stages)) => {
                let names: Vec<&str> = stages.iter().map(|s| s.name()).collect();
                let mode = match (&cfg.intake, &cfg.requeue) {
                    (Some(_), Some(_)) => "watch",
                    _ => "scan/replay only",
                };
                let rules = match cfg.ruleset.rules.len() {
                    0 => String::new(),
                    1 => ", 1 rule".to_string(),
                    n => format!(", {n} rules"),
                };
                crate::outln!("ok: {} ({}): stages [{}]{rules}, {mode}", f.display(), cfg.name, names.join(", "));
                cfg.warnings().iter().for_each(|w| crate::errln!("warning: {w}"));
                if args.probe {
                    let sealer = match pipeline::build::arc_sealer(&cfg) {
                        Ok(s) => s,
                        Err(e) => {
                            crate::errln!("invalid: {e}");
                            bad += 1;
                            continue;
                        }
                    };
                    for check in super::probe::run(&cfg, &stages, sealer.as_ref()) {
                        crate::outln!("{}", check.line());
                        bad += usize::from(check.result.is_err());
                    }
                }
            }
            Err(e) => {
                crate::errln!("invalid: {e}");
                bad += 1;
            }
        }
    }
    if bad > 0 {
        exit::INVALID
    } else {
        exit::OK
    }
}
