// Package ptytest gives tests of terminal programs a pseudo-terminal pair:
// the program gets the slave as its terminal, the test reads what it drew
// from the master, types into the master, and checks the slave's terminal
// attributes. It needs no privileges and nothing beyond x/sys/unix.
package ptytest
