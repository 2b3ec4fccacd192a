package agent

import (
	"os/exec"
	"testing"
	"time"

	"github.com/hostward/ward/config"
	"github.com/hostward/ward/internal/latency"
	"github.com/hostward/ward/internal/testroot"
)

// BenchmarkCompareIsolation is the namespaced start's comparison (issue
// 14): ward's start and stop of a namespaced instance and of a uid-mode
// one (each through an in-process agent, as in BenchmarkStartStop), `runc
// run` of busybox /bin/true with the same limits (as in BenchmarkRuncRun),
// and Debian's bubblewrap running /bin/true with every namespace it has
// and the host's tree read-only, which makes no cgroup at all — all
// interleaved in one loop, the order rotating, so that whatever else the
// machine does weighs on them alike. Run with -benchtime=300x; needs
// root, runc, busybox-static and bubblewrap (scripts/bench installs them).
//
// ward's figures are a start (the instance runs, recorded) and a stop (it
// is gone, everything released, recorded) on their own; runc's and
// bwrap's are whole runs of a program that exits at once.
func BenchmarkCompareIsolation(b *testing.B) {
	testroot.Require(b)
	bwrap, err := exec.LookPath("bwrap")
	if err != nil {
		b.Skip("bubblewrap not installed (apt-get install bubblewrap)")
	}
	buildInit(b)
	ns := newWardCyclerMode(b, config.IsolationNamespaces, 0)
	uid := newWardCyclerMode(b, config.IsolationUID, 500)
	r := newRuncCycler(b)
	bw := []string{"--unshare-all", "--ro-bind", "/", "/", "--tmpfs", "/tmp", "--proc", "/proc", "--dev", "/dev", "/bin/true"}
	var nsStart, nsStop, uidStart, uidStop, runc, bwr latency.Sample
	runs := []func(i int){
		func(i int) {
			s, t := ns.cycle(b, i)
			nsStart.Add(s)
			nsStop.Add(t)
		},
		func(i int) {
			s, t := uid.cycle(b, i)
			uidStart.Add(s)
			uidStop.Add(t)
		},
		func(i int) { runc.Add(r.cycle(b, i)) },
		func(int) {
			t0 := time.Now()
			if out, err := exec.Command(bwrap, bw...).CombinedOutput(); err != nil {
				b.Fatalf("bwrap: %v: %s", err, out)
			}
			bwr.Add(time.Since(t0))
		},
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for k := range runs {
			runs[(i+k)%len(runs)](i)
		}
	}
	b.StopTimer()
	nsStart.Report(b, "ns-start")
	nsStop.Report(b, "ns-stop")
	uidStart.Report(b, "uid-start")
	uidStop.Report(b, "uid-stop")
	runc.Report(b, "runc-run")
	bwr.Report(b, "bwrap-run")
	b.ReportMetric(ratio(bwr, nsStart), "bwrap/ns-start-p50")
	b.ReportMetric(ratio(runc, nsStart), "runc/ns-start-p50")
	b.ReportMetric(ratio(nsStart, uidStart), "ns/uid-start-p50")
}

// newWardCyclerMode is newWardCycler in the given isolation mode, its
// pool offset by uidOffset so that two cyclers in one benchmark never
// lease the same uid.
func newWardCyclerMode(b *testing.B, mode config.IsolationMode, uidOffset int) *wardCycler {
	w := &wardCycler{stateDir: benchStateDir(b)}
	w.a = newTestAgent(b, func(c *config.Config) {
		c.StateDir = w.stateDir
		c.Isolation.Mode = mode
		c.Users.UIDMin += uidOffset
		c.Users.UIDMax = c.Users.UIDMin + 499
	})
	for i := 0; i < 5; i++ {
		w.run(b, "warmup", i)
	}
	return w
}
