//go:build !linux

package instdir

import (
	"errors"
	"os"
)

var errUnsupported = errors.New("instdir: instances run on Linux only")

// Prepare, Rotate and StderrTail have nothing to work on outside Linux:
// no instance runs there. They exist so that their callers compile.
func Prepare(string, int, int) (stdout, stderr *os.File, err error) {
	return nil, nil, errUnsupported
}
func Rotate(string, Log, int, int64, int) error { return errUnsupported }
func StderrTail(string, int) string             { return "" }
