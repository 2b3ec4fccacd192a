package reporter

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"golang.org/x/sys/unix"

	"github.com/hostward/ward/cgroup"
)

// fleet is n instances, each a sleeping process in a real group of its
// own, under one random parent; all are killed and removed when the
// benchmark ends.
type fleet struct {
	tg    *testGroups
	insts []Instance
	paths []string // cgroup paths, for containerd
}

func newFleet(b *testing.B, n int) *fleet {
	b.Helper()
	tg := newTestGroups(b)
	f := &fleet{tg: tg}
	var procs []*exec.Cmd
	b.Cleanup(func() {
		for _, p := range procs {
			p.Process.Kill()
			p.Wait()
		}
	}) // runs before the groups' cleanup (LIFO), so they are empty by then
	t0 := time.Now()
	for i := range n {
		name := fmt.Sprintf("i%04d", i)
		g := tg.create(name, 256<<20)
		cmd := exec.Command("sleep", "100000")
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		procs = append(procs, cmd)
		if err := g.AddProc(cmd.Process.Pid); err != nil {
			b.Fatal(err)
		}
		f.insts = append(f.insts, Instance{ID: name, Name: "bench", Index: i, Dirs: g.Dirs(), MemoryLimit: 256 << 20, CPUShares: 1024})
		f.paths = append(f.paths, g.Path())
	}
	b.Logf("fleet of %d groups (%s) with a sleeping process each in %s", n, tg.m.Mode(), time.Since(t0).Round(time.Millisecond))
	return f
}

func cpuTime() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loadContainerd loads every group once with containerd's cgroups
// package, as an agent keeping them would, and returns a function that
// Stat()s all of them.
func loadContainerd(mode cgroup.Mode, paths []string) (func() ([]any, error), error) {
	if mode == cgroup.V2 {
		var ms []*cgroup2.Manager
		for _, p := range paths {
			m, err := cgroup2.Load(p, cgroup2.WithMountpoint("/sys/fs/cgroup"))
			if err != nil {
				return nil, err
			}
			ms = append(ms, m)
		}
		return func() ([]any, error) {
			out := make([]any, 0, len(ms))
			for _, m := range ms {
				st, err := m.Stat()
				if err != nil {
					return nil, err
				}
				out = append(out, st)
			}
			return out, nil
		}, nil
	}
	root := "/sys/fs/cgroup"
	h := func() ([]cgroup1.Subsystem, error) {
		return []cgroup1.Subsystem{
			cgroup1.NewMemory(root, cgroup1.OptionalSwap()), cgroup1.NewCpu(root), cgroup1.NewCpuacct(root),
			cgroup1.NewPids(root), cgroup1.NewBlkio(root), cgroup1.NewFreezer(root),
		}, nil
	}
	var cgs []cgroup1.Cgroup
	for _, p := range paths {
		cg, err := cgroup1.Load(cgroup1.StaticPath(p), cgroup1.WithHierarchy(h))
		if err != nil {
			return nil, err
		}
		cgs = append(cgs, cg)
	}
	return func() ([]any, error) {
		out := make([]any, 0, len(cgs))
		for _, cg := range cgs {
			st, err := cg.Stat(cgroup1.IgnoreNotExist)
			if err != nil {
				return nil, err
			}
			out = append(out, st)
		}
		return out, nil
	}, nil
}

// BenchmarkSample is the cost of one sample per instance, with 10, 100
// and 1,000 instances running: the sampler (ward) against containerd's
// Stat() of the same groups. cpu-µs/inst is the process's CPU time, user
// and system, from getrusage, per instance per sample; wall-µs/inst the
// elapsed time. ward/host-only is the fixed part of every sample.
func BenchmarkSample(b *testing.B) {
	f := newFleet(b, 1000)
	// The fixed part of every sample: host CPU, memory, load averages and
	// the rtnetlink link dump.
	b.Run("ward/host-only", func(b *testing.B) {
		s := f.tg.sampler()
		b.ReportAllocs()
		c0 := cpuTime()
		for b.Loop() {
			if _, err := s.Sample(nil); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64((cpuTime()-c0).Microseconds())/float64(b.N), "cpu-µs/sample")
	})
	for _, n := range []int{10, 100, 1000} {
		list := f.insts[:n]
		b.Run(fmt.Sprintf("ward/instances=%d", n), func(b *testing.B) {
			s := f.tg.sampler()
			if _, err := s.Sample(list); err != nil { // opens the files
				b.Fatal(err)
			}
			b.ReportAllocs()
			c0 := cpuTime()
			b.ResetTimer()
			for b.Loop() {
				smp, err := s.Sample(list)
				if err != nil || len(smp.Instances) != n {
					b.Fatalf("%v, %d instances", err, len(smp.Instances))
				}
			}
			report(b, n, cpuTime()-c0)
		})
		if n >= 100 {
			// The floor under ward's figure: the same four preads per
			// instance on the sampler's own descriptors, nothing else; and
			// v1 memory.stat (or v2's) alone, the dearest of the four. At
			// 100 and 1,000 instances, because the kernel's price per read
			// grows with the number of cgroups a sample walks.
			for _, part := range []string{"reads-only", "reads-only-memory.stat"} {
				b.Run(fmt.Sprintf("%s/instances=%d", part, n), func(b *testing.B) {
					s := f.tg.sampler()
					defer s.Close() // 4,000 descriptors: not until the fleet goes
					if _, err := s.Sample(list); err != nil {
						b.Fatal(err)
					}
					var files []*kfile
					for _, st := range s.insts {
						if part == "reads-only" {
							files = append(files, &st.mem, &st.cpu, &st.pids, &st.io)
						} else {
							files = append(files, &st.mem)
						}
					}
					buf := make([]byte, 16<<10)
					c0 := cpuTime()
					b.ResetTimer()
					for b.Loop() {
						for _, kf := range files {
							if _, err := kf.read(&buf); err != nil {
								b.Fatal(err)
							}
						}
					}
					report(b, n, cpuTime()-c0)
				})
			}
		}
		b.Run(fmt.Sprintf("containerd/instances=%d", n), func(b *testing.B) {
			stat, err := loadContainerd(f.tg.m.Mode(), f.paths[:n])
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			c0 := cpuTime()
			b.ResetTimer()
			for b.Loop() {
				if _, err := stat(); err != nil {
					b.Fatal(err)
				}
			}
			report(b, n, cpuTime()-c0)
		})
	}
}

func report(b *testing.B, n int, cpu time.Duration) {
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N)/float64(n), "cpu-µs/inst")
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/float64(n), "wall-µs/inst")
}

// agentResult is what an agent-like child process reports.
type agentResult struct {
	CPUPct   float64 `json:"cpu_pct"`   // of one core, over the steady-state run
	RSS      int64   `json:"rss"`       // VmRSS at the end, bytes
	HWM      int64   `json:"hwm"`       // VmHWM, bytes
	Heap     uint64  `json:"heap"`      // Go heap in use at the end, bytes
	Samples  int     `json:"samples"`   // samples taken in the window
	Messages int     `json:"messages"`  // load messages published
	Instance int     `json:"instances"` // instances per sample
}

// BenchmarkAgent runs an agent-like process (this binary, re-executed)
// over 1,000 running instances at a 2 s interval for
// REPORTER_BENCH_CYCLES intervals (default 5), publishing to a real NATS
// server in this process, and reports its CPU use and resident memory.
// ward: Reporter.Run (sample, score, encode, publish). containerd: every
// interval cgroup1/2 Stat() of every group (loaded once), JSON-encoded and
// published, the same cycle built on containerd's reader.
func BenchmarkAgent(b *testing.B) {
	f := newFleet(b, 1000)
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		b.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		b.Fatal("nats server not ready")
	}
	b.Cleanup(ns.Shutdown)
	cycles := 5
	if v, err := strconv.Atoi(os.Getenv("REPORTER_BENCH_CYCLES")); err == nil && v > 0 {
		cycles = v
	}
	for _, impl := range []string{"ward", "containerd"} {
		b.Run(impl+"/instances=1000/interval=2s", func(b *testing.B) {
			var r agentResult
			for b.Loop() {
				r = runAgent(b, "agent-"+impl, f, ns.ClientURL(), cycles)
			}
			b.ReportMetric(r.CPUPct, "cpu-%")
			b.ReportMetric(float64(r.RSS)/(1<<20), "rss-MB")
			b.ReportMetric(float64(r.HWM)/(1<<20), "peak-rss-MB")
			b.ReportMetric(float64(r.Heap)/(1<<20), "heap-MB")
			b.Logf("%s: %+v", impl, r)
		})
	}
}

func runAgent(b *testing.B, role string, f *fleet, url string, cycles int) agentResult {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), roleEnv+"="+role,
		"REPORTER_BENCH_PARENT="+f.tg.m.Parent(),
		"REPORTER_BENCH_MODE="+strconv.Itoa(int(f.tg.m.Mode())),
		"REPORTER_BENCH_NATS="+url,
		"REPORTER_BENCH_CYCLES="+strconv.Itoa(cycles))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		b.Fatalf("%s: %v", role, err)
	}
	var r agentResult
	if err := json.Unmarshal(out, &r); err != nil {
		b.Fatalf("%s: %v: %q", role, err, out)
	}
	if r.Instance != len(f.insts) {
		b.Fatalf("%s sampled %d instances, want %d", role, r.Instance, len(f.insts))
	}
	return r
}

// agentProcess is the child side of BenchmarkAgent.
func agentProcess(role string) int {
	fail := func(err error) int { fmt.Fprintln(os.Stderr, role+":", err); return 1 }
	mode, _ := strconv.Atoi(os.Getenv("REPORTER_BENCH_MODE"))
	cycles, _ := strconv.Atoi(os.Getenv("REPORTER_BENCH_CYCLES"))
	m, err := cgroup.NewManager(cgroup.Config{Mode: cgroup.Mode(mode), Parent: os.Getenv("REPORTER_BENCH_PARENT")})
	if err != nil {
		return fail(err)
	}
	names, err := m.List()
	if err != nil {
		return fail(err)
	}
	var list []Instance
	var paths []string
	for i, n := range names {
		list = append(list, Instance{ID: n, Name: "bench", Index: i, Dirs: groupDirs(m, n), MemoryLimit: 256 << 20, CPUShares: 1024})
		paths = append(paths, m.Path(n))
	}
	nc, err := nats.Connect(os.Getenv("REPORTER_BENCH_NATS"))
	if err != nil {
		return fail(err)
	}
	defer nc.Close()
	const interval = 2 * time.Second
	res := agentResult{Instance: len(list)}
	var c0 time.Duration
	var t0 time.Time
	counter := &countingPublisher{Conn: nc}

	switch role {
	case "agent-ward":
		s, err := NewSampler(SamplerOptions{Mode: cgroup.Mode(mode), Weights: defaultWeights})
		if err != nil {
			return fail(err)
		}
		if _, err := s.Sample(list); err != nil { // open every file before measuring
			return fail(err)
		}
		// The window runs from the first tick to the (cycles+1)-th: exactly
		// `cycles` intervals, each with one full sample and publication.
		// Run's own first sample (at start) is left out, as a one-off.
		ctx, cancel := context.WithCancel(context.Background())
		calls := 0
		src := SourceFunc(func() []Instance {
			calls++
			switch calls {
			case 2:
				c0, t0 = cpuTime(), time.Now()
			case cycles + 2:
				res.CPUPct = float64(cpuTime()-c0) / float64(time.Since(t0)) * 100
				cancel()
			}
			return list
		})
		r, err := New(Options{HostID: "bench", Interval: interval, Sampler: s, Publisher: counter,
			Source: src, Log: slog.New(slog.NewTextHandler(os.Stderr, nil))})
		if err != nil {
			return fail(err)
		}
		r.Run(ctx)
		res.Samples = cycles
	case "agent-containerd":
		stat, err := loadContainerd(cgroup.Mode(mode), paths)
		if err != nil {
			return fail(err)
		}
		if _, err := stat(); err != nil {
			return fail(err)
		}
		// The same window as ward's: from the first tick to the
		// (cycles+1)-th, with a full cycle at each of the first `cycles`.
		t := time.NewTicker(interval)
		<-t.C
		c0, t0 = cpuTime(), time.Now()
		for range cycles {
			ms, err := stat()
			if err != nil {
				return fail(err)
			}
			body, err := json.Marshal(ms)
			if err != nil {
				return fail(err)
			}
			// containerd's metrics are far larger than a load entry;
			// publish in max-payload chunks so the server takes them.
			max := int(nc.MaxPayload())
			for len(body) > 0 {
				k := min(max, len(body))
				counter.Publish("ward.bench.stats", body[:k])
				body = body[k:]
			}
			res.Samples++
			<-t.C
		}
		res.CPUPct = float64(cpuTime()-c0) / float64(time.Since(t0)) * 100
		t.Stop()
	default:
		return 2
	}
	nc.Flush()
	res.Messages = counter.n
	res.RSS, res.HWM = procStatus("VmRSS:"), procStatus("VmHWM:")
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	res.Heap = ms.HeapInuse
	json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

func groupDirs(m *cgroup.Manager, name string) []string {
	if m.Mode() == cgroup.V2 {
		return []string{filepath.Join("/sys/fs/cgroup", m.Path(name))}
	}
	var dirs []string
	for _, c := range cgroup.V1Controllers() {
		dirs = append(dirs, filepath.Join("/sys/fs/cgroup", c, m.Path(name)))
	}
	return dirs
}

type countingPublisher struct {
	*nats.Conn
	n int
}

func (p *countingPublisher) Publish(subj string, data []byte) error {
	p.n++
	return p.Conn.Publish(subj, data)
}

func procStatus(key string) int64 {
	b, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
