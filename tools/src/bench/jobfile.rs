//! fio job files.
//!
//! The syntax is fio's: `[name]` starts a section, `key=value` or a bare
//! `key` (a flag) sets an option, and `;` or `#` starts a comment
//! anywhere on a line. `[global]` sets defaults for the job sections that
//! follow it (a later `[global]` adds to them); every other section is a
//! job, except `[ringcache]`, which holds ringcache-only options (fio would
//! take it for a job and reject its options, so a file meant for fio too
//! passes them on the command line instead). `${NAME}` in a value is
//! replaced by the environment variable NAME, as fio does.
//!
//! Options are resolved per job: global options in file order, then the
//! job's own, the last setting winning. A value is checked where it is
//! used, so a bad value in `[global]` is reported at its own line.
//!
//! One file for the one parser, larger than the others: the syntax pass
//! (sections, options, `${NAME}`) and the option pass (`resolve_job`, one
//! arm per option with its check) share the raw option and the warnings,
//! and adding an option touches both.

use std::path::PathBuf;
use std::time::Duration;

use super::BenchError;
use super::units::{parse_size, parse_time};
use ringcache::io::EngineKind;
use ringcache_ondisk::BLOCK_BYTES_U64;

/// Largest iodepth accepted.
pub const MAX_IODEPTH: u32 = 1024;
/// Largest numjobs accepted.
pub const MAX_NUMJOBS: u32 = 64;

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RwMode {
    /// Sequential reads.
    Read,
    /// Sequential writes.
    Write,
    /// Random reads.
    RandRead,
    /// Random writes.
    RandWrite,
    /// Sequential reads and writes mixed by `rwmixread` (fio's `rw`,
    /// `readwrite`).
    ReadWrite,
    /// Random reads and writes mixed by `rwmixread`.
    RandRw,
}

impl RwMode {
    fn parse(s: &str) -> Result<RwMode, String> {
        if s.contains(':') {
            return Err("the ':N' offset modifier is not supported".into());
        }
        Ok(match s {
            "read" => RwMode::Read,
            "write" => RwMode::Write,
            "randread" => RwMode::RandRead,
            "randwrite" => RwMode::RandWrite,
            "rw" | "readwrite" => RwMode::ReadWrite,
            "randrw" => RwMode::RandRw,
            "trim" | "randtrim" | "trimwrite" | "randtrimwrite" => {
                return Err("trim workloads are not supported (the store has no trim)".into());
            }
            _ => {
                return Err(
                    "expected read, write, randread, randwrite, rw (readwrite) or randrw".into(),
                );
            }
        })
    }

    /// The name fio uses.
    pub fn fio_name(self) -> &'static str {
        match self {
            RwMode::Read => "read",
            RwMode::Write => "write",
            RwMode::RandRead => "randread",
            RwMode::RandWrite => "randwrite",
            RwMode::ReadWrite => "rw",
            RwMode::RandRw => "randrw",
        }
    }

    /// Whether offsets are random (else sequential, wrapping at size).
    pub fn is_random(self) -> bool {
        matches!(self, RwMode::RandRead | RwMode::RandWrite | RwMode::RandRw)
    }

    /// Percent of I/Os that are reads, given the job's rwmixread.
    pub fn read_percent(self, rwmixread: u8) -> u8 {
        match self {
            RwMode::Read | RwMode::RandRead => 100,
            RwMode::Write | RwMode::RandWrite => 0,
            RwMode::ReadWrite | RwMode::RandRw => rwmixread,
        }
    }
}

/// What the jobs run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Target {
    /// The store in this process, on the job's `filename`.
    #[default]
    Embedded,
    /// A running `ringcached` through its socket.
    Daemon,
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Target, String> {
        match s {
            "embedded" => Ok(Target::Embedded),
            "daemon" => Ok(Target::Daemon),
            _ => Err("expected embedded or daemon".into()),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Target::Embedded => "embedded",
            Target::Daemon => "daemon",
        })
    }
}

/// One job, with every option resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The section name, or `name=`.
    pub name: String,
    /// Line of the section header.
    pub line: usize,
    /// Jobs of one group run together; `stonewall` starts a new group.
    pub group: usize,
    pub rw: RwMode,
    /// Percent of I/Os that are reads in mixed workloads (fio default 50).
    pub rwmixread: u8,
    pub bs: u64,
    /// Bytes of the job's object; each clone covers them once unless
    /// time_based.
    pub size: u64,
    pub iodepth: u32,
    pub numjobs: u32,
    /// Run time after ramp_time; `None` runs until size is covered.
    pub runtime: Option<Duration>,
    pub time_based: bool,
    pub ramp_time: Duration,
    /// The cache file or device (`None`: must come from the command line).
    pub filename: Option<PathBuf>,
    pub engine: EngineKind,
    pub group_reporting: bool,
    /// The job section's own options as written, for the JSON report.
    pub options: Vec<(String, String)>,
}

/// An option that was not applied, with where it was.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Warning {
    pub line: usize,
    pub section: String,
    pub option: String,
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {} [{}]: {}: {}",
            self.line, self.section, self.option, self.message
        )
    }
}

/// A parsed job file.
#[derive(Debug, Clone, PartialEq)]
pub struct JobFile {
    pub jobs: Vec<Job>,
    /// Options of the `[global]` sections as written, for the JSON report.
    pub global_options: Vec<(String, String)>,
    /// From `[ringcache] target=` (default embedded).
    pub target: Target,
    /// From `[ringcache] socket=`: the daemon's socket for target=daemon.
    pub socket: Option<PathBuf>,
    /// Unknown options and options whose value ringcache does not honour.
    pub warnings: Vec<Warning>,
}

#[derive(Debug, Clone)]
struct RawOption {
    key: String,
    value: Option<String>,
    line: usize,
    /// The section the option was written in.
    section: String,
}

#[derive(Debug)]
enum SectionKind {
    Global,
    Ringcache,
    Job,
}

#[derive(Debug)]
struct Section {
    name: String,
    line: usize,
    kind: SectionKind,
    options: Vec<RawOption>,
}

/// Options a job section may hold.
const JOB_OPTIONS: &[&str] = &[
    "name",
    "description",
    "rw",
    "readwrite",
    "rwmixread",
    "rwmixwrite",
    "bs",
    "blocksize",
    "size",
    "iodepth",
    "numjobs",
    "runtime",
    "timeout",
    "time_based",
    "ramp_time",
    "filename",
    "ioengine",
    "direct",
    "group_reporting",
    "stonewall",
    "wait_for_previous",
    "kb_base",
    "thread",
];

/// Options the `[ringcache]` section may hold.
const RINGCACHE_OPTIONS: &[&str] = &["target", "socket"];

/// Replace `${NAME}` with the environment variable NAME (empty, with a
/// warning, when unset: fio substitutes silently).
fn expand_env(
    value: &str,
    line: usize,
    section: &str,
    key: &str,
    warnings: &mut Vec<Warning>,
) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start + 2..].find('}') else {
            break;
        };
        out.push_str(&rest[..start]);
        let name = &rest[start + 2..start + 2 + len];
        match std::env::var(name) {
            Ok(v) => out.push_str(&v),
            Err(_) => warnings.push(Warning {
                line,
                section: section.to_string(),
                option: key.to_string(),
                message: format!("environment variable {name} is not set: replaced by nothing"),
            }),
        }
        rest = &rest[start + 2 + len + 1..];
    }
    out.push_str(rest);
    out
}

fn split_sections(text: &str, warnings: &mut Vec<Warning>) -> Result<Vec<Section>, BenchError> {
    let mut sections: Vec<Section> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        // fio cuts a line at the first ';' or '#', wherever it is.
        let cut = raw.find([';', '#']).unwrap_or(raw.len());
        let l = raw[..cut].trim();
        if l.is_empty() {
            continue;
        }
        if let Some(rest) = l.strip_prefix('[') {
            let Some(name) = rest.strip_suffix(']') else {
                return Err(BenchError::Syntax {
                    line,
                    why: format!("section header {l:?} has no closing ']'"),
                });
            };
            let name = name.trim();
            if name.is_empty() {
                return Err(BenchError::Syntax {
                    line,
                    why: "empty section name '[]'".into(),
                });
            }
            let kind = match name {
                "global" => SectionKind::Global,
                "ringcache" => SectionKind::Ringcache,
                _ => SectionKind::Job,
            };
            sections.push(Section {
                name: name.to_string(),
                line,
                kind,
                options: Vec::new(),
            });
            continue;
        }
        let Some(section) = sections.last_mut() else {
            return Err(BenchError::Syntax {
                line,
                why: format!(
                    "option {l:?} outside of a section (start one with [global] or [jobname])"
                ),
            });
        };
        let (key, value) = match l.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (l, None),
        };
        if key.is_empty() {
            return Err(BenchError::Syntax {
                line,
                why: format!("{l:?} has no option name before '='"),
            });
        }
        let value = value.map(|v| expand_env(v, line, &section.name, key, warnings));
        section.options.push(RawOption {
            key: key.to_string(),
            value,
            line,
            section: section.name.clone(),
        });
    }
    Ok(sections)
}

fn known_or_warn(o: &RawOption, known: &[&str], warnings: &mut Vec<Warning>) -> bool {
    if known.contains(&o.key.as_str()) {
        return true;
    }
    warnings.push(Warning {
        line: o.line,
        section: o.section.clone(),
        option: o.key.clone(),
        message: "unknown option, ignored (docs/BENCH.md lists what ringcache bench understands)"
            .into(),
    });
    false
}

fn bad(o: &RawOption, why: impl Into<String>) -> BenchError {
    BenchError::BadValue {
        line: o.line,
        option: o.key.clone(),
        value: o.value.clone().unwrap_or_default(),
        why: why.into(),
    }
}

fn value(o: &RawOption) -> Result<&str, BenchError> {
    match o.value.as_deref() {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(bad(o, "needs a value (option=value)")),
    }
}

/// A flag: bare, or `=1`/`=0`.
fn flag(o: &RawOption) -> Result<bool, BenchError> {
    match o.value.as_deref() {
        None | Some("1") => Ok(true),
        Some("0") => Ok(false),
        Some(_) => Err(bad(o, "expected no value, 1 or 0")),
    }
}

fn int(o: &RawOption, min: u64, max: u64) -> Result<u64, BenchError> {
    let v = value(o)?;
    let n = if let Some(h) = v.strip_prefix("0x").or(v.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()
    } else {
        v.parse::<u64>().ok()
    };
    match n {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        Some(_) => Err(bad(o, format!("must be between {min} and {max}"))),
        None => Err(bad(o, "not a whole number")),
    }
}

/// Resolve one job section against the global options seen so far.
fn resolve_job(
    section: &Section,
    globals: &[RawOption],
    group: usize,
    warnings: &mut Vec<Warning>,
) -> Result<Job, BenchError> {
    let mut effective: Vec<&RawOption> = globals.iter().collect();
    for o in &section.options {
        if known_or_warn(o, JOB_OPTIONS, warnings) {
            effective.push(o);
        }
    }
    // kb_base changes how every size reads: settle it first.
    let mut kb_base = 1024;
    for o in effective.iter().filter(|o| o.key == "kb_base") {
        kb_base = match value(o)? {
            "1024" => 1024,
            "1000" => 1000,
            _ => return Err(bad(o, "expected 1024 or 1000")),
        };
    }
    let mut job = Job {
        name: section.name.clone(),
        line: section.line,
        group,
        rw: RwMode::Read,
        rwmixread: 50,
        bs: 4096,
        size: 0,
        iodepth: 1,
        numjobs: 1,
        runtime: None,
        time_based: false,
        ramp_time: Duration::ZERO,
        filename: None,
        engine: EngineKind::Auto,
        group_reporting: false,
        options: section
            .options
            .iter()
            .map(|o| (o.key.clone(), o.value.clone().unwrap_or_default()))
            .collect(),
    };
    let mut size_line = None;
    for o in effective {
        let size = |o: &RawOption| parse_size(value(o)?, kb_base).map_err(|why| bad(o, why));
        match o.key.as_str() {
            "name" => job.name = value(o)?.to_string(),
            "description" | "kb_base" | "thread" => {}
            "rw" | "readwrite" => job.rw = RwMode::parse(value(o)?).map_err(|why| bad(o, why))?,
            "rwmixread" => job.rwmixread = int(o, 0, 100)? as u8,
            "rwmixwrite" => job.rwmixread = 100 - int(o, 0, 100)? as u8,
            "bs" | "blocksize" => {
                let v = value(o)?;
                if v.contains([',', '-', ':']) {
                    return Err(bad(
                        o,
                        "separate read/write block sizes and ranges are not supported: give one size",
                    ));
                }
                let bs = size(o)?;
                if bs == 0 || bs % BLOCK_BYTES_U64 != 0 {
                    return Err(bad(
                        o,
                        "must be a non-zero multiple of 4096 (the store's block)",
                    ));
                }
                job.bs = bs;
            }
            "size" => {
                let s = size(o)?;
                if s == 0 {
                    return Err(bad(o, "must be more than 0"));
                }
                job.size = s;
                size_line = Some(o.line);
            }
            "iodepth" => job.iodepth = int(o, 1, u64::from(MAX_IODEPTH))? as u32,
            "numjobs" => job.numjobs = int(o, 1, u64::from(MAX_NUMJOBS))? as u32,
            "runtime" | "timeout" => {
                let t = parse_time(value(o)?).map_err(|why| bad(o, why))?;
                // fio: runtime=0 means no limit.
                job.runtime = (!t.is_zero()).then_some(t);
            }
            "time_based" => job.time_based = flag(o)?,
            "ramp_time" => job.ramp_time = parse_time(value(o)?).map_err(|why| bad(o, why))?,
            "filename" => {
                let v = value(o)?;
                if v.contains(':') {
                    return Err(bad(
                        o,
                        "several files (fio's ':' separator) are not supported: one cache file or device per job",
                    ));
                }
                job.filename = Some(PathBuf::from(v));
            }
            "ioengine" => {
                job.engine = match value(o)? {
                    "io_uring" => EngineKind::Uring,
                    "psync" | "sync" | "pvsync" | "pvsync2" => EngineKind::Psync,
                    other => {
                        warnings.push(Warning {
                            line: o.line,
                                section: o.section.clone(),
                            option: o.key.clone(),
                            message: format!(
                                "ringcache has no {other:?} engine; using io_uring, or psync where io_uring is refused"
                            ),
                        });
                        EngineKind::Auto
                    }
                }
            }
            "direct" => {
                let direct = flag(o)?;
                if !direct {
                    warnings.push(Warning {
                        line: o.line,
                        section: o.section.clone(),
                        option: o.key.clone(),
                        message:
                            "ignored: the store always uses O_DIRECT where the filesystem allows it"
                                .into(),
                    });
                }
            }
            "group_reporting" => job.group_reporting = flag(o)?,
            // Handled by the caller (they decide the group).
            "stonewall" | "wait_for_previous" => {
                flag(o)?;
            }
            _ => {}
        }
    }
    let job_err = |why: String| BenchError::Job {
        job: job.name.clone(),
        line: job.line,
        why,
    };
    if job.size == 0 {
        return Err(job_err(
            "size is not set (give size=, e.g. size=1g; it is the size of the job's object)".into(),
        ));
    }
    if job.bs > job.size {
        return Err(job_err(format!(
            "bs ({}) is larger than size ({}, line {})",
            job.bs,
            job.size,
            size_line.unwrap_or(job.line)
        )));
    }
    if job.time_based && job.runtime.is_none() {
        return Err(job_err(
            "time_based needs a runtime (e.g. runtime=30)".into(),
        ));
    }
    Ok(job)
}

impl JobFile {
    /// Parse a job file's text.
    pub fn parse(text: &str) -> Result<JobFile, BenchError> {
        let mut warnings = Vec::new();
        let sections = split_sections(text, &mut warnings)?;
        let mut globals: Vec<RawOption> = Vec::new();
        let mut global_options = Vec::new();
        let mut target = Target::default();
        let mut socket = None;
        let mut jobs = Vec::new();
        let mut group = 0;
        for s in &sections {
            match s.kind {
                SectionKind::Global => {
                    for o in &s.options {
                        if known_or_warn(o, JOB_OPTIONS, &mut warnings) {
                            globals.push(o.clone());
                            global_options
                                .push((o.key.clone(), o.value.clone().unwrap_or_default()));
                        }
                    }
                }
                SectionKind::Ringcache => {
                    for o in &s.options {
                        if !known_or_warn(o, RINGCACHE_OPTIONS, &mut warnings) {
                            continue;
                        }
                        match o.key.as_str() {
                            "socket" => socket = Some(PathBuf::from(value(o)?)),
                            _ => {
                                target = value(o)?.parse().map_err(|why: String| bad(o, why))?;
                            }
                        }
                    }
                }
                SectionKind::Job => {
                    // The last setting wins, a job's own over [global]'s.
                    let mut stonewall = false;
                    for o in globals.iter().chain(&s.options) {
                        if o.key == "stonewall" || o.key == "wait_for_previous" {
                            stonewall = flag(o)?;
                        }
                    }
                    if stonewall && !jobs.is_empty() {
                        group += 1;
                    }
                    jobs.push(resolve_job(s, &globals, group, &mut warnings)?);
                }
            }
        }
        if jobs.is_empty() {
            return Err(BenchError::NoJobs);
        }
        // A [global] option is resolved once per job: report it once.
        let mut seen = std::collections::HashSet::new();
        warnings.retain(|w| seen.insert(w.clone()));
        Ok(JobFile {
            jobs,
            global_options,
            target,
            socket,
            warnings,
        })
    }
}
