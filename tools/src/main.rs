//! `ringcache`: the admin tool.
//!
//! `format` creates a cache; `inspect` and `fsck` read one offline
//! (read-only, under a shared lock that a running daemon's exclusive lock
//! excludes). docs/TOOLS.md documents the commands, their exit codes and
//! the JSON each one prints with `--json`. What each command does is in
//! the library (`ringcache_tools`); this is its command line.
#![deny(unsafe_code)]

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand};
use ringcache::io::{self, EngineKind, OpenOptions};
use ringcache::store::{FormatOptions, format};
use ringcache::util::{create_backing_file, parse_size};
use ringcache_ondisk::superblock::GeometryParams;
use ringcache_tools::{bench, device, fsck, guard, inspect};
use serde::Serialize;

#[derive(Parser)]
#[command(name = "ringcache", version, about = "Administer ringcache caches")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create an empty cache on a file or block device.
    Format {
        /// File (created if missing) or block device.
        path: PathBuf,
        /// Size of the cache file (ignored for block devices), e.g. 1G.
        #[arg(long, value_parser = parse_size)]
        size: Option<u64>,
        /// A name for the cache (up to 32 bytes).
        #[arg(long, default_value = "")]
        tag: String,
        /// Region size, e.g. 8M (default 8 MiB).
        #[arg(long, value_parser = parse_size)]
        region_size: Option<u64>,
        /// Overwrite a device that holds a cache or other data.
        #[arg(long)]
        force: bool,
    },
    /// Print a running daemon's counters, or its metrics for Prometheus.
    Stat {
        /// The daemon's socket.
        #[arg(long, default_value = "ringcache-data/ringcached.sock")]
        socket: PathBuf,
        /// text (counters grouped by prefix), json (an object of counter
        /// name to value) or prometheus (the daemon's metrics, latency
        /// histograms included, in the Prometheus text format).
        #[arg(long, value_enum, default_value_t = StatFormat::Text)]
        format: StatFormat,
        /// The same as --format json.
        #[arg(long, conflicts_with = "format")]
        json: bool,
    },
    /// Show what an offline cache holds, as recovery would load it
    /// (read-only). Without a view: a summary.
    Inspect {
        /// Cache file or block device (not in use by a daemon).
        device: PathBuf,
        /// Print JSON (schema in docs/TOOLS.md) instead of text.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        view: Option<View>,
    },
    /// Verify every checksum and the index of an offline cache
    /// (read-only). Exit 0: clean; 1: damage found; 2: could not run.
    Fsck {
        /// Cache file or block device (not in use by a daemon).
        device: PathBuf,
        /// Print the report as JSON (schema in docs/TOOLS.md).
        #[arg(long)]
        json: bool,
    },
    /// Run a fio job file against a cache (see docs/BENCH.md).
    Bench {
        /// fio job file.
        jobfile: PathBuf,
        /// normal (fio's text) or json (fio's JSON field names).
        #[arg(long, default_value = "normal")]
        output_format: bench::OutputFormat,
        /// Cache file or device for every job, instead of their filename=.
        #[arg(long)]
        filename: Option<PathBuf>,
        /// embedded (the store in this process) or daemon (a running
        /// ringcached, through its socket); overrides the job file's
        /// [ringcache] target=.
        #[arg(long)]
        target: Option<bench::Target>,
        /// The daemon's socket, for --target daemon; overrides the job
        /// file's [ringcache] socket= (default: the embedded default's,
        /// ./ringcache-data/ringcached.sock).
        #[arg(long)]
        socket: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum View {
    /// Every volume, with its objects and bytes.
    Volumes,
    /// Every object (of one volume with --volume).
    Objects {
        /// Only the objects of the volume with this key (text, or hex:...).
        #[arg(long)]
        volume: Option<String>,
    },
    /// One object: coherency data, size, generation, extents.
    Object {
        /// The volume's key (text, or hex:... for binary keys).
        volume: String,
        /// The object's key (text, or hex:... for binary keys).
        key: String,
    },
    /// Every region: seq, state, live bytes, header.
    Regions,
    /// One region: its header fields and the extents it holds.
    Region {
        /// Region index.
        index: u32,
    },
}

/// Exit code of inspect or fsck when they could not run.
const EXIT_FAILED: u8 = 2;

/// What `ringcache stat` prints.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StatFormat {
    Text,
    Json,
    Prometheus,
}

/// `ringcache stat`: the daemon's counters, grouped by their prefix, as
/// JSON, or its metrics as the daemon encodes them for Prometheus.
fn run_stat(socket: &std::path::Path, format: StatFormat) -> anyhow::Result<()> {
    use anyhow::Context;
    let mut c = ringcache::client::Client::connect(socket)
        .with_context(|| format!("connecting to the daemon at {}", socket.display()))?;
    if format == StatFormat::Prometheus {
        let text = c.metrics().map_err(|e| match e {
            ringcache::client::ClientError::Status(ringcache::proto::Status::UnknownOp) => {
                anyhow!("the daemon does not serve metrics (it is older than this tool)")
            }
            e => anyhow::Error::new(e).context("asking for metrics"),
        })?;
        return print_out(&text);
    }
    let stats = c.stats().context("asking for stats")?;
    if format == StatFormat::Json {
        let map: serde_json::Map<String, serde_json::Value> = stats
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::from(v)))
            .collect();
        println!("{}", serde_json::to_string_pretty(&map)?);
        return Ok(());
    }
    let mut group = String::new();
    let mut out = String::new();
    for (k, v) in stats {
        let (g, name) = k.split_once('.').unwrap_or(("", k.as_str()));
        if g != group {
            out.push_str(&format!("{g}:\n"));
            group = g.to_string();
        }
        out.push_str(&format!("  {name:<24} {v}\n"));
    }
    print_out(&out)
}

/// Write `out` to stdout; a closed pipe (`ringcache stat | head`) is not
/// an error.
fn print_out(out: &str) -> anyhow::Result<()> {
    use std::io::Write;
    match std::io::stdout().write_all(out.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // inspect and fsck report everything they find themselves; the I/O
    // layer's warnings (e.g. O_DIRECT refused, which does not matter to a
    // memory map) would only clutter their output.
    let default_filter = match cli.cmd {
        Cmd::Format { .. } => "warn",
        Cmd::Inspect { .. } | Cmd::Fsck { .. } | Cmd::Stat { .. } => "error",
        Cmd::Bench { .. } => "warn",
    };
    ringcache::util::init_logging(default_filter);
    match cli.cmd {
        Cmd::Inspect { device, json, view } => match run_inspect(&device, json, view) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ringcache inspect: {e:#}");
                ExitCode::from(EXIT_FAILED)
            }
        },
        Cmd::Fsck { device, json } => run_fsck(&device, json),
        Cmd::Bench {
            jobfile,
            output_format,
            filename,
            target,
            socket,
        } => match run_bench(&jobfile, output_format, filename, target, socket) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ringcache bench: {e:#}");
                ExitCode::from(EXIT_FAILED)
            }
        },
        Cmd::Stat {
            socket,
            format,
            json,
        } => match run_stat(&socket, if json { StatFormat::Json } else { format }) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ringcache stat: {e:#}");
                ExitCode::from(EXIT_FAILED)
            }
        },
        Cmd::Format {
            path,
            size,
            tag,
            region_size,
            force,
        } => match run_format(&path, size, tag, region_size, force) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("Error: {e:?}");
                ExitCode::FAILURE
            }
        },
    }
}

fn print_json<T: Serialize>(v: &T) -> Result<()> {
    let s = serde_json::to_string_pretty(v)?;
    println!("{s}");
    Ok(())
}

/// Open `path` and load its index as recovery would, writing nothing.
fn open_and_load(path: &Path) -> Result<(device::Device, ringcache::store::Loaded)> {
    let dev = device::Device::open(path)?;
    let loaded = guard::catch(|| ringcache::store::load(&dev))
        .map_err(|why| {
            anyhow!("the store's loader failed on this image ({why}); this is a bug in ringcache")
        })?
        .with_context(|| format!("cannot load the cache on {}", path.display()))?;
    Ok((dev, loaded))
}

fn run_inspect(path: &Path, json: bool, view: Option<View>) -> Result<()> {
    let (dev, loaded) = open_and_load(path)?;
    match view {
        None => {
            let s = inspect::summary(&dev, &loaded);
            if json {
                print_json(&s)
            } else {
                print!("{}", inspect::render_summary(&s));
                Ok(())
            }
        }
        Some(View::Volumes) => {
            let v = inspect::volumes(&loaded);
            if json {
                print_json(&v)
            } else {
                print!("{}", inspect::render_volumes(&v));
                Ok(())
            }
        }
        Some(View::Objects { volume }) => {
            let v = inspect::objects(&loaded, volume.as_deref())?;
            if json {
                print_json(&v)
            } else {
                print!("{}", inspect::render_objects(&v));
                Ok(())
            }
        }
        Some(View::Object { volume, key }) => {
            let d = inspect::object(&loaded, &volume, &key)?;
            if json {
                print_json(&d)
            } else {
                print!("{}", inspect::render_object(&d));
                Ok(())
            }
        }
        Some(View::Regions) => {
            let v = inspect::regions(&dev, &loaded);
            if json {
                print_json(&v)
            } else {
                print!("{}", inspect::render_regions(&v));
                Ok(())
            }
        }
        Some(View::Region { index }) => {
            let d = inspect::region(&dev, &loaded, index)?;
            if json {
                print_json(&d)
            } else {
                print!("{}", inspect::render_region(&d));
                Ok(())
            }
        }
    }
}

fn run_bench(
    jobfile: &Path,
    output_format: bench::OutputFormat,
    filename: Option<PathBuf>,
    target: Option<bench::Target>,
    socket: Option<PathBuf>,
) -> Result<()> {
    let text = std::fs::read_to_string(jobfile)
        .with_context(|| format!("reading {}", jobfile.display()))?;
    let file =
        bench::JobFile::parse(&text).with_context(|| format!("job file {}", jobfile.display()))?;
    for w in &file.warnings {
        eprintln!("{}: warning: {w}", jobfile.display());
    }
    let opts = bench::RunOptions {
        filename,
        target,
        socket,
        progress: true,
        notes: true,
    };
    let report = bench::run(&file, &opts)?;
    print!("{}", report.render(output_format));
    Ok(())
}

fn run_fsck(path: &Path, json: bool) -> ExitCode {
    let name = path.display().to_string();
    let report = match device::Device::open(path) {
        Ok(dev) => fsck::run(&name, &dev, std::io::stderr().is_terminal()),
        Err(e) => fsck::Report::failed(&name, e.to_string()),
    };
    if let Some(why) = &report.failure {
        eprintln!("ringcache fsck: {why}");
    }
    if json {
        if let Err(e) = print_json(&report) {
            eprintln!("ringcache fsck: {e:#}");
            return ExitCode::from(EXIT_FAILED);
        }
    } else {
        print!("{}", report.render());
    }
    ExitCode::from(report.exit_code as u8)
}

fn run_format(
    path: &Path,
    size: Option<u64>,
    tag: String,
    region_size: Option<u64>,
    force: bool,
) -> Result<()> {
    let is_block = std::fs::metadata(path)
        .map(|m| std::os::unix::fs::FileTypeExt::is_block_device(&m.file_type()))
        .unwrap_or(false);
    if !is_block {
        let Some(size) = size else {
            if path.exists() {
                return format_existing(path, tag, region_size, force);
            }
            bail!(
                "{} does not exist: give --size to create a cache file",
                path.display()
            );
        };
        create_backing_file(path, size).with_context(|| format!("creating {}", path.display()))?;
    }
    format_existing(path, tag, region_size, force)
}

fn format_existing(path: &Path, tag: String, region_size: Option<u64>, force: bool) -> Result<()> {
    let engine = io::open(
        path,
        &OpenOptions {
            engine: EngineKind::Auto,
            ..Default::default()
        },
    )
    .with_context(|| format!("opening {}", path.display()))?;
    let sb = format(
        engine.as_ref(),
        &FormatOptions {
            tag,
            geometry: GeometryParams {
                region_bytes: region_size,
                ..Default::default()
            },
            force,
        },
    )
    .with_context(|| format!("formatting {}", path.display()))?;
    let g = sb.geometry;
    println!(
        "formatted {}: {} bytes, {} regions of {} bytes, log {} bytes, checkpoint slots 2 x {} bytes",
        path.display(),
        g.device_bytes,
        g.region_count,
        g.region_bytes,
        g.metalog_bytes,
        g.ckpt_slot_bytes
    );
    Ok(())
}
