package main

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"sync"
)

// grain is both the delta disks' copy-on-write unit and the CBT block size.
const grain = 64 * 1024

// level is one file of a disk chain: the base flat disk or a delta created by a snapshot.
type level struct {
	num    int            // 0 = base, else the NNNNNN of <disk>-NNNNNN.vmdk
	name   string         // datastore-relative descriptor path ("vm/vm-000001.vmdk")
	data   string         // local path of the data file (flat or -delta)
	grains map[int64]bool // grains held by a delta; nil for the base (holds everything)
	// mergedInto is set when the level was merged into its parent (snapshot removal): the
	// parent's chain now holds exactly what this level's chain held, so readers follow it.
	mergedInto *level
}

// disk is one virtual disk with its chain and CBT state.
type disk struct {
	key      int32
	label    string
	vm       string // VM moref value
	vmName   string
	baseName string // datastore-relative, without ".vmdk" ("vm/vm_1")
	local    string // local path, without ".vmdk"
	capacity int64
	spec     DiskSpec
	uuid     string
	cid      uint32
	levels   []*level
	ds       *labDatastore
	suffix   string // of the base data file: "-flat.vmdk", or "-rdm.vmdk"/"-rdmp.vmdk" for an RDM
	lunUUID  string // RDM only

	cbtOn   bool
	epoch   string                 // the uuid part of change ids ("52 xx ... xx")
	gen     int                    // sequence number writes are tagged with
	changed map[int]map[int64]bool // gen -> blocks written while gen was current
}

// snapDisk is a disk as captured by one snapshot.
type snapDisk struct {
	disk      *disk
	frozen    *level // the chain up to and including this level is the snapshot's content
	capacity  int64
	cbt       bool
	epoch     string
	gen       int
	changeID  string
	allocated []int64 // cache of non-zero blocks ('*')
}

type snapRec struct {
	vm    string
	disks map[int32]*snapDisk
}

// diskStore owns all disk data; its mutex is always taken after (never before) a VM lock.
type diskStore struct {
	mu       sync.Mutex
	maxAreas int
	byVM     map[string][]*disk
	snaps    map[string]*snapRec
	dirty    map[string]bool // VMs whose device backings must be re-synced
}

func newDiskStore(maxAreas int) *diskStore {
	return &diskStore{maxAreas: maxAreas, byVM: map[string][]*disk{}, snaps: map[string]*snapRec{},
		dirty: map[string]bool{}}
}

func randomHex(n int, sep string) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	parts := make([]string, n)
	for i, c := range b {
		parts[i] = fmt.Sprintf("%02x", c)
	}
	return strings.Join(parts, sep)
}

// newEpoch returns a vSphere-like change id prefix: "52 xx xx xx xx xx xx xx-xx xx ... xx".
func newEpoch() string {
	h := strings.Split("52 "+randomHex(15, " "), " ")
	return strings.Join(h[:8], " ") + "-" + strings.Join(h[8:], " ")
}

func (s *diskStore) create(ds *labDatastore, rel string, spec DiskSpec) (*disk, error) {
	if err := spec.normalize(); err != nil {
		return nil, err
	}
	local := ds.local(rel)
	d := &disk{baseName: rel, local: local, capacity: spec.Size, spec: spec, cid: 0x1000, ds: ds,
		suffix: "-flat.vmdk"}
	d.uuid = randomHex(16, " ")
	kind := "flat"
	if spec.Kind == "rdm" {
		kind, d.suffix = "rdm", "-rdm.vmdk"
		if spec.Compatibility == "physicalMode" {
			kind, d.suffix = "rdmp", "-rdmp.vmdk"
		}
		d.lunUUID = "0200000000" + randomHex(16, "") + "564d57617265" // as ESXi shows a LUN's uuid
	}
	if err := generate(local+d.suffix, spec.Size, spec.Seed, spec.Layout); err != nil {
		return nil, err
	}
	if err := writeDescriptorKind(local+".vmdk", spec.Size, path.Base(rel)+d.suffix, "", d.cid, d.uuid,
		!spec.Thick, kind); err != nil {
		return nil, err
	}
	d.levels = []*level{{num: 0, name: rel + ".vmdk", data: local + d.suffix}}
	return d, nil
}

// independent disks (and physical RDMs) are left out of snapshots, as vSphere does.
func (d *disk) independent() bool { return d.spec.independent() }

func (d *disk) dsPath(rel string) string { return d.ds.dsPath(rel) }

// resolve follows merges: the live level holding what lv's chain held.
func (d *disk) resolve(lv *level) (*level, int) {
	for lv != nil {
		if i := d.levelIndex(lv); i >= 0 {
			return lv, i
		}
		lv = lv.mergedInto
	}
	return nil, -1
}

// setCBT records CBT being turned on or off; turning it on starts a new epoch (old ids go stale).
func (s *diskStore) setCBT(d *disk, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d.vm != "" && !containsDisk(s.byVM[d.vm], d) {
		s.byVM[d.vm] = append(s.byVM[d.vm], d)
	}
	s.setCBTLocked(d, on)
}

func containsDisk(list []*disk, d *disk) bool {
	for _, x := range list {
		if x == d {
			return true
		}
	}
	return false
}

func (s *diskStore) setCBTLocked(d *disk, on bool) {
	if on == d.cbtOn {
		return
	}
	d.cbtOn = on
	d.epoch, d.gen, d.changed = "", 0, nil
	if on {
		d.epoch, d.gen, d.changed = newEpoch(), 1, map[int]map[int64]bool{}
	}
}

func (s *diskStore) find(vm string, key int32) *disk {
	for _, d := range s.byVM[vm] {
		if d.key == key {
			return d
		}
	}
	return nil
}

func (d *disk) levelIndex(l *level) int {
	for i, x := range d.levels {
		if x == l {
			return i
		}
	}
	return -1
}

// readChain reads [off, off+len(buf)) of the chain d.levels[0..top].
func (d *disk) readChain(top int, buf []byte, off int64) error {
	files := map[int]*os.File{}
	defer func() {
		for _, f := range files {
			_ = f.Close()
		}
	}()
	for pos := int64(0); pos < int64(len(buf)); {
		g := (off + pos) / grain
		end := (g + 1) * grain
		if end > off+int64(len(buf)) {
			end = off + int64(len(buf))
		}
		idx := 0
		for i := top; i >= 1; i-- {
			if d.levels[i].grains[g] {
				idx = i
				break
			}
		}
		f := files[idx]
		if f == nil {
			var err error
			if f, err = os.Open(d.levels[idx].data); err != nil {
				return err
			}
			files[idx] = f
		}
		chunk := buf[pos : end-off]
		n, err := f.ReadAt(chunk, off+pos)
		for i := n; i < len(chunk); i++ {
			chunk[i] = 0 // sparse delta files may be shorter
		}
		if err != nil && n < len(chunk) && !isEOF(err) {
			return err
		}
		pos = end - off
	}
	return nil
}

func isEOF(err error) bool { return errors.Is(err, io.EOF) }

// write is a guest write: to the top of the chain, copying grains up on first touch.
func (s *diskStore) write(d *disk, off int64, data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if off < 0 || off+int64(len(data)) > d.capacity {
		return fmt.Errorf("write [%d, %d) outside the disk (%d bytes)", off, off+int64(len(data)), d.capacity)
	}
	if len(data) == 0 {
		return nil
	}
	topIdx := len(d.levels) - 1
	top := d.levels[topIdx]
	f, err := os.OpenFile(top.data, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	first, last := off/grain, (off+int64(len(data))-1)/grain
	if top.grains != nil {
		for g := first; g <= last; g++ {
			if top.grains[g] {
				continue
			}
			n := int64(grain)
			if g*grain+n > d.capacity {
				n = d.capacity - g*grain
			}
			buf := make([]byte, n)
			if err = d.readChain(topIdx-1, buf, g*grain); err != nil {
				return err
			}
			if _, err = f.WriteAt(buf, g*grain); err != nil {
				return err
			}
			top.grains[g] = true
		}
	}
	if _, err = f.WriteAt(data, off); err != nil {
		return err
	}
	if d.cbtOn {
		set := d.changed[d.gen]
		if set == nil {
			set = map[int64]bool{}
			d.changed[d.gen] = set
		}
		for g := first; g <= last; g++ {
			set[g] = true
		}
	}
	return nil
}

func (s *diskStore) read(d *disk, off int64, n int64) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if off < 0 || n < 0 || off+n > d.capacity {
		return nil, fmt.Errorf("read [%d, %d) outside the disk (%d bytes)", off, off+n, d.capacity)
	}
	buf := make([]byte, n)
	return buf, d.readChain(len(d.levels)-1, buf, off)
}
