//go:build !linux

package localapi

func umask(m int) int { return m }
