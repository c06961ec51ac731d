package main

import (
	"log"
	"os"
	"regexp"
	"strings"
	"sync"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// Snapshot removal, done by the lab for every VM. vcsim's RemoveSnapshot_Task deletes the files
// its layoutEx lists under the snapshot's data key, but its RefreshStorageInfo (run after every
// removal) renumbers those keys: a later removal deleted whichever file had inherited the key,
// such as a base -flat.vmdk. vcsim also left the children of a removeChildren=true removal
// registered, and never touched the disks. The lab:
//   - serializes the removals of one VM (racing calls merge one after the other);
//   - merges each removed snapshot (diskStore.mergeSnapshotLocked), children first;
//   - updates the VM's snapshot tree, currentSnapshot, disk backings, the remaining snapshots'
//     backings and childSnapshot lists, its layout;
//   - unregisters the removed snapshots, and only then deletes the merged deltas and the
//     snapshots' own .vmsn files (by name, never by a layout key).
//
// The call reaches the lab through vcsim's dispatcher (session checks, fault encoding): the
// middleware re-addresses <_this> to a snapRemover registered for that snapshot or VM.

const removerType = "VbmLabSnapshotRemover"

var thisSnapshot = regexp.MustCompile(`(<_this\b[^>]*?\btype=")(?:VirtualMachineSnapshot|VirtualMachine)(")`)

type snapRemover struct {
	mo.ExtensibleManagedObject
	lab    *lab
	target types.ManagedObjectReference // the snapshot or VM the calls are for
}

func (s *snapRemover) RemoveSnapshotTask(ctx *simulator.Context, req *types.RemoveSnapshot_Task) soap.HasFault {
	snap, ok := simulator.Map.Get(s.target).(*simulator.VirtualMachineSnapshot)
	if !ok {
		return &methods.RemoveSnapshot_TaskBody{Fault_: simulator.Fault("", &types.ManagedObjectNotFound{Obj: s.target})}
	}
	vm := vmObject(snap.Vm)
	if vm == nil {
		return &methods.RemoveSnapshot_TaskBody{Fault_: simulator.Fault("", &types.ManagedObjectNotFound{Obj: snap.Vm})}
	}
	target := s.target
	t := simulator.CreateTask(vm, "removeSnapshot", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		return nil, s.lab.removeSnapshots(snap.Vm, &target, req.RemoveChildren)
	})
	return &methods.RemoveSnapshot_TaskBody{Res: &types.RemoveSnapshot_TaskResponse{Returnval: t.Run()}}
}

func (s *snapRemover) RemoveAllSnapshotsTask(ctx *simulator.Context, req *types.RemoveAllSnapshots_Task) soap.HasFault {
	vm := vmObject(s.target)
	if vm == nil {
		return &methods.RemoveAllSnapshots_TaskBody{Fault_: simulator.Fault("", &types.ManagedObjectNotFound{Obj: s.target})}
	}
	t := simulator.CreateTask(vm, "removeAllSnapshots", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		return nil, s.lab.removeSnapshots(s.target, nil, true)
	})
	return &methods.RemoveAllSnapshots_TaskBody{Res: &types.RemoveAllSnapshots_TaskResponse{Returnval: t.Run()}}
}

// routeRemoval re-addresses a removal call to the lab's remover (registered on first use).
func (l *lab) routeRemoval(body []byte, call soapCall) []byte {
	if call.this.Value == "" || simulator.Map.Get(call.this) == nil {
		return body // vcsim answers ManagedObjectNotFound
	}
	ref := types.ManagedObjectReference{Type: removerType, Value: call.this.Value}
	if simulator.Map.Get(ref) == nil {
		r := &snapRemover{lab: l, target: call.this}
		r.Self = ref
		simulator.Map.Put(r)
	}
	return thisSnapshot.ReplaceAll(body, []byte("${1}"+removerType+"${2}"))
}

func (l *lab) removalLock(vm string) *sync.Mutex {
	mu, _ := l.removals.LoadOrStore(vm, &sync.Mutex{})
	return mu.(*sync.Mutex)
}

// removeSnapshots removes target (with its descendants if children), or every snapshot of the
// VM when target is nil.
func (l *lab) removeSnapshots(vmRef types.ManagedObjectReference, target *types.ManagedObjectReference, children bool) types.BaseMethodFault {
	vm := vmObject(vmRef)
	if vm == nil {
		return &types.ManagedObjectNotFound{Obj: vmRef}
	}
	mu := l.removalLock(vmRef.Value)
	mu.Lock()
	defer mu.Unlock()
	var removed []string
	var files []string
	var fault types.BaseMethodFault
	var tree []types.VirtualMachineSnapshotTree
	simulator.Map.WithLock(vm, func() {
		if vm.Snapshot == nil || len(vm.Snapshot.RootSnapshotList) == 0 {
			if target != nil {
				fault = &types.ManagedObjectNotFound{Obj: *target}
			}
			return
		}
		old := vm.Snapshot.RootSnapshotList
		cur := vm.Snapshot.CurrentSnapshot
		if target == nil {
			removed = treeRefs(old)
		} else {
			node := findNode(old, target.Value)
			if node == nil {
				fault = &types.ManagedObjectNotFound{Obj: *target}
				return
			}
			removed = []string{target.Value}
			if children {
				removed = append(removed, treeRefs(node.ChildSnapshotList)...)
			}
			tree = pruneTree(old, target.Value, children)
			if cur != nil && contains(removed, cur.Value) {
				cur = parentRef(old, target.Value)
			}
		}
		l.disks.mu.Lock()
		for i := len(removed) - 1; i >= 0; i-- { // newest first
			f, err := l.disks.mergeSnapshotLocked(removed[i])
			files = append(files, f...)
			if err != nil {
				log.Printf("merge of snapshot %s: %s", removed[i], err)
			}
		}
		l.syncBackingsLocked(vm)
		l.disks.mu.Unlock()
		if len(tree) == 0 {
			simulator.Map.Update(vm, []types.PropertyChange{{Name: "snapshot", Val: nil}})
		} else { // the whole property: vcsim's Update panics on a nil currentSnapshot
			info := &types.VirtualMachineSnapshotInfo{CurrentSnapshot: cur, RootSnapshotList: tree}
			simulator.Map.Update(vm, []types.PropertyChange{{Name: "snapshot", Val: info}})
		}
		files = append(files, l.dropSnapshotLayout(vm, removed)...)
	})
	if fault != nil {
		return fault
	}
	l.refreshSnapshots(vm.Self.Value, tree)
	for _, ref := range removed {
		simulator.Map.Remove(types.ManagedObjectReference{Type: "VirtualMachineSnapshot", Value: ref})
		simulator.Map.Remove(types.ManagedObjectReference{Type: removerType, Value: ref})
	}
	for _, f := range files {
		if f != "" {
			_ = os.Remove(f)
		}
	}
	return nil
}

// refreshSnapshots gives the remaining snapshots their children lists and disk backings.
func (l *lab) refreshSnapshots(vm string, tree []types.VirtualMachineSnapshotTree) {
	var walk func([]types.VirtualMachineSnapshotTree)
	walk = func(nodes []types.VirtualMachineSnapshotTree) {
		for _, n := range nodes {
			snap, ok := simulator.Map.Get(n.Snapshot).(*simulator.VirtualMachineSnapshot)
			if ok {
				var kids []types.ManagedObjectReference
				for _, c := range n.ChildSnapshotList {
					kids = append(kids, c.Snapshot)
				}
				simulator.Map.WithLock(snap, func() {
					snap.ChildSnapshot = kids
					l.disks.mu.Lock()
					defer l.disks.mu.Unlock()
					l.snapshotBackingsLocked(snap.Self.Value, vm, snap.Config.Hardware.Device)
				})
			}
			walk(n.ChildSnapshotList)
		}
	}
	walk(tree)
}

// dropSnapshotLayout removes the snapshots from the VM's layouts and returns their .vmsn files.
func (l *lab) dropSnapshotLayout(vm *simulator.VirtualMachine, removed []string) []string {
	var files []string
	if vm.Layout != nil {
		kept := vm.Layout.Snapshot[:0]
		for _, s := range vm.Layout.Snapshot {
			if !contains(removed, s.Key.Value) {
				kept = append(kept, s)
			}
		}
		vm.Layout.Snapshot = kept
	}
	if vm.LayoutEx == nil {
		return nil
	}
	dataKeys := map[int32]bool{}
	kept := vm.LayoutEx.Snapshot[:0]
	for _, s := range vm.LayoutEx.Snapshot {
		if contains(removed, s.Key.Value) {
			dataKeys[s.DataKey] = true
		} else {
			kept = append(kept, s)
		}
	}
	vm.LayoutEx.Snapshot = kept
	keptFiles := vm.LayoutEx.File[:0]
	for _, f := range vm.LayoutEx.File {
		if dataKeys[f.Key] && strings.HasSuffix(f.Name, ".vmsn") {
			files = append(files, l.localPath(f.Name))
			continue
		}
		keptFiles = append(keptFiles, f)
	}
	vm.LayoutEx.File = keptFiles
	return files
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func treeRefs(nodes []types.VirtualMachineSnapshotTree) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.Snapshot.Value)
		out = append(out, treeRefs(n.ChildSnapshotList)...)
	}
	return out
}

func findNode(nodes []types.VirtualMachineSnapshotTree, ref string) *types.VirtualMachineSnapshotTree {
	for i := range nodes {
		if nodes[i].Snapshot.Value == ref {
			return &nodes[i]
		}
		if n := findNode(nodes[i].ChildSnapshotList, ref); n != nil {
			return n
		}
	}
	return nil
}

func parentRef(nodes []types.VirtualMachineSnapshotTree, ref string) *types.ManagedObjectReference {
	for i := range nodes {
		for _, c := range nodes[i].ChildSnapshotList {
			if c.Snapshot.Value == ref {
				p := nodes[i].Snapshot
				return &p
			}
		}
		if p := parentRef(nodes[i].ChildSnapshotList, ref); p != nil {
			return p
		}
	}
	return nil
}

// pruneTree copies the tree without ref (its children move up to its place unless children).
func pruneTree(nodes []types.VirtualMachineSnapshotTree, ref string, children bool) []types.VirtualMachineSnapshotTree {
	var out []types.VirtualMachineSnapshotTree
	for _, n := range nodes {
		if n.Snapshot.Value == ref {
			if !children {
				out = append(out, pruneTree(n.ChildSnapshotList, ref, children)...)
			}
			continue
		}
		n.ChildSnapshotList = pruneTree(n.ChildSnapshotList, ref, children)
		out = append(out, n)
	}
	return out
}
