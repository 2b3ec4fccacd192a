package reporter

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseCgroupFiles(t *testing.T) {
	ws, err := parseV1MemoryStat(fixture(t, "v1/memory.stat"))
	if want := uint64(35515187 + 80395468 - 50371379); err != nil || ws != want {
		t.Errorf("v1 memory.stat working set = %d, %v; want %d (total_rss + total_cache - total_inactive_file)", ws, err, want)
	}
	ws, err = parseV2MemoryStat(fixture(t, "v2/memory.stat"))
	if want := uint64(52428800 + 8388608 - 6291456); err != nil || ws != want {
		t.Errorf("v2 memory.stat working set = %d, %v; want %d (anon + file - inactive_file)", ws, err, want)
	}
	ns, err := parseV2CPUStat(fixture(t, "v2/cpu.stat"))
	if err != nil || ns != 2_500_000_000 {
		t.Errorf("v2 cpu.stat = %d ns, %v; want 2.5e9", ns, err)
	}
	r, w, err := parseV1Blkio(fixture(t, "v1/blkio.throttle.io_service_bytes_recursive"))
	if err != nil || r != 20975616+4096 || w != 20971520+8192 {
		t.Errorf("v1 blkio = read %d write %d, %v; want the Read and Write lines of both devices summed", r, w, err)
	}
	r, w, err = parseV2IOStat(fixture(t, "v2/io.stat"))
	if err != nil || r != 1048576+4096 || w != 20971520+8192 {
		t.Errorf("v2 io.stat = rbytes %d wbytes %d, %v; want both devices summed", r, w, err)
	}
	p, err := parseUint(fixture(t, "v2/pids.current"))
	if err != nil || p != 7 {
		t.Errorf("pids.current = %d, %v; want 7", p, err)
	}
	// A group without IO has an empty io.stat and a v1 file with only "Total 0".
	if r, w, err := parseV2IOStat(nil); err != nil || r != 0 || w != 0 {
		t.Errorf("empty io.stat = %d %d %v", r, w, err)
	}
	if r, w, err := parseV1Blkio([]byte("Total 0\n")); err != nil || r != 0 || w != 0 {
		t.Errorf("v1 blkio of an idle group = %d %d %v", r, w, err)
	}
}

func TestParseProcFiles(t *testing.T) {
	ct, err := parseProcStat(fixture(t, "proc/stat"))
	total := uint64(139400 + 78410 + 626952 + 5503 + 1940 + 148)
	if err != nil || ct.total != total || ct.busy != total-626952-5503 || ct.cores != 2 {
		t.Errorf("proc/stat = %+v, %v; want total %d, busy %d (all but idle and iowait), 2 cores", ct, err, total, total-626952-5503)
	}
	tot, avail, err := parseMeminfo(fixture(t, "proc/meminfo"))
	if err != nil || tot != 24684092*1024 || avail != 14810455*1024 {
		t.Errorf("meminfo = %d %d %v", tot, avail, err)
	}
	la, err := parseLoadavg(fixture(t, "proc/loadavg"))
	if err != nil || la != [3]float64{3.02, 1.45, 0.07} {
		t.Errorf("loadavg = %v %v", la, err)
	}
}

func TestParseRejectsMalformed(t *testing.T) {
	for name, fn := range map[string]func() error{
		"v1 memory.stat without totals": func() error { _, err := parseV1MemoryStat([]byte("rss 1\ncache 2\ninactive_file 1\n")); return err },
		"v2 memory.stat without anon":   func() error { _, err := parseV2MemoryStat([]byte("file 1\ninactive_file 1\n")); return err },
		"memory.stat bad number":        func() error { _, err := parseV2MemoryStat([]byte("anon x\n")); return err },
		"cpu.stat without usage":        func() error { _, err := parseV2CPUStat([]byte("user_usec 1\n")); return err },
		"cpuacct.usage empty":           func() error { _, err := parseUint(nil); return err },
		"pids.current negative":         func() error { _, err := parseUint([]byte("-1\n")); return err },
		"number overflow":               func() error { _, err := parseUint([]byte("18446744073709551616")); return err },
		"v1 blkio bad number":           func() error { _, _, err := parseV1Blkio([]byte("8:0 Read x\n")); return err },
		"io.stat bad pair":              func() error { _, _, err := parseV2IOStat([]byte("8:0 rbytes\n")); return err },
		"io.stat bad number":            func() error { _, _, err := parseV2IOStat([]byte("8:0 rbytes=-1\n")); return err },
		"proc/stat no cpu":              func() error { _, err := parseProcStat([]byte("intr 1\n")); return err },
		"proc/stat bad field":           func() error { _, err := parseProcStat([]byte("cpu 1 x\ncpu0 1\n")); return err },
		"meminfo no MemAvailable":       func() error { _, _, err := parseMeminfo([]byte("MemTotal: 1 kB\n")); return err },
		"meminfo wrong unit":            func() error { _, _, err := parseMeminfo([]byte("MemTotal: 1 MB\nMemAvailable: 1 kB\n")); return err },
		"loadavg short":                 func() error { _, err := parseLoadavg([]byte("0.10 0.20\n")); return err },
	} {
		if err := fn(); !errors.Is(err, errFormat) {
			t.Errorf("%s: err = %v, want errFormat", name, err)
		}
	}
	// Counters read at slightly different moments must not wrap.
	if ws, err := parseV2MemoryStat([]byte("anon 1\nfile 2\ninactive_file 9\n")); err != nil || ws != 0 {
		t.Errorf("inactive_file above anon+file: working set %d, %v; want 0", ws, err)
	}
}

func TestParseAllocatesNothing(t *testing.T) {
	v1, v2 := fixture(t, "v1/memory.stat"), fixture(t, "v2/memory.stat")
	blk, io, cpu := fixture(t, "v1/blkio.throttle.io_service_bytes_recursive"), fixture(t, "v2/io.stat"), fixture(t, "v2/cpu.stat")
	pids := []byte("12\n")
	if n := testing.AllocsPerRun(100, func() {
		parseV1MemoryStat(v1)
		parseV2MemoryStat(v2)
		parseV1Blkio(blk)
		parseV2IOStat(io)
		parseV2CPUStat(cpu)
		parseUint(pids)
	}); n != 0 {
		t.Errorf("parsers allocate %v times per sample", n)
	}
}
