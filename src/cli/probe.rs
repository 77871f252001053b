//! `spoolsift check-config --probe FILE`: besides the syntax, try everything the pipeline relies on,
//! as MailScanner's `--lint` does. One line per check, `ok: what: detail` or
//! `FAIL: what: why; what to do`; the command fails if any check fails.
//!
//! The checks: the directories (there, directories, the queuefile directory not writable by
//! every local account, Exim's `input/` present); the Exim command (`-bV` runs, names the
//! queuefile transport when the intake is a queuefile directory, `-bP spool_directory` agrees
//! with ours); a message carrying the EICAR test file, made here, through every antivirus stage
//! (content, clamav), which must find it; the GTUBE line through spamd and rspamd, which must
//! call it spam; a plain message through dcc, which must answer; and,
//! when sealing is on, the published ARC key, which must verify a signature of ours.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use crate::pipeline::config::PipelineConfig;
use crate::spool::{MessageView, SpoolHeader};
use crate::stages::content::eicar;
use crate::stages::{Stage, Verdict};

/// One check's outcome: what was checked, and a detail or what is wrong and what to do.
pub struct Check {
    pub what: String,
    pub result: Result<String, String>,
}

impl Check {
    fn new(what: impl Into<String>, result: Result<String, String>) -> Check {
        Check { what: what.into(), result }
    }

    pub fn line(&self) -> String {
        match &self.result {
            Ok(detail) => format!("ok: {}: {detail}", self.what),
            Err(why) => format!("FAIL: {}: {why}", self.what),
        }
    }
}

/// A minimal envelope for the probe messages, as Exim writes one.
fn probe_header(subject: &str) -> SpoolHeader {
    let subject = format!("Subject: {subject}\n");
    let text = format!(
        "1zzzzz-0000000000P-0000-H\nspoolsift 0 0\n<probe@spoolsift.invalid>\n1795895471 0\n\
         -received_protocol local\n-body_linecount 1\nXX\n1\nprobe@spoolsift.invalid\n\n{:03}  {subject}",
        subject.len()
    );
    SpoolHeader::parse(text.as_bytes(), None).expect("the probe envelope is valid")
}

/// Every check for `cfg`, whose stages are `stages` and whose ARC sealer, if any, `sealer`.
pub fn run(cfg: &PipelineConfig, stages: &[Box<dyn Stage>], sealer: Option<&crate::stages::arc::Sealer>) -> Vec<Check> {
    let mut checks = directories(cfg);
    checks.extend(exim(cfg));
    let eicar_body = [eicar::signature(), b"\n".to_vec()].concat();
    let plain_body = b"A plain message from spoolsift check-config --probe.\n".to_vec();
    // SpamAssassin's and rspamd's test line, in pieces so that no file of ours is spam.
    let gtube_body =
        ["XJS*C4JDBQADN1.NSBN3*2IDNEN*", "GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL", "*C.34X\n"].concat().into_bytes();
    for stage in stages {
        let name = stage.name().to_string();
        match name.as_str() {
            "content" | "clamav" => {
                let h = probe_header("spoolsift probe: the EICAR test file");
                let r = stage.check(&MessageView::new(&h, &eicar_body));
                checks.push(Check::new(
                    format!("{name} finds the EICAR test file"),
                    match r {
                        Ok(r) if matches!(r.verdict, Verdict::Infected { .. }) => Ok(format!("{:?}", r.verdict)),
                        Ok(r) => Err(format!(
                            "answered {:?}; the scanner misses the test file: check its signature database",
                            r.verdict
                        )),
                        Err(e) => Err(format!("{e}; start the service, or point the stage at it")),
                    },
                ));
            }
            "spamd" | "rspamd" => {
                let h = probe_header("spoolsift probe: the GTUBE test line");
                let r = stage.check(&MessageView::new(&h, &gtube_body));
                checks.push(Check::new(
                    format!("{name} scores the GTUBE test line as spam"),
                    match r {
                        Ok(r) if r.verdict == Verdict::Spam => {
                            Ok(format!("score {}", r.score.map_or("?".into(), |s| s.to_string())))
                        }
                        Ok(r) => Err(format!("answered {:?}; check the daemon's rules", r.verdict)),
                        Err(e) => Err(format!("{e}; start {name}, or set enabled = false in [stages.{name}]")),
                    },
                ));
            }
            "dcc" => {
                let h = probe_header("spoolsift probe");
                let r = stage.check(&MessageView::new(&h, &plain_body));
                checks.push(Check::new(
                    "dcc answers",
                    match r {
                        Ok(r) => Ok(format!("{:?}", r.verdict)),
                        Err(e) => Err(format!("{e}; start dccifd, or set enabled = false in [stages.dcc]")),
                    },
                ));
            }
            _ => {}
        }
    }
    if let Some(sealer) = sealer {
        let dns = cfg
            .stage_settings::<crate::stages::arc::ArcConfig>("arc")
            .map_err(|e| e.to_string())
            .and_then(|c| crate::pipeline::build::arc_dns(&c));
        checks.push(Check::new(
            "the ARC sealing key is published",
            dns.and_then(|dns| sealer.check_published(dns.as_ref()))
                .map_err(|e| format!("{e}; publish the public key of [stages.arc.seal] key_file there")),
        ));
    }
    checks
}

fn directories(cfg: &PipelineConfig) -> Vec<Check> {
    let mut out = Vec::new();
    let (Some(intake), Some(requeue)) = (&cfg.intake, &cfg.requeue) else {
        return out;
    };
    let is_dir = |p: &Path| match std::fs::metadata(p) {
        Ok(m) if m.is_dir() => Ok(m),
        Ok(_) => Err(format!("{} is not a directory", p.display())),
        Err(e) => Err(format!("{}: {e}; create it (docs/exim.md)", p.display())),
    };
    // Exim makes input/ with its first message; the spool directory itself must be there.
    let input = requeue.spool_directory.join("input");
    let spool = is_dir(&input).or_else(|_| is_dir(&requeue.spool_directory));
    out.push(Check::new(
        "Exim's spool",
        spool
            .as_ref()
            .map(|m| format!("{} (owner uid {})", requeue.spool_directory.display(), m.uid()))
            .map_err(|e| e.clone()),
    ));
    if let Some(qf) = &intake.queuefile_directory {
        let r = is_dir(qf).and_then(|m| {
            if m.mode() & 0o002 != 0 {
                return Err(format!(
                    "{} is writable by every local account; chmod o-w it (0750, owned by Exim's user)",
                    qf.display()
                ));
            }
            match &spool {
                Ok(s) if s.uid() != m.uid() => Err(format!(
                    "{} is owned by uid {}, Exim's spool by uid {}; chown it to Exim's user",
                    qf.display(),
                    m.uid(),
                    s.uid()
                )),
                _ => Ok(format!("{} (mode {:04o})", qf.display(), m.mode() & 0o7777)),
            }
        });
        out.push(Check::new("the queuefile directory", r));
    }
    if let Some(incoming) = &intake.incoming_spool_directory {
        out.push(Check::new("the incoming Exim's spool", is_dir(incoming).map(|_| incoming.display().to_string())));
    }
    let work = &intake.work_directory;
    out.push(Check::new(
        "the work directory",
        match std::fs::metadata(work) {
            Ok(m) if m.is_dir() => Ok(format!("{} (mode {:04o})", work.display(), m.mode() & 0o7777)),
            Ok(_) => Err(format!("{} is not a directory", work.display())),
            // The daemon makes it, as long as its parent is there.
            Err(_) => match work.parent().map(|p| p.is_dir()) {
                Some(true) => Ok(format!("{} (made at the first start)", work.display())),
                _ => Err(format!("{}: its parent does not exist; create it", work.display())),
            },
        },
    ));
    out
}

fn exim(cfg: &PipelineConfig) -> Vec<Check> {
    let mut out = Vec::new();
    let Some(requeue) = &cfg.requeue else { return out };
    let Some((prog, args)) = requeue.exim_command.split_first() else { return out };
    let origin = cfg.origin(&["requeue", "exim_command"]);
    let run = |extra: &[&str]| -> Result<String, String> {
        let o = Command::new(prog)
            .args(args)
            .args(extra)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {prog} ({origin}): {e}"))?;
        if !o.status.success() {
            return Err(format!(
                "{prog} {} exited with {}: {}",
                extra.join(" "),
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let version = run(&["-bV"]);
    out.push(Check::new(
        "the Exim command",
        version.as_ref().map(|v| v.lines().next().unwrap_or_default().to_string()).map_err(Clone::clone),
    ));
    let Ok(version) = version else { return out };
    if cfg.intake.as_ref().is_some_and(|i| i.queuefile_directory.is_some()) {
        let transports = version.lines().find(|l| l.starts_with("Transports:")).unwrap_or_default();
        out.push(Check::new(
            "Exim has the queuefile transport",
            if transports.split_whitespace().any(|t| t == "queuefile") {
                Ok(transports.trim().to_string())
            } else {
                Err(format!(
                    "not in `{}`; this Exim was built without EXPERIMENTAL_QUEUEFILE: take messages \
                     from a queue_only instance instead (incoming_spool_directory, docs/exim-incoming.md)",
                    transports.trim()
                ))
            },
        ));
    }
    let ours = std::fs::canonicalize(&requeue.spool_directory).unwrap_or(requeue.spool_directory.clone());
    out.push(Check::new(
        "Exim's spool_directory is ours",
        run(&["-bP", "spool_directory"]).and_then(|text| {
            let line = text.lines().next().unwrap_or_default();
            let theirs = line.split_once(" = ").map_or(line, |(_, v)| v).trim();
            let theirs_real = std::fs::canonicalize(theirs).unwrap_or(theirs.into());
            if theirs_real == ours {
                Ok(theirs.to_string())
            } else {
                Err(format!(
                    "Exim uses {theirs}, the pipeline {}; set [requeue] spool_directory to Exim's",
                    requeue.spool_directory.display()
                ))
            }
        }),
    ));
    out
}
