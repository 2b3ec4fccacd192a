//go:build !linux

package main

import (
	"errors"
	"os"

	"github.com/hostward/ward/localapi"
)

// Live mode drives the terminal through Linux termios; elsewhere `ward top`
// prints snapshots only.
func isTerminal(*os.File) bool { return false }

func topLive(*localapi.Client, topOptions, *os.File, *os.File) error {
	return errors.New("the live table needs Linux; use --once")
}
