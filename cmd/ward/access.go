package main

import "golang.org/x/sys/unix"

func unixAccess(dir string) error { return unix.Access(dir, unix.W_OK) }
