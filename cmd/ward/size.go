package main

import (
	"flag"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/hostward/ward/api"
)

// parseSize reads a byte count such as "256M", "1G", "512MiB" or "1048576".
// Suffixes are binary (K = 1024), as memory limits always are.
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	t = strings.TrimSuffix(strings.TrimSuffix(t, "B"), "i")
	mult := int64(1)
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'k', 'K':
			mult = 1 << 10
		case 'm', 'M':
			mult = 1 << 20
		case 'g', 'G':
			mult = 1 << 30
		case 't', 'T':
			mult = 1 << 40
		}
		if mult > 1 {
			t = t[:n-1]
		}
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || f < 0 || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("invalid size %q: want e.g. 256M, 1G or a byte count", s)
	}
	v := f * float64(mult)
	if v > math.MaxInt64/2 {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return int64(v), nil
}

// formatSize prints bytes with a binary unit, e.g. "256M".
func formatSize(b uint64) string {
	const unit = 1024
	if b < unit {
		return strconv.FormatUint(b, 10) + "B"
	}
	div, exp := uint64(unit), 0
	for n := b / unit; n >= unit && exp < 4; n /= unit {
		div *= unit
		exp++
	}
	v := float64(b) / float64(div)
	s := strconv.FormatFloat(v, 'f', 1, 64)
	s = strings.TrimSuffix(s, ".0")
	return s + string("KMGTP"[exp])
}

// sizeFlag is an optional byte-count flag: nil until set.
type sizeFlag struct{ v *int64 }

func (f *sizeFlag) String() string {
	if f.v == nil {
		return ""
	}
	return strconv.FormatInt(*f.v, 10)
}

func (f *sizeFlag) Set(s string) error {
	v, err := parseSize(s)
	if err != nil {
		return err
	}
	f.v = &v
	return nil
}

// intFlag is an optional integer flag: nil until set.
type intFlag struct{ v *int64 }

func (f *intFlag) String() string {
	if f.v == nil {
		return ""
	}
	return strconv.FormatInt(*f.v, 10)
}

func (f *intFlag) Set(s string) error {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return fmt.Errorf("not an integer: %q", s)
	}
	f.v = &v
	return nil
}

// cpusFlag takes a CPU count ("0.5", "2") and holds it as millicores.
type cpusFlag struct{ v *int64 }

func (f *cpusFlag) String() string {
	if f.v == nil {
		return ""
	}
	return strconv.FormatFloat(float64(*f.v)/1000, 'f', -1, 64)
}

func (f *cpusFlag) Set(s string) error {
	c, err := strconv.ParseFloat(s, 64)
	if err != nil || c < 0 || math.IsNaN(c) || c > 1e6 {
		return fmt.Errorf("invalid CPU count %q: want e.g. 0.5 or 2", s)
	}
	m := int64(math.Round(c * 1000))
	f.v = &m
	return nil
}

// limitFlags registers the limit flags shared by `run` and `limit`; the
// returned function gives the limits that were set (nil fields: not given).
func limitFlags(fs *flag.FlagSet) func() api.Limits {
	var m, sw, d sizeFlag
	var sh, p intFlag
	var c cpusFlag
	fs.Var(&m, "memory", "memory limit, e.g. 256M")
	fs.Var(&sw, "swap", "swap allowed on top of memory, e.g. 0 or 128M")
	fs.Var(&sh, "cpu-shares", "relative CPU weight (v1 shares, 2-262144)")
	fs.Var(&c, "cpus", "hard CPU cap in cores, e.g. 0.5 (0: none)")
	fs.Var(&p, "pids", "maximum number of processes and threads")
	fs.Var(&d, "disk", "disk quota, e.g. 1G (0: none)")
	return func() api.Limits {
		return api.Limits{MemoryBytes: m.v, SwapBytes: sw.v, CPUShares: sh.v, CPUMillicores: c.v, Pids: p.v, DiskBytes: d.v}
	}
}
