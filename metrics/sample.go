package metrics

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/hostward/ward/reporter"
)

// SampleSource gives the latest load sample; *reporter.Sampler and
// *reporter.Reporter satisfy it.
type SampleSource interface {
	// Latest returns the most recent sample, nil before the first.
	Latest() *reporter.Sample
}

// Label names. They are variables, not constants, because every series
// points at them (dto.LabelPair holds *string) instead of copying them.
var (
	labelID        = "id"
	labelIndex     = "index"
	labelName      = "name"
	labelPeriod    = "period"
	labelInterface = "interface"

	period1, period5, period15 = "1", "5", "15"
)

// instanceLabels are the only labels of a per-instance series, sorted by
// name as the exposition's consistency check expects.
var instanceLabels = []string{labelID, labelIndex, labelName}

var (
	descSampleTime = prometheus.NewDesc("ward_sample_timestamp_seconds",
		"Unix time of the load sample the host and instance series come from; a value that stops advancing means sampling stopped.",
		nil, nil)

	descHostCPU = prometheus.NewDesc("ward_host_cpu_percent",
		"Busy share of all host CPUs since the previous sample, 0-100 (100: every core busy).",
		nil, nil)
	descHostMem = prometheus.NewDesc("ward_host_memory_percent",
		"Host memory in use, (MemTotal - MemAvailable) / MemTotal, 0-100.",
		nil, nil)
	descHostLoad = prometheus.NewDesc("ward_host_load_score",
		"Host load score, 0-100, from CPU and memory with the configured weights.",
		nil, nil)
	descHostLoadAvg = prometheus.NewDesc("ward_host_loadavg",
		"Run-queue load average over period minutes.",
		[]string{labelPeriod}, nil)
	descHostNetRx = prometheus.NewDesc("ward_host_network_receive_bytes_per_second",
		"Bytes received per second on the interface since the previous sample.",
		[]string{labelInterface}, nil)
	descHostNetTx = prometheus.NewDesc("ward_host_network_transmit_bytes_per_second",
		"Bytes sent per second on the interface since the previous sample.",
		[]string{labelInterface}, nil)

	descInstCPU = prometheus.NewDesc("ward_instance_cpu_percent",
		"CPU time per wall time since the previous sample, in percent of ONE core (200: two cores busy).",
		instanceLabels, nil)
	descInstMem = prometheus.NewDesc("ward_instance_memory_bytes",
		"Working set: memory the kernel could not reclaim without swap.",
		instanceLabels, nil)
	descInstMemLimit = prometheus.NewDesc("ward_instance_memory_limit_bytes",
		"What ward_instance_memory_percent is relative to: the memory limit, or host memory when there is none or a larger one.",
		instanceLabels, nil)
	descInstMemPct = prometheus.NewDesc("ward_instance_memory_percent",
		"ward_instance_memory_bytes / ward_instance_memory_limit_bytes, 0-100.",
		instanceLabels, nil)
	descInstIORead = prometheus.NewDesc("ward_instance_io_read_bytes_per_second",
		"Block-device bytes read per second since the previous sample.",
		instanceLabels, nil)
	descInstIOWrite = prometheus.NewDesc("ward_instance_io_write_bytes_per_second",
		"Block-device bytes written per second since the previous sample.",
		instanceLabels, nil)
	descInstPids = prometheus.NewDesc("ward_instance_pids",
		"Tasks (threads included) in the instance's cgroup.",
		instanceLabels, nil)
	descInstDisk = prometheus.NewDesc("ward_instance_disk_bytes",
		"Bytes the instance has on disk, from its quota.",
		instanceLabels, nil)
	descInstLoad = prometheus.NewDesc("ward_instance_load",
		"Instance load score, 0-100, from host and own load with the configured weights.",
		instanceLabels, nil)
	descInstWeight = prometheus.NewDesc("ward_instance_weight",
		"Balancing weight, 1-100; higher is less loaded.",
		instanceLabels, nil)
)

// hostFigures, netFigures and instanceFigures are the most gauges one
// Collect builds per host, interface and instance: their arrays are sized
// once per scrape.
const (
	hostFigures     = 7 // timestamp, cpu, memory, load score, 3 loadavg
	netFigures      = 2 // per interface
	instanceFigures = 10
)

// SampleCollector exposes the latest load sample as gauges. Every series is
// built from the sample at scrape time and nothing is kept between scrapes,
// so an instance that is no longer sampled has no series on the next scrape
// and a figure the sample leaves null has none either (never a zero).
type SampleCollector struct {
	src SampleSource
}

// NewSampleCollector returns a collector reading src on every scrape.
func NewSampleCollector(src SampleSource) *SampleCollector {
	return &SampleCollector{src: src}
}

// Describe sends every descriptor the collector can emit: the set is fixed,
// so the registry can check names and labels at registration.
func (c *SampleCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		descSampleTime, descHostCPU, descHostMem, descHostLoad, descHostLoadAvg,
		descHostNetRx, descHostNetTx,
		descInstCPU, descInstMem, descInstMemLimit, descInstMemPct, descInstIORead,
		descInstIOWrite, descInstPids, descInstDisk, descInstLoad, descInstWeight,
	} {
		ch <- d
	}
}

// Collect sends the figures of the latest sample; none before the first.
func (c *SampleCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.src.Latest()
	if s == nil {
		return
	}
	// One allocation each for all gauges and all label pairs of the scrape,
	// instead of several per series (a const metric builds its own label
	// pairs; here an instance's ten series share one set).
	nNet, nInst := len(s.Host.Net), len(s.Instances)
	b := builder{
		gauges: make([]gauge, 0, hostFigures+netFigures*nNet+instanceFigures*nInst),
		pairs:  make([]dto.LabelPair, 0, 3+nNet+3*nInst),
		ptrs:   make([]*dto.LabelPair, 0, 3+nNet+3*nInst),
	}

	h := &s.Host
	if !s.Time.IsZero() {
		b.send(ch, descSampleTime, float64(s.Time.UnixNano())/1e9, nil)
	}
	b.send(ch, descHostCPU, h.CPUPct, nil)
	b.send(ch, descHostMem, h.MemPct, nil)
	b.send(ch, descHostLoad, h.Load, nil)
	for i, p := range [...]*string{&period1, &period5, &period15} {
		b.send(ch, descHostLoadAvg, h.LoadAvg[i], b.labels(&labelPeriod, p))
	}
	for name, n := range h.Net {
		if n.RxBps == nil && n.TxBps == nil {
			continue
		}
		lp := b.labels(&labelInterface, &name)
		b.sendOpt(ch, descHostNetRx, n.RxBps, lp)
		b.sendOpt(ch, descHostNetTx, n.TxBps, lp)
	}

	for i := range s.Instances {
		in := &s.Instances[i]
		index := strconv.Itoa(in.Index)
		lp := b.labels(&labelID, &in.ID, &labelIndex, &index, &labelName, &in.Name)
		b.sendOpt(ch, descInstCPU, in.CPUPct, lp)
		b.send(ch, descInstMem, float64(in.MemBytes), lp)
		b.send(ch, descInstMemLimit, float64(in.MemLimitBytes), lp)
		b.send(ch, descInstMemPct, in.MemPct, lp)
		b.sendOpt(ch, descInstIORead, in.IOReadBps, lp)
		b.sendOpt(ch, descInstIOWrite, in.IOWriteBps, lp)
		b.send(ch, descInstPids, float64(in.Pids), lp)
		if in.DiskBytes != nil {
			b.send(ch, descInstDisk, float64(*in.DiskBytes), lp)
		}
		b.send(ch, descInstLoad, in.Load, lp)
		b.send(ch, descInstWeight, float64(in.Weight), lp)
	}
}

// builder hands out gauges and label pairs from arrays sized up front. An
// element is never written again once a pointer to it has been handed out,
// so the registry may read it while later ones are built.
type builder struct {
	gauges []gauge
	pairs  []dto.LabelPair
	ptrs   []*dto.LabelPair
}

// labels returns label pairs for name/value pointers given in name order.
// The strings are not copied: they belong to the immutable sample or are
// package variables.
func (b *builder) labels(nv ...*string) []*dto.LabelPair {
	start := len(b.ptrs)
	for i := 0; i < len(nv); i += 2 {
		b.pairs = append(b.pairs, dto.LabelPair{})
		p := &b.pairs[len(b.pairs)-1]
		p.Name, p.Value = nv[i], nv[i+1]
		b.ptrs = append(b.ptrs, p)
	}
	return b.ptrs[start:len(b.ptrs):len(b.ptrs)]
}

func (b *builder) send(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, lp []*dto.LabelPair) {
	b.gauges = append(b.gauges, gauge{desc: d, value: v, labels: lp})
	ch <- &b.gauges[len(b.gauges)-1]
}

// sendOpt sends v unless it is null: unknown is not zero.
func (b *builder) sendOpt(ch chan<- prometheus.Metric, d *prometheus.Desc, v *float64, lp []*dto.LabelPair) {
	if v != nil {
		b.send(ch, d, *v, lp)
	}
}

// gauge is one figure of a sample. Series of one instance share their
// label pairs, which the registry treats as read-only.
type gauge struct {
	desc   *prometheus.Desc
	value  float64
	labels []*dto.LabelPair
	g      dto.Gauge
}

func (g *gauge) Desc() *prometheus.Desc { return g.desc }

func (g *gauge) Write(m *dto.Metric) error {
	g.g.Value = &g.value
	m.Gauge = &g.g
	m.Label = g.labels
	return nil
}
