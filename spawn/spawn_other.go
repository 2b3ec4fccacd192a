//go:build !linux

package spawn

import (
	"context"
	"errors"

	"golang.org/x/sys/unix"
)

var errUnsupported = errors.New("spawn: instances run on Linux only")

// Process is unusable outside Linux; Start and Adopt always fail. The type
// exists so that code using it still compiles on a developer's machine.
type Process struct {
	Pid       int
	StartTime uint64
}

func Start(Spec) (*Process, error)                    { return nil, errUnsupported }
func Adopt(int, uint64) (*Process, error)             { return nil, errUnsupported }
func StartTime(int) (uint64, error)                   { return 0, errUnsupported }
func (p *Process) Wait(context.Context) (Exit, error) { return Exit{}, errUnsupported }
func (p *Process) Done() <-chan struct{}              { return nil }
func (p *Process) Exited() Exit                       { return Exit{} }
func (p *Process) Signal(unix.Signal) error           { return errUnsupported }
func (p *Process) TermInit() error                    { return errUnsupported }
