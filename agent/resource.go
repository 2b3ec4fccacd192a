package agent

import (
	"errors"
	"fmt"
	"sync"

	"github.com/hostward/ward/api"
)

// resource is one thing an instance holds on the host — its leases, its
// record, its cgroup, its directory, its processes, the watches and
// announcements that follow it. The agent keeps them in one ordered list
// (Agent.steps): a start creates them forwards, each given what the
// earlier ones made (fields of the instance); a failed start releases
// exactly those it made, in reverse; an ended instance releases them all
// in reverse; a restarted agent adopts them forwards; a limit change
// updates them forwards and undoes them in reverse if one refuses; and
// the leak scan asks each for what it finds on the host that no record
// owns. A new kind of per-instance resource is one new type and one line
// in the list.
//
// Every method is called with in.opMu held, so a resource sees one
// lifecycle operation of an instance at a time.
type resource interface {
	fmt.Stringer
	// create makes the resource for a new instance.
	create(in *instance) error
	// adopt takes back, after a restart, what the record of a live
	// instance says exists. Something gone is not an error: the resource
	// leaves its field of the instance empty and recover decides.
	adopt(in *instance) error
	// update puts limits l in force, the record still holding the old
	// ones. One that fails leaves its resource as it was.
	update(in *instance, l api.Limits) error
	// release frees the resource. It is idempotent: releasing what is
	// gone, or was never made, is not an error.
	release(in *instance) error
	// leaks lists what of this kind exists on the host that no record
	// owns, for the periodic scan (nil for resources that leave nothing
	// behind when the agent dies).
	leaks(owned ownership) ([]leak, error)
}

// step is a resource in the list, with the crash points (see crashpoint)
// after its creation and its release, "" for none.
type step struct {
	resource
	created, released string
	// ends marks the resource whose release leaves the instance without
	// processes: its end is decided right after it (see finish), while
	// the cgroup's counters and the logs are still there to say why.
	ends bool
	// beside marks resources that do not depend on one another: a run of
	// consecutive such steps is created, and released, side by side.
	beside bool
}

// ownership is what the records own, for the leak scan.
type ownership struct {
	cgroups map[string]bool // cgroup names
	ids     map[string]bool // instance ids (their directories)
}

// leak is a leftover on the host that no record owns.
type leak struct {
	key    string // unique across resources: "cg:<name>", "dir:<id>"
	what   string // for the log
	remove func() error
}

// createAll creates in's resources in order. When one fails, those made
// before it are released in reverse and the instance is forgotten; the
// error is the failing one's.
func (a *Agent) createAll(in *instance) error {
	for _, run := range a.runs() {
		errs := a.eachOf(run, func(s step) error { return s.create(in) })
		if err := errors.Join(errs...); err != nil {
			in.rollingBack = true
			// Those of the run that were made, then everything before it.
			for k := run[1] - 1; k >= run[0]; k-- {
				if errs[k-run[0]] == nil {
					a.releaseForRollback(in, a.steps[k])
				}
			}
			a.rollback(in, run[0])
			return firstError(errs)
		}
		for _, s := range a.steps[run[0]:run[1]] {
			crashpoint(s.created)
		}
	}
	return nil
}

// runs splits the steps into what is done at once: one step, or a run of
// consecutive beside steps. Each is [first, end).
func (a *Agent) runs() [][2]int {
	var out [][2]int
	for i := 0; i < len(a.steps); {
		j := i + 1
		for a.steps[i].beside && j < len(a.steps) && a.steps[j].beside {
			j++
		}
		out = append(out, [2]int{i, j})
		i = j
	}
	return out
}

// eachOf calls f for every step of run, side by side when there are
// several, and returns their errors in step order.
func (a *Agent) eachOf(run [2]int, f func(step) error) []error {
	steps := a.steps[run[0]:run[1]]
	errs := make([]error, len(steps))
	if len(steps) == 1 {
		errs[0] = f(steps[0])
		return errs
	}
	var wg sync.WaitGroup
	for k, s := range steps {
		wg.Go(func() { errs[k] = f(s) })
	}
	wg.Wait()
	return errs
}

func firstError(errs []error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// rollback undoes a start whose first made resources were created:
// releases them in reverse, and forgets the instance. A recovering agent
// passes all of them: whatever of a start exists after a crash goes.
func (a *Agent) rollback(in *instance, made int) {
	in.rollingBack = true
	for i := made - 1; i >= 0; i-- {
		a.releaseForRollback(in, a.steps[i])
	}
	in.mu.Lock()
	in.removed = true
	in.mu.Unlock()
	a.mu.Lock()
	if a.instances[in.id] == in {
		delete(a.instances, in.id)
	}
	a.mu.Unlock()
}

func (a *Agent) releaseForRollback(in *instance, s step) {
	if err := s.release(in); err != nil {
		// The leak scan removes what is left.
		a.log.Error("rollback: release", "id", in.id, "resource", s.String(), "err", err)
	}
	crashpoint(s.released)
}

// updateAll puts limits l in force in every resource, in order. When one
// refuses, those updated before it are put back to the record's limits,
// in reverse, and its error is returned.
func (a *Agent) updateAll(in *instance, l api.Limits) error {
	for i, s := range a.steps {
		if err := s.update(in, l); err != nil {
			a.restoreLimits(in, i)
			return err
		}
	}
	return nil
}

// restoreLimits puts the first n resources back to the limits on record,
// in reverse.
func (a *Agent) restoreLimits(in *instance, n int) {
	old := in.record().Limits
	for i := n - 1; i >= 0; i-- {
		if err := a.steps[i].update(in, old); err != nil {
			a.log.Error("limit: restore the limits on record", "id", in.id, "resource", a.steps[i].String(), "err", err)
		}
	}
}

// releaseAll releases in's resources in reverse, stopping at the first
// that fails (a later call resumes: every release is idempotent). decide,
// if not nil, runs once the instance's processes are gone.
func (a *Agent) releaseAll(in *instance, decide func()) error {
	runs := a.runs()
	for r := len(runs) - 1; r >= 0; r-- {
		run := runs[r]
		errs := a.eachOf(run, func(s step) error { return s.release(in) })
		for k, err := range errs {
			if err != nil {
				return fmt.Errorf("release %s: %s: %w", in.id, a.steps[run[0]+k], err)
			}
		}
		for k := run[1] - 1; k >= run[0]; k-- {
			s := a.steps[k]
			crashpoint(s.released)
			if s.ends && decide != nil {
				decide()
			}
		}
	}
	return nil
}

// adoptAll adopts in's resources in order. lives runs once the
// instance's processes are adopted (or found gone) and says whether the
// instance lives on: if not, the resources after them are not adopted.
func (a *Agent) adoptAll(in *instance, lives func() bool) error {
	for _, s := range a.steps {
		if err := s.adopt(in); err != nil {
			return fmt.Errorf("adopt %s: %s: %w", in.id, s, err)
		}
		if s.ends && !lives() {
			return nil
		}
	}
	return nil
}
