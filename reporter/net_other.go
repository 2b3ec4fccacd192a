//go:build !linux

package reporter

import "time"

// netReader has nothing to read outside Linux: the host reports no
// interfaces.
type netReader struct{}

func newNetReader() (*netReader, error)                         { return nil, nil }
func (r *netReader) read(time.Time) (map[string]NetStat, error) { return nil, nil }
func (r *netReader) close()                                     {}
