package agent

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hostward/ward/api"
	"github.com/hostward/ward/config"
	"github.com/hostward/ward/internal/btrfstest"
	"github.com/hostward/ward/internal/latency"
	"github.com/hostward/ward/quota"
)

// BenchmarkOOMKill measures, over b.N OOMs (run with -benchtime 200x or
// more), the time from the moment the event loop read the kernel's OOM
// notification to the moment the instance is fully dead — every process
// killed, the group removed — and its oom_killed event emitted. The hog is
// a child of the instance's main process, so only the agent's whole-group
// kill ends the instance.
func BenchmarkOOMKill(b *testing.B) {
	a := newTestAgent(b, func(c *config.Config) { c.StateDir = benchStateDir(b) })
	var lat latency.Sample
	done := make(chan time.Duration, 1)
	a.oomLatency = func(d time.Duration) { done <- d }
	ctx := context.Background()
	mem := int64(16 << 20)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := a.Start(ctx, api.Request{Name: "hog", Index: i, Limits: api.Limits{MemoryBytes: &mem},
			Command: sh(hog + " & exec sleep 1000")}); err != nil {
			b.Fatal(err)
		}
		select {
		case d := <-done:
			lat.Add(d)
		case <-time.After(30 * time.Second):
			b.Fatal("no OOM kill within 30 s")
		}
	}
	b.StopTimer()
	lat.Report(b, "notified-to-dead")
}

// BenchmarkStartQuota measures what a disk quota adds to a start: two
// agents on one btrfs filesystem, one with the btrfs quota backend and one
// with none, start and stop instances in turn. The difference of the start
// medians is the quota's cost (goal ≤ 0.5 ms).
func BenchmarkStartQuota(b *testing.B) {
	mnt := btrfstest.Mount(b, "commit=1")
	if err := quota.EnableBtrfsQuota(mnt); err != nil {
		b.Fatal(err)
	}
	os.Chmod(mnt, 0o711)
	agentOn := func(backend config.QuotaBackend, uidMin int) *Agent {
		return newTestAgent(b, func(c *config.Config) {
			c.StateDir = benchStateDir(b)
			c.Quota.Backend = backend
			c.Quota.Path = filepath.Join(mnt, string(backend))
			c.Users.UIDMin, c.Users.UIDMax, c.Users.GID = uidMin, uidMin+499, uidMin
		})
	}
	plain, quoted := agentOn(config.QuotaNone, testUIDMin), agentOn(config.QuotaBtrfs, testUIDMin+500)
	ctx := context.Background()
	var withQuota, without latency.Sample
	cycle := func(a *Agent, s *latency.Sample, i int) {
		t0 := time.Now()
		inst, err := a.Start(ctx, api.Request{Name: "bench", Index: i, Command: []string{"/bin/sleep", "1000"}})
		if err != nil {
			b.Fatal(err)
		}
		s.Since(t0)
		if _, err := a.Stop(ctx, api.StopRequest{ID: inst.ID}); err != nil {
			b.Fatal(err)
		}
	}
	for i := 0; i < 5; i++ {
		cycle(plain, new(latency.Sample), i)
		cycle(quoted, new(latency.Sample), i)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cycle(plain, &without, i)
		cycle(quoted, &withQuota, i)
	}
	b.StopTimer()
	without.Report(b, "start-noquota")
	withQuota.Report(b, "start-btrfs")
	b.ReportMetric(float64(withQuota.Percentile(50)-without.Percentile(50))/1e6, "added-p50-ms")
}
