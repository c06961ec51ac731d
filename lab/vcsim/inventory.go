package main

import (
	"context"
	"fmt"
	"io/ioutil"
	"path/filepath"
	"strings"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/types"
)

// labVM is one VM of the spec, as created in the simulator.
type labVM struct {
	name  string
	ref   types.ManagedObjectReference
	uuid  string
	disks []*disk
	spec  VMSpec // normalized
	ds    *labDatastore
	place *placement
}

func (v *labVM) inventory(l *lab) map[string]interface{} {
	disks := make([]interface{}, 0, len(v.disks))
	for _, d := range v.disks {
		entry := map[string]interface{}{
			"key":            d.key,
			"label":          d.label,
			"capacity":       d.capacity,
			"capacity_kb":    d.capacity / 1024,
			"vmdk":           d.dsPath(d.baseName + ".vmdk"),
			"flat":           d.dsPath(d.baseName + d.suffix),
			"vmdk_path":      d.ds.local(d.baseName + ".vmdk"),
			"flat_path":      d.ds.local(d.baseName + d.suffix),
			"datastore_path": d.baseName + d.suffix,
			"datastore":      d.ds.name,
			"seed":           d.spec.Seed,
			"layout":         d.spec.Layout,
			"thick":          d.spec.Thick,
			"mode":           d.spec.Mode,
			"kind":           d.spec.Kind,
			"independent":    d.independent(),
		}
		if d.spec.Kind == "rdm" {
			entry["compatibility"] = d.spec.Compatibility
			entry["lun_uuid"] = d.lunUUID
		}
		disks = append(disks, entry)
	}
	tags := []interface{}{}
	for _, t := range v.spec.Tags {
		tags = append(tags, map[string]interface{}{"category": t.Category, "name": t.Name, "id": l.tags.find(t)})
	}
	out := map[string]interface{}{
		"name":          v.name,
		"moref":         v.ref.Value,
		"uuid":          v.uuid,
		"vmx":           v.ds.dsPath(v.name + "/" + v.name + ".vmx"),
		"disks":         disks,
		"datastore":     v.ds.name,
		"tags":          tags,
		"cbt":           v.spec.CBT,
		"power_on":      v.spec.powerOn(),
		"quiesce_fails": v.spec.QuiesceFails,
	}
	if p := v.place; p != nil {
		out["folder"] = p.folderPath
		out["folder_moref"] = p.folder.Reference().Value
		out["host"] = p.hostName
		out["host_moref"] = p.host.Reference().Value
		out["cluster"] = p.cluster
		out["resource_pool"] = p.poolName
		out["resource_pool_moref"] = p.pool.Reference().Value
	}
	return out
}

// vmList is a snapshot of the lab's VMs (POST /lab/vms adds some while the lab runs).
func (l *lab) vmList() []*labVM {
	l.vmsMu.RLock()
	defer l.vmsMu.RUnlock()
	return append([]*labVM(nil), l.vms...)
}

func (l *lab) vmByName(name string) *labVM {
	for _, vm := range l.vmList() {
		if vm.name == name || vm.ref.Value == name {
			return vm
		}
	}
	return nil
}

func (l *lab) vmByRef(ref string) *labVM {
	for _, vm := range l.vmList() {
		if vm.ref.Value == ref {
			return vm
		}
	}
	return nil
}

// buildInventory creates the lab's datastores on every host and the spec's VMs, in process.
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
	if err = l.mountDatastores(ctx, c); err != nil {
		return err
	}
	folders, err := dc.Folders(ctx)
	if err != nil {
		return err
	}
	l.placer.vmFolder = folders.VmFolder
	if err = l.tags.create(l.spec); err != nil {
		return err
	}
	for i := range l.spec.VMs {
		if _, err = l.createVM(ctx, c, l.spec.VMs[i]); err != nil {
			return fmt.Errorf("vm %s: %w", l.spec.VMs[i].Name, err)
		}
	}
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
		file := filepath.Base(d.baseName) + ".vmdk"
		if d.ds != vm.ds { // on another datastore: its absolute ESXi path
			file = "/vmfs/volumes/" + d.ds.name + "/" + d.baseName + ".vmdk"
		}
		fmt.Fprintf(&b, "scsi0:%d.present = \"TRUE\"\nscsi0:%d.fileName = \"%s\"\n", unit, unit, file)
		if d.independent() {
			fmt.Fprintf(&b, "scsi0:%d.mode = \"%s\"\n", unit, strings.ReplaceAll(d.spec.Mode, "_", "-"))
		}
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
