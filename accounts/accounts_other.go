//go:build !linux

package accounts

import "errors"

var errUnsupported = errors.New("accounts: pool accounts are written on Linux only")

// Ensure and Undo write /etc files of a Linux host. They exist so that
// their callers compile.
func Ensure(Entries, string) (Report, error) { return Report{}, errUnsupported }
func Undo(string) (Report, error)            { return Report{}, errUnsupported }
