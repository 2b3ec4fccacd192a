package reporter

import (
	"fmt"
	"math"

	"github.com/hostward/ward/config"
)

// checkWeights refuses weights that would not keep every load in 0–100.
func checkWeights(w config.Weights) error {
	for _, f := range []struct {
		name string
		v    float64
	}{
		{"weights.host", w.Host},
		{"weights.instance", w.Instance},
		{"weights.cpu", w.CPU},
		{"weights.memory", w.Memory},
	} {
		if !(f.v >= 0 && f.v <= 1) { // also catches NaN
			return fmt.Errorf("reporter: %s must be in [0, 1], got %v", f.name, f.v)
		}
	}
	if s := w.Host + w.Instance; math.Abs(s-1) > 1e-9 {
		return fmt.Errorf("reporter: weights.host + weights.instance must sum to 1, got %v", s)
	}
	if s := w.CPU + w.Memory; math.Abs(s-1) > 1e-9 {
		return fmt.Errorf("reporter: weights.cpu + weights.memory must sum to 1, got %v", s)
	}
	return nil
}

// Load is the load of one thing (the host or an instance), 0–100:
// w.CPU × cpuPct + w.Memory × memPct, each percentage clamped to 0–100
// first. The clamp matters for an instance's CPU, which is measured against
// its fair share and legitimately exceeds 100 when neighbours are idle: an
// instance using three times its share is fully loaded on that axis, and an
// unclamped 300 would drown the memory term and push the load past 100.
func Load(w config.Weights, cpuPct, memPct float64) float64 {
	return w.CPU*clampPct(cpuPct) + w.Memory*clampPct(memPct)
}

// InstanceLoad combines the host's load and an instance's own load into the
// instance's load score: w.Host × host + w.Instance × own.
func InstanceLoad(w config.Weights, host, own float64) float64 {
	return w.Host*host + w.Instance*own
}

// Weight turns a load score into a balancing weight for a router:
// round(100 − load), clamped to 1–100. An idle instance weighs 100, a
// saturated one 1 rather than 0, so that when every instance is saturated
// traffic still spreads over them instead of having nowhere to go.
func Weight(load float64) int {
	if math.IsNaN(load) {
		return 1
	}
	return int(math.Max(1, math.Min(100, math.Round(100-load))))
}

// FairShare is the CPU, in cores, an instance is entitled to when every
// instance is busy: cores × shares / totalShares, capped at millicores/1000
// when millicores > 0. Shares <= 0 count as the kernel default, 1024;
// totalShares must already include this instance's shares.
func FairShare(cores int, shares, totalShares, millicores int64) float64 {
	if shares <= 0 {
		shares = defaultShares
	}
	if totalShares < shares {
		totalShares = shares
	}
	fair := float64(cores) * float64(shares) / float64(totalShares)
	if millicores > 0 {
		fair = math.Min(fair, float64(millicores)/1000)
	}
	return fair
}

// defaultShares is the kernel's cpu.shares of a group nobody configured.
const defaultShares = 1024

func clampPct(v float64) float64 {
	if !(v > 0) { // also NaN
		return 0
	}
	return math.Min(v, 100)
}
