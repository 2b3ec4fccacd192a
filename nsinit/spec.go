package nsinit

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Spec is what ward-init is told to do, encoded on its command line (see
// Args and Parse): the command line of a process that replaces itself by
// the program within milliseconds, and is never seen by anyone but the
// agent and the instance itself.
type Spec struct {
	UID, GID uint32
	Dir      string // working directory of the program
	NOFILE   uint64 // RLIMIT_NOFILE, soft and hard

	// Namespaces: build the instance's view of the filesystem, hostname,
	// capabilities and seccomp filter (isolation.mode namespaces). The
	// agent must have cloned the process into new namespaces.
	Namespaces bool
	Hostname   string
	Writable   string   // the instance's directory: the one writable host path
	TmpBytes   int64    // size of the private /tmp, /var/tmp and /dev/shm together
	Hide       []string // host paths the instance must not see
	Cgroup2    bool     // the instance's cgroup is on cgroup v2: mount its own
	Filter     []byte   // the seccomp program (package seccomp's Program)

	Path string   // the program
	Argv []string // its argv, Argv[0] included
	// Env is the program's environment. It is not ward-init's own: the
	// agent chooses that (a tenant's GODEBUG or GOMAXPROCS must not steer
	// a process that runs as root for a millisecond).
	Env []string
}

// The flags of ward-init's command line.
const (
	flagUID      = "-uid"
	flagGID      = "-gid"
	flagDir      = "-dir"
	flagNOFILE   = "-nofile"
	flagNS       = "-ns"
	flagHostname = "-hostname"
	flagWritable = "-writable"
	flagTmp      = "-tmp"
	flagHide     = "-hide"
	flagCgroup2  = "-cgroup2"
	flagFilter   = "-seccomp"
	flagEnv      = "-env"
	argsEnd      = "--"
)

// Argv0 is the argv[0] the agent gives ward-init. A test binary that
// doubles as ward-init tells by it that it was run as one (Invoked).
const Argv0 = "ward-init"

// Invoked reports whether this process was started as ward-init by an
// agent, whatever its binary: a test binary calls Main when it is.
func Invoked() bool { return len(os.Args) > 0 && os.Args[0] == Argv0 }

// selfServes is set by ServeSelf.
var selfServes bool

// ServeSelf makes this binary ward-init too: it runs Main when it was
// started as one, and otherwise makes Path name it. It is for test
// binaries, first thing in TestMain, so that tests need no ward-init
// built beside them (the cgroup v2 stage's VM has no toolchain).
func ServeSelf() {
	if Invoked() {
		Main()
	}
	selfServes = true
}

// Name is ward-init's file name, beside the ward binary.
const Name = "ward-init"

// Path is where the agent finds ward-init by default: this binary when
// it serves as one (ServeSelf), else Name beside it.
func Path() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("ward-init: locate the running binary: %w", err)
	}
	if selfServes {
		return exe, nil
	}
	return filepath.Join(filepath.Dir(exe), Name), nil
}

// ErrUsage reports a command line ward-init cannot take: a bug of the
// agent that built it, or somebody running ward-init by hand.
var ErrUsage = errors.New("ward-init: bad command line")

// Args is s as ward-init's arguments (after argv[0]).
func (s *Spec) Args() []string {
	a := []string{
		flagUID, strconv.FormatUint(uint64(s.UID), 10),
		flagGID, strconv.FormatUint(uint64(s.GID), 10),
		flagDir, s.Dir,
		flagNOFILE, strconv.FormatUint(s.NOFILE, 10),
	}
	if s.Namespaces {
		a = append(a, flagNS,
			flagHostname, s.Hostname,
			flagWritable, s.Writable,
			flagTmp, strconv.FormatInt(s.TmpBytes, 10))
		for _, h := range s.Hide {
			a = append(a, flagHide, h)
		}
		if s.Cgroup2 {
			a = append(a, flagCgroup2)
		}
		a = append(a, flagFilter, hex.EncodeToString(s.Filter))
	}
	for _, e := range s.Env {
		a = append(a, flagEnv, e)
	}
	a = append(a, argsEnd, s.Path)
	return append(a, s.Argv...)
}

// Parse is the inverse of Args. It checks what ward-init relies on:
// absolute paths, a program and its argv.
func Parse(args []string) (*Spec, error) {
	s := &Spec{}
	for len(args) > 0 {
		f := args[0]
		args = args[1:]
		if f == argsEnd {
			break
		}
		switch f {
		case flagNS:
			s.Namespaces = true
			continue
		case flagCgroup2:
			s.Cgroup2 = true
			continue
		}
		if len(args) == 0 {
			return nil, fmt.Errorf("%w: %s needs a value", ErrUsage, f)
		}
		v := args[0]
		args = args[1:]
		var err error
		switch f {
		case flagUID:
			s.UID, err = parseID(v)
		case flagGID:
			s.GID, err = parseID(v)
		case flagDir:
			s.Dir = v
		case flagNOFILE:
			s.NOFILE, err = strconv.ParseUint(v, 10, 64)
		case flagHostname:
			s.Hostname = v
		case flagWritable:
			s.Writable = v
		case flagTmp:
			s.TmpBytes, err = strconv.ParseInt(v, 10, 64)
		case flagHide:
			s.Hide = append(s.Hide, v)
		case flagFilter:
			s.Filter, err = hex.DecodeString(v)
		case flagEnv:
			s.Env = append(s.Env, v)
		default:
			return nil, fmt.Errorf("%w: unknown flag %q", ErrUsage, f)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %s %q: %w", ErrUsage, f, v, err)
		}
	}
	if len(args) < 2 {
		return nil, fmt.Errorf("%w: no program after %s", ErrUsage, argsEnd)
	}
	s.Path, s.Argv = args[0], args[1:]
	paths := [][2]string{{"program", s.Path}, {flagDir, s.Dir}}
	if s.Namespaces {
		paths = append(paths, [2]string{flagWritable, s.Writable})
		for _, h := range s.Hide {
			paths = append(paths, [2]string{flagHide, h})
		}
		if s.TmpBytes <= 0 {
			return nil, fmt.Errorf("%w: %s must be > 0", ErrUsage, flagTmp)
		}
		if len(s.Filter) == 0 {
			return nil, fmt.Errorf("%w: %s needs %s", ErrUsage, flagNS, flagFilter)
		}
	}
	for _, p := range paths {
		if !strings.HasPrefix(p[1], "/") {
			return nil, fmt.Errorf("%w: %s must be an absolute path, got %q", ErrUsage, p[0], p[1])
		}
	}
	if s.NOFILE == 0 {
		return nil, fmt.Errorf("%w: %s must be > 0", ErrUsage, flagNOFILE)
	}
	return s, nil
}

func parseID(v string) (uint32, error) {
	n, err := strconv.ParseUint(v, 10, 32)
	return uint32(n), err
}

// Step is the part of ward-init's work that failed.
type Step string

const (
	StepUsage       Step = "usage"       // the command line (ErrUsage)
	StepMounts      Step = "mounts"      // building the instance's filesystem view
	StepHostname    Step = "hostname"    // sethostname in its UTS namespace
	StepLimits      Step = "limits"      // RLIMIT_NOFILE, oom_score_adj
	StepChdir       Step = "chdir"       // entering Spec.Dir
	StepCredentials Step = "setuid"      // dropping capabilities, groups, taking uid and gid
	StepSeccomp     Step = "seccomp"     // no_new_privs and the filter
	StepExec        Step = "exec"        // execve of Spec.Path
	StepStatus      Step = "status-pipe" // fd 3 is not the agent's status pipe
)

// Failure is what ward-init reports on its status pipe before it exits.
type Failure struct {
	Step   Step
	Errno  syscall.Errno // 0 when the failure is not a syscall's
	Detail string        // what it was doing, for the agent's log
}

func (f *Failure) Error() string {
	s := "ward-init: " + string(f.Step) + ": " + f.Detail
	if f.Errno != 0 {
		s += ": " + f.Errno.Error()
	}
	return s
}

// Unwrap makes errors.Is(err, syscall.ENOENT) and the like work.
func (f *Failure) Unwrap() error {
	if f.Errno == 0 {
		return nil
	}
	return f.Errno
}

// Encode is f as written on the status pipe: step, errno and detail
// separated by NUL bytes.
func (f *Failure) Encode() []byte {
	return []byte(string(f.Step) + "\x00" + strconv.Itoa(int(f.Errno)) + "\x00" + f.Detail)
}

// DecodeFailure reads what ward-init wrote on its status pipe.
func DecodeFailure(b []byte) (*Failure, error) {
	parts := strings.SplitN(string(b), "\x00", 3)
	if len(parts) != 3 {
		return nil, fmt.Errorf("ward-init: malformed status %q", b)
	}
	n, err := strconv.Atoi(parts[1])
	if err != nil || n < 0 {
		return nil, fmt.Errorf("ward-init: malformed errno in status %q", b)
	}
	return &Failure{Step: Step(parts[0]), Errno: syscall.Errno(n), Detail: parts[2]}, nil
}
