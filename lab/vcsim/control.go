package main

import (
	"encoding/json"
	"io/ioutil"
	"log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// control serves the lab's HTTP API under /lab/ (no SOAP session needed).
func (l *lab) control(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")[1:]
	route := strings.Join(parts, "/")
	if l.controlMore(w, r, parts) {
		return
	}
	switch {
	case route == "state" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, l.state())
	case route == "inventory" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, l.inventory())
	case route == "faults" && r.Method == http.MethodPost:
		var f methodFault
		if !readJSON(w, r, &f) {
			return
		}
		if err := l.faults.addMethod(&f); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, f)
	case route == "download-faults" && r.Method == http.MethodPost:
		var f downloadFault
		if !readJSON(w, r, &f) {
			return
		}
		if err := l.faults.addDownload(&f); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, f)
	case route == "outage" && r.Method == http.MethodPost:
		var o struct {
			Seconds float64 `json:"seconds"`
			Mode    string  `json:"mode"`
		}
		if !readJSON(w, r, &o) {
			return
		}
		switch o.Mode {
		case "", "503":
			l.faults.setOutage(o.Seconds, "503")
		case "reset":
			l.faults.setOutage(o.Seconds, "reset")
		case "refuse":
			go l.refuse(time.Duration(o.Seconds * float64(time.Second)))
		default:
			writeError(w, http.StatusBadRequest, "unknown outage mode "+o.Mode)
			return
		}
		writeJSON(w, http.StatusOK, map[string]interface{}{"ok": true})
	case (route == "clear" && r.Method == http.MethodPost) || (route == "faults" && r.Method == http.MethodDelete):
		l.faults.clear()
		writeJSON(w, http.StatusOK, map[string]interface{}{"ok": true})
	case len(parts) == 3 && parts[0] == "vms" && parts[2] == "snapshots" && r.Method == http.MethodGet:
		lv := l.vmByName(parts[1])
		if lv == nil {
			writeError(w, http.StatusNotFound, "no VM "+parts[1])
			return
		}
		writeJSON(w, http.StatusOK, l.snapshots(lv))
	case len(parts) == 5 && parts[0] == "vms" && parts[2] == "disks":
		l.diskIO(w, r, parts[1], parts[3], parts[4])
	default:
		writeError(w, http.StatusNotFound, "no such lab endpoint: "+r.Method+" "+r.URL.Path)
	}
}

func (l *lab) diskIO(w http.ResponseWriter, r *http.Request, vmName, keyStr, op string) {
	lv := l.vmByName(vmName)
	key, err := strconv.Atoi(keyStr)
	if lv == nil || err != nil {
		writeError(w, http.StatusNotFound, "no VM "+vmName)
		return
	}
	d := l.disks.find(lv.ref.Value, int32(key))
	if d == nil {
		writeError(w, http.StatusNotFound, "no disk "+keyStr)
		return
	}
	q := r.URL.Query()
	off, err := strconv.ParseInt(q.Get("offset"), 10, 64)
	if err != nil {
		writeError(w, http.StatusBadRequest, "offset is required")
		return
	}
	switch {
	case op == "write" && r.Method == http.MethodPost:
		data, err := ioutil.ReadAll(r.Body)
		if err == nil {
			err = l.disks.write(d, off, data)
		}
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, map[string]interface{}{"written": len(data)})
	case op == "read" && r.Method == http.MethodGet:
		n, err := strconv.ParseInt(q.Get("length"), 10, 64)
		var data []byte
		if err == nil {
			data, err = l.disks.read(d, off, n)
		}
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(data)
	default:
		writeError(w, http.StatusNotFound, "unknown disk operation "+op)
	}
}

type snapInfo struct {
	Name     string `json:"name"`
	Moref    string `json:"moref"`
	ID       int32  `json:"id"`
	Children int    `json:"children"`
}

func (l *lab) snapshots(lv *labVM) []snapInfo {
	out := []snapInfo{}
	vm := vmObject(lv.ref)
	if vm == nil {
		return out
	}
	var walk func([]types.VirtualMachineSnapshotTree)
	walk = func(tree []types.VirtualMachineSnapshotTree) {
		for _, t := range tree {
			out = append(out, snapInfo{t.Name, t.Snapshot.Value, t.Id, len(t.ChildSnapshotList)})
			walk(t.ChildSnapshotList)
		}
	}
	simulator.Map.WithLock(vm, func() {
		if vm.Snapshot != nil {
			walk(vm.Snapshot.RootSnapshotList)
		}
	})
	return out
}

func (l *lab) state() map[string]interface{} {
	vms := []interface{}{}
	for _, lv := range l.vmList() {
		snaps := l.snapshots(lv)
		vm := vmObject(lv.ref)
		if vm == nil {
			continue // destroyed by a client
		}
		var power string
		var cbt bool
		simulator.Map.WithLock(vm, func() {
			power = string(vm.Runtime.PowerState)
			cbt = vm.Config.ChangeTrackingEnabled != nil && *vm.Config.ChangeTrackingEnabled
		})
		disks := []interface{}{}
		l.disks.mu.Lock()
		for _, d := range l.disks.byVM[lv.ref.Value] {
			chain := []string{}
			for _, lvl := range d.levels {
				chain = append(chain, d.dsPath(lvl.name))
			}
			disks = append(disks, map[string]interface{}{"key": d.key, "capacity": d.capacity,
				"chain": chain, "cbt": d.cbtOn, "change_epoch": d.epoch, "change_seq": d.gen})
		}
		l.disks.mu.Unlock()
		vms = append(vms, map[string]interface{}{"name": lv.name, "moref": lv.ref.Value, "power_state": power,
			"cbt": cbt, "snapshots": snaps, "disks": disks})
	}
	return map[string]interface{}{"vms": vms, "faults": l.faults.state()}
}

// refuse closes the listener (and open connections) for d, then listens again on the same port.
func (l *lab) refuse(d time.Duration) {
	time.Sleep(50 * time.Millisecond) // let the control response go out
	_ = l.listener.Close()
	l.conns.closeAll()
	time.Sleep(d)
	for i := 0; i < 50; i++ {
		ln, err := net.Listen("tcp", l.addr)
		if err == nil {
			l.listener = ln
			go func() { _ = l.server.Serve(ln) }()
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	log.Printf("could not listen again on %s", l.addr)
}

func readJSON(w http.ResponseWriter, r *http.Request, v interface{}) bool {
	if err := json.NewDecoder(r.Body).Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "bad JSON: "+err.Error())
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, status int, v interface{}) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}
