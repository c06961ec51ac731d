package main

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// Where a VM goes: a folder path under the datacenter's vmFolder (created as needed), a host of
// vcsim's inventory (its cluster's or its own root resource pool) and optionally a child pool
// of that root pool, by name (created as needed).

type placement struct {
	folder     *object.Folder
	folderPath string // "" = the vmFolder itself
	host       *object.HostSystem
	hostName   string
	cluster    string // "" for a standalone host
	pool       *object.ResourcePool
	poolName   string // "" = the root pool
}

type placer struct {
	mu       sync.Mutex // placements create folders and pools: one at a time
	vmFolder *object.Folder
}

func (l *lab) place(ctx context.Context, c *vim25.Client, spec *VMSpec) (*placement, error) {
	l.placer.mu.Lock()
	defer l.placer.mu.Unlock()
	p := &placement{folder: object.NewFolder(c, l.placer.vmFolder.Reference())}
	if spec.Folder != "" {
		p.folderPath = strings.Trim(spec.Folder, "/")
		for _, name := range strings.Split(p.folderPath, "/") {
			child, err := childFolder(ctx, p.folder, name)
			if err != nil {
				return nil, fmt.Errorf("folder: %w", err)
			}
			p.folder = child
		}
	}
	p.hostName = spec.Host
	if p.hostName == "" {
		p.hostName = "DC0_H0"
	}
	var hostObj *simulator.HostSystem
	for _, e := range simulator.Map.All("HostSystem") {
		if h, ok := e.(*simulator.HostSystem); ok && h.Name == p.hostName {
			hostObj = h
		}
	}
	if hostObj == nil {
		return nil, fmt.Errorf("host: no host %q (vcsim has DC0_H0 and DC0_C0_H0..DC0_C0_H2)", p.hostName)
	}
	p.host = object.NewHostSystem(c, hostObj.Self)
	root, err := p.host.ResourcePool(ctx)
	if err != nil {
		return nil, err
	}
	if cr, ok := simulator.Map.Get(*hostObj.Parent).(*simulator.ClusterComputeResource); ok {
		p.cluster = cr.Name
	}
	p.pool = root
	if spec.ResourcePool != "" {
		p.poolName = spec.ResourcePool
		if p.pool, err = childPool(ctx, root, spec.ResourcePool); err != nil {
			return nil, fmt.Errorf("resource_pool: %w", err)
		}
	}
	return p, nil
}

// childFolder finds or creates a VM folder inside parent.
func childFolder(ctx context.Context, parent *object.Folder, name string) (*object.Folder, error) {
	obj := simulator.Map.Get(parent.Reference()).(*simulator.Folder)
	var found *types.ManagedObjectReference
	simulator.Map.WithLock(obj, func() {
		for _, ref := range obj.ChildEntity {
			if ref.Type != "Folder" {
				continue
			}
			if f, ok := simulator.Map.Get(ref).(*simulator.Folder); ok && f.Name == name {
				r := ref
				found = &r
			}
		}
	})
	if found != nil {
		return object.NewFolder(parent.Client(), *found), nil
	}
	return parent.CreateFolder(ctx, name)
}

// childPool finds or creates a resource pool inside root.
func childPool(ctx context.Context, root *object.ResourcePool, name string) (*object.ResourcePool, error) {
	obj := simulator.Map.Get(root.Reference())
	var children []types.ManagedObjectReference
	simulator.Map.WithLock(obj, func() {
		switch p := obj.(type) {
		case *simulator.ResourcePool:
			children = append(children, p.ResourcePool.ResourcePool...)
		case *mo.ResourcePool:
			children = append(children, p.ResourcePool...)
		}
	})
	for _, ref := range children {
		if rp, ok := simulator.Map.Get(ref).(*simulator.ResourcePool); ok && rp.Name == name {
			return object.NewResourcePool(root.Client(), ref), nil
		}
	}
	return root.Create(ctx, name, types.DefaultResourceConfigSpec())
}
