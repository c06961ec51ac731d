package main

import (
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// Device backings of the lab's disks, built from their chains: a flat disk is a
// VirtualDiskFlatVer2BackingInfo, an RDM a VirtualDiskRawDiskMappingVer1BackingInfo (as vSphere
// shows one: compatibilityMode, lunUuid, deviceName; a virtual-mode RDM under snapshots gets a
// chain of RDM backings whose files are the deltas, as vSphere reports it). Each level of the
// chain up to `top` is one backing, `parent` pointing down.

// buildBacking returns the backing of d's chain up to level top; tmpl is the device's current
// backing (its datastore, uuid, provisioning flags are kept).
func (l *lab) buildBacking(d *disk, top int, tmpl types.BaseVirtualDeviceBackingInfo) types.BaseVirtualDeviceBackingInfo {
	var ds *types.ManagedObjectReference
	if fb, ok := tmpl.(types.BaseVirtualDeviceFileBackingInfo); ok {
		ds = fb.GetVirtualDeviceFileBackingInfo().Datastore
	}
	if ds == nil && d.ds.ref.Value != "" {
		r := d.ds.ref
		ds = &r
	}
	if d.spec.Kind == "rdm" {
		var chain *types.VirtualDiskRawDiskMappingVer1BackingInfo
		for i := 0; i <= top && i < len(d.levels); i++ {
			chain = &types.VirtualDiskRawDiskMappingVer1BackingInfo{
				VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{
					FileName: d.dsPath(d.levels[i].name), Datastore: ds},
				LunUuid:           d.lunUUID,
				DeviceName:        "/vmfs/devices/disks/vml." + d.lunUUID,
				CompatibilityMode: d.spec.Compatibility,
				DiskMode:          d.spec.Mode,
				Uuid:              d.uuid,
				Parent:            chain,
			}
		}
		return chain
	}
	base, ok := tmpl.(*types.VirtualDiskFlatVer2BackingInfo)
	if !ok {
		base = &types.VirtualDiskFlatVer2BackingInfo{ThinProvisioned: types.NewBool(!d.spec.Thick), Uuid: d.uuid}
	}
	var chain *types.VirtualDiskFlatVer2BackingInfo
	for i := 0; i <= top && i < len(d.levels); i++ {
		nb := *base
		nb.Parent = chain
		nb.FileName = d.dsPath(d.levels[i].name)
		nb.Datastore = ds
		nb.DiskMode = d.spec.Mode
		nb.ChangeId = ""
		chain = &nb
	}
	return chain
}

// setChangeID stamps a snapshot's change id on the top of a backing chain.
func setChangeID(b types.BaseVirtualDeviceBackingInfo, id string) {
	switch x := b.(type) {
	case *types.VirtualDiskFlatVer2BackingInfo:
		x.ChangeId = id
	case *types.VirtualDiskRawDiskMappingVer1BackingInfo:
		x.ChangeId = id
	}
}

// syncBackingsLocked points a VM's disks at the top of their chains (VM locked, disks.mu held).
func (l *lab) syncBackingsLocked(vm *simulator.VirtualMachine) {
	for _, dev := range vm.Config.Hardware.Device {
		vd, ok := dev.(*types.VirtualDisk)
		if !ok {
			continue
		}
		d := l.disks.find(vm.Self.Value, vd.Key)
		if d == nil {
			continue
		}
		vd.Backing = l.buildBacking(d, len(d.levels)-1, vd.Backing)
	}
}

// snapshotBackingsLocked gives a snapshot's disk devices their backings: the chain up to the
// level the snapshot froze, with its change id; an independent disk (or a physical RDM), which
// snapshots leave out, keeps the VM's base file without a change id (disks.mu held).
func (l *lab) snapshotBackingsLocked(snap string, vm string, devs []types.BaseVirtualDevice) {
	rec := l.disks.snaps[snap]
	for _, dev := range devs {
		vd, ok := dev.(*types.VirtualDisk)
		if !ok {
			continue
		}
		d := l.disks.find(vm, vd.Key)
		if d == nil {
			continue
		}
		var sd *snapDisk
		if rec != nil {
			sd = rec.disks[vd.Key]
		}
		if sd == nil {
			vd.Backing = l.buildBacking(d, 0, vd.Backing)
			continue
		}
		_, top := d.resolve(sd.frozen)
		if top < 0 {
			continue
		}
		vd.Backing = l.buildBacking(d, top, vd.Backing)
		setChangeID(vd.Backing, sd.changeID)
	}
}

// flatShim swaps a VM's RDM backings for flat ones before a vcsim call that type-asserts every
// disk backing to VirtualDiskFlatVer2BackingInfo (ReconfigVM_Task, CloneVM_Task,
// RefreshStorageInfo panic otherwise); the VM is marked dirty so afterCall rebuilds the real
// backings. Only lab VMs with RDMs are touched.
func (l *lab) flatShim(ref types.ManagedObjectReference) {
	lv := l.vmByRef(ref.Value)
	if lv == nil {
		return
	}
	hasRDM := false
	for _, d := range lv.disks {
		hasRDM = hasRDM || d.spec.Kind == "rdm"
	}
	vm := vmObject(ref)
	if !hasRDM || vm == nil {
		return
	}
	simulator.Map.WithLock(vm, func() {
		for _, dev := range vm.Config.Hardware.Device {
			if vd, ok := dev.(*types.VirtualDisk); ok {
				if b, ok := vd.Backing.(*types.VirtualDiskRawDiskMappingVer1BackingInfo); ok {
					vd.Backing = rdmAsFlat(b)
				}
			}
		}
	})
	l.disks.mu.Lock()
	l.disks.dirty[ref.Value] = true
	l.disks.mu.Unlock()
}

func rdmAsFlat(b *types.VirtualDiskRawDiskMappingVer1BackingInfo) *types.VirtualDiskFlatVer2BackingInfo {
	if b == nil {
		return nil
	}
	return &types.VirtualDiskFlatVer2BackingInfo{
		VirtualDeviceFileBackingInfo: b.VirtualDeviceFileBackingInfo,
		DiskMode:                     b.DiskMode,
		Uuid:                         b.Uuid,
		ThinProvisioned:              types.NewBool(false),
		Parent:                       rdmAsFlat(b.Parent),
	}
}
