package reporter

import (
	"math"
	"strings"
	"testing"

	"github.com/hostward/ward/config"
)

var defaultWeights = config.Default().Report.Weights

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

// TestLoadWorkedExample is the example of the package doc, step by step.
func TestLoadWorkedExample(t *testing.T) {
	w := defaultWeights
	host := Load(w, 50, 40)
	if !near(host, 43) {
		t.Fatalf("host load = %v, want 0.3*50 + 0.7*40 = 43", host)
	}
	fair := FairShare(2, 1024, 4*1024, 250)
	if !near(fair, 0.25) {
		t.Fatalf("fair share = %v cores, want min(2*1024/4096, 250/1000) = 0.25", fair)
	}
	if uncapped := FairShare(2, 1024, 4*1024, 0); !near(uncapped, 0.5) {
		t.Fatalf("uncapped fair share = %v, want 0.5", uncapped)
	}
	sharePct := 20 / fair
	own := Load(w, sharePct, 50)
	if !near(own, 59) {
		t.Fatalf("own load = %v, want 0.3*80 + 0.7*50 = 59", own)
	}
	load := InstanceLoad(w, host, own)
	if !near(load, 54.2) {
		t.Fatalf("instance load = %v, want 0.3*43 + 0.7*59 = 54.2", load)
	}
	if got := Weight(load); got != 46 {
		t.Fatalf("weight = %d, want round(100 - 54.2) = 46", got)
	}
}

func TestLoadFormulaEdges(t *testing.T) {
	w := config.Weights{Host: 0.5, Instance: 0.5, CPU: 0.6, Memory: 0.4}
	for _, c := range []struct {
		cpu, mem, want float64
	}{
		{0, 0, 0},
		{100, 100, 100},
		{300, 10, 0.6*100 + 0.4*10}, // above its fair share: clamped, not 184
		{-5, 50, 20},                // a counter glitch never lowers the load
		{math.NaN(), 50, 20},
	} {
		if got := Load(w, c.cpu, c.mem); !near(got, c.want) {
			t.Errorf("Load(%v, %v) = %v, want %v", c.cpu, c.mem, got, c.want)
		}
	}
	if got := InstanceLoad(w, 80, 20); !near(got, 50) {
		t.Errorf("InstanceLoad(80, 20) = %v, want 50", got)
	}
	for load, want := range map[float64]int{0: 100, 0.4: 100, 0.6: 99, 50: 50, 99.4: 1, 100: 1, 250: 1, -10: 100, math.NaN(): 1} {
		if got := Weight(load); got != want {
			t.Errorf("Weight(%v) = %d, want %d", load, got, want)
		}
	}
	// Unset shares are the kernel default; a lone instance gets every core.
	if got := FairShare(2, 0, 1024, 0); !near(got, 2) {
		t.Errorf("FairShare(unset shares, alone) = %v, want 2", got)
	}
	if got := FairShare(4, 512, 512+1024+2048, 0); !near(got, 4*512.0/3584) {
		t.Errorf("FairShare(512 of 3584 on 4 cores) = %v", got)
	}
}

func TestWeightsChecked(t *testing.T) {
	for name, w := range map[string]config.Weights{
		"weights.host":                    {Host: -0.1, Instance: 1.1, CPU: 0.5, Memory: 0.5},
		"weights.memory":                  {Host: 0.5, Instance: 0.5, CPU: 0.5, Memory: math.NaN()},
		"weights.host + weights.instance": {Host: 0.5, Instance: 0.6, CPU: 0.5, Memory: 0.5},
		"weights.cpu + weights.memory":    {Host: 0.5, Instance: 0.5, CPU: 0.5, Memory: 0.4},
		"weights.instance":                {Host: 0.3, Instance: 2, CPU: 0.3, Memory: 0.7},
	} {
		_, err := NewSampler(SamplerOptions{Mode: 2, Weights: w})
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("weights %+v: err = %v, want one naming %s", w, err, name)
		}
	}
}
