package spawn

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/hostward/ward/internal/latency"
)

// BenchmarkSpawn splits a start's process part from the agent's: the
// same /bin/true started in a fresh cgroup and waited for, directly (the
// pool user's identity set by Go's fork), through ward-init in uid mode,
// and through ward-init with namespaces and the instance's view, all
// interleaved. ward-init is the real one, built here. Run with
// -benchtime=300x.
func BenchmarkSpawn(b *testing.B) {
	dir := b.TempDir()
	helper := filepath.Join(dir, "ward-init")
	if out, err := exec.Command("go", "build", "-o", helper, "github.com/hostward/ward/cmd/ward-init").CombinedOutput(); err != nil {
		b.Fatalf("build ward-init: %v\n%s", err, out)
	}
	work, err := os.MkdirTemp("/var/lib", "ward-spawn-bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(work) })
	os.Chown(work, testUID, testGID)
	out, errf := outputFiles(b)
	g := newGroup(b)
	base := Spec{Path: "/bin/true", Args: []string{"true"}, Dir: work, UID: testUID, GID: testGID, Stdout: out, Stderr: errf}
	place(&base, g)
	uid := base
	uid.Helper, uid.NOFILE = helper, 1024
	ns := uid
	ns.Isolation = &Isolation{Hostname: "bench-0", Writable: work, TmpBytes: 16 << 20, Hide: []string{"/etc/ward", "/var/lib/ward"}}
	specs := []Spec{base, uid, ns}
	var samples [3]latency.Sample
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for k := range specs {
			j := (i + k) % len(specs)
			t0 := time.Now()
			p, err := Start(specs[j])
			if err != nil {
				b.Fatal(err)
			}
			<-p.Done()
			samples[j].Add(time.Since(t0))
		}
	}
	b.StopTimer()
	samples[0].Report(b, "direct")
	samples[1].Report(b, "ward-init-uid")
	samples[2].Report(b, "ward-init-ns")
}
