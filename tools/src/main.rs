//! `ringcache`: the admin tool.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use ringcache::bench;
use ringcache::io::{self, EngineKind, OpenOptions};
use ringcache::store::{FormatOptions, format};
use ringcache::util::{create_backing_file, parse_size};
use ringcache_ondisk::superblock::GeometryParams;

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
        /// embedded (the store in this process) or daemon (not available yet);
        /// overrides the job file's [ringcache] target=.
        #[arg(long)]
        target: Option<bench::Target>,
    },
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Format {
            path,
            size,
            tag,
            region_size,
            force,
        } => {
            let is_block = std::fs::metadata(&path)
                .map(|m| std::os::unix::fs::FileTypeExt::is_block_device(&m.file_type()))
                .unwrap_or(false);
            if !is_block {
                let Some(size) = size else {
                    if path.exists() {
                        return format_existing(&path, tag, region_size, force);
                    }
                    bail!(
                        "{} does not exist: give --size to create a cache file",
                        path.display()
                    );
                };
                create_backing_file(&path, size)
                    .with_context(|| format!("creating {}", path.display()))?;
            }
            format_existing(&path, tag, region_size, force)
        }
        Cmd::Bench {
            jobfile,
            output_format,
            filename,
            target,
        } => {
            let text = std::fs::read_to_string(&jobfile)
                .with_context(|| format!("reading {}", jobfile.display()))?;
            let file = bench::JobFile::parse(&text)
                .with_context(|| format!("job file {}", jobfile.display()))?;
            for w in &file.warnings {
                eprintln!("{}: warning: {w}", jobfile.display());
            }
            let opts = bench::RunOptions {
                filename,
                target,
                progress: true,
                notes: true,
            };
            let report = bench::run(&file, &opts)?;
            print!("{}", report.render(output_format));
            Ok(())
        }
    }
}

fn format_existing(
    path: &std::path::Path,
    tag: String,
    region_size: Option<u64>,
    force: bool,
) -> Result<()> {
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
