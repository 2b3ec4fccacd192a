//go:build !linux

package acl

import "errors"

var errUnsupported = errors.New("acl: the deny list is set on Linux only")

// ApplyDeny, UndoDeny and CheckDeny have no POSIX ACLs to work on outside
// Linux. They exist so that their callers compile.
func ApplyDeny([]string, uint32, string) (DenyReport, error) { return DenyReport{}, errUnsupported }
func UndoDeny(string) (UndoReport, error)                    { return UndoReport{}, errUnsupported }
func CheckDeny([]string, uint32) (DenyStatus, error)         { return DenyStatus{}, errUnsupported }
