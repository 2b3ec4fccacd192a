// Package btrfstest gives tests a real, throwaway btrfs filesystem: a
// sparse image file on a loop device, mounted for one test and removed
// with it. Only the setup shells out (mkfs.btrfs, losetup); the code under
// test talks to the kernel directly.
package btrfstest
