package btrfstest

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hostward/ward/internal/testroot"
)

// ImageSize is the size of each filesystem image (sparse: only what is
// written takes disk space). mkfs.btrfs wants at least ~110 MiB.
const ImageSize = 256 << 20

// imageDir holds the images and mountpoints: on disk, not a tmpfs /tmp
// whose memory the images would take.
const imageDir = "/var/tmp"

var (
	installOnce sync.Once
	installErr  error
)

// Mount makes a fresh btrfs filesystem in a sparse image file, attaches it
// to a loop device, mounts it with the given mount options (such as
// "commit=1") and returns the mountpoint. Quotas are off. Everything is
// undone in t.Cleanup, whether the test passed or not. It skips t unless
// run as root, and installs btrfs-progs (for mkfs.btrfs) with apt-get the
// first time it is missing.
func Mount(t testing.TB, options ...string) string {
	t.Helper()
	testroot.Require(t)
	installOnce.Do(func() { installErr = ensureMkfs() })
	if installErr != nil {
		t.Fatalf("btrfstest: mkfs.btrfs is missing and could not be installed (apt-get install btrfs-progs): %v", installErr)
	}

	img, err := os.CreateTemp(imageDir, "btrfstest-*.img")
	if err != nil {
		t.Fatalf("btrfstest: %v", err)
	}
	imgPath := img.Name()
	t.Cleanup(func() { os.Remove(imgPath) })
	err = img.Truncate(ImageSize)
	img.Close()
	if err != nil {
		t.Fatalf("btrfstest: %v", err)
	}
	if out, err := exec.Command("mkfs.btrfs", "-q", "-f", imgPath).CombinedOutput(); err != nil {
		t.Fatalf("btrfstest: mkfs.btrfs: %v: %s", err, out)
	}

	out, err := exec.Command("losetup", "--find", "--show", imgPath).CombinedOutput()
	if err != nil {
		t.Fatalf("btrfstest: losetup: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "--detach", dev).CombinedOutput(); err != nil {
			t.Errorf("btrfstest: losetup --detach %s: %v: %s", dev, err, out)
		}
	})

	mnt, err := os.MkdirTemp(imageDir, "btrfstest-mnt-")
	if err != nil {
		t.Fatalf("btrfstest: %v", err)
	}
	// Removed with os.Remove, never RemoveAll: if the unmount failed the
	// directory still shows the filesystem's contents.
	t.Cleanup(func() { os.Remove(mnt) })
	if err := unix.Mount(dev, mnt, "btrfs", 0, strings.Join(options, ",")); err != nil {
		t.Fatalf("btrfstest: mount %s on %s: %v", dev, mnt, err)
	}
	t.Cleanup(func() { unmount(t, mnt) })
	return mnt
}

// unmount retries briefly: a process the test started may still be
// exiting with a file open on the filesystem.
func unmount(t testing.TB, mnt string) {
	var err error
	for range 50 {
		if err = unix.Unmount(mnt, 0); !errors.Is(err, unix.EBUSY) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Errorf("btrfstest: unmount %s: %v", mnt, err)
	}
}

func ensureMkfs() error {
	if _, err := exec.LookPath("mkfs.btrfs"); err == nil {
		return nil
	}
	install := func() error {
		cmd := exec.Command("apt-get", "install", "-y", "-qq", "--no-install-recommends", "btrfs-progs")
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			return errors.New(strings.TrimSpace(string(out)))
		}
		return nil
	}
	if install() != nil {
		// A fresh machine may have no package lists yet.
		if out, err := exec.Command("apt-get", "update", "-qq").CombinedOutput(); err != nil {
			return errors.New(strings.TrimSpace(string(out)))
		}
		if err := install(); err != nil {
			return err
		}
	}
	_, err := exec.LookPath("mkfs.btrfs")
	return err
}
