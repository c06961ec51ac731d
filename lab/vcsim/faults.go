package main

import (
	"encoding/xml"
	"fmt"
	"net"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/vmware/govmomi/vim25/types"
)

// methodFault makes a named SOAP method fail, wait or hang.
type methodFault struct {
	ID     int     `json:"id"`
	Method string  `json:"method"`
	Mode   string  `json:"mode"`  // soap-fault | task-error | delay | delay-response | hang
	Count  int     `json:"count"` // calls left; -1 = persistent
	Delay  float64 `json:"delay"`
	Fault  string  `json:"fault"`
}

// downloadFault breaks datastore downloads (GET /folder/...).
type downloadFault struct {
	ID         int    `json:"id"`
	Mode       string `json:"mode"` // fail | stall | cut (GET); upload-fail | upload-cut (PUT)
	Path       string `json:"path"` // substring of the URL path; "" = any
	AfterBytes int64  `json:"after_bytes"`
	Status     int    `json:"status"`
	Count      int    `json:"count"`
}

type faultStore struct {
	mu          sync.Mutex
	nextID      int
	methods     []*methodFault
	downloads   []*downloadFault
	outageUntil time.Time
	outageMode  string
	cleared     chan struct{} // closed (and replaced) by clear: wakes hung calls and stalls
}

func newFaultStore() *faultStore { return &faultStore{cleared: make(chan struct{})} }

func (f *faultStore) addMethod(m *methodFault) error {
	switch m.Mode {
	case "soap-fault", "task-error", "delay", "delay-response", "hang":
	default:
		return fmt.Errorf("unknown mode %q", m.Mode)
	}
	if m.Method == "" {
		return fmt.Errorf("method is required")
	}
	if m.Mode == "task-error" && !strings.HasSuffix(m.Method, "_Task") {
		return fmt.Errorf("task-error needs a *_Task method")
	}
	if m.Fault == "" {
		m.Fault = "SystemError"
	}
	if _, ok := types.TypeFunc()(m.Fault); !ok {
		return fmt.Errorf("unknown fault type %q", m.Fault)
	}
	if m.Count == 0 {
		m.Count = -1
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nextID++
	m.ID = f.nextID
	f.methods = append(f.methods, m)
	return nil
}

func (f *faultStore) addDownload(d *downloadFault) error {
	switch d.Mode {
	case "fail", "stall", "cut", "upload-fail", "upload-cut":
	default:
		return fmt.Errorf("unknown mode %q", d.Mode)
	}
	if d.Status == 0 {
		d.Status = http.StatusInternalServerError
	}
	if d.Count == 0 {
		d.Count = -1
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nextID++
	d.ID = f.nextID
	f.downloads = append(f.downloads, d)
	return nil
}

func (f *faultStore) setOutage(seconds float64, mode string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.outageUntil = time.Now().Add(time.Duration(seconds * float64(time.Second)))
	f.outageMode = mode
}

// outage returns the current SOAP outage mode, "" when none.
func (f *faultStore) outage() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if time.Now().Before(f.outageUntil) {
		return f.outageMode
	}
	return ""
}

func (f *faultStore) clear() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.methods, f.downloads, f.outageUntil = nil, nil, time.Time{}
	close(f.cleared)
	f.cleared = make(chan struct{})
}

func (f *faultStore) clearedCh() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cleared
}

// takeMethod consumes one use of the first fault armed for a method.
func (f *faultStore) takeMethod(method string) *methodFault {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, m := range f.methods {
		if m.Method != method {
			continue
		}
		c := *m
		if m.Count > 0 {
			m.Count--
			if m.Count == 0 {
				f.methods = append(f.methods[:i], f.methods[i+1:]...)
			}
		}
		return &c
	}
	return nil
}

func (f *faultStore) takeDownload(p string) *downloadFault {
	return f.take(p, false)
}

// takeUpload returns an armed upload fault (upload-fail, upload-cut) for a PUT of path p.
func (f *faultStore) takeUpload(p string) *downloadFault {
	return f.take(p, true)
}

func (f *faultStore) take(p string, upload bool) *downloadFault {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, d := range f.downloads {
		if d.Path != "" && !strings.Contains(p, d.Path) {
			continue
		}
		if strings.HasPrefix(d.Mode, "upload-") != upload {
			continue
		}
		c := *d
		if d.Count > 0 {
			d.Count--
			if d.Count == 0 {
				f.downloads = append(f.downloads[:i], f.downloads[i+1:]...)
			}
		}
		return &c
	}
	return nil
}

func (f *faultStore) state() map[string]interface{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]interface{}{"methods": f.methods, "downloads": f.downloads, "outage": nil}
	if out["methods"] == nil || len(f.methods) == 0 {
		out["methods"] = []interface{}{}
	}
	if len(f.downloads) == 0 {
		out["downloads"] = []interface{}{}
	}
	if left := time.Until(f.outageUntil); left > 0 {
		out["outage"] = map[string]interface{}{"mode": f.outageMode, "seconds_left": left.Seconds()}
	}
	return out
}

// newFault builds a vim25 fault by type name, filling the usual required fields.
func newFault(name, msg string) types.BaseMethodFault {
	typ, ok := types.TypeFunc()(name)
	if !ok {
		typ = reflect.TypeOf(types.SystemError{})
	}
	v := reflect.New(typ)
	fill(v.Elem(), msg)
	if f, ok := v.Interface().(types.BaseMethodFault); ok {
		return f
	}
	return &types.SystemError{Reason: msg}
}

var morefType = reflect.TypeOf(types.ManagedObjectReference{})

func fill(v reflect.Value, msg string) {
	for i := 0; i < v.NumField(); i++ {
		f, sf := v.Field(i), v.Type().Field(i)
		switch {
		case f.Type() == morefType:
			// A fault's required references (TaskInProgress.Task, ...) must be set and typed, or
			// pyVmomi cannot read the fault back.
			f.Set(reflect.ValueOf(types.ManagedObjectReference{Type: "Task", Value: "task-lab-fault"}))
		case sf.Anonymous && f.Kind() == reflect.Struct:
			fill(f, msg)
		case f.Kind() == reflect.String && (sf.Name == "Reason" || sf.Name == "File" || sf.Name == "Name"):
			f.SetString(msg)
		}
	}
}

// soapFault writes a SOAP fault the way vSphere (and pyVmomi) expect it.
func soapFault(w http.ResponseWriter, fault types.BaseMethodFault, msg string) {
	kind := reflect.TypeOf(fault).Elem().Name()
	var buf strings.Builder
	enc := xml.NewEncoder(&buf)
	start := xml.StartElement{Name: xml.Name{Local: kind + "Fault"}, Attr: []xml.Attr{
		{Name: xml.Name{Local: "xmlns"}, Value: "urn:vim25"},
		{Name: xml.Name{Local: "xsi:type"}, Value: kind},
	}}
	if err := enc.EncodeElement(fault, start); err != nil {
		buf.Reset()
	}
	_ = enc.Flush()
	detail := buf.String()
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(http.StatusInternalServerError)
	fmt.Fprintf(w, envelopeStart+`<soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>%s</faultstring><detail>%s</detail></soapenv:Fault>`+envelopeEnd,
		xmlEscape(msg), detail)
}

func xmlEscape(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

// connTracker remembers open connections so an outage can drop them.
type connTracker struct {
	mu    sync.Mutex
	conns map[net.Conn]bool
}

func newConnTracker() *connTracker { return &connTracker{conns: map[net.Conn]bool{}} }

func (c *connTracker) track(conn net.Conn, st http.ConnState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st == http.StateClosed || st == http.StateHijacked {
		delete(c.conns, conn)
	} else {
		c.conns[conn] = true
	}
}

func (c *connTracker) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for conn := range c.conns {
		_ = conn.Close()
	}
}
