package main

import (
	"log"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// hooks sees every object vcsim creates or removes (Registry.AddHandler). PutObject runs inside
// vcsim's method handlers, which already hold the VM's lock: never take it again here.
type hooks struct{ lab *lab }

func (h *hooks) Reference() types.ManagedObjectReference {
	return types.ManagedObjectReference{Type: "VbmLabHooks", Value: "hooks"}
}

func (h *hooks) PutObject(obj mo.Reference) {
	switch o := obj.(type) {
	case *simulator.VirtualMachineSnapshot:
		h.lab.onSnapshot(o)
	case *simulator.Task:
		h.lab.onTask(o)
	}
}

func (h *hooks) UpdateObject(mo.Reference, []types.PropertyChange) {}

func (h *hooks) RemoveObject(ref types.ManagedObjectReference) {
	if ref.Type == "VirtualMachineSnapshot" {
		// The lab removes snapshots itself (snapremove.go), merging first; this catches any
		// other way a snapshot goes (a VM destroyed with its snapshots).
		h.lab.snapAcct.closed(ref.Value)
		h.lab.disks.forget(ref.Value)
	}
}

// onSnapshot runs inside CreateSnapshot_Task (VM locked by vcsim): it gives the snapshot its
// own copy of the disk devices (vcsim's is a shallow copy of the VM's), freezes the disks, stamps
// change ids and points the VM's disks at their new deltas.
func (l *lab) onSnapshot(snap *simulator.VirtualMachineSnapshot) {
	l.snapAcct.opened(snap)
	if l.vmByRef(snap.Vm.Value) == nil {
		return
	}
	vm := vmObject(snap.Vm)
	if vm == nil || snap.Config.Hardware.Device == nil {
		return
	}
	devs := make([]types.BaseVirtualDevice, len(snap.Config.Hardware.Device))
	for i, dev := range snap.Config.Hardware.Device {
		devs[i] = dev
		if vd, ok := dev.(*types.VirtualDisk); ok {
			c := *vd
			devs[i] = &c
		}
	}
	snap.Config.Hardware.Device = devs
	if _, err := l.disks.snapshot(snap.Self.Value, snap.Vm.Value); err != nil {
		log.Printf("snapshot %s: %s", snap.Self.Value, err)
		return
	}
	l.disks.mu.Lock()
	defer l.disks.mu.Unlock()
	l.snapshotBackingsLocked(snap.Self.Value, snap.Vm.Value, devs)
	l.syncBackingsLocked(vm)
}

// onTask fixes tasks whose entity is a snapshot (RemoveSnapshot_Task, RevertToSnapshot_Task):
// vSphere reports the VM, and pyVmomi's WaitForTask needs a managed entity there.
//
// Tasks of FileManager and VirtualDiskManager (DeleteDatastoreFile_Task, ...) name that manager
// as their entity in vcsim, which is not a managed entity either: vSphere leaves it unset.
func (l *lab) onTask(t *simulator.Task) {
	e := t.Info.Entity
	if e != nil && (e.Type == "FileManager" || e.Type == "VirtualDiskManager") {
		t.Info.Entity = nil
		t.Info.EntityName = ""
		return
	}
	if e == nil || e.Type != "VirtualMachineSnapshot" {
		return
	}
	if snap, ok := simulator.Map.Get(*e).(*simulator.VirtualMachineSnapshot); ok {
		ref := snap.Vm
		t.Info.Entity = &ref
		if vm := vmObject(ref); vm != nil {
			t.Info.EntityName = vm.Name
		}
	}
	// the snapshot's lock is held by vcsim; the VM's is not: removal merges and the VM's
	// backings are re-synced after the call (afterCall)
}

// afterCall runs after every SOAP request (no vcsim lock held): it re-syncs VMs whose chains
// changed and applies CBT toggles and disk resizes made by ReconfigVM_Task.
func (l *lab) afterCall(method string) {
	if method == "ReconfigVM_Task" {
		for _, lv := range l.vmList() {
			l.syncReconfig(lv)
		}
	}
	l.disks.mu.Lock()
	dirty := l.disks.dirty
	l.disks.dirty = map[string]bool{}
	l.disks.mu.Unlock()
	for ref := range dirty {
		lv := l.vmByRef(ref)
		if lv == nil {
			continue
		}
		vm := vmObject(lv.ref)
		if vm == nil {
			continue
		}
		simulator.Map.WithLock(vm, func() {
			l.disks.mu.Lock()
			defer l.disks.mu.Unlock()
			l.syncBackingsLocked(vm)
		})
	}
}

func (l *lab) syncReconfig(lv *labVM) {
	vm := vmObject(lv.ref)
	if vm == nil {
		return
	}
	simulator.Map.WithLock(vm, func() {
		on := vm.Config.ChangeTrackingEnabled != nil && *vm.Config.ChangeTrackingEnabled
		l.disks.mu.Lock()
		defer l.disks.mu.Unlock()
		for _, dev := range vm.Config.Hardware.Device {
			vd, ok := dev.(*types.VirtualDisk)
			if !ok {
				continue
			}
			d := l.disks.find(lv.ref.Value, vd.Key)
			if d == nil {
				continue
			}
			size := vd.CapacityInBytes
			if vd.CapacityInKB*1024 != d.capacity && vd.CapacityInKB*1024 != size {
				size = vd.CapacityInKB * 1024
			}
			if size != d.capacity && size > 0 {
				if err := l.disks.resizeLocked(d, size); err != nil {
					log.Printf("resize %s: %s", d.baseName, err)
				}
				if d.cbtOn { // a resize resets CBT: earlier change ids go stale
					l.disks.setCBTLocked(d, false)
					l.disks.setCBTLocked(d, true)
				}
			}
			vd.CapacityInBytes, vd.CapacityInKB = d.capacity, d.capacity/1024
			l.disks.setCBTLocked(d, on)
		}
	})
}
