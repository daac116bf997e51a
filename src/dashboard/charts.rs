//! Small SVG charts rendered on the server (no chart library, no script). Pure.
use maud::{html, Markup};

const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 140.0;
const PAD_LEFT: f64 = 44.0;
const PAD_BOTTOM: f64 = 18.0;

/// One series of a chart: a CSS class (its colour) and a value per bucket (`None`: no data).
pub struct Series<'a> {
    pub name: &'a str,
    pub class: &'a str,
    pub values: Vec<Option<f64>>,
}

fn scale_max(series: &[Series<'_>], stacked: bool) -> f64 {
    let buckets = series.first().map_or(0, |s| s.values.len());
    let max = if stacked {
        (0..buckets)
            .map(|i| series.iter().filter_map(|s| s.values[i]).sum::<f64>())
            .fold(0.0, f64::max)
    } else {
        series
            .iter()
            .flat_map(|s| s.values.iter().flatten().copied())
            .fold(0.0, f64::max)
    };
    if max <= 0.0 {
        1.0
    } else {
        max
    }
}

fn format_value(value: f64, unit: &str) -> String {
    if value >= 100.0 || value.fract() == 0.0 {
        format!("{value:.0}{unit}")
    } else {
        format!("{value:.1}{unit}")
    }
}

fn frame(title: &str, max: f64, unit: &str, labels: &[String], body: Markup) -> Markup {
    let plot_h = HEIGHT - PAD_BOTTOM;
    let first = labels.first().cloned().unwrap_or_default();
    let last = labels.last().cloned().unwrap_or_default();
    html! {
        svg class="chart" viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img" aria-label=(title) preserveAspectRatio="none" {
            title { (title) }
            line class="axis" x1=(PAD_LEFT) y1="0" x2=(PAD_LEFT) y2=(plot_h) {}
            line class="axis" x1=(PAD_LEFT) y1=(plot_h) x2=(WIDTH) y2=(plot_h) {}
            text class="tick" x="2" y="10" { (format_value(max, unit)) }
            text class="tick" x="2" y=(plot_h) { (format_value(0.0, unit)) }
            text class="tick" x=(PAD_LEFT) y=(HEIGHT - 2.0) { (first) }
            text class="tick" x=(WIDTH) y=(HEIGHT - 2.0) text-anchor="end" { (last) }
            (body)
        }
    }
}

/// A legend for the series of a chart.
fn legend(series: &[Series<'_>]) -> Markup {
    html! {
        ul.legend {
            @for s in series { li { span class=(format!("swatch {}", s.class)) {} (s.name) } }
        }
    }
}

/// Lines (one per series) over the buckets; gaps where a bucket has no value.
pub fn lines(title: &str, unit: &str, labels: &[String], series: &[Series<'_>]) -> Markup {
    let max = scale_max(series, false);
    let n = labels.len().max(1) as f64;
    let step = (WIDTH - PAD_LEFT) / n;
    let plot_h = HEIGHT - PAD_BOTTOM;
    let y = |v: f64| plot_h - v / max * (plot_h - 4.0);
    let body = html! {
        @for s in series {
            @let points: Vec<String> = s.values.iter().enumerate()
                .filter_map(|(i, v)| v.map(|v| format!("{:.1},{:.1}", PAD_LEFT + step * (i as f64 + 0.5), y(v))))
                .collect();
            polyline class=(format!("line {}", s.class)) points=(points.join(" ")) {}
            @for (i, v) in s.values.iter().enumerate() {
                @if let Some(v) = v {
                    circle class=(format!("dot {}", s.class)) cx=(format!("{:.1}", PAD_LEFT + step * (i as f64 + 0.5))) cy=(format!("{:.1}", y(*v))) r="2" {
                        title { (labels[i]) ": " (s.name) " " (format_value(*v, unit)) }
                    }
                }
            }
        }
    };
    html! { figure { figcaption { (title) } (frame(title, max, unit, labels, body)) (legend(series)) } }
}

/// Stacked bars per bucket.
pub fn stacked_bars(title: &str, labels: &[String], series: &[Series<'_>]) -> Markup {
    let max = scale_max(series, true);
    let n = labels.len().max(1) as f64;
    let step = (WIDTH - PAD_LEFT) / n;
    let plot_h = HEIGHT - PAD_BOTTOM;
    struct Rect {
        x: f64,
        y: f64,
        h: f64,
        class: String,
        tip: String,
    }
    let mut rects = Vec::new();
    for (i, label) in labels.iter().enumerate() {
        let mut base = 0.0;
        for s in series {
            let Some(v) = s.values.get(i).copied().flatten().filter(|v| *v > 0.0) else {
                continue;
            };
            let h = v / max * (plot_h - 4.0);
            rects.push(Rect {
                x: PAD_LEFT + step * i as f64 + step * 0.1,
                y: plot_h - base - h,
                h,
                class: format!("bar {}", s.class),
                tip: format!("{label}: {} {}", s.name, format_value(v, "")),
            });
            base += h;
        }
    }
    let width = format!("{:.1}", (step * 0.8).max(1.0));
    let body = html! {
        @for r in &rects {
            rect class=(r.class) x=(format!("{:.1}", r.x)) y=(format!("{:.1}", r.y)) width=(width) height=(format!("{:.1}", r.h)) {
                title { (r.tip) }
            }
        }
    };
    html! { figure { figcaption { (title) } (frame(title, max, "", labels, body)) (legend(series)) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{i:02}:00")).collect()
    }

    #[test]
    fn a_line_has_a_point_per_value_and_a_gap_for_none() {
        let svg = lines(
            "p50",
            " ms",
            &labels(3),
            &[Series {
                name: "p50",
                class: "s1",
                values: vec![Some(10.0), None, Some(20.0)],
            }],
        )
        .into_string();
        assert_eq!(svg.matches("<circle").count(), 2);
        assert!(svg.contains("20 ms"), "{svg}");
        assert!(svg.contains("aria-label=\"p50\""));
    }

    #[test]
    fn stacked_bars_skip_zero_and_scale_to_the_tallest_stack() {
        let svg = stacked_bars(
            "volume",
            &labels(2),
            &[
                Series {
                    name: "ok",
                    class: "ok",
                    values: vec![Some(3.0), Some(0.0)],
                },
                Series {
                    name: "failed",
                    class: "bad",
                    values: vec![Some(1.0), Some(4.0)],
                },
            ],
        )
        .into_string();
        assert_eq!(svg.matches("<rect").count(), 3);
        // The tallest stack (4) is the top of the scale.
        assert!(svg.contains(">4<"), "{svg}");
    }

    #[test]
    fn titles_are_escaped() {
        let svg = lines("<script>", "", &labels(1), &[]).into_string();
        assert!(!svg.contains("<script>"));
    }
}
