//! The SVG chart: latency percentiles per second above, deliveries and publishes per second
//! below.
//!
//! Drawn with plotters' SVG backend without any font feature: text goes into the SVG as `<text>`
//! elements that the viewer renders, so no font file or fontconfig is needed to build or run.

use std::path::Path;

use plotters::prelude::*;

use crate::report::TimelinePoint;

/// Why the chart could not be written.
#[derive(Debug, thiserror::Error)]
#[error("writing the chart: {0}")]
pub(crate) struct ChartError(String);

fn err(e: impl std::fmt::Display) -> ChartError {
    ChartError(e.to_string())
}

type Pick = fn(&TimelinePoint) -> f64;

/// Writes the chart of `timeline` to `path`.
pub(crate) fn write_svg(
    path: &Path,
    title: &str,
    timeline: &[TimelinePoint],
) -> Result<(), ChartError> {
    let root = SVGBackend::new(path, (1100, 780)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (top, bottom) = root.split_vertically(430);
    let seconds = timeline.iter().map(|p| p.second + 1).max().unwrap_or(1);

    let max_latency = timeline
        .iter()
        .map(|p| p.max_ms.max(p.p999_ms))
        .fold(0.0f64, f64::max)
        .max(0.1)
        * 1.1;
    let mut latency = ChartBuilder::on(&top)
        .caption(
            format!("{title}: publish → receive latency per second"),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0u32..seconds, 0f64..max_latency)
        .map_err(err)?;
    latency
        .configure_mesh()
        .x_desc("seconds since publishing started")
        .y_desc("ms")
        .draw()
        .map_err(err)?;
    let lines: [(&str, RGBColor, Pick); 4] = [
        ("p50", BLUE, |p| p.p50_ms),
        ("p99", GREEN, |p| p.p99_ms),
        ("p99.9", MAGENTA, |p| p.p999_ms),
        ("max", RED, |p| p.max_ms),
    ];
    for (name, color, pick) in lines {
        latency
            .draw_series(LineSeries::new(
                timeline
                    .iter()
                    .filter(|p| p.deliveries > 0)
                    .map(|p| (p.second, pick(p))),
                color.stroke_width(2),
            ))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    latency
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;

    let max_deliveries = timeline
        .iter()
        .map(|p| p.deliveries)
        .max()
        .unwrap_or(0)
        .max(1) as f64
        * 1.1;
    let max_published = timeline
        .iter()
        .map(|p| p.published)
        .max()
        .unwrap_or(0)
        .max(1) as f64
        * 1.1;
    let mut rates = ChartBuilder::on(&bottom)
        .caption("deliveries and publishes per second", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .right_y_label_area_size(64)
        .build_cartesian_2d(0u32..seconds, 0f64..max_deliveries)
        .map_err(err)?
        .set_secondary_coord(0u32..seconds, 0f64..max_published);
    rates
        .configure_mesh()
        .x_desc("seconds since publishing started")
        .y_desc("deliveries/s")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(err)?;
    rates
        .configure_secondary_axes()
        .y_desc("published/s")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(err)?;
    rates
        .draw_series(LineSeries::new(
            timeline.iter().map(|p| (p.second, p.deliveries as f64)),
            BLUE.stroke_width(2),
        ))
        .map_err(err)?
        .label("deliveries/s (left)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    rates
        .draw_secondary_series(LineSeries::new(
            timeline.iter().map(|p| (p.second, p.published as f64)),
            RED.stroke_width(2),
        ))
        .map_err(err)?
        .label("published/s (right)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
    rates
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_an_svg() {
        let dir = std::env::temp_dir().join(format!("lt-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("chart.svg");
        let timeline: Vec<TimelinePoint> = (0..5)
            .map(|s| TimelinePoint {
                second: s,
                published: 100,
                deliveries: 1000 * u64::from(s),
                p50_ms: 1.0,
                p99_ms: 2.0,
                p999_ms: 3.0,
                max_ms: 4.0 + f64::from(s),
            })
            .collect();
        write_svg(&path, "test", &timeline).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("p99.9"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
