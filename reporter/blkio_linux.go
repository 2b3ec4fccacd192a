package reporter

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// EnableBlkioAccounting makes the kernel count cgroup v1 block IO per group
// on every disk of the host, and returns which disks it enabled.
//
// On v1 since Linux 5.0 (CFQ's removal) a group's byte counters come only
// from blk-throttle (blkio.throttle.io_service_bytes*) or from the bfq
// scheduler (blkio.bfq.*, only on disks that use bfq). blk-throttle counts
// only on disks where it is active, and it becomes active on a disk the
// first time any group gets a throttle rule for it. On an untouched host
// both files therefore read 0 whatever a group writes. This writes a "no
// limit" rule ("MAJ:MIN 0") for every disk that has none into dir's
// blkio.throttle.read_bps_device: that limits nothing and switches
// counting on for the disk, host-wide, until the disk goes away. The cost
// is blk-throttle's per-IO bookkeeping on those disks.
//
// dir is a blkio group ward owns, normally the instances' parent (e.g.
// /sys/fs/cgroup/blkio/ward); rules already in its file are left alone.
// Disks attached later (a quota image on a loop device) need another call.
// Disks of size 0 (an unbound loop device) are skipped. A disk that refuses
// the rule does not stop the others; the error names each.
func EnableBlkioAccounting(dir string) ([]string, error) {
	file := filepath.Join(dir, "blkio.throttle.read_bps_device")
	cur, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reporter: enable blkio accounting: %w", err)
	}
	ruled := map[string]bool{}
	for _, line := range strings.Split(string(cur), "\n") {
		if dev, _, ok := strings.Cut(line, " "); ok {
			ruled[dev] = true
		}
	}
	disks, err := os.ReadDir("/sys/block")
	if err != nil {
		return nil, fmt.Errorf("reporter: enable blkio accounting: %w", err)
	}
	var enabled []string
	var errs []error
	for _, d := range disks {
		base := filepath.Join("/sys/block", d.Name())
		size, err := os.ReadFile(filepath.Join(base, "size"))
		if err != nil || string(bytes.TrimSpace(size)) == "0" {
			continue
		}
		devb, err := os.ReadFile(filepath.Join(base, "dev"))
		if err != nil {
			continue // not a device node (vanished meanwhile)
		}
		dev := string(bytes.TrimSpace(devb))
		if ruled[dev] {
			enabled = append(enabled, d.Name())
			continue
		}
		if err := os.WriteFile(file, []byte(dev+" 0"), 0); err != nil {
			errs = append(errs, fmt.Errorf("%s (%s): %w", d.Name(), dev, err))
			continue
		}
		enabled = append(enabled, d.Name())
	}
	if err := errors.Join(errs...); err != nil {
		return enabled, fmt.Errorf("reporter: enable blkio accounting: %w", err)
	}
	return enabled, nil
}
