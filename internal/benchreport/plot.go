package main

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"
	"slices"
	"time"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"

	"github.com/hostward/ward/internal/latency"
)

// series is one system's latencies, every round pooled.
type series struct {
	label string
	color color.RGBA
	data  latency.Sample
}

// panel is one latency distribution chart.
type panel struct {
	title  string
	series []series
}

var (
	white   = color.RGBA{255, 255, 255, 255}
	black   = color.RGBA{0, 0, 0, 255}
	grey    = color.RGBA{200, 200, 200, 255}
	blue    = color.RGBA{31, 119, 180, 255}
	orange  = color.RGBA{255, 127, 14, 255}
	green   = color.RGBA{44, 160, 44, 255}
	red     = color.RGBA{214, 39, 40, 255}
	purple  = color.RGBA{148, 103, 189, 255}
	palette = []color.RGBA{blue, orange, green, red, purple}
)

// plotSpec says which raw samples go into which panel.
var plotSpec = []struct {
	title  string
	series []struct{ label, bench, metric string }
}{
	{"start/stop cycle, same limits, interleaved", []struct{ label, bench, metric string }{
		{"ward", benchCompare, "cycle"},
		{"runc run", benchCompare, "runc-cycle"},
		{"cgcreate+cgset+cgexec+cgdelete", benchCompare, "cgexec-cycle"},
	}},
	{"OOM", []struct{ label, bench, metric string }{
		{"agent: notified to instance dead", benchOOMKill, "notified-to-dead"},
		{"oom watcher: last allocation to event", benchOOMLatency, "detect"},
	}},
	{"bus: info round trip, 8 clients", []struct{ label, bench, metric string }{
		{"info", benchInfo, "info"},
	}},
}

// panels gathers the run's raw samples into panels; series and panels
// without samples are left out.
func (r *Run) panels() ([]panel, error) {
	var out []panel
	for _, spec := range plotSpec {
		p := panel{title: spec.title}
		for i, s := range spec.series {
			rounds, err := r.Samples(s.bench, s.metric)
			if err != nil {
				return nil, err
			}
			var all latency.Sample
			for _, rd := range rounds {
				all = append(all, rd...)
			}
			if len(all) > 0 {
				p.series = append(p.series, series{label: s.label, color: palette[i%len(palette)], data: all})
			}
		}
		if len(p.series) > 0 {
			out = append(out, p)
		}
	}
	return out, nil
}

// Plot geometry, in pixels.
const (
	plotWidth   = 960
	panelHeight = 330
	marginLeft  = 70
	marginRight = 20
	marginTop   = 28
	marginBot   = 110 // axis labels and the legend
)

// Plot draws each panel's distributions as cumulative distributions: x is
// the latency on a log scale, y the percentile on a scale (yOf) that gives
// p0→p50, p50→p90, p90→p99 and p99→p99.9 equal height, so that the tails a
// median hides are as visible as the body.
func Plot(panels []panel) ([]byte, error) {
	if len(panels) == 0 {
		return nil, fmt.Errorf("no latency samples to plot")
	}
	img := image.NewRGBA(image.Rect(0, 0, plotWidth, panelHeight*len(panels)))
	draw.Draw(img, img.Bounds(), image.NewUniform(white), image.Point{}, draw.Src)
	for i, p := range panels {
		drawPanel(img, image.Rect(0, i*panelHeight, plotWidth, (i+1)*panelHeight), p)
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// yOf maps a cumulative fraction to the plot's y scale, on which p0→p50,
// p50→p90, p90→p99, p99→p99.9 and so on each take one unit: linear up to
// the median, logarithmic in 1 − p beyond it.
func yOf(p float64) float64 {
	tail := func(p float64) float64 { return -math.Log10(1 - p) }
	switch {
	case p <= 0.5:
		return p / 0.5
	case p <= 0.9:
		return 1 + (tail(p)-tail(0.5))/(tail(0.9)-tail(0.5))
	}
	return 1 + tail(p)
}

func drawPanel(img *image.RGBA, r image.Rectangle, p panel) {
	area := image.Rect(r.Min.X+marginLeft, r.Min.Y+marginTop, r.Max.X-marginRight, r.Max.Y-marginBot)
	lo, hi := math.Inf(1), math.Inf(-1)
	maxN := 0
	for _, s := range p.series {
		for _, d := range s.data {
			v := millis(d)
			lo, hi = math.Min(lo, v), math.Max(hi, v)
		}
		maxN = max(maxN, len(s.data))
	}
	lo = math.Pow(10, math.Floor(math.Log10(math.Max(lo, 0.001))))
	hi = math.Pow(10, math.Ceil(math.Log10(math.Max(hi, lo*10))))
	yTop := math.Min(yOf(1-0.5/float64(maxN)), 5) // as far as the samples reach, at most p99.99
	yTop = math.Max(yTop, 3)                      // at least up to p99
	px := func(v float64) int {
		f := (math.Log10(v) - math.Log10(lo)) / (math.Log10(hi) - math.Log10(lo))
		return area.Min.X + int(math.Round(f*float64(area.Dx())))
	}
	py := func(y float64) int {
		return area.Max.Y - int(math.Round(y/yTop*float64(area.Dy())))
	}

	text(img, r.Min.X+marginLeft, r.Min.Y+18, p.title, black)
	// Grid and ticks: 1-2-5 on the latency axis, percentiles on the other.
	for dec := lo; dec < hi*1.001; dec *= 10 {
		for _, m := range []float64{1, 2, 5} {
			v := dec * m
			if v > hi*1.001 {
				break
			}
			x := px(v)
			vline(img, x, area.Min.Y, area.Max.Y, grey)
			label := trimFloat(v)
			text(img, x-len(label)*7/2, area.Max.Y+16, label, black)
		}
	}
	text(img, area.Min.X+area.Dx()/2-30, area.Max.Y+32, "latency, ms", black)
	for _, q := range []struct {
		p     float64
		label string
	}{{0, "0"}, {0.5, "p50"}, {0.9, "p90"}, {0.99, "p99"}, {0.999, "p99.9"}, {0.9999, "p99.99"}} {
		y := yOf(q.p)
		if y > yTop+1e-9 {
			break
		}
		hline(img, area.Min.X, area.Max.X, py(y), grey)
		text(img, r.Min.X+8, py(y)+4, q.label, black)
	}
	rect(img, area, black)

	for _, s := range p.series {
		sorted := slices.Clone(s.data)
		slices.Sort(sorted)
		n := float64(len(sorted))
		var prev image.Point
		for i, d := range sorted {
			y := yOf((float64(i) + 0.5) / n)
			pt := image.Pt(px(millis(d)), py(math.Min(y, yTop)))
			if i > 0 {
				line(img, prev, pt, s.color)
			}
			prev = pt
		}
	}

	// Legend: one line per series with its median and 99th percentile.
	y := area.Max.Y + 52
	for _, s := range p.series {
		fill(img, image.Rect(area.Min.X, y-9, area.Min.X+18, y-5), s.color)
		text(img, area.Min.X+26, y, fmt.Sprintf("%s: p50 %s ms, p99 %s ms, %d samples",
			s.label, ms.format(millis(s.data.Percentile(50))), ms.format(millis(s.data.Percentile(99))), len(s.data)), black)
		y += 16
	}
}

// millis converts a duration to (fractional) milliseconds.
func millis(d time.Duration) float64 { return float64(d) / 1e6 }

func trimFloat(v float64) string {
	if v >= 1 {
		return fmt.Sprintf("%.0f", v)
	}
	s := fmt.Sprintf("%.3f", v)
	for s[len(s)-1] == '0' {
		s = s[:len(s)-1]
	}
	return s
}

func text(img *image.RGBA, x, y int, s string, c color.Color) {
	d := font.Drawer{Dst: img, Src: image.NewUniform(c), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
	d.DrawString(s)
}

func fill(img *image.RGBA, r image.Rectangle, c color.RGBA) {
	draw.Draw(img, r, image.NewUniform(c), image.Point{}, draw.Src)
}

func hline(img *image.RGBA, x0, x1, y int, c color.RGBA) {
	for x := x0; x <= x1; x++ {
		img.SetRGBA(x, y, c)
	}
}

func vline(img *image.RGBA, x, y0, y1 int, c color.RGBA) {
	for y := y0; y <= y1; y++ {
		img.SetRGBA(x, y, c)
	}
}

func rect(img *image.RGBA, r image.Rectangle, c color.RGBA) {
	hline(img, r.Min.X, r.Max.X, r.Min.Y, c)
	hline(img, r.Min.X, r.Max.X, r.Max.Y, c)
	vline(img, r.Min.X, r.Min.Y, r.Max.Y, c)
	vline(img, r.Max.X, r.Min.Y, r.Max.Y, c)
}

// line draws a two-pixel-wide segment (Bresenham).
func line(img *image.RGBA, a, b image.Point, c color.RGBA) {
	dx, dy := abs(b.X-a.X), -abs(b.Y-a.Y)
	sx, sy := sign(b.X-a.X), sign(b.Y-a.Y)
	e := dx + dy
	for {
		img.SetRGBA(a.X, a.Y, c)
		img.SetRGBA(a.X+1, a.Y, c)
		img.SetRGBA(a.X, a.Y-1, c)
		if a == b {
			return
		}
		e2 := 2 * e
		if e2 >= dy {
			e += dy
			a.X += sx
		}
		if e2 <= dx {
			e += dx
			a.Y += sy
		}
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

func sign(v int) int {
	switch {
	case v < 0:
		return -1
	case v > 0:
		return 1
	}
	return 0
}
