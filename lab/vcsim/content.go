package main

import (
	"encoding/binary"
	"fmt"
	"io/ioutil"
	"os"
)

// segment is the content generator's unit: each 64 KiB segment of a "mixed" disk is random,
// text-like (repetitive), a short repeating pattern or all zero, drawn from the disk's seed.
const segment = 64 * 1024

// prng is splitmix64: fast, deterministic, good enough for test content.
type prng struct{ s uint64 }

func (p *prng) next() uint64 {
	p.s += 0x9e3779b97f4a7c15
	z := p.s
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

func (p *prng) fill(b []byte) {
	i := 0
	for ; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], p.next())
	}
	if i < len(b) {
		var t [8]byte
		binary.LittleEndian.PutUint64(t[:], p.next())
		copy(b[i:], t[:])
	}
}

var words = []string{"backup", "vsphere", "snapshot", "disk", "block", "change", "tracking",
	"restore", "datastore", "virtual", "machine", "the", "of", "and", "a", "to", "log", "entry",
	"error", "info", "warning", "kernel", "service", "started", "stopped", "user", "session"}

// textCorpus builds a seeded text-like buffer (words and line numbers) that segments copy from.
func textCorpus(r *prng, size int) []byte {
	b := make([]byte, 0, size+128)
	line := 0
	for len(b) < size {
		b = append(b, fmt.Sprintf("%06d ", line)...)
		n := 4 + int(r.next()%10)
		for i := 0; i < n; i++ {
			b = append(b, words[r.next()%uint64(len(words))]...)
			b = append(b, ' ')
		}
		b[len(b)-1] = '\n'
		line++
	}
	return b[:size]
}

// generate writes a disk's flat file: sparse, with only non-zero segments written.
func generate(path string, size int64, seed int64, layout string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	if err = f.Truncate(size); err != nil {
		return err
	}
	if layout == "zero" {
		return nil
	}
	r := &prng{s: uint64(seed)*0x2545f4914f6cdd1d + 1}
	corpus := textCorpus(r, 4*segment)
	const batch = 64 // segments per write
	buf := make([]byte, 0, batch*segment)
	bufOff := int64(0)
	flush := func() error {
		if len(buf) == 0 {
			return nil
		}
		_, err := f.WriteAt(buf, bufOff)
		buf = buf[:0]
		return err
	}
	for off := int64(0); off < size; off += segment {
		n := int64(segment)
		if off+n > size {
			n = size - off
		}
		kind := 0 // random
		if layout != "random" {
			kind = int(r.next() % 10)
		}
		switch {
		case kind < 3: // random
			if len(buf) == 0 {
				bufOff = off
			}
			start := len(buf)
			buf = buf[:start+int(n)]
			r.fill(buf[start:])
		case kind < 5: // text
			if len(buf) == 0 {
				bufOff = off
			}
			pos := int(r.next() % uint64(len(corpus)-segment))
			buf = append(buf, corpus[pos:pos+int(n)]...)
		case kind < 6: // short repeating pattern
			if len(buf) == 0 {
				bufOff = off
			}
			var pat [16]byte
			r.fill(pat[:])
			plen := 1 + int(r.next()%16)
			for i := int64(0); i < n; i++ {
				buf = append(buf, pat[int(i)%plen])
			}
		default: // zero: leave a hole
			if err = flush(); err != nil {
				return err
			}
			continue
		}
		if len(buf) >= batch*segment {
			if err = flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// writeDescriptor writes a VMware text descriptor for a flat (base) or sparse (delta) disk.
func writeDescriptor(path string, capacity int64, extent string, parent string, cid uint32, uuid string, thin bool) error {
	return writeDescriptorKind(path, capacity, extent, parent, cid, uuid, thin, "flat")
}

// writeDescriptorKind also writes RDM mapping descriptors: kind "rdm" (virtual compatibility,
// createType vmfsRawDeviceMap) or "rdmp" (physical, vmfsPassthroughRawDeviceMap), whose extent
// is the LUN ("<disk>-rdm.vmdk" / "<disk>-rdmp.vmdk" here).
func writeDescriptorKind(path string, capacity int64, extent string, parent string, cid uint32, uuid string,
	thin bool, kind string) error {
	sectors := capacity / 512
	createType, extentType, parentCID, hint := "vmfs", "VMFS", "ffffffff", ""
	switch kind {
	case "rdm":
		createType, extentType, thin = "vmfsRawDeviceMap", "VMFSRDM", false
	case "rdmp":
		createType, extentType, thin = "vmfsPassthroughRawDeviceMap", "VMFSRDM", false
	}
	if parent != "" {
		createType, extentType = "vmfsSparse", "VMFSSPARSE"
		parentCID = fmt.Sprintf("%08x", cid-1)
		hint = fmt.Sprintf("parentFileNameHint=\"%s\"\n", parent)
	}
	cyl := sectors / (255 * 63)
	thinLine := ""
	if thin {
		thinLine = "ddb.thinProvisioned = \"1\"\n"
	}
	text := fmt.Sprintf(`# Disk DescriptorFile
version=1
encoding="UTF-8"
CID=%08x
parentCID=%s
createType="%s"
%s
# Extent description
RW %d %s "%s"

# The Disk Data Base
#DDB

ddb.adapterType = "pvscsi"
ddb.geometry.cylinders = "%d"
ddb.geometry.heads = "255"
ddb.geometry.sectors = "63"
ddb.longContentID = "%08x%08x%08x%08x"
%sddb.uuid = "%s"
ddb.virtualHWVersion = "13"
`, cid, parentCID, createType, hint, sectors, extentType, extent, cyl, cid, cid, cid, cid, thinLine, uuid)
	return ioutil.WriteFile(path, []byte(text), 0o644)
}
