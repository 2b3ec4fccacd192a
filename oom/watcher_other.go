//go:build !linux

package oom

import "github.com/hostward/ward/cgroup"

// Watcher is unusable outside Linux; NewWatcher always fails. The type
// exists so that code using it still compiles on a developer's machine.
type Watcher struct{}

func NewWatcher(mode cgroup.Mode, handle func(Event)) (*Watcher, error) {
	if _, err := counterFile(mode); err != nil {
		return nil, err
	}
	return nil, ErrUnsupported
}

func (w *Watcher) Add(key, dir string, opts ...Option) error { return ErrUnsupported }
func (w *Watcher) Remove(key string) error                   { return nil }
func (w *Watcher) Close() error                              { return nil }
