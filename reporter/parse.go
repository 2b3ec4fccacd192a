package reporter

import (
	"bytes"
	"errors"
	"fmt"
)

// The parsers below work on the bytes of one read of a kernel file, without
// allocating: the sampler runs them thousands of times per interval.

var errFormat = errors.New("unexpected format")

// nextLine splits b at the first newline.
func nextLine(b []byte) (line, rest []byte) {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		return b[:i], b[i+1:]
	}
	return b, nil
}

// field splits b at the first run of spaces or tabs. Hand-written: the
// bytes package's cutset functions build a set on every call, and field
// runs for every line of every file of every instance.
func field(b []byte) (f, rest []byte) {
	i := 0
	for i < len(b) && (b[i] == ' ' || b[i] == '\t') {
		i++
	}
	b = b[i:]
	j := 0
	for j < len(b) && b[j] != ' ' && b[j] != '\t' {
		j++
	}
	f = b[:j]
	for j < len(b) && (b[j] == ' ' || b[j] == '\t') {
		j++
	}
	return f, b[j:]
}

// atou parses a decimal unsigned integer.
func atou(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 20 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if n > (1<<64-1-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// parseUint parses a file holding one number (cpuacct.usage, pids.current).
func parseUint(b []byte) (uint64, error) {
	v, ok := atou(bytes.TrimSpace(b))
	if !ok {
		return 0, fmt.Errorf("%w: %q is not a number", errFormat, truncate(b))
	}
	return v, nil
}

// lookupKeys reads the values of keys from a flat-keyed file (memory.stat,
// cpu.stat: "key value" lines) into vals, in the order of keys, and
// returns a bit per key found. Only the values of keys asked for are
// parsed, and the scan stops once all are found: a v1 memory.stat has 42
// lines, and 1,000 instances are read every interval.
func lookupKeys(b []byte, keys []string, vals []uint64) (found uint, err error) {
	all := uint(1)<<len(keys) - 1
	for len(b) > 0 && found != all {
		var line []byte
		line, b = nextLine(b)
		k, rest := field(line)
		for i, key := range keys {
			if string(k) != key {
				continue
			}
			v, ok := atou(bytes.TrimRight(rest, " \t"))
			if !ok {
				return found, fmt.Errorf("%w: line %q", errFormat, truncate(line))
			}
			vals[i], found = v, found|1<<i
			break
		}
	}
	return found, nil
}

// The keys each parser looks up, in the order of its vals.
var (
	// The total_* fields include the group's descendants, which the
	// plain fields do not.
	v1MemoryKeys = []string{"total_rss", "total_cache", "total_inactive_file"}
	v2MemoryKeys = []string{"anon", "file", "inactive_file"}
	v2CPUKeys    = []string{"usage_usec"}
)

// parseV1MemoryStat returns the working set from a v1 memory.stat:
// total_rss + total_cache − total_inactive_file.
func parseV1MemoryStat(b []byte) (uint64, error) {
	var v [3]uint64
	found, err := lookupKeys(b, v1MemoryKeys, v[:])
	if err != nil {
		return 0, err
	}
	if found != 7 {
		return 0, fmt.Errorf("%w: memory.stat lacks total_rss, total_cache or total_inactive_file", errFormat)
	}
	return workingSet(v[0]+v[1], v[2]), nil
}

// parseV2MemoryStat returns the working set from a v2 memory.stat:
// anon + file − inactive_file.
func parseV2MemoryStat(b []byte) (uint64, error) {
	var v [3]uint64
	found, err := lookupKeys(b, v2MemoryKeys, v[:])
	if err != nil {
		return 0, err
	}
	if found != 7 {
		return 0, fmt.Errorf("%w: memory.stat lacks anon, file or inactive_file", errFormat)
	}
	return workingSet(v[0]+v[1], v[2]), nil
}

// workingSet subtracts without wrapping: the counters are read at slightly
// different moments, so inactive_file can momentarily exceed the rest.
func workingSet(used, inactive uint64) uint64 {
	if inactive > used {
		return 0
	}
	return used - inactive
}

// parseV2CPUStat returns usage_usec from a v2 cpu.stat, in nanoseconds.
func parseV2CPUStat(b []byte) (uint64, error) {
	var v [1]uint64
	found, err := lookupKeys(b, v2CPUKeys, v[:])
	if err != nil {
		return 0, err
	}
	if found != 1 {
		return 0, fmt.Errorf("%w: cpu.stat lacks usage_usec", errFormat)
	}
	return v[0] * 1000, nil
}

// parseV1Blkio sums the Read and Write lines of every device in a v1
// blkio.*io_service_bytes* file:
//
//	254:0 Read 20975616
//	254:0 Write 20971520
//	...
//	Total 41947136
func parseV1Blkio(b []byte) (read, write uint64, err error) {
	for len(b) > 0 {
		var line []byte
		line, b = nextLine(b)
		dev, rest := field(line)
		if len(dev) == 0 || bytes.IndexByte(dev, ':') < 0 {
			continue // blank or the grand "Total" line
		}
		op, rest := field(rest)
		v, ok := atou(bytes.TrimSpace(rest))
		if !ok {
			return 0, 0, fmt.Errorf("%w: line %q", errFormat, truncate(line))
		}
		switch string(op) {
		case "Read":
			read += v
		case "Write":
			write += v
		}
	}
	return read, write, nil
}

// parseV2IOStat sums rbytes and wbytes over the devices of a v2 io.stat:
//
//	254:0 rbytes=1024 wbytes=4096 rios=1 wios=1 dbytes=0 dios=0
func parseV2IOStat(b []byte) (read, write uint64, err error) {
	for len(b) > 0 {
		var line []byte
		line, b = nextLine(b)
		_, rest := field(line) // the device
		for len(rest) > 0 {
			var kv []byte
			kv, rest = field(rest)
			k, v, ok := bytes.Cut(kv, []byte{'='})
			if !ok {
				return 0, 0, fmt.Errorf("%w: io.stat line %q", errFormat, truncate(line))
			}
			var dst *uint64
			switch string(k) {
			case "rbytes":
				dst = &read
			case "wbytes":
				dst = &write
			default:
				continue
			}
			n, ok := atou(v)
			if !ok {
				return 0, 0, fmt.Errorf("%w: io.stat line %q", errFormat, truncate(line))
			}
			*dst += n
		}
	}
	return read, write, nil
}

// cpuTimes are the host's cumulative CPU times from /proc/stat, in ticks.
type cpuTimes struct {
	busy, total uint64
	cores       int
}

// parseProcStat reads the "cpu" line of /proc/stat (user nice system idle
// iowait irq softirq steal guest guest_nice) and counts the "cpuN" lines.
// Guest time is already included in user and nice, so it is not added
// again; steal counts as busy, because that CPU was not available to the
// host's work.
func parseProcStat(b []byte) (cpuTimes, error) {
	var t cpuTimes
	found := false
	for len(b) > 0 {
		var line []byte
		line, b = nextLine(b)
		if !bytes.HasPrefix(line, []byte("cpu")) {
			if found {
				break // the cpu lines come first
			}
			continue
		}
		name, rest := field(line)
		if len(name) > 3 {
			t.cores++
			continue
		}
		found = true
		for i := 0; i < 8 && len(rest) > 0; i++ {
			var f []byte
			f, rest = field(rest)
			v, ok := atou(f)
			if !ok {
				return t, fmt.Errorf("%w: /proc/stat line %q", errFormat, truncate(line))
			}
			t.total += v
			if i != 3 && i != 4 { // idle, iowait
				t.busy += v
			}
		}
	}
	if !found || t.cores == 0 {
		return t, fmt.Errorf("%w: /proc/stat has no cpu lines", errFormat)
	}
	return t, nil
}

// parseMeminfo returns MemTotal and MemAvailable from /proc/meminfo, in bytes.
func parseMeminfo(b []byte) (total, avail uint64, err error) {
	var seen int
	for len(b) > 0 && seen != 3 {
		var line []byte
		line, b = nextLine(b)
		k, rest := field(line)
		var bit int
		switch string(k) {
		case "MemTotal:":
			bit = 1
		case "MemAvailable:":
			bit = 2
		default:
			continue
		}
		num, unit := field(rest)
		v, ok := atou(num)
		if !ok || string(unit) != "kB" {
			return 0, 0, fmt.Errorf("%w: /proc/meminfo line %q", errFormat, truncate(line))
		}
		if bit == 1 {
			total = v * 1024
		} else {
			avail = v * 1024
		}
		seen |= bit
	}
	if seen != 3 || total == 0 {
		return 0, 0, fmt.Errorf("%w: /proc/meminfo lacks MemTotal or MemAvailable", errFormat)
	}
	return total, avail, nil
}

// parseLoadavg reads the three averages of /proc/loadavg ("0.52 0.58 0.59 ...").
func parseLoadavg(b []byte) ([3]float64, error) {
	var la [3]float64
	rest := b
	for i := range la {
		var f []byte
		f, rest = field(rest)
		v, ok := parseFixed2(f)
		if !ok {
			return la, fmt.Errorf("%w: /proc/loadavg %q", errFormat, truncate(b))
		}
		la[i] = v
	}
	return la, nil
}

// parseFixed2 parses the kernel's "%lu.%02lu" load average format.
func parseFixed2(b []byte) (float64, bool) {
	ip, fp, ok := bytes.Cut(b, []byte{'.'})
	if !ok || len(fp) != 2 {
		return 0, false
	}
	i, ok1 := atou(ip)
	f, ok2 := atou(fp)
	if !ok1 || !ok2 {
		return 0, false
	}
	return float64(i) + float64(f)/100, true
}

// truncate keeps error messages short when a file is not what was expected.
func truncate(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}
