package testagent

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hostward/ward/agent"
	"github.com/hostward/ward/api"
	"github.com/hostward/ward/config"
	"github.com/hostward/ward/internal/leakcheck"
	"github.com/hostward/ward/internal/testroot"
)

// Config returns a configuration over fresh state: uids [uidMin, uidMin+999].
func Config(t testing.TB, uidMin int) *config.Config {
	t.Helper()
	testroot.Require(t)
	// /var/lib, where a real state dir lives (and not /var/tmp, whose ext4
	// block group the other tests churn: file creation there gets slow).
	dir, err := os.MkdirTemp("/var/lib", "ward-test-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o711)
	cfg := config.Default()
	cfg.HostID = fmt.Sprintf("h%06x", rand.Uint32()&0xffffff)
	cfg.StateDir = filepath.Join(dir, "state")
	cfg.Socket = filepath.Join(dir, "ward.sock")
	cfg.Cgroup.Parent = fmt.Sprintf("/ward-test-%08x", rand.Uint32())
	cfg.Users.UIDMin, cfg.Users.UIDMax, cfg.Users.GID = uidMin, uidMin+999, uidMin
	cfg.Ports.Min = 30000 + rand.IntN(300)*100
	cfg.Ports.Max = cfg.Ports.Min + 99
	cfg.Stop.Timeout = config.Duration(2 * time.Second)
	cfg.Reconcile.Interval = config.Duration(time.Second)
	// Below this host's hard limit, which root here may not raise.
	cfg.Isolation.NOFILE = 4096
	t.Cleanup(func() {
		leakcheck.RemoveParent(cfg.Cgroup.Parent)
		os.RemoveAll(dir)
	})
	return cfg
}

// New starts an agent over cfg. On cleanup every instance still running is
// stopped and the leak scanner must find nothing.
func New(t testing.TB, cfg *config.Config) *agent.Agent {
	t.Helper()
	a, err := agent.New(agent.Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		l, _ := a.List(context.Background(), api.ListRequest{})
		zero := int64(0)
		for _, in := range l.Instances {
			if !in.State.Terminal() {
				a.Stop(context.Background(), api.StopRequest{ID: in.ID, TimeoutMS: &zero})
			}
		}
		a.Close()
		leakcheck.Check(t, cfg, nil)
	})
	return a
}
