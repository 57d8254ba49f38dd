//! The sweep's plot: IOPS and p99 completion latency against the queue
//! depth, one line per side, as SVG.

use std::path::Path;

use anyhow::Result;

/// A line of the plot: its name, its (IOPS, p99 µs) per depth, its colour.
type PlotLine<'a> = (&'a str, &'a [(f64, f64)], plotters::style::RGBColor);

/// IOPS and p99 latency against the queue depth, one line per side.
pub(crate) fn plot(
    path: &Path,
    depths: &[u32],
    fio: &[(f64, f64)],
    emb: &[(f64, f64)],
    dae: &[(f64, f64)],
) -> Result<()> {
    use plotters::prelude::*;
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    let root = SVGBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let panels = root.split_evenly((1, 2));
    let x_max = f64::from(depths.iter().copied().max().unwrap_or(1)).max(2.0);
    let sides: [PlotLine<'_>; 3] = [
        ("fio (io_uring, O_DIRECT)", fio, BLACK),
        ("ringcache embedded", emb, BLUE),
        ("ringcache via ringcached", dae, RED),
    ];
    for (panel, (title, y_of, unit)) in panels.iter().zip([
        ("4 KiB random read: IOPS", 0usize, "IOPS"),
        ("4 KiB random read: p99 completion latency", 1, "µs"),
    ]) {
        let pick = |v: &(f64, f64)| if y_of == 0 { v.0 } else { v.1 };
        let y_max = sides
            .iter()
            .flat_map(|(_, v, _)| v.iter().map(pick))
            .fold(1.0f64, f64::max)
            * 1.1;
        let mut chart = ChartBuilder::on(panel)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d((1f64..x_max).log_scale(), 0f64..y_max)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_desc("iodepth")
            .y_desc(unit)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .light_line_style(WHITE)
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        for (name, values, color) in &sides {
            let pts: Vec<(f64, f64)> = depths
                .iter()
                .zip(values.iter())
                .map(|(&d, v)| (f64::from(d), pick(v)))
                .collect();
            let color = *color;
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}
