//go:build !linux

package reporter

import "errors"

// EnableBlkioAccounting is Linux-only.
func EnableBlkioAccounting(dir string) ([]string, error) {
	return nil, errors.New("reporter: blkio accounting is only available on Linux")
}
