package main

import (
	"bufio"
	"context"
	"fmt"
	"html"
	"io/ioutil"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/types"
)

// RegisterVM_Task in vcsim needs <name>.nvram and vmware.log to exist (so only the original
// name works) and registers a VM without disks. The lab creates the missing files before the
// call and, after it, attaches the disks the .vmx lists (capacity and thin or thick from their
// descriptors, as ESXi reads ddb.thinProvisioned), its
// NICs (ethernetN.networkName) and sets its CPUs, memory and guest OS from the .vmx. A .vmx
// that does not exist fails NotFound before vcsim sees it (vcsim would create its directory).

var (
	regPath   = regexp.MustCompile(`<path\b[^>]*>([^<]*)</path>`)
	regName   = regexp.MustCompile(`<name\b[^>]*>([^<]*)</name>`)
	vmxDisk   = regexp.MustCompile(`^scsi(\d+):(\d+)\.fileName$`)
	extentRow = regexp.MustCompile(`(?m)^RW (\d+) `)
	thinRow   = regexp.MustCompile(`(?m)^ddb\.thinProvisioned\s*=\s*"1"`) // else thick, as ESXi reads it
)

// localPath maps "[datastore] dir/file" to a file of the lab: the lab's datastore, or any
// datastore a client added (CreateLocalDatastore: its path is its URL). "" if unknown.
func (l *lab) localPath(dsPath string) string {
	name, rel := splitDsPath(dsPath)
	root := l.datastoreRoot(name)
	if root == "" {
		return ""
	}
	return filepath.Join(root, filepath.FromSlash(path.Clean("/"+rel)))
}

func splitDsPath(dsPath string) (string, string) {
	if !strings.HasPrefix(dsPath, "[") || !strings.Contains(dsPath, "]") {
		return "", dsPath
	}
	end := strings.Index(dsPath, "]")
	return dsPath[1:end], strings.TrimSpace(dsPath[end+1:])
}

func (l *lab) datastoreRoot(name string) string {
	if ds := l.datastore(name); ds != nil {
		return ds.dir
	}
	for _, e := range simulator.Map.All("Datastore") {
		if ds, ok := e.(*simulator.Datastore); ok && ds.Name == name {
			return ds.Info.GetDatastoreInfo().Url
		}
	}
	return ""
}

func (l *lab) registerVM(mux http.Handler, w http.ResponseWriter, r *http.Request, body []byte, call soapCall) {
	var vmx string
	if m := regPath.FindSubmatch(body); m != nil {
		vmx = l.localPath(html.UnescapeString(string(m[1])))
	}
	if vmx != "" {
		if _, err := os.Stat(vmx); os.IsNotExist(err) {
			// vSphere answers NotFound and leaves the datastore alone; vcsim would first create
			// the VM's directory (and leave it behind).
			t := l.newTask(call, func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
				return nil, &types.NotFound{}
			})
			t.Run()
			taskResponse(w, call.method, t.Self)
			return
		}
		dir := filepath.Dir(vmx)
		name := strings.TrimSuffix(filepath.Base(vmx), ".vmx")
		if m := regName.FindSubmatch(body); m != nil && len(m[1]) > 0 {
			name = html.UnescapeString(string(m[1]))
		}
		for _, f := range []string{name + ".nvram", "vmware.log"} {
			if _, err := os.Stat(filepath.Join(dir, f)); os.IsNotExist(err) {
				_ = ioutil.WriteFile(filepath.Join(dir, f), nil, 0o644)
			}
		}
	}
	rec := httptest.NewRecorder()
	l.forwardSOAP(mux, rec, r, body, call)
	if m := returnTask.FindSubmatch(rec.Body.Bytes()); m != nil && vmx != "" {
		ref := types.ManagedObjectReference{Type: "Task", Value: string(m[1])}
		if t, ok := simulator.Map.Get(ref).(*simulator.Task); ok && t.Info.Error == nil {
			if vmRef, ok := t.Info.Result.(types.ManagedObjectReference); ok {
				if err := l.attachDisks(vmRef, vmx); err != nil {
					log.Printf("register %s: attaching disks: %s", vmx, err)
				}
			}
		}
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

type vmxDiskEntry struct {
	bus, unit int
	file      string
}

func (l *lab) attachDisks(vmRef types.ManagedObjectReference, vmx string) error {
	f, err := os.Open(vmx)
	if err != nil {
		return err
	}
	defer f.Close()
	values := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if kv := strings.SplitN(sc.Text(), "=", 2); len(kv) == 2 {
			values[strings.TrimSpace(kv[0])] = strings.Trim(strings.TrimSpace(kv[1]), `"`)
		}
	}
	devices := object.VirtualDeviceList{}
	for n := 0; n < 10; n++ { // NICs: ethernetN.present, .virtualDev, .networkName
		prefix := fmt.Sprintf("ethernet%d", n)
		if !strings.EqualFold(values[prefix+".present"], "TRUE") {
			continue
		}
		backing := &types.VirtualEthernetCardNetworkBackingInfo{
			VirtualDeviceDeviceBackingInfo: types.VirtualDeviceDeviceBackingInfo{DeviceName: values[prefix+".networkName"]},
		}
		nic, err := devices.CreateEthernetCard(values[prefix+".virtualDev"], backing)
		if err != nil {
			nic, _ = devices.CreateEthernetCard("vmxnet3", backing)
		}
		nic.GetVirtualDevice().Key = int32(4000 + n)
		devices = append(devices, nic)
	}
	var disks []vmxDiskEntry
	for k, v := range values {
		m := vmxDisk.FindStringSubmatch(k)
		prefix := strings.TrimSuffix(k, ".fileName")
		if m == nil || !strings.HasSuffix(v, ".vmdk") || strings.EqualFold(values[prefix+".present"], "FALSE") {
			continue
		}
		bus, _ := strconv.Atoi(m[1])
		unit, _ := strconv.Atoi(m[2])
		disks = append(disks, vmxDiskEntry{bus, unit, v})
	}
	sort.Slice(disks, func(a, b int) bool {
		return disks[a].bus*100+disks[a].unit < disks[b].bus*100+disks[b].unit
	})
	dsName, dsRoot := l.dsName, l.dsDir
	for _, e := range simulator.Map.All("Datastore") {
		if ds, ok := e.(*simulator.Datastore); ok {
			if root := ds.Info.GetDatastoreInfo().Url; root != "" && strings.HasPrefix(vmx, root+string(filepath.Separator)) {
				dsName, dsRoot = ds.Name, root
			}
		}
	}
	dsDir := strings.TrimPrefix(filepath.Dir(vmx), dsRoot)
	buses := map[int]bool{}
	for i, d := range disks {
		if !buses[d.bus] {
			buses[d.bus] = true
			scsi, err := devices.CreateSCSIController("pvscsi")
			if err != nil {
				return err
			}
			c := scsi.(types.BaseVirtualSCSIController).GetVirtualSCSIController()
			c.Key, c.BusNumber = int32(1000+d.bus), int32(d.bus)
			devices = append(devices, scsi)
		}
		desc, err := ioutil.ReadFile(filepath.Join(filepath.Dir(vmx), d.file))
		if err != nil {
			return err
		}
		var sectors int64
		for _, m := range extentRow.FindAllSubmatch(desc, -1) {
			n, _ := strconv.ParseInt(string(m[1]), 10, 64)
			sectors += n
		}
		unit := int32(d.unit)
		devices = append(devices, &types.VirtualDisk{
			VirtualDevice: types.VirtualDevice{
				Key:           int32(2000 + i),
				ControllerKey: int32(1000 + d.bus),
				UnitNumber:    &unit,
				Backing: &types.VirtualDiskFlatVer2BackingInfo{
					VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{
						FileName: "[" + dsName + "] " + strings.TrimPrefix(path.Join(filepath.ToSlash(dsDir), d.file), "/"),
					},
					DiskMode:        string(types.VirtualDiskModePersistent),
					ThinProvisioned: types.NewBool(thinRow.Match(desc)), // as the descriptor says
				},
			},
			CapacityInKB:    sectors * 512 / 1024,
			CapacityInBytes: sectors * 512,
		})
	}
	changes, err := devices.ConfigSpec(types.VirtualDeviceConfigSpecOperationAdd)
	if err != nil {
		return err
	}
	for _, c := range changes {
		c.GetVirtualDeviceConfigSpec().FileOperation = "" // the files exist
	}
	ctx := context.Background()
	c, err := vim25.NewClient(ctx, l.model.Service)
	if err != nil {
		return err
	}
	spec := types.VirtualMachineConfigSpec{DeviceChange: changes, GuestId: values["guestOS"]}
	if n, err := strconv.Atoi(values["numvcpus"]); err == nil && n > 0 {
		spec.NumCPUs = int32(n)
	}
	if n, err := strconv.ParseInt(values["memsize"], 10, 64); err == nil && n > 0 {
		spec.MemoryMB = n
	}
	if strings.EqualFold(values["ctkEnabled"], "TRUE") {
		spec.ChangeTrackingEnabled = types.NewBool(true)
	}
	task, err := object.NewVirtualMachine(c, vmRef).Reconfigure(ctx, spec)
	if err != nil {
		return err
	}
	if err = task.Wait(ctx); err != nil {
		return fmt.Errorf("reconfigure: %w", err)
	}
	return nil
}
