package reporter

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func fakeSample(n int) *Sample {
	s := &Sample{
		Time: time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC),
		Host: Host{CPUPct: 12.5, MemPct: 40, Load: 31.75, Cores: 2, LoadAvg: [3]float64{0.5, 0.4, 0.3},
			Net: map[string]NetStat{"lo": {RxBytes: 10, TxBytes: 10}}},
	}
	for i := range n {
		cpu := float64(i)
		s.Instances = append(s.Instances, InstanceSample{ID: fmt.Sprintf("id%03d", i), Name: "app", Index: i, CPUPct: &cpu, Weight: 50})
	}
	return s
}

// decodeParts checks every part and returns the instance ids in order.
func decodeParts(t *testing.T, msgs [][]byte, seq uint64, maxPayload int) []string {
	t.Helper()
	var ids []string
	for i, m := range msgs {
		if len(m) > maxPayload {
			t.Errorf("part %d is %d bytes, above the max payload %d", i+1, len(m), maxPayload)
		}
		var lm LoadMessage
		if err := json.Unmarshal(m, &lm); err != nil {
			t.Fatalf("part %d: %v\n%s", i+1, err, m)
		}
		if lm.Seq != seq || lm.Part != i+1 || lm.Parts != len(msgs) {
			t.Errorf("part %d says seq %d part %d of %d", i+1, lm.Seq, lm.Part, lm.Parts)
		}
		if lm.Host.Cores != 2 || lm.Host.Load != 31.75 || lm.Host.Net["lo"].RxBytes != 10 {
			t.Errorf("part %d: host block %+v", i+1, lm.Host)
		}
		if lm.Instances == nil {
			t.Errorf("part %d: instances is null, want a list", i+1)
		}
		for _, in := range lm.Instances {
			ids = append(ids, in.ID)
		}
	}
	return ids
}

func TestEncodeLoadOneMessage(t *testing.T) {
	s := fakeSample(3)
	msgs, err := EncodeLoad(s, 7, DefaultMaxPayload)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("%d messages, %v", len(msgs), err)
	}
	if ids := decodeParts(t, msgs, 7, DefaultMaxPayload); strings.Join(ids, ",") != "id000,id001,id002" {
		t.Errorf("ids = %v", ids)
	}
	// The contract's field names, as a router reads them.
	var raw map[string]any
	json.Unmarshal(msgs[0], &raw)
	host := raw["host"].(map[string]any)
	for _, k := range []string{"cpu_pct", "mem_pct", "load", "loadavg", "net"} {
		if _, ok := host[k]; !ok {
			t.Errorf("host block lacks %q", k)
		}
	}
	in := raw["instances"].([]any)[0].(map[string]any)
	for _, k := range []string{"id", "name", "index", "cpu_pct", "mem_bytes", "mem_limit_bytes", "mem_pct", "io_read_bps", "io_write_bps", "pids", "load", "weight", "disk_bytes"} {
		if _, ok := in[k]; !ok {
			t.Errorf("instance lacks %q", k)
		}
	}
	if in["io_read_bps"] != nil {
		t.Errorf("unknown io_read_bps = %v, want null", in["io_read_bps"])
	}

	// No instances is still a message.
	msgs, err = EncodeLoad(fakeSample(0), 1, DefaultMaxPayload)
	if err != nil || len(msgs) != 1 || len(decodeParts(t, msgs, 1, DefaultMaxPayload)) != 0 {
		t.Errorf("empty sample: %d messages, %v", len(msgs), err)
	}
}

func TestEncodeLoadSplits(t *testing.T) {
	s := fakeSample(200)
	whole, _ := EncodeLoad(s, 1, DefaultMaxPayload)
	for _, max := range []int{len(whole[0]), len(whole[0]) - 1, 4096, 2000, 1200} {
		msgs, err := EncodeLoad(s, 9, max)
		if err != nil {
			t.Fatalf("max %d: %v", max, err)
		}
		ids := decodeParts(t, msgs, 9, max)
		if len(ids) != 200 {
			t.Fatalf("max %d: %d instances over %d parts, want 200", max, len(ids), len(msgs))
		}
		for i, id := range ids {
			if id != fmt.Sprintf("id%03d", i) {
				t.Fatalf("max %d: instance %d is %s: order lost", max, i, id)
			}
		}
		if max == len(whole[0]) && len(msgs) != 1 {
			t.Errorf("a sample of exactly max payload was split into %d", len(msgs))
		}
		if max < len(whole[0]) && len(msgs) < 2 {
			t.Errorf("max %d: not split", max)
		}
		t.Logf("max %d: %d parts", max, len(msgs))
	}
}

func TestEncodeLoadTooLarge(t *testing.T) {
	s := fakeSample(3)
	s.Instances[1].Name = strings.Repeat("x", 2000)
	msgs, err := EncodeLoad(s, 1, 1500)
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), `"id001"`) {
		t.Errorf("err = %v, want ErrTooLarge naming id001", err)
	}
	if ids := decodeParts(t, msgs, 1, 1500); strings.Join(ids, ",") != "id000,id002" {
		t.Errorf("the others must still go out: %v", ids)
	}
	if _, err := EncodeLoad(s, 1, 100); !errors.Is(err, ErrTooLarge) {
		t.Errorf("host block above the max payload: err = %v", err)
	}
}

// BenchmarkEncodeLoad is the cost of rendering a 1,000-instance sample
// into load messages under the default max payload.
func BenchmarkEncodeLoad(b *testing.B) {
	s := fakeSample(1000)
	b.ReportAllocs()
	var size int
	for b.Loop() {
		msgs, err := EncodeLoad(s, 1, DefaultMaxPayload)
		if err != nil {
			b.Fatal(err)
		}
		size = 0
		for _, m := range msgs {
			size += len(m)
		}
	}
	b.ReportMetric(float64(size), "bytes")
}
