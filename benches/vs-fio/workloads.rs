//! The default run: a sequential fill and 4 KiB random reads at queue
//! depth 1 and 32, fio beside ringcache (embedded, or through the daemon
//! with `--target daemon`; foyer as a third column with `--with-foyer`),
//! `--reps` times in alternation; the medians, what each side cost, the
//! index's memory per extent, and `ratio <min over workloads>`.

use std::path::Path;

use anyhow::Result;

use crate::FILL_BYTES;
use crate::Opts;
use crate::daemon::{DaemonRun, daemon_fill, daemon_read};
use crate::embedded::{rc_fill, rc_read_iops};
use crate::fio::{fio_fill_mibps, fio_read_iops};
#[cfg(feature = "foyer")]
use crate::foyer_side;
use crate::index_memory::index_bytes_per_extent;
use crate::measure::{Sample, Side, Sides, in_child, in_process};

/// The fill and the two read depths, fio beside ringcache on `file`.
pub(crate) fn compare(o: &Opts, file: &Path) -> Result<()> {
    // Per workload and side: the runs' figures and what they cost.
    let mut fill = Sides::default();
    let mut qd1 = Sides::default();
    let mut qd32 = Sides::default();
    let mut lat = Vec::new();
    let read_gib = |iops: f64| iops * o.seconds as f64 * 4096.0 / (1u64 << 30) as f64;
    let fill_gib = FILL_BYTES as f64 / (1u64 << 30) as f64;
    for rep in 0..o.reps {
        fill.fio
            .push(in_child(|| fio_fill_mibps(file), |_| fill_gib)?);
        if o.target == "daemon" {
            let d = DaemonRun::start(file, &o.dir)?;
            fill.rc.push(Sample::plain(daemon_fill(&d)?));
            qd1.fio.push(in_child(
                || fio_read_iops(file, 1, o.seconds, o.threads),
                read_gib,
            )?);
            let r1 = daemon_read(&d, 1, o.seconds, o.threads)?;
            qd1.rc.push(Sample::plain(r1.0));
            qd32.fio.push(in_child(
                || fio_read_iops(file, 32, o.seconds, o.threads),
                read_gib,
            )?);
            let r32 = daemon_read(&d, 32, o.seconds, o.threads)?;
            qd32.rc.push(Sample::plain(r32.0));
            lat.push((r1, r32));
            d.stop()?;
        } else {
            fill.rc.push(in_process(|| rc_fill(file), |_| fill_gib)?);
            for (side, qd) in [(&mut qd1, 1), (&mut qd32, 32)] {
                side.fio.push(in_child(
                    || fio_read_iops(file, qd, o.seconds, o.threads),
                    read_gib,
                )?);
                side.rc.push(in_process(
                    || rc_read_iops(file, qd as usize, o.seconds, o.threads),
                    read_gib,
                )?);
            }
        }
        #[cfg(feature = "foyer")]
        if o.with_foyer {
            // foyer's fill stores half as many 4 KiB values (see
            // support/foyer.rs); its MiB/s is of values stored.
            let foyer_gib = (foyer_side::VALUES * 4096) as f64 / (1u64 << 30) as f64;
            let f = foyer_side::FoyerRun::open(file)?;
            fill.foyer.push(in_process(|| f.fill(), |_| foyer_gib)?);
            for (side, qd) in [(&mut qd1, 1), (&mut qd32, 32)] {
                let mut misses = 0;
                side.foyer.push(in_process(
                    || {
                        let (iops, m) = f.read(qd, o.seconds)?;
                        misses = m;
                        Ok(iops)
                    },
                    read_gib,
                )?);
                if misses > 0 {
                    eprintln!("note: foyer found nothing for {misses} reads at qd {qd}");
                }
            }
            f.close()?;
        }
        eprintln!(
            "rep {rep}: fill {:.0}/{:.0} MiB/s, qd1 {:.0}/{:.0} IOPS, qd32 {:.0}/{:.0} IOPS (fio/ringcache)",
            fill.fio[rep].value,
            fill.rc[rep].value,
            qd1.fio[rep].value,
            qd1.rc[rep].value,
            qd32.fio[rep].value,
            qd32.rc[rep].value
        );
    }
    let by = |qd: u32| {
        if o.threads > 1 {
            format!("randread 4k qd{qd} x{}, IOPS", o.threads)
        } else {
            format!("randread 4k qd{qd}, IOPS")
        }
    };
    let (name1, name32) = (by(1), by(32));
    let rows = [
        ("seq fill 1M, MiB/s", &fill),
        (name1.as_str(), &qd1),
        (name32.as_str(), &qd32),
    ];
    let foyer = o.with_foyer;
    println!(
        "{:<26} {:>12} {:>12} {:>7}{}",
        "workload (medians)",
        "fio",
        "ringcache",
        "ratio",
        if foyer {
            format!(" {:>12} {:>7}", "foyer", "ratio")
        } else {
            String::new()
        }
    );
    let mut min_ratio = f64::INFINITY;
    for (name, side) in rows {
        let (mf, mr) = (side.median(Side::Fio), side.median(Side::Rc));
        let ratio = mr / mf;
        min_ratio = min_ratio.min(ratio);
        let extra = if foyer {
            let my = side.median(Side::Foyer);
            format!(" {my:>12.0} {:>7.2}", my / mf)
        } else {
            String::new()
        };
        println!("{name:<26} {mf:>12.0} {mr:>12.0} {ratio:>7.2}{extra}");
    }
    if o.target != "daemon" {
        println!(
            "{:<26} {:>20} {:>20}{}",
            "cost (medians)",
            "fio cpu/GiB, peak",
            "ringcache",
            if foyer {
                format!(" {:>20}", "foyer")
            } else {
                String::new()
            }
        );
        for (name, side) in rows {
            let cell = |which: Side| {
                let (cpu, peak) = side.cost(which);
                format!("{cpu:>8.2} s {peak:>6.0} MiB")
            };
            println!(
                "{name:<26} {:>20} {:>20}{}",
                cell(Side::Fio),
                cell(Side::Rc),
                if foyer {
                    format!(" {:>20}", cell(Side::Foyer))
                } else {
                    String::new()
                }
            );
        }
    }
    println!("target: {}", o.target);
    for (i, (r1, r32)) in lat.iter().enumerate() {
        println!(
            "daemon rep {i}: qd1 p50 {:.1} us p99 {:.1} us cpu {:.1} us/op; qd32 p50 {:.1} us p99 {:.1} us cpu {:.1} us/op",
            r1.1, r1.2, r1.3, r32.1, r32.2, r32.3
        );
    }
    println!(
        "index memory per extent: {:.1} bytes",
        index_bytes_per_extent()
    );
    let _ = std::fs::remove_file(file);
    println!("ratio {min_ratio:.2}");
    Ok(())
}
