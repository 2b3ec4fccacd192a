package quota

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/hostward/ward/config"
	"github.com/hostward/ward/internal/latency"
)

// BenchmarkCreateRemove is the quota's share of an instance's start and
// stop on btrfs: Create with a 1 GiB limit (subvolume, level-1 qgroup,
// assignment, limit) and Remove (qgroup dropped, subvolume destroyed).
func BenchmarkCreateRemove(b *testing.B) {
	f := newBtrfsFS(b, true)
	var create, remove latency.Sample
	i := 0
	for b.Loop() {
		tg := f.target(fmt.Sprintf("i%d", i))
		i++
		t0 := time.Now()
		if err := f.b.Create(tg, 1<<30); err != nil {
			b.Fatal(err)
		}
		create.Since(t0)
		t0 = time.Now()
		if err := f.b.Remove(tg); err != nil {
			b.Fatal(err)
		}
		remove.Since(t0)
	}
	create.Report(b, "create")
	remove.Report(b, "remove")
}

// BenchmarkCreate compares, interleaved on the same btrfs filesystem,
// Create of a quota'd directory with the plain mkdir+chmod of the none
// backend that it replaces; added-p50-ms is what the quota adds to an
// instance start (goal: <= 0.5 ms). Removal is not measured.
func BenchmarkCreate(b *testing.B) {
	f := newBtrfsFS(b, true)
	plain, err := New(config.QuotaNone, f.mnt)
	if err != nil {
		b.Fatal(err)
	}
	var quota, mkdir latency.Sample
	var made []Target
	i := 0
	for b.Loop() {
		q := f.target(fmt.Sprintf("q%d", i))
		p := Target{Dir: filepath.Join(f.instances, fmt.Sprintf("p%d", i))}
		i++
		t0 := time.Now()
		if err := f.b.Create(q, 1<<30); err != nil {
			b.Fatal(err)
		}
		quota.Since(t0)
		t0 = time.Now()
		if err := plain.Create(p, 0); err != nil {
			b.Fatal(err)
		}
		mkdir.Since(t0)
		made = append(made, q, p)
		if len(made) >= 200 {
			b.StopTimer()
			removeTargets(b, f, made)
			made = made[:0]
			b.StartTimer()
		}
	}
	b.StopTimer()
	removeTargets(b, f, made)
	quota.Report(b, "btrfs")
	mkdir.Report(b, "mkdir")
	b.ReportMetric(float64((quota.Percentile(50)-mkdir.Percentile(50)).Microseconds())/1000, "added-p50-ms")
}

func removeTargets(b *testing.B, f *btrfsFS, ts []Target) {
	for _, t := range ts {
		if err := f.b.Remove(t); err != nil {
			b.Fatal(err)
		}
	}
}
