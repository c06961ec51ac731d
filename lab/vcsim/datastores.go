package main

import (
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/types"
)

// labDatastore is one datastore of the spec: a directory under the workdir, mounted on every host.
type labDatastore struct {
	name string
	dir  string // absolute local path
	ref  types.ManagedObjectReference
	io   *dsIO // read limits and accounting of /folder/ downloads
}

func (ds *labDatastore) dsPath(rel string) string { return fmt.Sprintf("[%s] %s", ds.name, rel) }

// local maps a datastore-relative path ("vm/vm.vmdk") to the local file.
func (ds *labDatastore) local(rel string) string {
	return filepath.Join(ds.dir, filepath.FromSlash(path.Clean("/"+rel)))
}

func (l *lab) datastore(name string) *labDatastore {
	for _, ds := range l.datastores {
		if ds.name == name {
			return ds
		}
	}
	return nil
}

// newDatastores makes the spec's datastore directories (workdir/<name>).
func newDatastores(spec *LabSpec, dir string) ([]*labDatastore, error) {
	var out []*labDatastore
	for _, s := range spec.Datastores {
		abs, err := filepath.Abs(filepath.Join(dir, s.Name))
		if err != nil {
			return nil, err
		}
		if err = os.MkdirAll(abs, 0o755); err != nil {
			return nil, err
		}
		ds := &labDatastore{name: s.Name, dir: abs, io: newDSIO(s.Name)}
		ds.io.setLimits(&s.LatencyMs, &s.BandwidthMbps)
		out = append(out, ds)
	}
	return out, nil
}

// mountDatastores creates every datastore on every host. vcsim keeps one Datastore object per
// name whose host list names only the last host it was created on: the lab lists them all.
func (l *lab) mountDatastores(ctx context.Context, c *vim25.Client) error {
	hosts := simulator.Map.All("HostSystem")
	for _, ds := range l.datastores {
		for _, e := range hosts {
			host := object.NewHostSystem(c, e.Reference())
			dss, err := host.ConfigManager().DatastoreSystem(ctx)
			if err != nil {
				return err
			}
			if _, err = dss.CreateLocalDatastore(ctx, ds.name, ds.dir); err != nil {
				return fmt.Errorf("datastore %s: %w", ds.name, err)
			}
		}
		obj, ok := l.datastoreByName(ds.name)
		if !ok {
			return fmt.Errorf("datastore %s was not created", ds.name)
		}
		ds.ref = obj.Self
		var mounts []types.DatastoreHostMount
		for _, e := range hosts {
			mounts = append(mounts, types.DatastoreHostMount{
				Key: e.Reference(),
				MountInfo: types.HostMountInfo{
					Path:       ds.dir,
					AccessMode: string(types.HostMountModeReadWrite),
					Mounted:    types.NewBool(true),
					Accessible: types.NewBool(true),
				},
			})
		}
		simulator.Map.WithLock(obj, func() { obj.Host = mounts })
		if obj.Parent != nil { // one child entry per host: keep one
			if f, ok := simulator.Map.Get(*obj.Parent).(*simulator.Folder); ok {
				simulator.Map.WithLock(f, func() { f.ChildEntity = dedupe(f.ChildEntity) })
			}
		}
	}
	return nil
}

func dedupe(refs []types.ManagedObjectReference) []types.ManagedObjectReference {
	seen := map[types.ManagedObjectReference]bool{}
	out := refs[:0]
	for _, r := range refs {
		if !seen[r] {
			seen[r] = true
			out = append(out, r)
		}
	}
	return out
}

func (l *lab) datastoresInventory() []interface{} {
	out := []interface{}{}
	for _, ds := range l.datastores {
		lat, bw := ds.io.limits()
		out = append(out, map[string]interface{}{"name": ds.name, "dir": ds.dir, "moref": ds.ref.Value,
			"latency_ms": lat, "bandwidth_mbps": bw})
	}
	return out
}
