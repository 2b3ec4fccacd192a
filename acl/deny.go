package acl

import "errors"

// ErrJournalGID reports a deny journal written for another gid: the entries
// on disk deny a group the configuration no longer names.
var ErrJournalGID = errors.New("deny journal is for another gid")

// DenyReport says what ApplyDeny did. Paths are the resolved targets except
// in Absent, which lists deny-list paths as given.
type DenyReport struct {
	Denied   []string // given the entry by this run
	Already  []string // carried the entry already
	Absent   []string // deny-list paths that do not exist (skipped)
	Restored []string // no longer on the list: their ACL is as before again
}

// UndoReport says what UndoDeny did.
type UndoReport struct {
	Restored []string // ACL back to the recorded bytes (or none)
	Skipped  []string // gone or replaced since the apply: "<path>: <why>"
}

// DenyStatus is the deny list as found on disk, by CheckDeny.
type DenyStatus struct {
	Denied []string // targets carrying the entry
	Drift  []string // present targets lacking it
	Absent []string // deny-list paths that do not exist
}
