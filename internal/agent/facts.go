package agent

import (
	"os"
	"runtime"

	"github.com/shirou/gopsutil/v4/cpu"
	"github.com/shirou/gopsutil/v4/disk"
	"github.com/shirou/gopsutil/v4/host"
	"github.com/shirou/gopsutil/v4/mem"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// ReadHostFacts describes this host with gopsutil. Whatever gopsutil cannot
// read is left empty: facts are descriptive, never a reason not to start.
// Arch is Go's name for the architecture (amd64, arm64), the one artifacts
// are built for.
func ReadHostFacts() *relv1.HostFacts {
	f := &relv1.HostFacts{Os: runtime.GOOS, Arch: runtime.GOARCH}
	if info, err := host.Info(); err == nil {
		f.Hostname = info.Hostname
		if info.OS != "" {
			f.Os = info.OS
		}
		f.Platform = info.Platform
		f.PlatformVersion = info.PlatformVersion
		f.Kernel = info.KernelVersion
	}
	if f.Hostname == "" {
		f.Hostname, _ = os.Hostname()
	}
	if n, err := cpu.Counts(true); err == nil && n > 0 {
		f.Cpus = uint32(n)
	} else {
		f.Cpus = uint32(runtime.NumCPU())
	}
	if vm, err := mem.VirtualMemory(); err == nil {
		f.MemoryBytes = vm.Total
	}
	return f
}

// ReadLoad samples the host's load with gopsutil: CPU use since the previous
// call (the first call measures since boot), memory use, and the free and
// total space of the file system holding diskPath.
func ReadLoad(diskPath string) *relv1.Load {
	l := &relv1.Load{}
	if p, err := cpu.Percent(0, false); err == nil && len(p) > 0 {
		l.CpuPercent = p[0]
	}
	if vm, err := mem.VirtualMemory(); err == nil {
		l.MemoryPercent = vm.UsedPercent
	}
	if diskPath != "" {
		if u, err := disk.Usage(diskPath); err == nil {
			l.DiskFreeBytes = u.Free
			l.DiskTotalBytes = u.Total
		}
	}
	return l
}
