package main

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
)

// Snapshots and delta disks: a snapshot freezes each disk's chain and pushes a delta level
// (<disk>-NNNNNN.vmdk + -delta.vmdk holding copied-up 64 KiB grains); removing it merges the
// delta into the level below, as vSphere consolidates.

// snapshot freezes every disk of a VM: records the snapshot's view and pushes a new delta.
// Called from a vcsim handler that holds the VM lock.
func (s *diskStore) snapshot(snap, vm string) (map[int32]*snapDisk, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec := &snapRec{vm: vm, disks: map[int32]*snapDisk{}}
	for _, d := range s.byVM[vm] {
		if d.independent() {
			continue // independent disks and physical RDMs are not part of snapshots
		}
		sd := &snapDisk{disk: d, frozen: d.levels[len(d.levels)-1], capacity: d.capacity, cbt: d.cbtOn,
			epoch: d.epoch, gen: d.gen}
		if d.cbtOn {
			sd.changeID = fmt.Sprintf("%s/%d", d.epoch, d.gen)
			d.gen++
		}
		rec.disks[d.key] = sd
		num := 1
		for used := true; used; {
			used = false
			for _, l := range d.levels {
				if l.num == num {
					num, used = num+1, true
				}
			}
		}
		suffix := fmt.Sprintf("-%06d", num)
		lv := &level{num: num, name: d.baseName + suffix + ".vmdk", data: d.local + suffix + "-delta.vmdk",
			grains: map[int64]bool{}}
		if err := os.WriteFile(lv.data, nil, 0o644); err != nil {
			return nil, err
		}
		d.cid++
		parent := filepath.Base(d.levels[len(d.levels)-1].name)
		if err := writeDescriptor(d.local+suffix+".vmdk", d.capacity, filepath.Base(lv.data), parent, d.cid, d.uuid, !d.spec.Thick); err != nil {
			return nil, err
		}
		d.levels = append(d.levels, lv)
	}
	s.snaps[snap] = rec
	return rec.disks, nil
}

// mergeSnapshotLocked drops a snapshot from the disks' point of view: for each of its disks the
// level above the one it froze (the writes made between it and the next snapshot, or the live
// state) is merged down into the frozen level, which then holds exactly what the merged level's
// chain held; the snapshot that had frozen the merged level (the next one) now points at the
// frozen level, so every remaining snapshot and the VM keep their content. It returns the files
// of the merged levels, to delete once nothing refers to them (disks.mu held).
func (s *diskStore) mergeSnapshotLocked(snap string) ([]string, error) {
	rec := s.snaps[snap]
	if rec == nil {
		return nil, nil
	}
	delete(s.snaps, snap)
	s.dirty[rec.vm] = true
	var files []string
	for _, sd := range rec.disks {
		d := sd.disk
		frozen, i := d.resolve(sd.frozen)
		if i < 0 || i+1 >= len(d.levels) {
			continue
		}
		child := d.levels[i+1]
		if err := d.merge(child, frozen); err != nil {
			// keep the chain as it is: nothing was lost, the level stays in use
			return files, fmt.Errorf("merging %s into %s: %w", child.name, frozen.name, err)
		}
		d.levels = append(d.levels[:i+1], d.levels[i+2:]...)
		child.mergedInto = frozen
		for _, other := range s.snaps {
			if o := other.disks[d.key]; o != nil && o.disk == d && o.frozen == child {
				o.frozen = frozen
				o.allocated = nil
			}
		}
		files = append(files, child.data, filepath.Join(filepath.Dir(d.local), filepath.Base(child.name)))
	}
	return files, nil
}

// forget drops the record of a snapshot removed some other way (its levels stay in the chain:
// content is kept, nothing is deleted).
func (s *diskStore) forget(snap string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.snaps, snap)
}

func (d *disk) merge(child, parent *level) error {
	src, err := os.Open(child.data)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenFile(parent.data, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer dst.Close()
	grains := make([]int64, 0, len(child.grains))
	for g := range child.grains {
		grains = append(grains, g)
	}
	sort.Slice(grains, func(a, b int) bool { return grains[a] < grains[b] })
	buf := make([]byte, grain)
	for _, g := range grains {
		n := int64(grain)
		if g*grain+n > d.capacity {
			n = d.capacity - g*grain
		}
		if _, err = src.ReadAt(buf[:n], g*grain); err != nil && !isEOF(err) {
			return err
		}
		if _, err = dst.WriteAt(buf[:n], g*grain); err != nil {
			return err
		}
		if parent.grains != nil {
			parent.grains[g] = true
		}
	}
	return nil
}

// resizeLocked grows (or shrinks) the base disk; only without snapshots (as vSphere requires).
func (s *diskStore) resizeLocked(d *disk, size int64) error {
	if len(d.levels) > 1 {
		return fmt.Errorf("disk has snapshots")
	}
	if err := os.Truncate(d.levels[0].data, size); err != nil {
		return err
	}
	d.capacity = size
	d.cid++
	kind := map[string]string{"-flat.vmdk": "flat", "-rdm.vmdk": "rdm", "-rdmp.vmdk": "rdmp"}[d.suffix]
	return writeDescriptorKind(d.local+".vmdk", size, path.Base(d.baseName)+d.suffix, "", d.cid, d.uuid, !d.spec.Thick, kind)
}
