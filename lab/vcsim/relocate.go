package main

import (
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// RelocateVM_Task with a datastore in vcsim changes the VM's datastore list only: its files
// stay where they were ("TODO: migrate vm.Config.Files"). The lab moves them: before the call,
// the VM's folder is copied to the target datastore (same folder name); after it succeeds, the
// VM's file paths and disk backings point there, and the old folder is removed. Only VMs whose
// files all live in one folder of one datastore (restored and registered ones) are moved; the
// lab's own VMs (delta chains, CBT) are left as vcsim leaves them.

var relocateDatastore = regexp.MustCompile(`<datastore\b[^>]*>([^<]*)</datastore>`)

func (l *lab) relocateVM(mux http.Handler, w http.ResponseWriter, r *http.Request, body []byte, call soapCall) {
	m := relocateDatastore.FindSubmatch(body)
	vm := vmObject(call.this)
	if m == nil || vm == nil || l.vmByRef(call.this.Value) != nil {
		l.forwardSOAP(mux, w, r, body, call)
		return
	}
	target, ok := simulator.Map.Get(types.ManagedObjectReference{Type: "Datastore", Value: string(m[1])}).(*simulator.Datastore)
	if !ok {
		l.forwardSOAP(mux, w, r, body, call)
		return
	}
	var vmx string
	simulator.Map.WithLock(vm, func() { vmx = vm.Config.Files.VmPathName })
	srcName, rel := splitDsPath(vmx)
	srcDir := filepath.Dir(l.localPath(vmx))
	dstRoot := target.Info.GetDatastoreInfo().Url
	folder := filepath.Dir(filepath.FromSlash(rel))
	dstDir := filepath.Join(dstRoot, folder)
	if srcName == target.Name || srcDir == "." || dstRoot == "" {
		l.forwardSOAP(mux, w, r, body, call)
		return
	}
	if err := copyDir(srcDir, dstDir); err != nil {
		log.Printf("relocate %s: copying %s to %s: %s", call.this.Value, srcDir, dstDir, err)
		http.Error(w, "lab: relocate copy failed: "+err.Error(), http.StatusInternalServerError)
		return
	}
	rec := httptest.NewRecorder()
	l.forwardSOAP(mux, rec, r, body, call)
	if t := returnTask.FindSubmatch(rec.Body.Bytes()); t != nil {
		task, _ := simulator.Map.Get(types.ManagedObjectReference{Type: "Task", Value: string(t[1])}).(*simulator.Task)
		if task != nil && task.Info.Error == nil {
			from, to := "["+srcName+"]", "["+target.Name+"]"
			simulator.Map.WithLock(vm, func() {
				f := vm.Config.Files
				for _, p := range []*string{&f.VmPathName, &f.LogDirectory, &f.SnapshotDirectory, &f.SuspendDirectory} {
					*p = strings.Replace(*p, from, to, 1)
				}
				vm.Summary.Config.VmPathName = f.VmPathName
				for _, dev := range vm.Config.Hardware.Device {
					if disk, ok := dev.(*types.VirtualDisk); ok {
						if b, ok := disk.Backing.(types.BaseVirtualDeviceFileBackingInfo); ok {
							info := b.GetVirtualDeviceFileBackingInfo()
							info.FileName = strings.Replace(info.FileName, from, to, 1)
							info.Datastore = &target.Self
						}
					}
				}
			})
			if src, ok := l.datastoreByName(srcName); ok {
				simulator.Map.RemoveReference(src, &src.Vm, vm.Self)
			}
			simulator.Map.AddReference(target, &target.Vm, vm.Self)
			_ = os.RemoveAll(srcDir)
		} else {
			_ = os.RemoveAll(dstDir)
		}
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

// copyDir copies the regular files of src into dst (created), keeping holes of sparse files
// only as far as the file system does (plain copy).
func copyDir(src, dst string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		if err := copyFile(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err = io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// RemoveDatastore is missing from vcsim's HostDatastoreSystem (MethodNotFound). The lab answers
// it by running vcsim's own Datastore.Destroy_Task (which refuses a datastore that still has
// VMs: ResourceInUse) and dropping the datastore from the host's datastore system.
func (l *lab) removeDatastore(mux http.Handler, w http.ResponseWriter, r *http.Request, body []byte) {
	m := relocateDatastore.FindSubmatch(body)
	if m == nil {
		soapFault(w, &types.InvalidArgument{InvalidProperty: "datastore"}, "no datastore given")
		return
	}
	ref := types.ManagedObjectReference{Type: "Datastore", Value: string(m[1])}
	if _, ok := simulator.Map.Get(ref).(*simulator.Datastore); !ok {
		soapFault(w, &types.NotFound{}, "datastore "+ref.Value+" not found")
		return
	}
	destroy := envelopeStart + `<Destroy_Task xmlns="urn:vim25"><_this type="Datastore">` + xmlEscape(ref.Value) +
		`</_this></Destroy_Task>` + envelopeEnd
	inner := r.Clone(r.Context())
	rec := httptest.NewRecorder()
	l.forwardSOAP(mux, rec, inner, []byte(destroy), soapCall{method: "Destroy_Task", this: ref})
	t := returnTask.FindSubmatch(rec.Body.Bytes())
	if t == nil {
		soapFault(w, &types.SystemError{Reason: "destroy failed"}, "lab: removing the datastore failed")
		return
	}
	task, _ := simulator.Map.Get(types.ManagedObjectReference{Type: "Task", Value: string(t[1])}).(*simulator.Task)
	for i := 0; task != nil && i < 200; i++ {
		var state types.TaskInfoState
		simulator.Map.WithLock(task, func() { state = task.Info.State })
		if state == types.TaskInfoStateSuccess || state == types.TaskInfoStateError {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if task == nil || task.Info.Error != nil {
		fault := types.BaseMethodFault(&types.ResourceInUse{Type: "Datastore", Name: ref.Value})
		if task != nil {
			fault = task.Info.Error.Fault
		}
		soapFault(w, fault, "the datastore is in use or cannot be removed")
		return
	}
	for _, e := range simulator.Map.All("HostSystem") {
		host, ok := e.(*simulator.HostSystem)
		if !ok || host.ConfigManager.DatastoreSystem == nil {
			continue
		}
		if dss, ok := simulator.Map.Get(*host.ConfigManager.DatastoreSystem).(*simulator.HostDatastoreSystem); ok {
			simulator.Map.WithLock(dss, func() {
				kept := dss.Datastore[:0]
				for _, d := range dss.Datastore {
					if d != ref {
						kept = append(kept, d)
					}
				}
				dss.Datastore = kept
			})
		}
	}
	simulator.Map.Remove(ref)
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	fmt.Fprint(w, envelopeStart+`<RemoveDatastoreResponse xmlns="urn:vim25"></RemoveDatastoreResponse>`+envelopeEnd)
}

func (l *lab) datastoreByName(name string) (*simulator.Datastore, bool) {
	for _, e := range simulator.Map.All("Datastore") {
		if ds, ok := e.(*simulator.Datastore); ok && ds.Name == name {
			return ds, true
		}
	}
	return nil, false
}
