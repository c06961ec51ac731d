package main

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"time"
)

// A delta level has no flat file on the datastore (its -delta.vmdk holds copied-up grains), yet
// a backup tool reads a snapshot's disk from the snapshot's backing: "<disk>-00000N.vmdk" for
// every snapshot but the first. The lab serves GET /folder/<disk>-00000N-flat.vmdk as the
// flattened chain up to that level: a later snapshot's content (frozen), or for the newest
// level the VM's live content (which keeps changing with guest writes).

// deltaFlat finds the disk and level whose virtual flat file is rel ("vm1/vm1-000001-flat.vmdk").
func (s *diskStore) deltaFlat(dsName, rel string) (*disk, *level) {
	if !strings.HasSuffix(rel, "-flat.vmdk") {
		return nil, nil
	}
	name := strings.TrimSuffix(rel, "-flat.vmdk") + ".vmdk"
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, disks := range s.byVM {
		for _, d := range disks {
			if dsName != "" && d.ds != nil && d.ds.name != dsName {
				continue
			}
			for _, lv := range d.levels[1:] {
				if lv.name == name {
					return d, lv
				}
			}
		}
	}
	return nil, nil
}

// chainReader reads a disk's chain up to a level, like a flat file.
type chainReader struct {
	store *diskStore
	disk  *disk
	level *level
	size  int64
	pos   int64
}

func (c *chainReader) Read(p []byte) (int, error) {
	if c.pos >= c.size {
		return 0, io.EOF
	}
	if int64(len(p)) > c.size-c.pos {
		p = p[:c.size-c.pos]
	}
	c.store.mu.Lock()
	defer c.store.mu.Unlock()
	// a snapshot removal may merge the level while it is read: its content lives on below
	_, top := c.disk.resolve(c.level)
	if top < 0 {
		return 0, errors.New("the delta was removed while being read")
	}
	if err := c.disk.readChain(top, p, c.pos); err != nil {
		return 0, err
	}
	c.pos += int64(len(p))
	return len(p), nil
}

func (c *chainReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += c.pos
	case io.SeekEnd:
		offset += c.size
	}
	if offset < 0 {
		return 0, errors.New("negative position")
	}
	c.pos = offset
	return offset, nil
}

// serveDeltaFlat serves a virtual flat file; it returns false when rel is not one.
func (l *lab) serveDeltaFlat(w http.ResponseWriter, r *http.Request, rel string) bool {
	d, lv := l.disks.deltaFlat(r.URL.Query().Get("dsName"), rel)
	if d == nil {
		return false
	}
	l.disks.mu.Lock()
	size := d.capacity
	l.disks.mu.Unlock()
	rd := &chainReader{store: l.disks, disk: d, level: lv, size: size}
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, rel, time.Now(), rd)
	return true
}
