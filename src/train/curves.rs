//! A training run's curves as an SVG, written beside train_log.json by `lorb train`: the loss of
//! every optimiser step, and the dev figure after every epoch (dev WER with the first pass's on
//! the same lists for n-best objectives; the dev MLM loss for `mlm`), each with axes, ticks and
//! labels (the `plotters` crate; text stays SVG text, so no font files are needed).

use crate::error::{Error, Result};
use plotters::prelude::*;

/// What the right-hand panel shows: one value per epoch, and an optional reference line.
pub struct EpochCurve<'a> {
    pub title: &'a str,
    pub y_label: &'a str,
    /// `(epoch, value)`; non-finite values are left out.
    pub points: Vec<(usize, f64)>,
    /// A horizontal reference (the first pass's dev WER) and its name.
    pub reference: Option<(f64, &'a str)>,
}

fn range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values.filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if !lo.is_finite() {
        return None;
    }
    let pad = if hi > lo { 0.05 * (hi - lo) } else { 0.05 * lo.abs().max(1.0) };
    Some((lo - pad, hi + pad))
}

fn drawing(e: impl std::fmt::Display) -> Error {
    Error::Training(format!("drawing the training curves: {e}"))
}

/// The SVG of a run: `losses` (one per step) on the left, `epochs` on the right.
pub fn svg(losses: &[f64], epochs: &EpochCurve) -> Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (960, 360)).into_drawing_area();
        root.fill(&WHITE).map_err(drawing)?;
        let (left, right) = root.split_horizontally(480);
        let steps: Vec<(f64, f64)> = losses.iter().enumerate().filter(|(_, l)| l.is_finite()).map(|(i, &l)| ((i + 1) as f64, l)).collect();
        let mut chart = ChartBuilder::on(&left);
        chart.caption("training loss", ("sans-serif", 18)).margin(12).x_label_area_size(40).y_label_area_size(56);
        match range(steps.iter().map(|p| p.1)) {
            Some((lo, hi)) => {
                let mut c = chart.build_cartesian_2d(1f64..(steps.len().max(2) as f64), lo..hi).map_err(drawing)?;
                c.configure_mesh().x_desc("step").y_desc("loss").x_label_formatter(&|x| format!("{x:.0}")).light_line_style(WHITE).draw().map_err(drawing)?;
                c.draw_series(LineSeries::new(steps, &BLUE)).map_err(drawing)?;
            }
            None => {
                left.draw(&Text::new("no finite loss", (180, 180), ("sans-serif", 14))).map_err(drawing)?;
            }
        }
        let pts: Vec<(f64, f64)> = epochs.points.iter().filter(|p| p.1.is_finite()).map(|&(e, v)| (e as f64, v)).collect();
        let mut chart = ChartBuilder::on(&right);
        chart.caption(epochs.title, ("sans-serif", 18)).margin(12).x_label_area_size(40).y_label_area_size(56);
        match range(pts.iter().map(|p| p.1).chain(epochs.reference.map(|r| r.0))) {
            Some((lo, hi)) if !pts.is_empty() => {
                let last = pts.iter().map(|p| p.0).fold(1.0, f64::max);
                let mut c = chart.build_cartesian_2d(0.5f64..last + 0.5, lo..hi).map_err(drawing)?;
                c.configure_mesh().x_desc("epoch").y_desc(epochs.y_label).x_labels(pts.len().min(10)).x_label_formatter(&|x| format!("{x:.0}")).light_line_style(WHITE).draw().map_err(drawing)?;
                c.draw_series(LineSeries::new(pts.clone(), &RED)).map_err(drawing)?.label(epochs.title).legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], RED));
                c.draw_series(pts.iter().map(|&p| Circle::new(p, 3, RED.filled()))).map_err(drawing)?;
                if let Some((v, name)) = epochs.reference {
                    c.draw_series(DashedLineSeries::new([(0.5, v), (last + 0.5, v)], 6, 4, BLACK.mix(0.6).into())).map_err(drawing)?.label(name).legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLACK.mix(0.6)));
                }
                c.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK.mix(0.3)).draw().map_err(drawing)?;
            }
            _ => {
                right.draw(&Text::new(format!("{}: no dev lists", epochs.title), (120, 180), ("sans-serif", 14))).map_err(drawing)?;
            }
        }
        root.present().map_err(drawing)?;
    }
    Ok(out)
}
