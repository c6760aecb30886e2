// Package buildinfo says which build of MessageVault is running: the
// module version, the VCS revision and its time, as the Go toolchain
// stamps them into the binary, for `messagevault version` and the
// messagevault_build_info metric.
package buildinfo

import (
	"runtime"
	"runtime/debug"
	"strings"
)

// Info describes a build.
type Info struct {
	// Version is the module version ("v1.2.0"), or "(devel)" for a build
	// from a source checkout.
	Version string
	// Revision is the VCS commit, "" if unknown; Modified says the
	// checkout had uncommitted changes.
	Revision string
	Modified bool
	// Time is the commit's time (RFC 3339), "" if unknown.
	Time string
	// GoVersion is the toolchain that built the binary.
	GoVersion string
}

// Read returns the running binary's build information. override, if not
// empty, replaces the module version (a release's -ldflags -X).
func Read(override string) Info {
	info := Info{Version: "(devel)", GoVersion: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			info.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				info.Revision = s.Value
			case "vcs.time":
				info.Time = s.Value
			case "vcs.modified":
				info.Modified = s.Value == "true"
			}
		}
	}
	if override != "" {
		info.Version = override
	}
	return info
}

// String is one line: "v1.2.0 (revision 1a2b3c4d5e6f, 2026-12-04T09:00:00Z, modified; go1.26.0)".
func (i Info) String() string {
	var parts []string
	if i.Revision != "" {
		rev := i.Revision
		if len(rev) > 12 {
			rev = rev[:12]
		}
		parts = append(parts, "revision "+rev)
	}
	if i.Time != "" {
		parts = append(parts, i.Time)
	}
	if i.Modified {
		parts = append(parts, "modified")
	}
	detail := strings.Join(parts, ", ")
	if detail != "" {
		detail += "; "
	}
	return i.Version + " (" + detail + i.GoVersion + ")"
}
