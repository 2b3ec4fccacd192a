//go:build !linux

package nsinit

import "os"

// Main is ward-init, which runs on Linux only.
func Main() {
	os.Stderr.WriteString("ward-init: Linux only\n")
	os.Exit(126)
}
