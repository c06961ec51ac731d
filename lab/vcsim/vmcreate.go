package main

import (
	"context"
	"fmt"
	"os"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/simulator/esx"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/types"
)

// createVM creates one VM of the spec with real disks, at start-up or later (POST /lab/vms):
// its files on its datastore (<name>/<name>.vmx, disks <name>.vmdk, <name>_1.vmdk...), in its
// folder, on its host and pool, with its tags attached, CBT and power state as asked.
func (l *lab) createVM(ctx context.Context, c *vim25.Client, spec VMSpec) (_ *labVM, err error) {
	l.creating.Lock() // one at a time: names are checked, then taken
	defer l.creating.Unlock()
	if err := spec.normalize(l); err != nil {
		return nil, err
	}
	if l.vmByName(spec.Name) != nil {
		return nil, fmt.Errorf("name: a VM %q exists already", spec.Name)
	}
	place, err := l.place(ctx, c, &spec)
	if err != nil {
		return nil, err
	}
	vm := &labVM{name: spec.Name, spec: spec, ds: l.datastore(spec.Datastore), place: place}
	var made []string // folders this call creates: removed again if it fails
	mkdir := func(dir string) error {
		if _, err := os.Stat(dir); err == nil {
			return nil
		}
		made = append(made, dir)
		return os.MkdirAll(dir, 0o755)
	}
	defer func() {
		if err != nil && vm.ref.Value == "" {
			for _, dir := range made {
				_ = os.RemoveAll(dir)
			}
		}
	}()
	if err = mkdir(vm.ds.local(spec.Name)); err != nil {
		return nil, err
	}
	devices := object.VirtualDeviceList{}
	scsi, err := devices.CreateSCSIController("pvscsi")
	if err != nil {
		return nil, err
	}
	scsi.GetVirtualDevice().Key = 1000
	devices = append(devices, scsi)
	for i, ds := range spec.Disks {
		base := spec.Name
		if i > 0 {
			base = fmt.Sprintf("%s_%d", spec.Name, i)
		}
		rel := spec.Name + "/" + base
		dstore := l.datastore(ds.Datastore)
		if err = mkdir(dstore.local(spec.Name)); err != nil {
			return nil, err
		}
		d, err := l.disks.create(dstore, rel, ds)
		if err != nil {
			return nil, fmt.Errorf("disks[%d]: %w", i, err)
		}
		unit := int32(i)
		if unit >= 7 {
			unit++ // unit 7 is the SCSI controller itself
		}
		d.key = int32(2000 + i)
		d.label = fmt.Sprintf("Hard disk %d", i+1)
		// RDMs are created flat (vcsim's device code knows only flat backings) and get their
		// RDM backings right after (syncBackingsLocked).
		disk := &types.VirtualDisk{
			VirtualDevice: types.VirtualDevice{
				Key:           d.key,
				ControllerKey: 1000,
				UnitNumber:    &unit,
				DeviceInfo:    &types.Description{Label: d.label, Summary: fmt.Sprintf("%d KB", d.capacity/1024)},
				Backing: &types.VirtualDiskFlatVer2BackingInfo{
					VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{FileName: d.dsPath(rel + ".vmdk")},
					DiskMode:                     d.spec.Mode,
					ThinProvisioned:              types.NewBool(!ds.Thick),
					Uuid:                         d.uuid,
				},
			},
			CapacityInKB:    d.capacity / 1024,
			CapacityInBytes: d.capacity,
		}
		devices = append(devices, disk)
		vm.disks = append(vm.disks, d)
	}
	nic := esx.EthernetCard
	nic.Backing = &types.VirtualEthernetCardNetworkBackingInfo{
		VirtualDeviceDeviceBackingInfo: types.VirtualDeviceDeviceBackingInfo{DeviceName: "VM Network"},
	}
	devices = append(devices, &nic)
	changes, err := devices.ConfigSpec(types.VirtualDeviceConfigSpecOperationAdd)
	if err != nil {
		return nil, err
	}
	for _, c := range changes {
		c.GetVirtualDeviceConfigSpec().FileOperation = "" // attach the pre-made disk files
	}
	config := types.VirtualMachineConfigSpec{
		Name:                  spec.Name,
		GuestId:               string(types.VirtualMachineGuestOsIdentifierOtherGuest),
		Files:                 &types.VirtualMachineFileInfo{VmPathName: vm.ds.dsPath(spec.Name + "/" + spec.Name + ".vmx")},
		ChangeTrackingEnabled: types.NewBool(spec.CBT),
		DeviceChange:          changes,
	}
	// vcsim attaches an existing disk only if "<disk>-flat.vmdk" exists: an RDM has none, so
	// it gets an empty one for the time of the call
	var placeholders []string
	for _, d := range vm.disks {
		if p := d.local + "-flat.vmdk"; d.suffix != "-flat.vmdk" {
			if f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644); err == nil {
				_ = f.Close()
				placeholders = append(placeholders, p)
			}
		}
	}
	task, err := place.folder.CreateVM(ctx, config, place.pool, place.host)
	var info *types.TaskInfo
	if err == nil {
		info, err = task.WaitForResult(ctx, nil)
	}
	for _, p := range placeholders {
		_ = os.Remove(p)
	}
	if err != nil {
		return nil, err
	}
	vm.ref = info.Result.(types.ManagedObjectReference)
	obj := vmObject(vm.ref)
	simulator.Map.WithLock(obj, func() {
		vm.uuid = obj.Config.Uuid
		for _, d := range vm.disks {
			d.vm = vm.ref.Value
			d.vmName = vm.name
			l.disks.setCBT(d, spec.CBT)
		}
		l.disks.mu.Lock()
		defer l.disks.mu.Unlock()
		l.syncBackingsLocked(obj)
	})
	writeVMX(vm.ds.local(spec.Name+"/"+spec.Name+".vmx"), &spec, vm)
	if err = l.tags.attach(vm.ref, spec.Tags); err != nil {
		return nil, err
	}
	if spec.powerOn() {
		t, err := object.NewVirtualMachine(c, vm.ref).PowerOn(ctx)
		if err != nil {
			return nil, err
		}
		if err = t.Wait(ctx); err != nil {
			return nil, err
		}
	}
	endpoint := &cbtEndpoint{lab: l}
	endpoint.Self = types.ManagedObjectReference{Type: cbtType, Value: vm.ref.Value}
	simulator.Map.Put(endpoint)
	l.vmsMu.Lock()
	l.vms = append(l.vms, vm)
	l.vmsMu.Unlock()
	return vm, nil
}
