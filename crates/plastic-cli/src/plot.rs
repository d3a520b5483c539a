//! Publication-style figures (line and grouped bar charts) written as PNG and SVG.
//!
//! Both formats are produced by the same drawing code, generic over the plotters
//! backend. Text uses the embedded DejaVu Sans font, so no system font lookup happens.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

/// Pixel size of every figure.
pub const SIZE: (u32, u32) = (900, 560);

/// The matplotlib "tab10" colour cycle.
pub const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

const FAMILY: &str = "sans-serif";
const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const TITLE_PT: u32 = 22;
const DESC_PT: u32 = 17;
const TICK_PT: u32 = 14;
const LEGEND_PT: u32 = 15;
const MARGIN: u32 = 15;
const X_AREA: u32 = 55;

/// One line of a [`LineChart`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// `(x, y)` points, drawn in order.
    pub points: Vec<(f64, f64)>,
    /// Optional shaded spread `(x, lo, hi)` (e.g. min/max or ±sd over seeds).
    pub band: Option<Vec<(f64, f64, f64)>>,
}

/// A line chart: one coloured line (and optional band) per series.
#[derive(Clone, Copy, Debug)]
pub struct LineChart<'a> {
    /// Figure title.
    pub title: &'a str,
    /// X axis description.
    pub x_label: &'a str,
    /// Y axis description.
    pub y_label: &'a str,
    /// The lines to draw; colours follow [`PALETTE`] in order.
    pub series: &'a [Series],
    /// Logarithmic x axis (non-positive x values are skipped).
    pub log_x: bool,
    /// Logarithmic y axis (non-positive y values are skipped).
    pub log_y: bool,
}

/// One bar of a [`BarGroup`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Bar {
    /// Legend text; bars with the same label share a colour across groups.
    pub label: String,
    /// Bar height.
    pub mean: f64,
    /// Half-width of the error bar (e.g. 1.96 × standard error); 0 or NaN draws none.
    pub err: f64,
}

/// A cluster of bars shown above one x-axis tick.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BarGroup {
    /// Name shown on the x axis.
    pub name: String,
    /// Bars of this group.
    pub bars: Vec<Bar>,
}

/// Draws `chart` to `png` (bitmap) and `svg` (vector), creating parent directories.
///
/// Fails if there is no series, no finite point to draw, or a file cannot be written.
pub fn line_chart(chart: &LineChart, png: &Path, svg: &Path) -> Result<()> {
    save(&LinePlan::new(chart)?, png, svg)
}

/// Draws grouped bars with ±`err` whiskers to `png` and `svg`, creating parent directories.
///
/// Bars are coloured (and listed in the legend) by label, in order of first appearance.
/// Fails if there is no bar with a finite mean or a file cannot be written.
pub fn bar_chart(
    title: &str,
    y_label: &str,
    groups: &[BarGroup],
    png: &Path,
    svg: &Path,
) -> Result<()> {
    save(&BarPlan::new(title, y_label, groups)?, png, svg)
}

/// Something drawable on any plotters backend; `s` scales every pixel size (supersampling).
trait Figure {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>, s: u32) -> Result<()>
    where
        DB::ErrorType: 'static;
}

/// Supersampling factor of the PNG: drawn at `SS`× size, then box-filtered down (anti-aliasing).
const SS: u32 = 2;

fn save(fig: &impl Figure, png: &Path, svg: &Path) -> Result<()> {
    for path in [png, svg] {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create directory {}", dir.display()))?;
        }
    }
    let (w, h) = (SIZE.0 as usize, SIZE.1 as usize);
    let big_w = w * SS as usize;
    let mut big = vec![0u8; 3 * big_w * h * SS as usize];
    {
        let root =
            BitMapBackend::with_buffer(&mut big, (SIZE.0 * SS, SIZE.1 * SS)).into_drawing_area();
        fig.draw(&root, SS)?;
        root.present()?;
    }
    let ss = SS as usize;
    let mut small = vec![0u8; 3 * w * h];
    for (i, px) in small.iter_mut().enumerate() {
        let (y, x, c) = (i / (3 * w), i / 3 % w, i % 3);
        let sum: usize = (0..ss * ss)
            .map(|k| big[3 * ((y * ss + k / ss) * big_w + x * ss + k % ss) + c] as usize)
            .sum();
        *px = ((sum + ss * ss / 2) / (ss * ss)) as u8;
    }
    let mut bitmap = BitMapBackend::new(png, SIZE);
    bitmap.blit_bitmap((0, 0), SIZE, &small)?;
    bitmap
        .present()
        .with_context(|| format!("cannot write PNG {}", png.display()))?;
    let root = SVGBackend::new(svg, SIZE).into_drawing_area();
    fig.draw(&root, 1)?;
    root.present()
        .with_context(|| format!("cannot write SVG {}", svg.display()))
}

fn ensure_font() -> Result<()> {
    static OK: OnceLock<bool> = OnceLock::new();
    if !*OK.get_or_init(|| register_font(FAMILY, FontStyle::Normal, FONT).is_ok()) {
        bail!("embedded font DejaVuSans.ttf could not be loaded");
    }
    Ok(())
}

/// Whether `v` can be shown on a (log) axis.
fn usable(v: f64, log: bool) -> bool {
    v.is_finite() && (!log || v > 0.0)
}

/// A displayed range on one axis, linear or log10.
#[derive(Clone, Copy, Debug)]
struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
}

impl Axis {
    fn t(&self, v: f64) -> f64 {
        if self.log {
            v.log10()
        } else {
            v
        }
    }

    fn inv(&self, t: f64) -> f64 {
        if self.log {
            10f64.powf(t)
        } else {
            t
        }
    }

    /// Range covering `values` (all usable) with a 5 % margin; `None` if empty or overflowing.
    fn fit(values: impl IntoIterator<Item = f64>, log: bool) -> Option<Self> {
        let ax = Self {
            lo: 0.0,
            hi: 0.0,
            log,
        };
        let (lo, hi) = (values.into_iter().map(|v| ax.t(v)))
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), t| {
                (lo.min(t), hi.max(t))
            });
        if lo > hi {
            return None;
        }
        let pad = if hi > lo {
            0.05 * (hi - lo)
        } else {
            (0.1 * lo.abs()).max(0.5)
        };
        let (lo, hi) = (ax.inv(lo - pad), ax.inv(hi + pad));
        (lo.is_finite() && hi.is_finite()).then_some(Self { lo, hi, log })
    }

    /// Position of `v` as a fraction of the axis length.
    fn frac(&self, v: f64) -> f64 {
        (self.t(v) - self.t(self.lo)) / (self.t(self.hi) - self.t(self.lo))
    }

    /// Raises the top so that the current range fills only `1 - f` of the axis.
    fn raise_top(&mut self, f: f64) {
        let (lo, hi) = (self.t(self.lo), self.t(self.hi));
        self.hi = self.inv(lo + (hi - lo) / (1.0 - f));
    }

    /// Tick positions: "nice" 1-2-5 steps, or decades (and 2/5 or 1…9 multiples) on log axes.
    fn ticks(&self) -> Vec<f64> {
        let (lo, hi) = (self.lo, self.hi);
        let inside = |v: &f64| (lo..=hi).contains(v);
        if self.log {
            let decades = self.t(hi) - self.t(lo);
            let mants: &[f64] = match decades {
                d if d > 3.0 => &[1.0],
                d if d > 1.0 => &[1.0, 2.0, 5.0],
                _ => &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
            };
            let step = (decades / 8.0).ceil().max(1.0) as i32;
            let ticks: Vec<f64> = (self.t(lo).floor() as i32..=self.t(hi).ceil() as i32)
                .filter(|e| e.rem_euclid(step) == 0)
                .flat_map(|e| mants.iter().map(move |m| m * 10f64.powi(e)))
                .filter(inside)
                .collect();
            if ticks.len() >= 3 {
                return ticks;
            }
        }
        let raw = (hi - lo) / 6.0;
        let mag = 10f64.powf(raw.log10().floor());
        let step = [1.0, 2.0, 5.0, 10.0]
            .into_iter()
            .map(|m| m * mag)
            .find(|&s| s >= raw)
            .unwrap_or(raw);
        ((lo / step).ceil() as i64..=(hi / step).floor() as i64)
            .map(|k| k as f64 * step)
            .filter(inside)
            .collect()
    }

    fn tick(&self, &v: &f64) -> String {
        let span = self.hi - self.lo;
        if self.log {
            tick_label(v, v)
        } else if v.abs() < 1e-9 * span {
            "0".into() // rounding noise such as 5.55e-17
        } else {
            tick_label(v, span)
        }
    }

    /// Width (unscaled pixels) of the label area left of a y axis: tick labels plus description.
    fn label_area(&self) -> u32 {
        let font = (FAMILY, TICK_PT).into_font();
        let widest = (self.ticks().iter())
            .filter_map(|v| font.box_size(&self.tick(v)).ok())
            .map(|(w, _)| w)
            .max();
        widest.unwrap_or(40) + 16 + DESC_PT * 2
    }
}

/// Compact tick text: scientific for tiny/huge magnitudes, else trimmed fixed point
/// with enough decimals for `scale` (the axis span, or the value on log axes).
fn tick_label(v: f64, scale: f64) -> String {
    fn trim(s: &str) -> String {
        let s = if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.')
        } else {
            s
        };
        if s == "-0" {
            "0".into()
        } else {
            s.into()
        }
    }
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e5).contains(&a) {
        let s = format!("{v:.2e}");
        let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
        format!("{}e{e}", trim(m))
    } else {
        let d = (3.0 - scale.log10()).ceil().clamp(0.0, 10.0) as usize;
        trim(&format!("{v:.d$}"))
    }
}

/// Legend box size as fractions of the plotting area.
fn legend_size<'a>(labels: impl Iterator<Item = &'a str>) -> (f64, f64) {
    let font = (FAMILY, LEGEND_PT).into_font();
    let (mut w, mut rows) = (0f64, 0);
    for l in labels {
        w = w.max(
            font.box_size(l)
                .map_or(l.len() as f64 * 9.0, |(w, _)| w as f64),
        );
        rows += 1;
    }
    let plot_w = (SIZE.0 - 3 * MARGIN - 70) as f64;
    let plot_h = (SIZE.1 - 2 * MARGIN - X_AREA - TITLE_PT * 2) as f64;
    let h = rows as f64 * LEGEND_PT as f64 * 1.25 + 20.0;
    ((w + 60.0 + 8.0) / plot_w, (h + 8.0) / plot_h)
}

/// Picks the plot corner whose legend box (`w`×`h`, axis fractions) covers the fewest
/// `samples` (axis fractions, y up), in matplotlib's order of preference. If every
/// corner is occupied, returns the upper right and the headroom to add on top.
fn legend_spot(samples: &[(f64, f64)], (w, h): (f64, f64)) -> (SeriesLabelPosition, f64) {
    use SeriesLabelPosition::*;
    let corners = [
        (UpperRight, 1.0, 1.0),
        (UpperLeft, 0.0, 1.0),
        (LowerLeft, 0.0, 0.0),
        (LowerRight, 1.0, 0.0),
    ];
    let hits = |cx: f64, cy: f64| {
        let (x0, y0) = (cx * (1.0 - w), cy * (1.0 - h));
        samples
            .iter()
            .filter(|&&(x, y)| (x0..=x0 + w).contains(&x) && (y0..=y0 + h).contains(&y))
            .count()
    };
    let (best, n) = (corners.into_iter().map(|(pos, cx, cy)| (pos, hits(cx, cy))))
        .min_by_key(|&(_, n)| n)
        .expect("four corners");
    if n == 0 {
        (best, 0.0)
    } else {
        (UpperRight, h.min(0.5))
    }
}

/// Tick label formatter.
type TickFmt<'f, V> = &'f dyn Fn(&V) -> String;
/// A 2-D chart over the ranges `X` and `Y`.
type Chart<'a, DB, X, Y> = ChartContext<
    'a,
    DB,
    Cartesian2d<<X as AsRangedCoord>::CoordDescType, <Y as AsRangedCoord>::CoordDescType>,
>;

/// Text and layout of a chart frame.
struct Frame<'t> {
    title: &'t str,
    x_desc: &'t str,
    y_desc: &'t str,
    /// Unscaled width of the y label area.
    y_area: u32,
    /// Vertical grid lines at the x ticks.
    x_mesh: bool,
}

impl Frame<'_> {
    /// Clears `root` and builds the chart: caption, axes, grid, tick labels, descriptions.
    fn build<'a, DB, XV, X, Y>(
        &self,
        root: &'a DrawingArea<DB, Shift>,
        s: u32,
        (xr, yr): (X, Y),
        (fx, fy): (TickFmt<XV>, TickFmt<f64>),
    ) -> Result<Chart<'a, DB, X, Y>>
    where
        DB: DrawingBackend,
        DB::ErrorType: 'static,
        X: AsRangedCoord<Value = XV>,
        Y: AsRangedCoord<Value = f64>,
        X::CoordDescType: ValueFormatter<XV>,
        Y::CoordDescType: ValueFormatter<f64>,
    {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(root)
            .caption(self.title, (FAMILY, TITLE_PT * s))
            .margin(MARGIN * s)
            .margin_right(2 * MARGIN * s)
            .x_label_area_size(X_AREA * s)
            .y_label_area_size(self.y_area * s)
            .build_cartesian_2d(xr, yr)?;
        let mut mesh = chart.configure_mesh();
        mesh.x_desc(self.x_desc)
            .y_desc(self.y_desc)
            .axis_desc_style((FAMILY, DESC_PT * s))
            .label_style((FAMILY, TICK_PT * s))
            .axis_style(BLACK.stroke_width(s))
            .bold_line_style(BLACK.mix(0.1).stroke_width(s))
            .light_line_style(TRANSPARENT)
            .set_all_tick_mark_size(5 * s)
            .x_label_formatter(fx)
            .y_label_formatter(fy);
        if !self.x_mesh {
            mesh.disable_x_mesh();
        }
        mesh.draw()?;
        Ok(chart)
    }
}

fn draw_legend<'a, DB, CT>(
    chart: &mut ChartContext<'a, DB, CT>,
    pos: &SeriesLabelPosition,
    s: u32,
) -> Result<()>
where
    DB: DrawingBackend + 'a,
    DB::ErrorType: 'static,
    CT: CoordTranslate,
{
    chart
        .configure_series_labels()
        .position(pos.clone())
        .margin(10 * s)
        .legend_area_size(40 * s)
        .label_font((FAMILY, LEGEND_PT * s))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.25).stroke_width(s))
        .draw()?;
    Ok(())
}

/// A validated line chart: usable points and bands, axes and legend placement.
struct LinePlan<'a> {
    chart: &'a LineChart<'a>,
    /// Usable points of each series, as `(x, y, y)`.
    lines: Vec<Vec<(f64, f64, f64)>>,
    /// Usable band of each series, `(x, lo, hi)` (empty if none).
    bands: Vec<Vec<(f64, f64, f64)>>,
    x: Axis,
    y: Axis,
    legend: SeriesLabelPosition,
}

impl<'a> LinePlan<'a> {
    fn new(chart: &'a LineChart<'a>) -> Result<Self> {
        ensure_font()?;
        if chart.series.is_empty() {
            bail!("line chart {:?} has no series", chart.title);
        }
        let (ux, uy) = (|v| usable(v, chart.log_x), |v| usable(v, chart.log_y));
        let keep = |&(x, lo, hi): &(f64, f64, f64)| ux(x) && uy(lo) && uy(hi);
        let lines: Vec<Vec<_>> = (chart.series.iter())
            .map(|s| {
                s.points
                    .iter()
                    .map(|&(x, y)| (x, y, y))
                    .filter(keep)
                    .collect()
            })
            .collect();
        let bands: Vec<Vec<_>> = (chart.series.iter())
            .map(|s| s.band.iter().flatten().copied().filter(keep).collect())
            .collect();
        let all = || lines.iter().chain(&bands).flatten();
        let no_data = || format!("line chart {:?} has no finite data to draw", chart.title);
        let x = Axis::fit(all().map(|p| p.0), chart.log_x).with_context(no_data)?;
        let mut y = Axis::fit(all().flat_map(|p| [p.1, p.2]), chart.log_y).with_context(no_data)?;
        // Sample the drawn lines and bands densely (in axis fractions) to place the legend.
        let mut samples = Vec::new();
        for pts in lines.iter().chain(&bands) {
            let pts: Vec<_> = (pts.iter())
                .map(|&(a, lo, hi)| (x.frac(a), y.frac(lo), y.frac(hi)))
                .collect();
            for (i, p) in pts.iter().enumerate() {
                let q = pts.get(i + 1).unwrap_or(p);
                for f in (0..8).map(|k| k as f64 / 8.0) {
                    let lerp = |a: f64, b: f64| a + f * (b - a);
                    let (px, lo, hi) = (lerp(p.0, q.0), lerp(p.1, q.1), lerp(p.2, q.2));
                    samples.extend((0..=4).map(|j| (px, lo + j as f64 / 4.0 * (hi - lo))));
                }
            }
        }
        let labels = chart.series.iter().map(|s| s.label.as_str());
        let (legend, headroom) = legend_spot(&samples, legend_size(labels));
        if headroom > 0.0 {
            y.raise_top(headroom);
        }
        Ok(Self {
            chart,
            lines,
            bands,
            x,
            y,
            legend,
        })
    }

    fn draw_on<DB, X, Y>(&self, root: &DrawingArea<DB, Shift>, s: u32, xr: X, yr: Y) -> Result<()>
    where
        DB: DrawingBackend,
        DB::ErrorType: 'static,
        X: AsRangedCoord<Value = f64>,
        Y: AsRangedCoord<Value = f64>,
        X::CoordDescType: ValueFormatter<f64>,
        Y::CoordDescType: ValueFormatter<f64>,
    {
        let (c, x, y) = (self.chart, self.x, self.y);
        let frame = Frame {
            title: c.title,
            x_desc: c.x_label,
            y_desc: c.y_label,
            y_area: y.label_area(),
            x_mesh: true,
        };
        let mut chart = frame.build(root, s, (xr, yr), (&|v| x.tick(v), &|v| y.tick(v)))?;
        let colour = |i: usize| PALETTE[i % PALETTE.len()];
        for (i, band) in self.bands.iter().enumerate().filter(|(_, b)| !b.is_empty()) {
            let outline = band
                .iter()
                .map(|b| (b.0, b.2))
                .chain(band.iter().rev().map(|b| (b.0, b.1)));
            chart.draw_series([Polygon::new(
                outline.collect::<Vec<_>>(),
                colour(i).mix(0.2).filled(),
            )])?;
        }
        for (i, (series, pts)) in c.series.iter().zip(&self.lines).enumerate() {
            let style = colour(i).stroke_width(2 * s);
            if let [(x, y, _)] = pts[..] {
                chart.draw_series([Circle::new((x, y), 4 * s, style.filled())])?;
            }
            chart
                .draw_series(LineSeries::new(pts.iter().map(|p| (p.0, p.1)), style))?
                .label(series.label.as_str())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 30 * s as i32, y)], style));
        }
        draw_legend(&mut chart, &self.legend, s)
    }
}

impl Figure for LinePlan<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>, s: u32) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let (x, y) = (self.x, self.y);
        // Log axes get our own ticks (plotters labels every minor tick, crowding the axis).
        let log = |a: Axis| (a.lo..a.hi).log_scale().with_key_points(a.ticks());
        match (x.log, y.log) {
            (false, false) => self.draw_on(root, s, x.lo..x.hi, y.lo..y.hi),
            (true, false) => self.draw_on(root, s, log(x), y.lo..y.hi),
            (false, true) => self.draw_on(root, s, x.lo..x.hi, log(y)),
            (true, true) => self.draw_on(root, s, log(x), log(y)),
        }
    }
}

/// Fraction of a group's width filled by its bars.
const GROUP_FILL: f64 = 0.8;
/// X axis units per bar group (an integer axis, so tick labels can be group names).
const UNIT: i32 = 1000;

/// A validated bar chart with its y axis and legend placement.
struct BarPlan<'a> {
    title: &'a str,
    y_label: &'a str,
    groups: &'a [BarGroup],
    labels: Vec<&'a str>,
    y: Axis,
    legend: SeriesLabelPosition,
}

impl<'a> BarPlan<'a> {
    fn new(title: &'a str, y_label: &'a str, groups: &'a [BarGroup]) -> Result<Self> {
        ensure_font()?;
        let mut labels: Vec<&str> = Vec::new();
        for b in groups.iter().flat_map(|g| &g.bars) {
            if !labels.contains(&b.label.as_str()) {
                labels.push(&b.label);
            }
        }
        let mut plan = Self {
            title,
            y_label,
            groups,
            labels,
            y: Axis {
                lo: 0.0,
                hi: 1.0,
                log: false,
            },
            legend: SeriesLabelPosition::UpperRight,
        };
        if plan.bars().next().is_none() {
            bail!("bar chart {title:?} has no bar with a finite value");
        }
        let (lo, hi) = plan
            .bars()
            .fold((0f64, 0f64), |(lo, hi), (_, (_, _, m, e))| {
                (lo.min(m - e), hi.max(m + e))
            });
        let pad = if hi > lo { 0.05 * (hi - lo) } else { 1.0 };
        plan.y = Axis {
            lo: if lo < 0.0 { lo - pad } else { 0.0 },
            hi: hi + pad,
            log: false,
        };
        // Sample each bar (with its whisker) on a grid, in axis fractions, to place the legend.
        let width = (groups.len() as i32 * UNIT) as f64;
        let mut samples = Vec::new();
        for (_, (x0, x1, m, e)) in plan.bars() {
            let top = if m >= 0.0 { m + e } else { m - e };
            for (i, j) in
                (0..=6).flat_map(|i| (0..=6).map(move |j| (i as f64 / 6.0, j as f64 / 6.0)))
            {
                samples.push((
                    (x0 as f64 + i * (x1 - x0) as f64) / width,
                    plan.y.frac(j * top),
                ));
            }
        }
        let headroom;
        (plan.legend, headroom) = legend_spot(&samples, legend_size(plan.labels.iter().copied()));
        if headroom > 0.0 {
            plan.y.raise_top(headroom);
        }
        Ok(plan)
    }

    /// Finite bars as `(label index, (x0, x1, mean, err))`, in x units (group `i` spans
    /// `[i, i + 1] × UNIT`, and each label has a fixed slot within a group).
    fn bars(&self) -> impl Iterator<Item = (usize, (i32, i32, f64, f64))> + '_ {
        let w = GROUP_FILL / self.labels.len().max(1) as f64;
        let at = |g: usize, f: f64| g as i32 * UNIT + (f * UNIT as f64).round() as i32;
        self.groups.iter().enumerate().flat_map(move |(gi, g)| {
            g.bars.iter().filter(|b| b.mean.is_finite()).map(move |b| {
                let li = self.labels.iter().position(|&l| l == b.label).unwrap_or(0);
                let x0 = (1.0 - GROUP_FILL) / 2.0 + li as f64 * w;
                let err = if b.err.is_finite() { b.err.abs() } else { 0.0 };
                (li, (at(gi, x0), at(gi, x0 + w), b.mean, err))
            })
        })
    }
}

impl Figure for BarPlan<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>, s: u32) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let (n, y) = (self.groups.len() as i32, self.y);
        let name = |v: &i32| {
            let g = usize::try_from(v.div_euclid(UNIT))
                .ok()
                .and_then(|i| self.groups.get(i));
            g.map_or_else(String::new, |g| g.name.clone())
        };
        let xr = (0..n * UNIT).with_key_points((0..n).map(|i| i * UNIT + UNIT / 2).collect());
        let frame = Frame {
            title: self.title,
            x_desc: "",
            y_desc: self.y_label,
            y_area: y.label_area(),
            x_mesh: false,
        };
        let mut chart = frame.build(root, s, (xr, y.lo..y.hi), (&name, &|v| y.tick(v)))?;
        if y.lo < 0.0 {
            chart.draw_series([PathElement::new(
                [(0, 0.0), (n * UNIT, 0.0)],
                BLACK.stroke_width(s),
            )])?;
        }
        let whisker = BLACK.stroke_width((3 * s / 2).max(1));
        for (li, label) in self.labels.iter().enumerate() {
            let colour = PALETTE[li % PALETTE.len()];
            let mine = || self.bars().filter(move |&(l, _)| l == li).map(|(_, r)| r);
            let swatch = move |(x, y): (i32, i32)| {
                let (a, b) = (5 * s as i32, 7 * s as i32);
                Rectangle::new([(x + a, y - b), (x + 6 * a, y + b)], colour.filled())
            };
            chart
                .draw_series(
                    mine().map(|(x0, x1, m, _)| {
                        Rectangle::new([(x0, 0.0), (x1, m)], colour.filled())
                    }),
                )?
                .label(*label)
                .legend(swatch);
            for (x0, x1, m, e) in mine().filter(|r| r.3 > 0.0) {
                let (c, cap) = ((x0 + x1) / 2, (x1 - x0) * 3 / 20);
                chart.draw_series([
                    PathElement::new([(c, m - e), (c, m + e)], whisker),
                    PathElement::new([(c - cap, m - e), (c + cap, m - e)], whisker),
                    PathElement::new([(c - cap, m + e), (c + cap, m + e)], whisker),
                ])?;
            }
        }
        draw_legend(&mut chart, &self.legend, s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// Output folder: `$PLASTIC_PLOT_SAMPLES` if set (kept, for eyeballing), else a temp dir.
    fn out_dir(tag: &str) -> (PathBuf, bool) {
        match std::env::var_os("PLASTIC_PLOT_SAMPLES") {
            Some(d) => (PathBuf::from(d), true),
            None => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos();
                (
                    std::env::temp_dir()
                        .join(format!("plastic-plot-{tag}-{}-{nanos}", std::process::id())),
                    false,
                )
            }
        }
    }

    fn check(png: &Path, svg: &Path, labels: &[&str]) {
        let bytes = std::fs::read(png).unwrap();
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
        assert!(
            bytes.len() > 5_000,
            "PNG suspiciously small: {} bytes",
            bytes.len()
        );
        let text = std::fs::read_to_string(svg).unwrap();
        assert!(text.contains("<svg"));
        for l in labels {
            assert!(text.contains(l), "SVG lacks label {l:?}");
        }
    }

    fn sample_series() -> Vec<Series> {
        let xs = || (1..=200).map(|i| i as f64 * 50.0);
        let plastic = |x: f64| 0.05 + 2.0 * (-x / 2500.0).exp();
        vec![
            Series {
                label: "plastic".into(),
                points: xs().map(|x| (x, plastic(x))).collect(),
                band: Some(
                    xs().map(|x| (x, plastic(x) * 0.8, plastic(x) * 1.25))
                        .collect(),
                ),
            },
            Series {
                label: "non-plastic".into(),
                points: xs()
                    .map(|x| {
                        (
                            x,
                            0.3 + 1.8 * (-x / 6000.0).exp() + 0.03 * (x / 300.0).sin(),
                        )
                    })
                    .collect(),
                band: None,
            },
        ]
    }

    #[test]
    fn renders_line_charts() {
        let (dir, keep) = out_dir("line");
        let series = sample_series();
        let mut chart = LineChart {
            title: "Copy task: training loss",
            x_label: "episode",
            y_label: "loss",
            series: &series,
            log_x: false,
            log_y: false,
        };
        let (png, svg) = (dir.join("plot_sample.png"), dir.join("plot_sample.svg"));
        line_chart(&chart, &png, &svg).unwrap();
        check(&png, &svg, &["plastic", "non-plastic", "Copy task"]);
        chart.log_y = true;
        let (png, svg) = (dir.join("log_sample.png"), dir.join("log_sample.svg"));
        line_chart(&chart, &png, &svg).unwrap();
        check(&png, &svg, &["plastic", "non-plastic"]);
        if !keep {
            std::fs::remove_dir_all(dir).unwrap();
        }
    }

    #[test]
    fn renders_bar_chart() {
        let (dir, keep) = out_dir("bar");
        let bar = |label: &str, mean, err| Bar {
            label: label.into(),
            mean,
            err,
        };
        let groups: Vec<_> = [
            ("copy", 0.92, 0.61),
            ("recall", 0.81, 0.45),
            ("pattern", 0.64, 0.52),
        ]
        .into_iter()
        .map(|(name, p, n)| BarGroup {
            name: name.into(),
            bars: vec![
                bar("plastic", p, 0.04),
                bar("non-plastic", n, 0.06),
                bar("LSTM", (p + n) / 2.0, 0.05),
            ],
        })
        .collect();
        let (png, svg) = (dir.join("bar_sample.png"), dir.join("bar_sample.svg"));
        bar_chart("Final accuracy (10 seeds)", "accuracy", &groups, &png, &svg).unwrap();
        check(&png, &svg, &["plastic", "non-plastic", "LSTM", "recall"]);
        if !keep {
            std::fs::remove_dir_all(dir).unwrap();
        }
    }

    #[test]
    fn rejects_bad_input() {
        let (dir, _) = out_dir("bad");
        let dir = dir.join("never-written");
        let (png, svg) = (dir.join("a.png"), dir.join("a.svg"));
        let chart = |series| LineChart {
            title: "t",
            x_label: "x",
            y_label: "y",
            series,
            log_x: false,
            log_y: false,
        };
        assert!(line_chart(&chart(&[]), &png, &svg).is_err());
        let nan = [Series {
            label: "nan".into(),
            points: vec![(f64::NAN, 1.0), (2.0, f64::NAN)],
            band: None,
        }];
        let err = line_chart(&chart(&nan), &png, &svg).unwrap_err();
        assert!(err.to_string().contains("no finite data"), "{err}");
        let neg = [Series {
            label: "neg".into(),
            points: vec![(1.0, -1.0), (2.0, 0.0)],
            band: None,
        }];
        assert!(line_chart(
            &LineChart {
                log_y: true,
                ..chart(&neg)
            },
            &png,
            &svg
        )
        .is_err());
        assert!(bar_chart("t", "y", &[], &png, &svg).is_err());
        let nan_bar = [BarGroup {
            name: "g".into(),
            bars: vec![Bar {
                label: "b".into(),
                mean: f64::NAN,
                err: 1.0,
            }],
        }];
        assert!(bar_chart("t", "y", &nan_bar, &png, &svg).is_err());
        assert!(!dir.exists(), "nothing should be written for invalid input");
    }

    #[test]
    fn reports_unwritable_path() {
        let (dir, keep) = out_dir("unwritable");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("file");
        std::fs::write(&file, b"not a directory").unwrap();
        let series = sample_series();
        let chart = LineChart {
            title: "t",
            x_label: "x",
            y_label: "y",
            series: &series,
            log_x: false,
            log_y: false,
        };
        let err = line_chart(&chart, &file.join("a.png"), &file.join("a.svg")).unwrap_err();
        assert!(err.to_string().contains("cannot create directory"), "{err}");
        let err = line_chart(&chart, &dir, &dir.join("a.svg")).unwrap_err();
        assert!(err.to_string().contains("cannot write PNG"), "{err}");
        if keep {
            std::fs::remove_file(file).unwrap();
        } else {
            std::fs::remove_dir_all(dir).unwrap();
        }
    }

    #[test]
    fn tick_labels_are_compact() {
        assert_eq!(tick_label(0.30000000000000004, 1.0), "0.3");
        assert_eq!(tick_label(-0.0, 1.0), "0");
        assert_eq!(tick_label(2500.0, 10000.0), "2500");
        assert_eq!(tick_label(1e-5, 1e-5), "1e-5");
        assert_eq!(tick_label(0.01, 0.01), "0.01");
        assert_eq!(tick_label(250000.0, 1e6), "2.5e5");
    }
}
