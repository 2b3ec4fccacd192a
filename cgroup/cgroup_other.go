//go:build !linux

package cgroup

import (
	"context"
	"errors"
	"os"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

var errUnsupported = errors.New("cgroup: control groups are only supported on Linux")

// Manager is unusable outside Linux; NewManager always fails. The type
// exists so that code using it still compiles on a developer's machine.
type Manager struct{}

// HostMode is 0: no cgroups outside Linux.
func HostMode() Mode { return 0 }

func NewManager(cfg Config) (*Manager, error) {
	if _, err := cfg.validate(); err != nil {
		return nil, err
	}
	return nil, errUnsupported
}

func (m *Manager) Mode() Mode                                           { return 0 }
func (m *Manager) Parent() string                                       { return "" }
func (m *Manager) Controllers() []string                                { return nil }
func (m *Manager) Path(name string) string                              { return "" }
func (m *Manager) Create(string, *specs.LinuxResources) (*Group, error) { return nil, errUnsupported }
func (m *Manager) Load(string) (*Group, error)                          { return nil, errUnsupported }
func (m *Manager) List() ([]string, error)                              { return nil, errUnsupported }
func (m *Manager) Remove(string) error                                  { return errUnsupported }
func (m *Manager) Lock() (*os.File, error)                              { return nil, errUnsupported }

// Group is unusable outside Linux.
type Group struct{}

func (g *Group) Name() string                              { return "" }
func (g *Group) Path() string                              { return "" }
func (g *Group) Update(*specs.LinuxResources) error        { return errUnsupported }
func (g *Group) Resources() (*specs.LinuxResources, error) { return nil, errUnsupported }
func (g *Group) Stats() (*Stats, error)                    { return nil, errUnsupported }
func (g *Group) Pids() ([]int, error)                      { return nil, errUnsupported }
func (g *Group) Signal(unix.Signal) error                  { return errUnsupported }
func (g *Group) KillAll() error                            { return errUnsupported }
func (g *Group) WaitEmpty(context.Context) error           { return errUnsupported }
func (g *Group) Delete() error                             { return errUnsupported }
func (g *Group) Remove() error                             { return errUnsupported }
func (g *Group) Dirs() []string                            { return nil }
func (g *Group) MemoryDir() string                         { return "" }
func (g *Group) AddProc(int) error                         { return errUnsupported }
