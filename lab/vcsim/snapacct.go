package main

import (
	"net/http"
	"regexp"
	"sort"
	"sync"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// Snapshot accounting as the lab sees it: the snapshots open now (of every VM) and high-water
// marks since the last reset: in total, per datastore (each datastore the VM uses), per host
// and on any single VM.

type openSnap struct {
	moref      string
	vm         types.ManagedObjectReference
	vmName     string
	datastore  string   // of the VM's .vmx
	datastores []string // every datastore the VM uses
	host       string
	created    time.Time
}

type snapAccounting struct {
	mu       sync.Mutex
	open     map[string]*openSnap
	maxTotal int
	maxDS    map[string]int
	maxHost  map[string]int
	maxVM    map[string]int
}

func newSnapAccounting() *snapAccounting {
	return &snapAccounting{open: map[string]*openSnap{}, maxDS: map[string]int{}, maxHost: map[string]int{},
		maxVM: map[string]int{}}
}

// opened records a snapshot vcsim just created (called with the VM locked by vcsim).
func (a *snapAccounting) opened(snap *simulator.VirtualMachineSnapshot) {
	o := &openSnap{moref: snap.Self.Value, vm: snap.Vm, created: time.Now()}
	if vm := vmObject(snap.Vm); vm != nil {
		o.vmName = vm.Name
		o.datastore, _ = splitDsPath(vm.Config.Files.VmPathName)
		for _, ref := range vm.Datastore {
			if ds, ok := simulator.Map.Get(ref).(*simulator.Datastore); ok {
				o.datastores = append(o.datastores, ds.Name)
			}
		}
		if vm.Runtime.Host != nil {
			if h, ok := simulator.Map.Get(*vm.Runtime.Host).(*simulator.HostSystem); ok {
				o.host = h.Name
			}
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.open[o.moref] = o
	a.updateLocked()
}

func (a *snapAccounting) closed(moref string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.open, moref)
}

// counts answers the open snapshots per datastore, host and VM.
func (a *snapAccounting) countsLocked() (map[string]int, map[string]int, map[string]int) {
	ds, host, vm := map[string]int{}, map[string]int{}, map[string]int{}
	for _, o := range a.open {
		for _, d := range o.datastores {
			ds[d]++
		}
		if o.host != "" {
			host[o.host]++
		}
		vm[o.vmName]++
	}
	return ds, host, vm
}

func (a *snapAccounting) updateLocked() {
	if len(a.open) > a.maxTotal {
		a.maxTotal = len(a.open)
	}
	ds, host, vm := a.countsLocked()
	for _, m := range []struct{ now, max map[string]int }{{ds, a.maxDS}, {host, a.maxHost}, {vm, a.maxVM}} {
		for k, n := range m.now {
			if n > m.max[k] {
				m.max[k] = n
			}
		}
	}
}

// reset starts the high-water marks again from what is open now.
func (a *snapAccounting) reset() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.maxTotal, a.maxDS, a.maxHost, a.maxVM = 0, map[string]int{}, map[string]int{}, map[string]int{}
	a.updateLocked()
}

func (a *snapAccounting) report() map[string]interface{} {
	a.mu.Lock()
	for moref, o := range a.open { // gone another way (its VM destroyed): not open any more
		ref := types.ManagedObjectReference{Type: "VirtualMachineSnapshot", Value: moref}
		if simulator.Map.Get(ref) == nil || vmObject(o.vm) == nil {
			delete(a.open, moref)
		}
	}
	list := make([]openSnap, 0, len(a.open))
	for _, o := range a.open {
		list = append(list, *o)
	}
	maxOne := 0
	for _, n := range a.maxVM {
		if n > maxOne {
			maxOne = n
		}
	}
	out := map[string]interface{}{"max_open": a.maxTotal, "max_open_per_datastore": copyCounts(a.maxDS),
		"max_open_per_host": copyCounts(a.maxHost), "max_open_per_vm": copyCounts(a.maxVM),
		"max_open_on_one_vm": maxOne}
	a.mu.Unlock()
	sort.Slice(list, func(i, j int) bool { return list[i].created.Before(list[j].created) })
	open := []interface{}{}
	for _, o := range list {
		name, desc := snapshotLabel(o.vm, o.moref)
		open = append(open, map[string]interface{}{"vm": o.vmName, "vm_moref": o.vm.Value, "moref": o.moref,
			"name": name, "description": desc, "datastore": o.datastore, "datastores": o.datastores,
			"host": o.host, "created": o.created.UTC().Format(time.RFC3339Nano)})
	}
	out["open"] = open
	out["open_count"] = len(open)
	return out
}

func copyCounts(m map[string]int) map[string]int {
	out := map[string]int{}
	for k, v := range m {
		out[k] = v
	}
	return out
}

// snapshotLabel reads a snapshot's name and description from its VM's snapshot tree.
func snapshotLabel(vmRef types.ManagedObjectReference, moref string) (string, string) {
	vm := vmObject(vmRef)
	if vm == nil {
		return "", ""
	}
	var name, desc string
	simulator.Map.WithLock(vm, func() {
		if vm.Snapshot == nil {
			return
		}
		if n := findNode(vm.Snapshot.RootSnapshotList, moref); n != nil {
			name, desc = n.Name, n.Description
		}
	})
	return name, desc
}

var quiesceTrue = regexp.MustCompile(`<quiesce\b[^>]*>\s*(true|1)\s*</quiesce>`)

// quiesceFails answers CreateSnapshot_Task with quiesce=true on a powered-on VM whose spec says
// quiesce_fails as vSphere does when VMware Tools cannot quiesce the guest: a task that ends in
// an ApplicationQuiesceFault (no snapshot is made). It returns false when the call goes on.
func (l *lab) quiesceFails(w http.ResponseWriter, body []byte, call soapCall) bool {
	lv := l.vmByRef(call.this.Value)
	if call.this.Type != "VirtualMachine" || lv == nil || !lv.spec.QuiesceFails || !quiesceTrue.Match(body) {
		return false
	}
	vm := vmObject(call.this)
	on := false
	simulator.Map.WithLock(vm, func() { on = vm.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOn })
	if !on {
		return false // nothing to quiesce: vSphere takes the snapshot
	}
	const msg = "An error occurred while quiescing the virtual machine. See the virtual machine's event log for details."
	fault := &types.ApplicationQuiesceFault{}
	fault.FaultMessage = []types.LocalizableMessage{{Key: "msg.snapshot.quiesce.vmerr",
		Message: "Failed to quiesce the virtual machine."}}
	t := simulator.CreateTask(vm, "createSnapshot", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		return nil, fault
	})
	t.Run()
	simulator.Map.WithLock(t, func() {
		if t.Info.Error != nil {
			t.Info.Error.LocalizedMessage = msg
		}
	})
	taskResponse(w, call.method, t.Self)
	return true
}
