package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hostward/ward/agent"
	"github.com/hostward/ward/api"
	"github.com/hostward/ward/config"
	"github.com/hostward/ward/internal/btrfstest"
	"github.com/hostward/ward/internal/testagent"
	"github.com/hostward/ward/quota"
)

type fillResult struct {
	PID    int    `json:"pid"`
	Bytes  int64  `json:"bytes"`
	Op     string `json:"op"`
	Errno  string `json:"errno"`
	Capped bool   `json:"capped"`
}

const mib = 1 << 20

// within5 reports whether got is within 5 % of want.
func within5(got, want int64) bool { return got >= want*95/100 && got <= want*105/100 }

// TestContainDiskFill fills an instance's directory on a btrfs quota: the
// writes stop with EDQUOT within 5 % of the limit, the neighbour still
// writes, usage.disk_bytes reports the fill, and a limit raised live lets
// the same instance write up to the new limit.
func TestContainDiskFill(t *testing.T) {
	mnt := btrfstest.Mount(t, "commit=1")
	if err := quota.EnableBtrfsQuota(mnt); err != nil {
		t.Fatal(err)
	}
	os.Chmod(mnt, 0o711)
	ty := newTenancyWith(t, func(c *config.Config) {
		c.Quota.Backend = config.QuotaBtrfs
		c.Quota.Path = mnt
	})
	const limit = 20 * mib
	neighbour := ty.start("neighbour", api.Limits{DiskBytes: i64(limit)}, "fill", "-await", "-max", "8388608", "-stay")
	neighbour.result(phaseAwaiting, nil)

	// The filler's log is inside its full quota: its results go to a file
	// outside it too, in its private /tmp, which the host reads through
	// its root, while it lives (the script does not end: the tenant's
	// report of it would fail on the full quota and end the instance).
	out := "/tmp/results"
	filler := ty.start("filler", api.Limits{DiskBytes: i64(limit)}, "exec", "-stay", "--", "/bin/sh", "-c",
		"mkdir more && "+tenantBin+" fill -out "+out+"; "+tenantBin+" fill -await -out "+out+" -dir more; exec sleep 1000")
	results := &outFile{t: t, path: fmt.Sprintf("/proc/%d/root%s", *filler.inst.PID, out)}
	var first fillResult
	results.next(phaseDone, &first)
	if first.Errno != "EDQUOT" || !within5(first.Bytes, limit) {
		t.Fatalf("fill under a %d-byte quota: %+v, want EDQUOT within 5 %%", limit, first)
	}

	neighbour.signal(syscall.SIGUSR1)
	var nb fillResult
	neighbour.result(phaseDone, &nb)
	if !nb.Capped || nb.Bytes != 8*mib {
		t.Fatalf("neighbour: %+v, want 8 MiB written without an error", nb)
	}

	// Usage is the filesystem's accounting, current as of its last commit
	// (every second on this mount).
	deadline := time.Now().Add(10 * time.Second)
	for {
		in := filler.info()
		if in.Usage.DiskBytes != nil && within5(int64(*in.Usage.DiskBytes), limit) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("usage.disk_bytes %v, want about %d", ptrString(in.Usage.DiskBytes), limit)
		}
		time.Sleep(100 * time.Millisecond)
	}

	in, err := ty.a.Limit(context.Background(), api.LimitRequest{ID: filler.inst.ID, Limits: api.Limits{DiskBytes: i64(2 * limit)}})
	if err != nil {
		t.Fatal(err)
	}
	if *in.Limits.DiskBytes != 2*limit {
		t.Fatalf("limit: disk_bytes %d", *in.Limits.DiskBytes)
	}
	var waiting fillResult
	results.next(phaseAwaiting, &waiting)
	if err := syscall.Kill(filler.hostPID(waiting.PID), syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	var second fillResult
	results.next(phaseDone, &second)
	if second.Errno != "EDQUOT" || !within5(first.Bytes+second.Bytes, 2*limit) {
		t.Fatalf("after raising the quota to %d: %+v (first fill %d bytes), want EDQUOT near the new limit", 2*limit, second, first.Bytes)
	}
	neighbour.mustRun()
	ty.answers()
}

// outFile reads the result lines a tenant appends to an -out file.
type outFile struct {
	t    *testing.T
	path string
	seen int
}

// next waits for the next line of the given phase and decodes it into v.
func (o *outFile) next(phase string, v any) {
	o.t.Helper()
	deadline := time.Now().Add(resultTimeout)
	for {
		b, _ := os.ReadFile(o.path)
		lines := strings.Split(string(b), "\n")
		for ; o.seen < len(lines)-1; o.seen++ {
			var h struct {
				Phase string `json:"phase"`
			}
			l := lines[o.seen]
			if json.Unmarshal([]byte(l), &h) == nil && h.Phase == phase {
				o.seen++
				o.t.Logf("result: %s", l)
				if err := json.Unmarshal([]byte(l), v); err != nil {
					o.t.Fatal(err)
				}
				return
			}
		}
		if time.Now().After(deadline) {
			o.t.Fatalf("no %q line in %s: %q", phase, o.path, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestQuotaVerifiedAtStart: an agent configured for btrfs quotas on a
// filesystem without them refuses to start, saying why; `ward setup` turns
// them on, after which doctor reports enforcement and the agent starts.
func TestQuotaVerifiedAtStart(t *testing.T) {
	mnt := btrfstest.Mount(t, "commit=1")
	os.Chmod(mnt, 0o711)
	cfg := testagent.Config(t, containUIDMin)
	cfg.Quota.Backend, cfg.Quota.Path = config.QuotaBtrfs, mnt
	_, err := agent.New(agent.Options{Config: cfg})
	if !errors.Is(err, quota.ErrNotEnforced) || !strings.Contains(err.Error(), "quota.backend btrfs") {
		t.Fatalf("agent on btrfs without quotas: %v, want a refusal wrapping ErrNotEnforced", err)
	}

	cfgPath := filepath.Join(filepath.Dir(cfg.StateDir), "ward.yaml")
	yaml := yamlOf(cfg) + fmt.Sprintf("quota: {backend: btrfs, path: %s}\nacl: {deny: []}\n", mnt)
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	doctorQuota := func() string {
		out, _, _ := runWard(t, "doctor", "--config", cfgPath)
		for _, l := range strings.Split(out, "\n") {
			if strings.Contains(l, "quota") {
				return l
			}
		}
		return out
	}
	if l := doctorQuota(); !strings.Contains(l, "FAIL") {
		t.Errorf("doctor before setup: %q, want FAIL", l)
	}
	out, errOut, code := runWard(t, "setup", "--config", cfgPath, "--etc-dir", copyEtc(t))
	if code != 0 || !strings.Contains(out, "backend btrfs enforces on "+mnt) {
		t.Fatalf("ward setup: code %d\n%s%s", code, out, errOut)
	}
	if l := doctorQuota(); !strings.Contains(l, "OK") {
		t.Errorf("doctor after setup: %q, want OK", l)
	}
	a, err := agent.New(agent.Options{Config: cfg})
	if err != nil {
		t.Fatalf("agent after ward setup: %v", err)
	}
	a.Close()
}
