package cgroups

import (
	"reflect"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func i64(v int64) *int64   { return &v }
func u64(v uint64) *uint64 { return &v }
func dev(allow bool, typ string, major, minor *int64, access string) specs.LinuxDeviceCgroup {
	return specs.LinuxDeviceCgroup{Allow: allow, Type: typ, Major: major, Minor: minor, Access: access}
}

func TestValues(t *testing.T) {
	full := &specs.LinuxResources{
		Memory: &specs.LinuxMemory{Limit: i64(32 << 20), Swap: i64(64 << 20)},
		CPU:    &specs.LinuxCPU{Shares: u64(512), Quota: i64(50000), Period: u64(100000), Cpus: "0", Mems: "0"},
		Pids:   &specs.LinuxPids{Limit: i64(64)},
		Devices: []specs.LinuxDeviceCgroup{
			dev(true, "c", i64(1), i64(3), "rwm"),
			dev(true, "c", i64(136), nil, "rw"),
			dev(false, "c", i64(10), i64(229), ""),
		},
	}
	for _, tt := range []struct {
		name string
		mode Mode
		res  *specs.LinuxResources
		want []Value
	}{
		{"nil", V1, nil, nil},
		{"empty v1", V1, &specs.LinuxResources{}, nil},
		{"empty v2", V2, &specs.LinuxResources{}, nil},
		{"unavailable", Unavailable, full, nil},
		{"full v1", V1, full, []Value{
			{"cpu", "cpu.shares", "512"},
			{"cpu", "cpu.cfs_period_us", "100000"},
			{"cpu", "cpu.cfs_quota_us", "50000"},
			{"cpuset", "cpuset.cpus", "0"},
			{"cpuset", "cpuset.mems", "0"},
			{"memory", "memory.limit_in_bytes", "33554432"},
			{"memory", "memory.memsw.limit_in_bytes", "33554432"},
			{"memory", "memory.swappiness", "0"},
			{"pids", "pids.max", "64"},
			{"devices", "devices.deny", "a"},
			{"devices", "devices.allow", "c 1:3 rwm"},
			{"devices", "devices.allow", "c 136:* rw"},
			{"devices", "devices.deny", "c 10:229 rwm"},
		}},
		{"full v2", V2, full, []Value{
			{"cpu", "cpu.weight", "59"},
			{"cpu", "cpu.max", "50000 100000"},
			{"cpuset", "cpuset.cpus", "0"},
			{"cpuset", "cpuset.mems", "0"},
			{"memory", "memory.swap.max", "0"},
			{"memory", "memory.max", "33554432"},
			{"memory", "memory.oom.group", "1"},
			{"pids", "pids.max", "64"},
		}},
		{"quota without period v1", V1, &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: i64(25000)}}, []Value{
			{"cpu", "cpu.cfs_period_us", "100000"},
			{"cpu", "cpu.cfs_quota_us", "25000"},
		}},
		{"quota without period v2", V2, &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: i64(25000)}}, []Value{
			{"cpu", "cpu.max", "25000 100000"},
		}},
		{"unlimited quota with period v2", V2, &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: i64(-1), Period: u64(50000)}}, []Value{
			{"cpu", "cpu.max", "max 50000"},
		}},
		{"unlimited quota with period v1", V1, &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: i64(-1), Period: u64(50000)}}, []Value{
			{"cpu", "cpu.cfs_period_us", "50000"},
			{"cpu", "cpu.cfs_quota_us", "-1"},
		}},
		{"default shares v2", V2, &specs.LinuxResources{CPU: &specs.LinuxCPU{Shares: u64(1024)}}, []Value{{"cpu", "cpu.weight", "100"}}},
		{"min shares v2", V2, &specs.LinuxResources{CPU: &specs.LinuxCPU{Shares: u64(2)}}, []Value{{"cpu", "cpu.weight", "1"}}},
		{"max shares v2", V2, &specs.LinuxResources{CPU: &specs.LinuxCPU{Shares: u64(262144)}}, []Value{{"cpu", "cpu.weight", "10000"}}},
		{"zero and negative limits are unset", V1, &specs.LinuxResources{
			Memory: &specs.LinuxMemory{Limit: i64(-1)},
			CPU:    &specs.LinuxCPU{Shares: u64(0), Quota: i64(0)},
			Pids:   &specs.LinuxPids{Limit: i64(-1)},
		}, nil},
		{"swap ignored without limit v2", V2, &specs.LinuxResources{Memory: &specs.LinuxMemory{Swap: i64(1 << 30)}}, nil},
		{"reservation v1", V1, &specs.LinuxResources{Memory: &specs.LinuxMemory{Reservation: i64(1 << 20)}}, []Value{
			{"memory", "memory.soft_limit_in_bytes", "1048576"},
		}},
		{"reservation v2", V2, &specs.LinuxResources{Memory: &specs.LinuxMemory{Reservation: i64(1 << 20)}}, []Value{
			{"memory", "memory.low", "1048576"},
		}},
		{"leading deny-all not repeated v1", V1, &specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{
			dev(false, "", nil, nil, "rwm"),
			dev(true, "", nil, nil, ""),
		}}, []Value{
			{"devices", "devices.deny", "a"},
			{"devices", "devices.allow", "a"},
		}},
		{"devices are not files on v2", V2, &specs.LinuxResources{Devices: full.Devices}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := Values(tt.mode, tt.res)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Values(%v) =\n%q\nwant\n%q", tt.mode, got, tt.want)
			}
		})
	}
}

func TestDeviceRules_Normalises(t *testing.T) {
	got := deviceRules([]specs.LinuxDeviceCgroup{dev(true, "", nil, i64(3), "")})
	if len(got) != 2 {
		t.Fatalf("got %d rules, want 2 (deny-all and the allow)", len(got))
	}
	if d := got[0]; d.Allow || d.Type != "a" || *d.Major != -1 || *d.Minor != -1 || d.Access != "rwm" {
		t.Errorf("first rule = %+v, want deny a *:* rwm", d)
	}
	if d := got[1]; !d.Allow || d.Type != "a" || *d.Major != -1 || *d.Minor != 3 || d.Access != "rwm" {
		t.Errorf("second rule = %+v, want allow a *:3 rwm", d)
	}
	if deviceRules(nil) != nil {
		t.Error("no rules must mean devices are not controlled")
	}
}

func TestSplitExec(t *testing.T) {
	if a, b := SplitExec(nil); a != nil || b != nil {
		t.Errorf("nil: %v %v", a, b)
	}
	res := &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(1 << 24)}}
	if a, b := SplitExec(res); a != res || b != nil {
		t.Errorf("no pids: %v %v", a, b)
	}
}
