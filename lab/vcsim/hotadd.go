package main

import (
	"html"
	"io/ioutil"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// Hot-add, as a proxy VM's guest sees it. When ReconfigVM_Task attaches an existing disk to a
// VM, the lab links <workdir>/dev/disk/by-id/wwn-0x<disk uuid> to the disk's flat file, as udev
// links /dev/disk/by-id/wwn-0x<uuid> to the new SCSI disk in a guest with disk.EnableUUID; the
// link goes when the disk is removed. The uuid is the descriptor's ddb.uuid (the lab's disks'
// backing.uuid).

var (
	deviceChange = regexp.MustCompile(`(?s)<deviceChange>(.*?)</deviceChange>`)
	dcOperation  = regexp.MustCompile(`<operation>([^<]*)</operation>`)
	dcFileOp     = regexp.MustCompile(`<fileOperation>`)
	dcFileName   = regexp.MustCompile(`<fileName>([^<]*)</fileName>`)
	dcDisk       = regexp.MustCompile(`<device [^>]*type="VirtualDisk"`)
	ddbUUID      = regexp.MustCompile(`(?m)^ddb\.uuid\s*=\s*"([^"]*)"`)
)

func (l *lab) devDir() string { return filepath.Join(filepath.Dir(l.dsDir), "dev", "disk", "by-id") }

func (l *lab) reconfigVM(mux http.Handler, w http.ResponseWriter, r *http.Request, body []byte, call soapCall) {
	rec := httptest.NewRecorder()
	l.forwardSOAP(mux, rec, r, body, call)
	ok := false
	if m := returnTask.FindSubmatch(rec.Body.Bytes()); m != nil {
		ref := types.ManagedObjectReference{Type: "Task", Value: string(m[1])}
		if t, found := simulator.Map.Get(ref).(*simulator.Task); found && t.Info.Error == nil {
			ok = true
		}
	}
	if ok {
		for _, m := range deviceChange.FindAllSubmatch(body, -1) {
			change := m[1]
			op, file := dcOperation.FindSubmatch(change), dcFileName.FindSubmatch(change)
			if op == nil || file == nil || !dcDisk.Match(change) || dcFileOp.Match(change) {
				continue
			}
			l.hotAdd(string(op[1]), html.UnescapeString(string(file[1])))
		}
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

func (l *lab) hotAdd(op, dsPath string) {
	desc := l.localPath(dsPath)
	text, err := ioutil.ReadFile(desc)
	if err != nil {
		return
	}
	m := ddbUUID.FindSubmatch(text)
	if m == nil {
		return
	}
	hex := strings.Map(func(r rune) rune {
		if strings.ContainsRune("0123456789abcdefABCDEF", r) {
			return r
		}
		return -1
	}, string(m[1]))
	link := filepath.Join(l.devDir(), "wwn-0x"+strings.ToLower(hex))
	switch op {
	case "add":
		_ = os.MkdirAll(l.devDir(), 0o755)
		_ = os.Remove(link)
		if err := os.Symlink(strings.TrimSuffix(desc, ".vmdk")+"-flat.vmdk", link); err != nil {
			log.Printf("hot-add %s: %s", dsPath, err)
		}
	case "remove":
		_ = os.Remove(link)
	}
}
