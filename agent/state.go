package agent

import (
	"errors"
	"fmt"
	"slices"

	"github.com/hostward/ward/api"
)

// transitions is the instance state machine: the states each state may
// move to. Every change of an instance's state goes through move, so a
// path the table does not list is a bug caught where it happens, not a
// record that a later agent misreads.
//
//	starting ──▶ running ──▶ stopping ──▶ stopped
//	                │            └──────▶ oom_killed (an OOM kill the stop overtook)
//	                └──▶ exited | crashed | oom_killed (the instance's own end)
//
// A start that fails is rolled back: its record is removed, it never
// reaches a state of its own. An ended state moves only to itself: a
// release retried after a failure, or resumed by the next agent, writes
// the same state again. A sleeping state (frozen instances) joins as
// running ⇄ sleeping, with sleeping's ends those of running.
var transitions = map[api.State][]api.State{
	api.StateStarting:  {api.StateRunning},
	api.StateRunning:   {api.StateStopping, api.StateExited, api.StateCrashed, api.StateOOMKilled},
	api.StateStopping:  {api.StateStopped, api.StateOOMKilled},
	api.StateStopped:   {api.StateStopped},
	api.StateExited:    {api.StateExited},
	api.StateCrashed:   {api.StateCrashed},
	api.StateOOMKilled: {api.StateOOMKilled},
}

// ErrIllegalTransition is a state change the table does not allow.
var ErrIllegalTransition = errors.New("illegal state transition")

// ErrUnknownState is a state this agent does not know (a record written
// by a newer one).
var ErrUnknownState = errors.New("unknown instance state")

// knownState reports whether s is in the table.
func knownState(s api.State) bool {
	_, ok := transitions[s]
	return ok
}

// move changes rec's state to to, or refuses a change the table does not
// list and leaves rec as it was.
func (rec *record) move(to api.State) error {
	next, ok := transitions[rec.State]
	if !ok {
		return fmt.Errorf("instance %s: %w %q", rec.Spec.ID, ErrUnknownState, rec.State)
	}
	if !slices.Contains(next, to) {
		return fmt.Errorf("instance %s: %w: %s → %s", rec.Spec.ID, ErrIllegalTransition, rec.State, to)
	}
	rec.State = to
	return nil
}
