//go:build !linux

package agent

import "errors"

// memTotal is unknown outside Linux, where no instance runs.
func memTotal() (int64, error) { return 0, errors.New("agent: instances run on Linux only") }

func mountsUnder(string) ([]string, error) { return nil, nil }
func detachMount(string) error             { return errors.New("agent: instances run on Linux only") }
