package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"github.com/vmware/govmomi/vim25"
)

// controlMore serves the control API's newer routes; false when the route is not one of them.
//
//	POST /lab/vms                                   a VM spec -> its inventory entry
//	GET  /lab/vms/<vm>/disks/<key>/sha256[?snapshot=<moref>]
//	GET  /lab/datastores                            datastores, limits and stats
//	POST /lab/datastores/<name>/limits              {"latency_ms", "bandwidth_mbps"}
//	GET  /lab/datastores/<name>/stats, POST .../stats/reset
//	GET  /lab/requests?since=<seq>
//	GET  /lab/snapshots, POST /lab/snapshots/reset
func (l *lab) controlMore(w http.ResponseWriter, r *http.Request, parts []string) bool {
	get, post := r.Method == http.MethodGet, r.Method == http.MethodPost
	n := len(parts)
	switch {
	case n == 1 && parts[0] == "vms" && post:
		l.addVM(w, r)
	case n == 5 && parts[0] == "vms" && parts[2] == "disks" && parts[4] == "sha256" && get:
		l.serveSHA256(w, r, parts[1], parts[3])
	case n == 1 && parts[0] == "datastores" && get:
		out := []interface{}{}
		for _, ds := range l.datastores {
			out = append(out, ds.io.stats())
		}
		writeJSON(w, http.StatusOK, map[string]interface{}{"datastores": l.datastoresInventory(), "stats": out})
	case n >= 3 && parts[0] == "datastores":
		l.datastoreRoute(w, r, parts[1], parts[2:])
	case n == 1 && parts[0] == "requests" && get:
		since, _ := strconv.ParseInt(r.URL.Query().Get("since"), 10, 64)
		writeJSON(w, http.StatusOK, l.requests.since(since))
	case n == 1 && parts[0] == "snapshots" && get:
		writeJSON(w, http.StatusOK, l.snapAcct.report())
	case n == 2 && parts[0] == "snapshots" && parts[1] == "reset" && post:
		l.snapAcct.reset()
		writeJSON(w, http.StatusOK, l.snapAcct.report())
	default:
		return false
	}
	return true
}

func (l *lab) addVM(w http.ResponseWriter, r *http.Request) {
	var spec VMSpec
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&spec); err != nil {
		writeError(w, http.StatusBadRequest, "bad VM spec: "+err.Error())
		return
	}
	ctx := context.Background()
	c, err := vim25.NewClient(ctx, l.model.Service)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	vm, err := l.createVM(ctx, c, spec)
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("vm %s: %s", spec.Name, err))
		return
	}
	writeJSON(w, http.StatusOK, vm.inventory(l))
}

func (l *lab) datastoreRoute(w http.ResponseWriter, r *http.Request, name string, rest []string) {
	ds := l.ioFor(name)
	if ds == nil {
		writeError(w, http.StatusNotFound, "no datastore "+name)
		return
	}
	switch {
	case len(rest) == 1 && rest[0] == "limits" && r.Method == http.MethodPost:
		var body struct {
			LatencyMs     *float64 `json:"latency_ms"`
			BandwidthMbps *float64 `json:"bandwidth_mbps"`
		}
		if !readJSON(w, r, &body) {
			return
		}
		if (body.LatencyMs != nil && *body.LatencyMs < 0) || (body.BandwidthMbps != nil && *body.BandwidthMbps < 0) {
			writeError(w, http.StatusBadRequest, "limits must be >= 0 (0 = none)")
			return
		}
		ds.setLimits(body.LatencyMs, body.BandwidthMbps)
		lat, bw := ds.limits()
		writeJSON(w, http.StatusOK, map[string]interface{}{"datastore": name, "latency_ms": lat, "bandwidth_mbps": bw})
	case len(rest) == 1 && rest[0] == "limits" && r.Method == http.MethodGet:
		lat, bw := ds.limits()
		writeJSON(w, http.StatusOK, map[string]interface{}{"datastore": name, "latency_ms": lat, "bandwidth_mbps": bw})
	case len(rest) == 1 && rest[0] == "stats" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, ds.stats())
	case len(rest) == 2 && rest[0] == "stats" && rest[1] == "reset" && r.Method == http.MethodPost:
		ds.resetStats()
		writeJSON(w, http.StatusOK, ds.stats())
	default:
		writeError(w, http.StatusNotFound, "no such lab endpoint: "+r.Method+" "+r.URL.Path)
	}
}

// lookupDisk finds a lab VM's disk by device key (2000...) or index (0, 1...).
func (l *lab) lookupDisk(vmName, keyStr string) (*disk, string) {
	lv := l.vmByName(vmName)
	if lv == nil {
		return nil, "no VM " + vmName
	}
	k, err := strconv.Atoi(keyStr)
	if err != nil {
		return nil, "bad disk " + keyStr
	}
	if k >= 0 && k < 1000 {
		if k >= len(lv.disks) {
			return nil, fmt.Sprintf("no disk %s (the VM has %d)", keyStr, len(lv.disks))
		}
		return lv.disks[k], ""
	}
	if d := l.disks.find(lv.ref.Value, int32(k)); d != nil {
		return d, ""
	}
	return nil, "no disk " + keyStr
}

// serveSHA256 hashes a disk's content as the guest sees it now (the flattened chain), or as a
// snapshot froze it; in 1 MiB chunks, so guest writes are not held up.
func (l *lab) serveSHA256(w http.ResponseWriter, r *http.Request, vmName, keyStr string) {
	d, msg := l.lookupDisk(vmName, keyStr)
	if d == nil {
		writeError(w, http.StatusNotFound, msg)
		return
	}
	snap := r.URL.Query().Get("snapshot")
	var frozen *level
	if snap != "" {
		l.disks.mu.Lock()
		rec := l.disks.snaps[snap]
		var sd *snapDisk
		if rec != nil && rec.vm == d.vm {
			sd = rec.disks[d.key]
		}
		l.disks.mu.Unlock()
		switch {
		case rec == nil || rec.vm != d.vm:
			writeError(w, http.StatusNotFound, "no snapshot "+snap+" of "+vmName)
			return
		case sd == nil:
			writeError(w, http.StatusConflict, fmt.Sprintf("disk %d is %s: snapshots leave it out", d.key, d.spec.Mode))
			return
		}
		frozen = sd.frozen
	}
	h := sha256.New()
	buf := make([]byte, 1<<20)
	l.disks.mu.Lock()
	size := d.capacity
	l.disks.mu.Unlock()
	for off := int64(0); off < size; {
		n := int64(len(buf))
		if off+n > size {
			n = size - off
		}
		l.disks.mu.Lock()
		top := len(d.levels) - 1
		if frozen != nil {
			_, top = d.resolve(frozen)
		}
		var err error
		if top < 0 {
			err = fmt.Errorf("the snapshot's level is gone")
		} else {
			err = d.readChain(top, buf[:n], off)
		}
		l.disks.mu.Unlock()
		if err != nil {
			writeError(w, http.StatusInternalServerError, err.Error())
			return
		}
		h.Write(buf[:n])
		off += n
	}
	writeJSON(w, http.StatusOK, map[string]interface{}{"vm": d.vmName, "key": d.key, "size": size,
		"snapshot": snap, "sha256": hex.EncodeToString(h.Sum(nil))})
}

func (l *lab) tagsInventory() []interface{} {
	cats := l.tags.categoryIDs()
	out := []interface{}{}
	for _, c := range l.spec.TagCategories {
		tags := []interface{}{}
		for _, t := range c.Tags {
			tags = append(tags, map[string]string{"name": t, "id": l.tags.find(TagRef{c.Name, t})})
		}
		out = append(out, map[string]interface{}{"name": c.Name, "id": cats[c.Name], "cardinality": c.Cardinality,
			"tags": tags})
	}
	return out
}
