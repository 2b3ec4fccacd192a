package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/hostward/ward/config"
	"github.com/hostward/ward/nsinit"
	"github.com/hostward/ward/spawn"
)

// isolation is what the agent gives ward-init for every start: found and
// computed once, at New.
type isolation struct {
	init   string   // ward-init's path
	hidden []string // host paths a namespaced instance must not see
	nofile uint64   // RLIMIT_NOFILE of every instance (instanceFileLimit)
}

// newIsolation finds ward-init and lists what namespaced instances must
// not see: ward's state (records, every instance's directory), its socket,
// its configuration and the bus credentials it names, and isolation.hide.
func newIsolation(cfg *config.Config, opts Options) (isolation, error) {
	is := isolation{init: opts.Init}
	if is.init == "" {
		p, err := nsinit.Path()
		if err != nil {
			return is, fmt.Errorf("agent: %w", err)
		}
		is.init = p
	}
	st, err := os.Stat(is.init)
	if err != nil || !st.Mode().IsRegular() || st.Mode().Perm()&0o100 == 0 {
		return is, fmt.Errorf("agent: ward-init not found at %s (%v): every instance starts through it; install it beside the ward binary (go build -o %s ./cmd/ward-init)", is.init, errOr(err, "not an executable file"), filepath.Join(filepath.Dir(is.init), nsinit.Name))
	}
	cfgFile := opts.ConfigFile
	if cfgFile == "" {
		cfgFile = config.DefaultPath
	}
	hide := []string{
		cfg.StateDir, cfg.InstancesDir(), filepath.Dir(cfg.Socket), filepath.Dir(cfgFile), cfgFile,
		cfg.NATS.CredsFile, cfg.NATS.NkeySeedFile, cfg.NATS.TLS.KeyFile,
	}
	hide = append(hide, cfg.Isolation.Hide...)
	for _, h := range hide {
		if h != "" && filepath.IsAbs(h) {
			is.hidden = append(is.hidden, filepath.Clean(h))
		}
	}
	slices.Sort(is.hidden)
	is.hidden = slices.Compact(is.hidden)
	return is, nil
}

func errOr(err error, s string) string {
	if err != nil {
		return err.Error()
	}
	return s
}

// spawnIsolation fills in what spec needs from ward-init for rec.
func (a *Agent) spawnIsolation(spec *spawn.Spec, rec *record) {
	spec.Helper = a.iso.init
	spec.NOFILE = a.iso.nofile
	if a.cfg.Isolation.Mode != config.IsolationNamespaces {
		return
	}
	spec.Isolation = &spawn.Isolation{
		Hostname: hostname(rec.Spec.Name, rec.Spec.Index),
		Writable: rec.Dir,
		TmpBytes: a.cfg.Isolation.TmpBytes,
		Hide:     a.iso.hidden,
	}
}

// hostMax is HOST_NAME_MAX: sethostname refuses longer names.
const hostMax = 64

// hostname is an instance's hostname, <name>-<index>, its name cut so
// the whole fits in HOST_NAME_MAX.
func hostname(name string, index int) string {
	suffix := "-" + strconv.Itoa(index)
	if len(name)+len(suffix) > hostMax {
		name = name[:hostMax-len(suffix)]
	}
	return name + suffix
}
