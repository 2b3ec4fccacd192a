package reporter

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hostward/ward/cgroup"
	"github.com/hostward/ward/config"
)

// ErrClosed is returned by Sample after Close.
var ErrClosed = errors.New("reporter: sampler closed")

// SamplerOptions configure a Sampler.
type SamplerOptions struct {
	// Mode is the cgroup version of the instances' Dirs; 0 detects it the
	// way package cgroup does (a unified host is v2, others v1).
	Mode cgroup.Mode
	// Weights of the load score; required (config.Report.Weights).
	Weights config.Weights
	// Proc is where procfs is mounted; default "/proc".
	Proc string
}

// Sampler reads the host's and the instances' figures. It keeps, per
// instance ID, the previous counters (to turn them into rates) and open
// descriptors of the instance's cgroup files, and forgets both as soon as a
// sample no longer lists the instance.
//
// Sample must not be called concurrently with itself (calls are serialized);
// Latest and Lookup may be called from any goroutine at any time.
type Sampler struct {
	mode    cgroup.Mode
	weights config.Weights
	now     func() time.Time // a seam for tests of the rate arithmetic

	// v1 positions of the controllers in Instance.Dirs.
	memIdx, cpuacctIdx, pidsIdx, blkioIdx, nV1 int

	mu     sync.Mutex // guards everything below
	closed bool
	buf    []byte // one read buffer, reused for every file
	gen    uint64 // sample counter; marks the instances seen in a sample
	insts  map[string]*instState
	host   hostState
	net    *netReader
	rows   []row // scratch, reused between samples

	latest atomic.Pointer[Sample]
}

// instState is what the sampler remembers about one instance.
type instState struct {
	dirs               []string // its group; a different group under the same id starts afresh
	mem, cpu, pids, io kfile
	gen                uint64

	at              time.Time // when the counters below were read
	cpuNs, rd, wr   uint64
	haveCPU, haveIO bool
}

type hostState struct {
	stat, meminfo, loadavg kfile
	prev                   cpuTimes
	havePrev               bool
}

// row carries what Sample needs between reading an instance and scoring it.
type row struct {
	shares, millicores int64
}

// NewSampler validates opts and opens the host's files.
func NewSampler(opts SamplerOptions) (*Sampler, error) {
	if err := checkWeights(opts.Weights); err != nil {
		return nil, err
	}
	switch opts.Mode {
	case 0:
		opts.Mode = detectMode()
	case cgroup.V1, cgroup.V2:
	default:
		return nil, fmt.Errorf("reporter: mode: invalid cgroup mode %d", int(opts.Mode))
	}
	if opts.Proc == "" {
		opts.Proc = "/proc"
	}
	if !filepath.IsAbs(opts.Proc) {
		return nil, fmt.Errorf("reporter: proc: %q is not absolute", opts.Proc)
	}
	ctrls := cgroup.V1Controllers()
	s := &Sampler{
		mode:       opts.Mode,
		weights:    opts.Weights,
		now:        time.Now,
		memIdx:     slices.Index(ctrls, "memory"),
		cpuacctIdx: slices.Index(ctrls, "cpuacct"),
		pidsIdx:    slices.Index(ctrls, "pids"),
		blkioIdx:   slices.Index(ctrls, "blkio"),
		nV1:        len(ctrls),
		buf:        make([]byte, 16<<10),
		insts:      map[string]*instState{},
		host: hostState{
			stat:    newKfile(filepath.Join(opts.Proc, "stat")),
			meminfo: newKfile(filepath.Join(opts.Proc, "meminfo")),
			loadavg: newKfile(filepath.Join(opts.Proc, "loadavg")),
		},
	}
	for _, f := range []*kfile{&s.host.stat, &s.host.meminfo, &s.host.loadavg} {
		if _, err := f.read(&s.buf); err != nil {
			s.closeFiles()
			return nil, fmt.Errorf("reporter: %w", err)
		}
	}
	var err error
	if s.net, err = newNetReader(); err != nil {
		s.closeFiles()
		return nil, fmt.Errorf("reporter: network statistics: %w", err)
	}
	return s, nil
}

// Mode is the cgroup version the sampler reads.
func (s *Sampler) Mode() cgroup.Mode { return s.mode }

// Latest returns the most recent sample, nil before the first. It is one
// atomic load: cheap enough for every info request.
func (s *Sampler) Latest() *Sample { return s.latest.Load() }

// Lookup returns instance id's figures from the most recent sample.
func (s *Sampler) Lookup(id string) (*InstanceSample, bool) {
	return s.latest.Load().Instance(id)
}

// Close releases every descriptor the sampler holds. Latest stays valid.
func (s *Sampler) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.closeFiles()
	if s.net != nil {
		s.net.close()
	}
	return nil
}

func (s *Sampler) closeFiles() {
	s.host.stat.close()
	s.host.meminfo.close()
	s.host.loadavg.close()
	for id, st := range s.insts {
		st.close()
		delete(s.insts, id)
	}
}

// Sample reads the host and every instance in instances, publishes the
// result as Latest and returns it.
//
// An instance whose group has disappeared (it stopped between the listing
// and the read) is left out silently. An instance that is invalid or whose
// files cannot be read is left out and named in the returned error, which
// joins every such problem; the sample is still returned and published
// with everything that could be read. Only ErrClosed comes with a nil
// sample.
func (s *Sampler) Sample(instances []Instance) (*Sample, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	s.gen++
	var errs []error
	// Instance errors are capped so that a host-wide problem (say, out of
	// descriptors) reads as a few lines and a count, not thousands.
	var more int
	instErr := func(err error) {
		if len(errs) < maxInstanceErrors {
			errs = append(errs, err)
		} else {
			more++
		}
	}

	now := s.now()
	// Time is for readers (UTC, like event times); rates use now, whose
	// monotonic reading is immune to wall-clock steps.
	out := &Sample{Time: now.UTC(), byID: make(map[string]int, len(instances))}
	if err := s.readHost(&out.Host, now); err != nil {
		errs = append(errs, err)
	}

	out.Instances = make([]InstanceSample, 0, len(instances))
	// The optional figures point into two arrays made once per sample
	// (room for every instance, so append never moves them): 1,000
	// instances cost two allocations, not 5,000.
	vals := floats(make([]float64, 0, 4*len(instances)))
	disks := make([]int64, 0, len(instances))
	s.rows = s.rows[:0]
	var totalShares int64
	for i := range instances {
		in := &instances[i]
		if _, dup := out.byID[in.ID]; dup {
			instErr(fmt.Errorf("reporter: instance %q: id: listed twice", in.ID))
			continue
		}
		st, err := s.state(in)
		if err != nil {
			instErr(err)
			continue
		}
		is := InstanceSample{ID: in.ID, Name: in.Name, Index: in.Index}
		gone, err := s.readInstance(in, st, &is, out.Host.MemTotalBytes, &vals)
		if err != nil {
			instErr(fmt.Errorf("reporter: instance %q: %w", in.ID, err))
			continue
		}
		if gone {
			continue
		}
		if in.Disk != nil {
			if v, ok := in.Disk(); ok {
				disks = append(disks, v)
				is.DiskBytes = &disks[len(disks)-1]
			}
		}
		r := row{shares: in.CPUShares, millicores: in.CPUMillicores}
		if r.shares <= 0 {
			r.shares = defaultShares
		}
		totalShares += r.shares
		out.byID[in.ID] = len(out.Instances)
		out.Instances = append(out.Instances, is)
		s.rows = append(s.rows, r)
	}

	// Forget instances this sample did not list.
	for id, st := range s.insts {
		if st.gen != s.gen {
			st.close()
			delete(s.insts, id)
		}
	}

	// Score once every instance's shares are known.
	h := &out.Host
	h.Load = Load(s.weights, h.CPUPct, h.MemPct)
	for i := range out.Instances {
		is, r := &out.Instances[i], s.rows[i]
		is.FairShareCores = FairShare(h.Cores, r.shares, totalShares, r.millicores)
		var sharePct float64
		if is.CPUPct != nil && is.FairShareCores > 0 {
			sharePct = *is.CPUPct / is.FairShareCores
			is.CPUSharePct = vals.add(sharePct)
		}
		is.Load = InstanceLoad(s.weights, h.Load, Load(s.weights, sharePct, is.MemPct))
		is.Weight = Weight(is.Load)
	}

	if more > 0 {
		errs = append(errs, fmt.Errorf("reporter: %d more instances left out", more))
	}
	s.latest.Store(out)
	return out, errors.Join(errs...)
}

// maxInstanceErrors is how many instance errors one sample reports in full.
const maxInstanceErrors = 10

func (s *Sampler) checkInstance(in *Instance) error {
	if in.ID == "" {
		return errors.New("reporter: instance: id: required")
	}
	want := 1
	if s.mode == cgroup.V1 {
		want = s.nV1
	}
	if len(in.Dirs) != want {
		return fmt.Errorf("reporter: instance %q: dirs: want %d for cgroup %s, got %d", in.ID, want, s.mode, len(in.Dirs))
	}
	for _, d := range in.Dirs {
		if !filepath.IsAbs(d) {
			return fmt.Errorf("reporter: instance %q: dirs: %q is not absolute", in.ID, d)
		}
	}
	return nil
}

// state returns the remembered state of in, starting afresh — after
// checking in — when in is new or now lives in a different group. A known
// instance is not checked again: its dirs are the ones checked before.
func (s *Sampler) state(in *Instance) (*instState, error) {
	st := s.insts[in.ID]
	if st != nil && !slices.Equal(st.dirs, in.Dirs) {
		st.close()
		delete(s.insts, in.ID)
		st = nil
	}
	if st == nil {
		if err := s.checkInstance(in); err != nil {
			return nil, err
		}
		st = &instState{dirs: slices.Clone(in.Dirs)}
		if s.mode == cgroup.V1 {
			st.mem = newKfile(filepath.Join(in.Dirs[s.memIdx], "memory.stat"))
			st.cpu = newKfile(filepath.Join(in.Dirs[s.cpuacctIdx], "cpuacct.usage"))
			st.pids = newKfile(filepath.Join(in.Dirs[s.pidsIdx], "pids.current"))
			// The throttle counters, not blkio.bfq.*: they count IO to
			// every device blk-throttle is active on, whatever its
			// scheduler (see EnableBlkioAccounting). The group's own, not
			// _recursive: an instance's group has no children (its
			// directories are root's), and the recursive file costs a
			// third more to generate.
			st.io = newKfile(filepath.Join(in.Dirs[s.blkioIdx], "blkio.throttle.io_service_bytes"))
		} else {
			d := in.Dirs[0]
			st.mem = newKfile(filepath.Join(d, "memory.stat"))
			st.cpu = newKfile(filepath.Join(d, "cpu.stat"))
			st.pids = newKfile(filepath.Join(d, "pids.current"))
			st.io = newKfile(filepath.Join(d, "io.stat"))
		}
		s.insts[in.ID] = st
	}
	st.gen = s.gen
	return st, nil
}

// readInstance fills is with in's figures. gone reports that in's group no
// longer exists.
func (s *Sampler) readInstance(in *Instance, st *instState, is *InstanceSample, hostMem uint64, vals *floats) (gone bool, err error) {
	v1 := s.mode == cgroup.V1

	b, err := st.mem.read(&s.buf)
	if errors.Is(err, fs.ErrNotExist) {
		// Memory is the controller every group has: without it the
		// group is gone. Drop the state now rather than next sample.
		st.close()
		delete(s.insts, in.ID)
		return true, nil
	}
	if err != nil {
		return false, err
	}
	if v1 {
		is.MemBytes, err = parseV1MemoryStat(b)
	} else {
		is.MemBytes, err = parseV2MemoryStat(b)
	}
	if err != nil {
		return false, fmt.Errorf("%s: %w", st.mem.path, err)
	}

	var cpuNs uint64
	cpuOK := false
	if b, err := st.cpu.read(&s.buf); err == nil {
		if v1 {
			cpuNs, err = parseUint(b)
		} else {
			cpuNs, err = parseV2CPUStat(b)
		}
		if err != nil {
			return false, fmt.Errorf("%s: %w", st.cpu.path, err)
		}
		cpuOK = true
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}

	if b, err := st.pids.read(&s.buf); err == nil {
		if is.Pids, err = parseUint(b); err != nil {
			return false, fmt.Errorf("%s: %w", st.pids.path, err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}

	var rd, wr uint64
	ioOK := false
	if b, err := st.io.read(&s.buf); err == nil {
		if v1 {
			rd, wr, err = parseV1Blkio(b)
		} else {
			rd, wr, err = parseV2IOStat(b)
		}
		if err != nil {
			return false, fmt.Errorf("%s: %w", st.io.path, err)
		}
		ioOK = true
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	now := s.now()

	// A counter below its previous value means a new group under the
	// same id and path: treat the reading as a first one.
	if cpuOK {
		if st.haveCPU && cpuNs >= st.cpuNs {
			is.CPUPct = vals.rate(cpuNs-st.cpuNs, now.Sub(st.at), 100/1e9)
		} else {
			is.CPUPct = vals.sinceStart(cpuNs, in.Started, now, 100/1e9)
		}
		st.cpuNs, st.haveCPU = cpuNs, true
	}
	if ioOK {
		is.IOReadBytes, is.IOWriteBytes = rd, wr
		if st.haveIO && rd >= st.rd && wr >= st.wr {
			is.IOReadBps = vals.rate(rd-st.rd, now.Sub(st.at), 1)
			is.IOWriteBps = vals.rate(wr-st.wr, now.Sub(st.at), 1)
		} else {
			is.IOReadBps = vals.sinceStart(rd, in.Started, now, 1)
			is.IOWriteBps = vals.sinceStart(wr, in.Started, now, 1)
		}
		st.rd, st.wr, st.haveIO = rd, wr, true
	}
	st.at = now

	is.MemLimitBytes = hostMem
	if in.MemoryLimit > 0 && (hostMem == 0 || uint64(in.MemoryLimit) < hostMem) {
		is.MemLimitBytes = uint64(in.MemoryLimit)
	}
	if is.MemLimitBytes > 0 {
		is.MemPct = float64(is.MemBytes) / float64(is.MemLimitBytes) * 100
	}
	return false, nil
}

// floats holds a sample's optional figures, so that they cost one
// allocation per sample rather than one each.
type floats []float64

func (f *floats) add(v float64) *float64 {
	*f = append(*f, v)
	return &(*f)[len(*f)-1]
}

// rate is delta per second of dt, times scale; nil if dt is not positive.
// scale turns the counter's unit into the figure's (ns → % of a core is
// 100/1e9 per ns per second).
func (f *floats) rate(delta uint64, dt time.Duration, scale float64) *float64 {
	if dt <= 0 {
		return nil
	}
	return f.add(float64(delta) / dt.Seconds() * scale)
}

// sinceStart is the average rate since started; nil when that is unknown.
func (f *floats) sinceStart(total uint64, started, now time.Time, scale float64) *float64 {
	if started.IsZero() {
		return nil
	}
	return f.rate(total, now.Sub(started), scale)
}

// readHost fills h. Host CPU is over the time since the previous sample
// (since boot on the first); memory and load averages are current.
func (s *Sampler) readHost(h *Host, now time.Time) error {
	var errs []error
	hs := &s.host
	if b, err := hs.stat.read(&s.buf); err != nil {
		errs = append(errs, err)
	} else if t, err := parseProcStat(b); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", hs.stat.path, err))
	} else {
		prev := hs.prev
		if !hs.havePrev || t.total < prev.total || t.busy < prev.busy {
			prev = cpuTimes{}
		}
		if dt := t.total - prev.total; dt > 0 {
			h.CPUPct = float64(t.busy-prev.busy) / float64(dt) * 100
		}
		h.Cores = t.cores
		hs.prev, hs.havePrev = t, true
	}
	if b, err := hs.meminfo.read(&s.buf); err != nil {
		errs = append(errs, err)
	} else if total, avail, err := parseMeminfo(b); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", hs.meminfo.path, err))
	} else {
		h.MemTotalBytes, h.MemAvailableBytes = total, avail
		h.MemPct = float64(total-min(avail, total)) / float64(total) * 100
	}
	if b, err := hs.loadavg.read(&s.buf); err != nil {
		errs = append(errs, err)
	} else if la, err := parseLoadavg(b); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", hs.loadavg.path, err))
	} else {
		h.LoadAvg = la
	}
	if s.net != nil {
		net, err := s.net.read(now)
		if err != nil {
			errs = append(errs, fmt.Errorf("network statistics: %w", err))
		}
		h.Net = net
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("reporter: host: %w", err)
	}
	return nil
}

func (st *instState) close() {
	st.mem.close()
	st.cpu.close()
	st.pids.close()
	st.io.close()
}

// kfile is a kernel file the sampler reads again and again. Its descriptor
// stays open and each read is one pread at offset 0, which makes cgroupfs
// and procfs regenerate the content: opening a cgroup file costs several
// times more than reading it (path walk and kernfs open), so a sample of
// 1,000 instances would otherwise spend most of its time in open(2).
type kfile struct {
	path string
	fd   int // -1 when not open
}

func newKfile(path string) kfile { return kfile{path: path, fd: -1} }

// maxRead bounds how far a read buffer grows for one file.
const maxRead = 4 << 20

// read returns the whole content of f in (*buf)[:n], growing *buf when the
// content does not fit.
func (f *kfile) read(buf *[]byte) ([]byte, error) {
	reopened := false
	for {
		if f.fd < 0 {
			fd, err := unix.Open(f.path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return nil, &fs.PathError{Op: "open", Path: f.path, Err: err}
			}
			f.fd = fd
		}
		n, err := unix.Pread(f.fd, *buf, 0)
		switch {
		case err == unix.EINTR:
			continue
		case err == nil && n == len(*buf) && n < maxRead:
			// Possibly truncated: read again with room to spare.
			*buf = make([]byte, 2*len(*buf))
			continue
		case err == nil:
			return (*buf)[:n], nil
		}
		f.close()
		// ENODEV: the cgroup was removed under the open descriptor; a
		// group of the same path may exist again, so look once more.
		if err == unix.ENODEV && !reopened {
			reopened = true
			continue
		}
		return nil, &fs.PathError{Op: "read", Path: f.path, Err: err}
	}
}

func (f *kfile) close() {
	if f.fd >= 0 {
		unix.Close(f.fd)
		f.fd = -1
	}
}
