//go:build !linux

package main

import (
	"fmt"
	"os"
)

// The VM's init only makes sense as PID 1 of a Linux guest.
func main() {
	fmt.Fprintln(os.Stderr, "v2vm init runs only as PID 1 of the Linux test VM")
	os.Exit(1)
}
