package main

import (
	"context"
	"fmt"
	"io/ioutil"
	"os"
	"path/filepath"
	"strings"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/simulator/esx"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/types"
)

// labVM is one VM of the spec, as created in the simulator.
type labVM struct {
	name  string
	ref   types.ManagedObjectReference
	uuid  string
	disks []*disk
}

func (v *labVM) inventory(l *lab) map[string]interface{} {
	disks := make([]interface{}, 0, len(v.disks))
	for _, d := range v.disks {
		disks = append(disks, map[string]interface{}{
			"key":            d.key,
			"label":          d.label,
			"capacity":       d.capacity,
			"capacity_kb":    d.capacity / 1024,
			"vmdk":           l.dsPath(d.baseName + ".vmdk"),
			"flat":           l.dsPath(d.baseName + "-flat.vmdk"),
			"vmdk_path":      filepath.Join(l.dsDir, d.baseName+".vmdk"),
			"flat_path":      filepath.Join(l.dsDir, d.baseName+"-flat.vmdk"),
			"datastore_path": d.baseName + "-flat.vmdk",
			"seed":           d.spec.Seed,
			"layout":         d.spec.Layout,
		})
	}
	return map[string]interface{}{
		"name":  v.name,
		"moref": v.ref.Value,
		"uuid":  v.uuid,
		"vmx":   l.dsPath(v.name + "/" + v.name + ".vmx"),
		"disks": disks,
	}
}

func (l *lab) dsPath(rel string) string { return fmt.Sprintf("[%s] %s", l.dsName, rel) }

func (l *lab) vmByName(name string) *labVM {
	for _, vm := range l.vms {
		if vm.name == name || vm.ref.Value == name {
			return vm
		}
	}
	return nil
}

func (l *lab) vmByRef(ref string) *labVM {
	for _, vm := range l.vms {
		if vm.ref.Value == ref {
			return vm
		}
	}
	return nil
}

// buildInventory creates the lab datastore on every host and the spec's VMs, in process.
func (l *lab) buildInventory(ctx context.Context) error {
	c, err := vim25.NewClient(ctx, l.model.Service)
	if err != nil {
		return err
	}
	finder := find.NewFinder(c, false)
	dc, err := finder.DefaultDatacenter(ctx)
	if err != nil {
		return err
	}
	l.dcName = dc.Name()
	finder.SetDatacenter(dc)
	for _, e := range simulator.Map.All("HostSystem") {
		host := object.NewHostSystem(c, e.Reference())
		dss, err := host.ConfigManager().DatastoreSystem(ctx)
		if err != nil {
			return err
		}
		if _, err = dss.CreateLocalDatastore(ctx, l.dsName, l.dsDir); err != nil {
			return err
		}
	}
	folders, err := dc.Folders(ctx)
	if err != nil {
		return err
	}
	host, err := finder.HostSystem(ctx, "DC0_H0")
	if err != nil {
		return err
	}
	pool, err := host.ResourcePool(ctx)
	if err != nil {
		return err
	}
	for i := range l.spec.VMs {
		if err = l.createVM(ctx, c, &l.spec.VMs[i], folders.VmFolder, pool, host); err != nil {
			return fmt.Errorf("vm %s: %w", l.spec.VMs[i].Name, err)
		}
	}
	return nil
}

func (l *lab) createVM(ctx context.Context, c *vim25.Client, spec *VMSpec, folder *object.Folder,
	pool *object.ResourcePool, host *object.HostSystem) error {
	if spec.Name == "" || strings.ContainsAny(spec.Name, "/[]") {
		return fmt.Errorf("invalid VM name %q", spec.Name)
	}
	dir := filepath.Join(l.dsDir, spec.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	vm := &labVM{name: spec.Name}
	devices := object.VirtualDeviceList{}
	scsi, err := devices.CreateSCSIController("pvscsi")
	if err != nil {
		return err
	}
	scsi.GetVirtualDevice().Key = 1000
	devices = append(devices, scsi)
	for i, ds := range spec.Disks {
		base := spec.Name
		if i > 0 {
			base = fmt.Sprintf("%s_%d", spec.Name, i)
		}
		rel := spec.Name + "/" + base
		d, err := l.disks.create(filepath.Join(l.dsDir, rel), rel, ds)
		if err != nil {
			return err
		}
		unit := int32(i)
		if unit >= 7 {
			unit++ // unit 7 is the SCSI controller itself
		}
		d.key = int32(2000 + i)
		d.label = fmt.Sprintf("Hard disk %d", i+1)
		disk := &types.VirtualDisk{
			VirtualDevice: types.VirtualDevice{
				Key:           d.key,
				ControllerKey: 1000,
				UnitNumber:    &unit,
				DeviceInfo:    &types.Description{Label: d.label, Summary: fmt.Sprintf("%d KB", d.capacity/1024)},
				Backing: &types.VirtualDiskFlatVer2BackingInfo{
					VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{FileName: l.dsPath(rel + ".vmdk")},
					DiskMode:                     string(types.VirtualDiskModePersistent),
					ThinProvisioned:              types.NewBool(true),
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
		return err
	}
	for _, c := range changes {
		c.GetVirtualDeviceConfigSpec().FileOperation = "" // attach the pre-made disk files
	}
	config := types.VirtualMachineConfigSpec{
		Name:                  spec.Name,
		GuestId:               string(types.VirtualMachineGuestOsIdentifierOtherGuest),
		Files:                 &types.VirtualMachineFileInfo{VmPathName: l.dsPath(spec.Name + "/" + spec.Name + ".vmx")},
		ChangeTrackingEnabled: types.NewBool(spec.CBT),
		DeviceChange:          changes,
	}
	task, err := folder.CreateVM(ctx, config, pool, host)
	if err != nil {
		return err
	}
	info, err := task.WaitForResult(ctx, nil)
	if err != nil {
		return err
	}
	vm.ref = info.Result.(types.ManagedObjectReference)
	obj := simulator.Map.Get(vm.ref).(*simulator.VirtualMachine)
	vm.uuid = obj.Config.Uuid
	for _, d := range vm.disks {
		d.vm = vm.ref.Value
		d.vmName = vm.name
		l.disks.setCBT(d, spec.CBT)
	}
	writeVMX(filepath.Join(dir, spec.Name+".vmx"), spec, vm)
	if spec.PowerOn {
		t, err := object.NewVirtualMachine(c, vm.ref).PowerOn(ctx)
		if err != nil {
			return err
		}
		if err = t.Wait(ctx); err != nil {
			return err
		}
	}
	endpoint := &cbtEndpoint{lab: l}
	endpoint.Self = types.ManagedObjectReference{Type: cbtType, Value: vm.ref.Value}
	simulator.Map.Put(endpoint)
	l.vms = append(l.vms, vm)
	return nil
}

// writeVMX gives the (otherwise empty) .vmx file a plausible content.
func writeVMX(path string, spec *VMSpec, vm *labVM) {
	var b strings.Builder
	fmt.Fprintf(&b, ".encoding = \"UTF-8\"\nconfig.version = \"8\"\nvirtualHW.version = \"13\"\n")
	fmt.Fprintf(&b, "displayName = \"%s\"\nguestOS = \"otherGuest\"\nuuid.bios = \"%s\"\n", spec.Name, vm.uuid)
	fmt.Fprintf(&b, "numvcpus = \"1\"\nmemsize = \"32\"\n")
	fmt.Fprintf(&b, "ethernet0.present = \"TRUE\"\nethernet0.virtualDev = \"e1000\"\nethernet0.networkName = \"VM Network\"\n")
	fmt.Fprintf(&b, "ethernet0.addressType = \"generated\"\nethernet0.generatedAddress = \"00:0c:29:%02x:%02x:%02x\"\n",
		len(spec.Name), len(vm.disks), len(vm.uuid))
	fmt.Fprintf(&b, "nvram = \"%s.nvram\"\nctkEnabled = \"%v\"\nscsi0.present = \"TRUE\"\nscsi0.virtualDev = \"pvscsi\"\n",
		spec.Name, spec.CBT)
	for i, d := range vm.disks {
		unit := i
		if unit >= 7 {
			unit++
		}
		fmt.Fprintf(&b, "scsi0:%d.present = \"TRUE\"\nscsi0:%d.fileName = \"%s.vmdk\"\n", unit, unit, filepath.Base(d.baseName))
	}
	_ = ioutil.WriteFile(path, []byte(b.String()), 0o644)
	nvram := make([]byte, 8684) // the size ESXi's BIOS nvram files have
	copy(nvram, "MRVN")
	(&prng{s: uint64(len(spec.Name))}).fill(nvram[64:512])
	_ = ioutil.WriteFile(strings.TrimSuffix(path, ".vmx")+".nvram", nvram, 0o644)
}

// vmObject returns the simulator's VM (callers lock it unless inside a vcsim handler).
func vmObject(ref types.ManagedObjectReference) *simulator.VirtualMachine {
	if o, ok := simulator.Map.Get(ref).(*simulator.VirtualMachine); ok {
		return o
	}
	return nil
}
