//! SVG charts drawn with plotters, text laid out with the embedded font (the page declares the
//! same font, so labels fit the way they were measured). Each function returns one `<svg>`.

use std::sync::Once;

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::FontStyle;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::error::{Error, Result};

/// The font family name the SVG text and the page's `@font-face` share.
pub const FONT_FAMILY: &str = "mixforge-sans";
/// DejaVu Sans cut to the characters a report uses (see `assets/README.md`).
pub const FONT: &[u8] = include_bytes!("../assets/DejaVuSans-subset.ttf");

const WIDTH: u32 = 720;
const HEIGHT: u32 = 320;

/// Colours for series, in order (Okabe–Ito, readable for colour-blind readers).
const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(213, 94, 0),
    RGBColor(240, 228, 66),
    RGBColor(0, 0, 0),
];

/// The colour of series `i`.
pub fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are compiled in; failing to parse them is a build defect, caught by the tests.
        plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, FONT).ok();
    });
}

fn font(size: f64) -> TextStyle<'static> {
    (FONT_FAMILY, size).into_font().into()
}

fn plot_err<E: std::fmt::Debug>(e: E) -> Error {
    Error::Plot(format!("{e:?}"))
}

/// Draws onto a fresh SVG canvas and returns the markup.
fn canvas(height: u32, draw: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> Result<()>) -> Result<String> {
    register_font();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        draw(&root)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// The chart on `root`: its title, room for the axis labels (`y_label_area` pixels for the
/// y labels), and f64 coordinates over `x` and `y`.
fn frame<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, Shift>,
    title: &str,
    y_label_area: u32,
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
) -> Result<ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>> {
    ChartBuilder::on(root)
        .caption(title, font(16.0))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(y_label_area)
        .build_cartesian_2d(x, y)
        .map_err(plot_err)
}

/// (min, max) of the values, widened so a flat series still has a range.
fn span(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) =
        values.filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| (l.min(v), h.max(v)));
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(hi.abs().max(1e-12) * 1e-3);
    (lo - pad, hi + pad)
}

/// An axis label: whole numbers without decimals, others with up to four significant digits.
fn tidy(v: f64) -> String {
    if v == v.round() && v.abs() < 1e9 {
        return format!("{}", v as i64);
    }
    let digits = (3 - v.abs().log10().floor() as i32).clamp(0, 8) as usize;
    let text = format!("{v:.digits$}");
    if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.').to_string() } else { text }
}

/// A named series of (x, y) points.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// Lines over a shared x axis; points are marked when there are few.
pub fn lines(title: &str, x_desc: &str, y_desc: &str, series: &[Series]) -> Result<String> {
    canvas(HEIGHT, |root| {
        let (x0, x1) = span(series.iter().flat_map(|s| s.points.iter().map(|p| p.0)));
        let (y0, y1) = span(series.iter().flat_map(|s| s.points.iter().map(|p| p.1)));
        let mut chart = frame(root, title, 64, x0..x1, y0..y1)?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .x_label_formatter(&|v| tidy(*v))
            .y_label_formatter(&|v| tidy(*v))
            .label_style(font(12.0))
            .axis_desc_style(font(13.0))
            .draw()
            .map_err(plot_err)?;
        for (i, s) in series.iter().enumerate() {
            let c = colour(i);
            chart
                .draw_series(LineSeries::new(s.points.iter().copied(), c.stroke_width(2)))
                .map_err(plot_err)?
                .label(s.name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
            if s.points.len() <= 30 {
                chart.draw_series(s.points.iter().map(|p| Circle::new(*p, 3, c.filled()))).map_err(plot_err)?;
            }
        }
        // The legend goes to the upper corner the first series leaves free.
        let rising = series.first().is_some_and(|s| {
            let q = (s.points.len() / 4).max(1);
            let mean = |p: &[(f64, f64)]| p.iter().map(|x| x.1).sum::<f64>() / p.len().max(1) as f64;
            mean(&s.points[s.points.len().saturating_sub(q)..]) > mean(&s.points[..q.min(s.points.len())])
        });
        let corner = if rising { SeriesLabelPosition::UpperLeft } else { SeriesLabelPosition::UpperRight };
        legend(&mut chart, series.len(), corner)
    })
}

fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    n: usize,
    position: SeriesLabelPosition,
) -> Result<()> {
    if n > 1 {
        chart
            .configure_series_labels()
            .label_font(font(12.0))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .position(position)
            .draw()
            .map_err(plot_err)?;
    }
    Ok(())
}

/// Label of category `v` when `v` is (close to) a whole index into `names`.
fn category(names: &[String], v: f64) -> String {
    let i = v.round();
    if (v - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < names.len() {
        names[i as usize].clone()
    } else {
        String::new()
    }
}

/// Grouped vertical bars: one group per category, one bar per named series.
pub fn bars(title: &str, y_desc: &str, categories: &[String], series: &[(String, Vec<f64>)]) -> Result<String> {
    canvas(HEIGHT, |root| {
        let n = categories.len().max(1);
        let (_, y1) = span(series.iter().flat_map(|(_, v)| v.iter().copied()).chain([0.0]));
        let (ymin, _) = span(series.iter().flat_map(|(_, v)| v.iter().copied()).chain([0.0]));
        let y0 = ymin.min(0.0);
        // Room above the bars for the legend.
        let y1 = if series.len() > 1 { y1 + (y1 - y0) * 0.3 } else { y1 };
        let mut chart = frame(root, title, 64, -0.5f64..(n as f64 - 0.5), y0..y1)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n)
            .x_label_formatter(&|v| category(categories, *v))
            .y_label_formatter(&|v| tidy(*v))
            .y_desc(y_desc)
            .label_style(font(12.0))
            .axis_desc_style(font(13.0))
            .draw()
            .map_err(plot_err)?;
        let width = 0.8 / series.len().max(1) as f64;
        for (s, (name, values)) in series.iter().enumerate() {
            let c = colour(s);
            chart
                .draw_series(values.iter().enumerate().filter(|(_, v)| v.is_finite()).map(|(i, v)| {
                    let left = i as f64 - 0.4 + s as f64 * width;
                    Rectangle::new([(left, 0.0), (left + width * 0.92, *v)], c.filled())
                }))
                .map_err(plot_err)?
                .label(name.clone())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
        }
        legend(&mut chart, series.len(), SeriesLabelPosition::UpperRight)
    })
}

/// Stacked vertical bars (e.g. mixture weights per run): one bar per category, one layer per
/// series, values summing to the bar's height.
pub fn stacked(title: &str, y_desc: &str, categories: &[String], series: &[(String, Vec<f64>)]) -> Result<String> {
    canvas(HEIGHT, |root| {
        let n = categories.len().max(1);
        let top = (0..n).map(|i| series.iter().map(|(_, v)| v.get(i).copied().unwrap_or(0.0)).sum::<f64>());
        let y1 = top.fold(0.0f64, f64::max).max(1e-12) * if series.len() > 1 { 1.3 } else { 1.02 };
        let mut chart = frame(root, title, 64, -0.5f64..(n as f64 - 0.5), 0.0..y1)?;
        let every = n.div_ceil(16).max(1);
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n)
            .x_label_formatter(&|v| {
                let name = category(categories, *v);
                if (v.round() as usize).is_multiple_of(every) { name } else { String::new() }
            })
            .y_label_formatter(&|v| tidy(*v))
            .y_desc(y_desc)
            .label_style(font(11.0))
            .axis_desc_style(font(13.0))
            .draw()
            .map_err(plot_err)?;
        let mut base = vec![0.0; n];
        for (s, (name, values)) in series.iter().enumerate() {
            let c = colour(s);
            let rects: Vec<_> = values
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let r = Rectangle::new([(i as f64 - 0.4, base[i]), (i as f64 + 0.4, base[i] + v)], c.filled());
                    base[i] += v;
                    r
                })
                .collect();
            chart
                .draw_series(rects)
                .map_err(plot_err)?
                .label(name.clone())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
        }
        legend(&mut chart, series.len(), SeriesLabelPosition::UpperRight)
    })
}

/// Predicted against observed, one colour per series, with the y = x line.
pub fn predicted_vs_actual(title: &str, series: &[Series]) -> Result<String> {
    canvas(HEIGHT + 80, |root| {
        let (lo, hi) = span(series.iter().flat_map(|s| s.points.iter().flat_map(|p| [p.0, p.1])));
        let mut chart = frame(root, title, 64, lo..hi, lo..hi)?;
        chart
            .configure_mesh()
            .x_desc("observed")
            .y_desc("predicted (out of fold)")
            .x_label_formatter(&|v| tidy(*v))
            .y_label_formatter(&|v| tidy(*v))
            .label_style(font(12.0))
            .axis_desc_style(font(13.0))
            .draw()
            .map_err(plot_err)?;
        chart
            .draw_series(LineSeries::new([(lo, lo), (hi, hi)], BLACK.mix(0.5).stroke_width(1)))
            .map_err(plot_err)?
            .label("y = x")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK.mix(0.5)));
        for (i, s) in series.iter().enumerate() {
            let c = colour(i);
            chart
                .draw_series(s.points.iter().map(|p| Circle::new(*p, 4, c.filled())))
                .map_err(plot_err)?
                .label(s.name.clone())
                .legend(move |(x, y)| Circle::new((x + 9, y), 4, c.filled()));
        }
        legend(&mut chart, series.len() + 1, SeriesLabelPosition::UpperLeft)
    })
}

/// Percentile marks per row: a line from p5 to p95, a box from p25 to p75, a tick at the median.
pub fn ranges(title: &str, x_desc: &str, rows: &[(String, [f64; 5])], log_x: bool) -> Result<String> {
    let height = 90 + 34 * rows.len().max(1) as u32;
    canvas(height, |root| {
        let n = rows.len().max(1);
        let map = |v: f64| if log_x { v.max(1.0).log10() } else { v };
        let (x0, x1) = span(rows.iter().flat_map(|(_, p)| p.iter().map(|v| map(*v))));
        let names: Vec<String> = rows.iter().map(|(n, _)| n.clone()).collect();
        let mut chart = frame(root, title, 90, x0..x1, -0.5f64..(n as f64 - 0.5))?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(n)
            .y_label_formatter(&|v| category(&names, *v))
            .x_label_formatter(&|v| if log_x { format!("{:.0}", 10f64.powf(*v)) } else { tidy(*v) })
            .x_desc(if log_x { format!("{x_desc} (log scale)") } else { x_desc.to_string() })
            .label_style(font(12.0))
            .axis_desc_style(font(13.0))
            .draw()
            .map_err(plot_err)?;
        for (i, (_, p)) in rows.iter().enumerate() {
            let (y, c) = (i as f64, colour(i));
            let q: Vec<f64> = p.iter().map(|v| map(*v)).collect();
            chart.draw_series([PathElement::new(vec![(q[0], y), (q[4], y)], c.stroke_width(2))]).map_err(plot_err)?;
            chart
                .draw_series([Rectangle::new([(q[1], y - 0.25), (q[3], y + 0.25)], c.mix(0.35).filled())])
                .map_err(plot_err)?;
            chart
                .draw_series([PathElement::new(vec![(q[2], y - 0.32), (q[2], y + 0.32)], BLACK.stroke_width(2))])
                .map_err(plot_err)?;
        }
        Ok(())
    })
}

/// A table of values as coloured cells with their numbers: blue below zero, red above, white
/// at zero (scaled by the largest magnitude). Rows top to bottom, columns left to right.
pub fn heatmap(title: &str, rows: &[String], columns: &[String], values: &[Vec<f64>]) -> Result<String> {
    let height = 90 + 34 * rows.len().max(1) as u32;
    canvas(height, |root| {
        let (nr, nc) = (rows.len().max(1), columns.len().max(1));
        let scale = values.iter().flatten().filter(|v| v.is_finite()).fold(0.0f64, |m, v| m.max(v.abs())).max(1e-12);
        let signed = values.iter().flatten().any(|v| *v < 0.0);
        let mut chart = frame(root, title, 150, -0.5f64..(nc as f64 - 0.5), -0.5f64..(nr as f64 - 0.5))?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(nc)
            .y_labels(nr)
            .x_label_formatter(&|v| category(columns, *v))
            // Row 0 at the top.
            .y_label_formatter(&|v| {
                let i = v.round();
                if (v - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < nr {
                    rows[nr - 1 - i as usize].clone()
                } else {
                    String::new()
                }
            })
            .label_style(font(12.0))
            .draw()
            .map_err(plot_err)?;
        for (r, row) in values.iter().enumerate() {
            let y = (nr - 1 - r) as f64;
            for (c, v) in row.iter().enumerate() {
                let t = if v.is_finite() { (v / scale).clamp(-1.0, 1.0) } else { 0.0 };
                let shade = |full: u8| (255.0 - (255.0 - f64::from(full)) * t.abs()) as u8;
                let colour = if t < 0.0 {
                    RGBColor(shade(33), shade(102), shade(172))
                } else {
                    RGBColor(shade(178), shade(24), shade(43))
                };
                let x = c as f64;
                chart
                    .draw_series([Rectangle::new([(x - 0.5, y - 0.5), (x + 0.5, y + 0.5)], colour.filled())])
                    .map_err(plot_err)?;
                let label = match v.is_finite() {
                    false => "–".into(),
                    // Signed deltas show their sign; shares and other non-negative values don't.
                    true if signed => format!("{v:+.3}"),
                    true => format!("{v:.2}"),
                };
                let ink = if t.abs() > 0.6 { WHITE } else { BLACK };
                chart
                    .draw_series([Text::new(
                        label,
                        (x, y),
                        font(12.0).color(&ink).pos(Pos::new(HPos::Center, VPos::Center)),
                    )])
                    .map_err(plot_err)?;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_labels_are_tidy() {
        assert_eq!(tidy(2.0), "2");
        assert_eq!(tidy(34000.0), "34000");
        assert_eq!(tidy(0.005), "0.005");
        assert_eq!(tidy(6.25), "6.25");
        assert_eq!(tidy(0.1 + 0.2), "0.3");
    }

    #[test]
    fn charts_use_the_embedded_font() {
        let svg = bars("t", "y", &["a".into(), "b".into()], &[("s".into(), vec![1.0, 2.0])]).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains(FONT_FAMILY), "{}", &svg[..200.min(svg.len())]);
    }
}
