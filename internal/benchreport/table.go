package main

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// maxSpread is how far apart a comparison's rounds may be: the suite's
// promise is that reruns on a noisy machine give the same ratios within
// 15 %.
const maxSpread = 0.15

// unit says how a figure is printed.
type unit int

const (
	ms    unit = iota // milliseconds
	usec              // microseconds
	sec               // seconds
	ratio             // a dimensionless factor, printed with ×
	pct               // percent
	mb                // mebibytes
	rate              // per second, with thousands separators
	count             // a whole number
)

func (u unit) format(v float64) string {
	switch u {
	case ms:
		switch {
		case v < 1:
			return strconv.FormatFloat(v, 'f', 3, 64)
		case v < 1000:
			return strconv.FormatFloat(v, 'f', 2, 64)
		}
		return strconv.FormatFloat(v, 'f', 0, 64)
	case usec, sec, mb:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case ratio:
		return strconv.FormatFloat(v, 'f', 2, 64) + "×"
	case pct:
		return strconv.FormatFloat(v, 'f', 2, 64) + " %"
	case rate:
		return thousands(int64(math.Round(v)))
	}
	return strconv.FormatFloat(v, 'f', 0, 64)
}

// withSymbol formats v followed by its unit's symbol, where format
// leaves it out.
func (u unit) withSymbol(v float64) string {
	switch u {
	case ms:
		return u.format(v) + " ms"
	case usec:
		return u.format(v) + " µs"
	case sec:
		return u.format(v) + " s"
	case mb:
		return u.format(v) + " MB"
	case rate:
		return u.format(v) + "/s"
	}
	return u.format(v)
}

func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// figure is one value per round, ok false where the round lacks it.
type figure func(round int) (float64, bool)

// metric is a benchmark's reported figure, round by round.
func (r *Run) metric(bench, name string) figure {
	rounds := r.Rounds(bench)
	return func(i int) (float64, bool) {
		if i >= len(rounds) {
			return 0, false
		}
		v, ok := rounds[i].Metrics[name]
		return v, ok
	}
}

// over is num / den, round by round.
func over(num, den figure) figure {
	return func(i int) (float64, bool) {
		n, ok1 := num(i)
		d, ok2 := den(i)
		if !ok1 || !ok2 || d == 0 {
			return 0, false
		}
		return n / d, true
	}
}

// values returns the rounds' figures that exist.
func (f figure) values(rounds int) []float64 {
	var vs []float64
	for i := range rounds {
		if v, ok := f(i); ok {
			vs = append(vs, v)
		}
	}
	return vs
}

// spread is how far apart the values are: (max − min) / min. ok is false
// for fewer than two values.
func spread(vs []float64) (float64, bool) {
	if len(vs) < 2 {
		return 0, false
	}
	lo, hi := vs[0], vs[0]
	for _, v := range vs[1:] {
		lo, hi = min(lo, v), max(hi, v)
	}
	if lo <= 0 {
		return 0, false
	}
	return hi/lo - 1, true
}

func median(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	c := slices.Clone(vs)
	slices.Sort(c)
	if len(c)%2 == 1 {
		return c[len(c)/2]
	}
	return (c[len(c)/2-1] + c[len(c)/2]) / 2
}

// column is one column of a per-round table.
type column struct {
	head  string
	unit  unit
	value figure
	// check marks a comparison: its rounds must lie within maxSpread of
	// each other, or the table flags it.
	check bool
}

// table renders one row per round and a last row with each column's
// spread across the rounds. It returns the heads of the checked columns
// whose rounds are more than maxSpread apart, with their spread. A column
// no round has a figure for (a metric an older benchmark did not report)
// is left out.
func table(b *strings.Builder, cols []column, rounds int) (flagged []string) {
	cols = slices.DeleteFunc(slices.Clone(cols), func(c column) bool { return len(c.value.values(rounds)) == 0 })
	b.WriteString("| round |")
	for _, c := range cols {
		b.WriteString(" " + c.head + " |")
	}
	b.WriteString("\n|---|")
	for range cols {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	for i := range rounds {
		fmt.Fprintf(b, "| %d |", i+1)
		for _, c := range cols {
			if v, ok := c.value(i); ok {
				b.WriteString(" " + c.unit.format(v) + " |")
			} else {
				b.WriteString(" – |")
			}
		}
		b.WriteString("\n")
	}
	if rounds < 2 {
		return nil
	}
	b.WriteString("| spread |")
	for _, c := range cols {
		s, ok := spread(c.value.values(rounds))
		switch {
		case !ok:
			b.WriteString(" |")
		case c.check && s > maxSpread:
			fmt.Fprintf(b, " **%.0f %% > 15 %%** |", s*100)
			flagged = append(flagged, fmt.Sprintf("%s (%.0f %%)", c.head, s*100))
		default:
			fmt.Fprintf(b, " %.0f %% |", s*100)
		}
	}
	b.WriteString("\n")
	return flagged
}

// roundCount is the most rounds any of the benchmarks ran.
func (r *Run) roundCount(benches ...string) int {
	n := 0
	for _, b := range benches {
		n = max(n, len(r.Rounds(b)))
	}
	return n
}
