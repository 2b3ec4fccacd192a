//go:build !linux

package quota

import (
	"errors"
	"fmt"

	"github.com/hostward/ward/config"
)

var errUnsupported = errors.New("quota: only the none backend is supported outside Linux")

func newPlatform(kind config.QuotaBackend, _ string) (Backend, error) {
	return nil, fmt.Errorf("quota: kind %q: %w", kind, errUnsupported)
}

// EnableBtrfsQuota is unsupported outside Linux.
func EnableBtrfsQuota(path string) error { return errUnsupported }
