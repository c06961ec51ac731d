package main

import (
	"bytes"
	"sort"
	"strconv"
	"strings"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// cbtType is the managed object type QueryChangedDiskAreas calls are re-addressed to: the
// middleware rewrites <_this type="VirtualMachine">vm-N</_this> to this type, so vcsim's own
// dispatcher still checks the session and encodes faults, but calls cbtEndpoint (no VM lock).
const cbtType = "VbmLabChangeTracker"

// Its first field is an mo type: vcsim walks every registered object as one (FindByDatastorePath).
type cbtEndpoint struct {
	mo.ExtensibleManagedObject
	lab *lab
}

func (c *cbtEndpoint) QueryChangedDiskAreas(ctx *simulator.Context, req *types.QueryChangedDiskAreas) soap.HasFault {
	body := &methods.QueryChangedDiskAreasBody{}
	info, fault := c.lab.disks.query(c.Self.Value, req)
	if fault != nil {
		body.Fault_ = simulator.Fault("", fault)
		return body
	}
	body.Res = &types.QueryChangedDiskAreasResponse{Returnval: *info}
	return body
}

// query answers QueryChangedDiskAreas for a VM from the lab's own CBT records.
func (s *diskStore) query(vm string, req *types.QueryChangedDiskAreas) (*types.DiskChangeInfo, types.BaseMethodFault) {
	if req.Snapshot == nil {
		return s.queryCurrent(vm, req)
	}
	var sd *snapDisk
	var blocks []int64
	var fault types.BaseMethodFault
	func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		rec := s.snaps[req.Snapshot.Value]
		if rec == nil || rec.vm != vm {
			fault = &types.ManagedObjectNotFound{Obj: *req.Snapshot}
			return
		}
		sd = rec.disks[req.DeviceKey]
		if sd == nil {
			fault = &types.InvalidArgument{InvalidProperty: "deviceKey"}
			if d := s.find(vm, req.DeviceKey); d != nil && d.independent() {
				// an independent disk (or physical RDM) is not part of the snapshot
				fault = &types.FileFault{File: d.dsPath(d.baseName + ".vmdk")}
			}
			return
		}
		if req.StartOffset < 0 || req.StartOffset >= sd.capacity {
			fault = &types.InvalidArgument{InvalidProperty: "startOffset"}
			return
		}
		fileFault := &types.FileFault{File: sd.disk.dsPath(sd.frozen.name)}
		if !sd.cbt {
			fault = fileFault // snapshot taken without CBT
			return
		}
		if req.ChangeId == "*" {
			blocks, fault = s.allocated(sd)
			return
		}
		i := strings.LastIndex(req.ChangeId, "/")
		if i < 0 {
			fault = fileFault
			return
		}
		seq, err := strconv.Atoi(req.ChangeId[i+1:])
		d := sd.disk
		if err != nil || req.ChangeId[:i] != sd.epoch || d.epoch != sd.epoch || seq < 1 || seq > sd.gen {
			fault = fileFault // unknown or stale id (CBT reset, disk resized)
			return
		}
		set := map[int64]bool{}
		for g := seq + 1; g <= sd.gen; g++ {
			for b := range d.changed[g] {
				set[b] = true
			}
		}
		for b := range set {
			blocks = append(blocks, b)
		}
		sort.Slice(blocks, func(a, b int) bool { return blocks[a] < blocks[b] })
	}()
	if fault != nil {
		return nil, fault
	}
	return s.areas(blocks, req.StartOffset, sd.capacity), nil
}

// allocated lists the non-zero blocks of a snapshot's content (cached per snapshot disk).
func (s *diskStore) allocated(sd *snapDisk) ([]int64, types.BaseMethodFault) {
	if sd.allocated != nil {
		return sd.allocated, nil
	}
	d := sd.disk
	top := d.levelIndex(sd.frozen)
	const chunk = 64 * grain
	buf := make([]byte, chunk)
	zero := make([]byte, grain)
	out := []int64{}
	for off := int64(0); off < sd.capacity; off += chunk {
		n := int64(chunk)
		if off+n > sd.capacity {
			n = sd.capacity - off
		}
		if err := d.readChain(top, buf[:n], off); err != nil {
			return nil, &types.FileFault{File: d.levels[0].data}
		}
		for p := int64(0); p < n; p += grain {
			e := p + grain
			if e > n {
				e = n
			}
			if !bytes.Equal(buf[p:e], zero[:e-p]) {
				out = append(out, (off+p)/grain)
			}
		}
	}
	sd.allocated = out
	return out, nil
}

// areas merges sorted blocks into areas from start on, honouring the per-reply cap.
func (s *diskStore) areas(blocks []int64, start, capacity int64) *types.DiskChangeInfo {
	var out []types.DiskChangeExtent
	covered := capacity
	for _, b := range blocks {
		a, e := b*grain, (b+1)*grain
		if e > capacity {
			e = capacity
		}
		if e <= start {
			continue
		}
		if a < start {
			a = start
		}
		if n := len(out); n > 0 && out[n-1].Start+out[n-1].Length == a {
			out[n-1].Length += e - a
			continue
		}
		if s.maxAreas > 0 && len(out) == s.maxAreas {
			last := out[len(out)-1]
			covered = last.Start + last.Length
			break
		}
		out = append(out, types.DiskChangeExtent{Start: a, Length: e - a})
	}
	return &types.DiskChangeInfo{StartOffset: start, Length: covered - start, ChangedArea: out}
}

// queryCurrent answers a query without a snapshot: changes up to the disk's current state, which
// vSphere allows only for a powered-off VM (InvalidState otherwise).
func (s *diskStore) queryCurrent(vm string, req *types.QueryChangedDiskAreas) (*types.DiskChangeInfo, types.BaseMethodFault) {
	ref := types.ManagedObjectReference{Type: "VirtualMachine", Value: vm}
	if obj, ok := simulator.Map.Get(ref).(*simulator.VirtualMachine); !ok ||
		obj.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOff {
		return nil, &types.InvalidState{}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.find(vm, req.DeviceKey)
	if d == nil {
		return nil, &types.InvalidArgument{InvalidProperty: "deviceKey"}
	}
	if req.StartOffset < 0 || req.StartOffset >= d.capacity {
		return nil, &types.InvalidArgument{InvalidProperty: "startOffset"}
	}
	fileFault := &types.FileFault{File: d.dsPath(d.baseName + ".vmdk")}
	i := strings.LastIndex(req.ChangeId, "/")
	if !d.cbtOn || i < 0 {
		return nil, fileFault
	}
	seq, err := strconv.Atoi(req.ChangeId[i+1:])
	if err != nil || req.ChangeId[:i] != d.epoch || seq < 1 || seq > d.gen {
		return nil, fileFault // unknown or stale id (CBT reset, disk resized)
	}
	set := map[int64]bool{}
	for g := seq + 1; g <= d.gen; g++ {
		for b := range d.changed[g] {
			set[b] = true
		}
	}
	var blocks []int64
	for b := range set {
		blocks = append(blocks, b)
	}
	sort.Slice(blocks, func(a, b int) bool { return blocks[a] < blocks[b] })
	return s.areas(blocks, req.StartOffset, d.capacity), nil
}
