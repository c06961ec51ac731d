package main

import (
	"bytes"
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"io/ioutil"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// soapCall is what the middleware needs to know about a SOAP request.
type soapCall struct {
	method string
	this   types.ManagedObjectReference
}

func parseSOAP(body []byte) soapCall {
	var c soapCall
	dec := xml.NewDecoder(bytes.NewReader(body))
	inBody, depth := false, 0
	for {
		tok, err := dec.Token()
		if err != nil {
			return c
		}
		switch t := tok.(type) {
		case xml.StartElement:
			depth++
			switch {
			case t.Name.Local == "Body" && !inBody:
				inBody = true
			case inBody && c.method == "":
				c.method = t.Name.Local
			case c.method != "" && t.Name.Local == "_this":
				for _, a := range t.Attr {
					if a.Name.Local == "type" {
						c.this.Type = a.Value
					}
				}
				var v string
				if err := dec.DecodeElement(&v, &t); err == nil {
					c.this.Value = strings.TrimSpace(v)
				}
				return c
			}
		case xml.EndElement:
			depth--
		}
	}
}

var thisType = regexp.MustCompile(`(<_this\b[^>]*?\btype=")VirtualMachine(")`)

// middleware wraps vcsim's mux: control API, outages, method and download faults, CBT routing.
func (l *lab) middleware(mux http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, "/lab/"):
			l.control(w, r)
		case strings.HasPrefix(r.URL.Path, "/sdk"):
			l.serveSOAP(mux, w, r)
		case strings.HasPrefix(r.URL.Path, "/rest/"):
			l.serveREST(w, r)
		case strings.HasPrefix(r.URL.Path, "/folder/") && (r.Method == http.MethodGet || r.Method == http.MethodHead):
			l.throttled(w, r, func(w http.ResponseWriter) { l.serveDownload(mux, w, r) })
		case strings.HasPrefix(r.URL.Path, "/folder/") && r.Method == http.MethodPut:
			l.serveUpload(mux, w, r)
		case strings.HasPrefix(r.URL.Path, "/nfc/"):
			l.serveNFC(mux, w, r)
		default:
			mux.ServeHTTP(w, r)
		}
	})
}

func (l *lab) serveSOAP(mux http.Handler, w http.ResponseWriter, r *http.Request) {
	switch l.faults.outage() {
	case "503":
		http.Error(w, "lab outage: service unavailable", http.StatusServiceUnavailable)
		return
	case "reset":
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				if tc, ok := conn.(*net.TCPConn); ok {
					_ = tc.SetLinger(0) // RST rather than FIN
				}
				_ = conn.Close()
				return
			}
		}
		panic(http.ErrAbortHandler)
	}
	if r.Method != http.MethodPost {
		mux.ServeHTTP(w, r)
		return
	}
	body, err := ioutil.ReadAll(r.Body)
	_ = r.Body.Close()
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	call := parseSOAP(body)
	if f := l.faults.takeMethod(call.method); f != nil {
		if !l.applyMethodFault(f, call, mux, w, r, body) {
			return
		}
	}
	l.dispatch(mux, w, r, body, call)
}

func (l *lab) dispatch(mux http.Handler, w http.ResponseWriter, r *http.Request, body []byte, call soapCall) {
	if call.method == "RegisterVM_Task" {
		l.registerVM(mux, w, r, body, call)
		return
	}
	if call.method == "ReconfigVM_Task" {
		l.reconfigVM(mux, w, r, body, call)
		return
	}
	if call.method == "ImportVApp" {
		l.importVApp(mux, w, r, body, call)
		return
	}
	if call.method == "RelocateVM_Task" {
		l.relocateVM(mux, w, r, body, call)
		return
	}
	if call.method == "RemoveDatastore" {
		l.removeDatastore(mux, w, r, body)
		return
	}
	if call.method == "CreateSnapshot_Task" && l.quiesceFails(w, body, call) {
		return
	}
	if call.method == "RemoveSnapshot_Task" || call.method == "RemoveAllSnapshots_Task" {
		body = l.routeRemoval(body, call)
	}
	l.forwardSOAP(mux, w, r, body, call)
	if l.spec.ToolsBootSeconds > 0 && call.this.Type == "VirtualMachine" {
		switch call.method {
		case "PowerOnVM_Task":
			l.setTools(call.this, false, 0) // installed, not running until the guest has booted
			go l.setTools(call.this, true, time.Duration(l.spec.ToolsBootSeconds*float64(time.Second)))
		case "PowerOffVM_Task":
			l.setTools(call.this, false, 0)
		}
	}
}

// forwardSOAP hands a SOAP request to vcsim (re-addressing CBT queries), then runs afterCall.
func (l *lab) forwardSOAP(mux http.Handler, w http.ResponseWriter, r *http.Request, body []byte, call soapCall) {
	if call.method == "QueryChangedDiskAreas" && call.this.Type == "VirtualMachine" && l.vmByRef(call.this.Value) != nil {
		body = thisType.ReplaceAll(body, []byte("${1}"+cbtType+"${2}"))
	}
	switch call.method {
	case "ReconfigVM_Task", "CloneVM_Task", "RefreshStorageInfo":
		l.flatShim(call.this) // vcsim's code for these knows only flat disk backings
	}
	r.Body = ioutil.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	defer l.afterCall(call.method)
	defer func() {
		// vcsim panics on some requests (Fetch of an unset property such as vm.snapshot); it
		// writes nothing before that, so answer like vSphere instead of dropping the connection.
		p := recover()
		if p == nil {
			return
		}
		if p == http.ErrAbortHandler {
			panic(p)
		}
		if call.method == "Fetch" {
			w.Header().Set("Content-Type", "text/xml; charset=utf-8")
			fmt.Fprint(w, envelopeStart+`<FetchResponse xmlns="urn:vim25"></FetchResponse>`+envelopeEnd)
			return
		}
		msg := fmt.Sprintf("vcsim: %v", p)
		soapFault(w, &types.SystemError{Reason: msg}, msg)
	}()
	mux.ServeHTTP(w, r)
}

const envelopeStart = `<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenc="http://schemas.xmlsoap.org/soap/encoding/" xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>`
const envelopeEnd = `</soapenv:Body></soapenv:Envelope>`

// applyMethodFault acts on an armed fault; it returns true when the call should go on to vcsim.
func (l *lab) applyMethodFault(f *methodFault, call soapCall, mux http.Handler, w http.ResponseWriter,
	r *http.Request, body []byte) bool {
	delay := time.Duration(f.Delay * float64(time.Second))
	msg := fmt.Sprintf("lab: injected %s for %s", f.Fault, call.method)
	switch f.Mode {
	case "soap-fault":
		soapFault(w, newFault(f.Fault, msg), msg)
		return false
	case "task-error":
		fault := newFault(f.Fault, msg)
		t := l.newTask(call, func(*simulator.Task) (types.AnyType, types.BaseMethodFault) { return nil, fault })
		t.Run()
		taskResponse(w, call.method, t.Self)
		return false
	case "hang":
		select {
		case <-l.faults.clearedCh():
			return true
		case <-r.Context().Done():
			return false
		}
	case "delay-response":
		l.sleep(delay)
		return true
	}
	// "delay": a task method answers at once with a running task that completes after the delay;
	// other methods answer after the delay.
	if !strings.HasSuffix(call.method, "_Task") {
		l.sleep(delay)
		return true
	}
	replay := r.Clone(context.Background())
	t := l.newTask(call, func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		l.sleep(delay)
		rec := httptest.NewRecorder()
		l.dispatch(mux, rec, replay, body, call)
		return innerTaskResult(rec)
	})
	go t.Run()
	taskResponse(w, call.method, t.Self)
	return false
}

func (l *lab) sleep(d time.Duration) {
	select {
	case <-time.After(d):
	case <-l.faults.clearedCh():
	}
}

func (l *lab) newTask(call soapCall, run func(*simulator.Task) (types.AnyType, types.BaseMethodFault)) *simulator.Task {
	name := strings.TrimSuffix(call.method, "_Task") + "Task"
	name = strings.ToLower(name[:1]) + name[1:]
	return simulator.CreateTask(call.this, name, run)
}

func taskResponse(w http.ResponseWriter, method string, task types.ManagedObjectReference) {
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	fmt.Fprintf(w, envelopeStart+`<%sResponse xmlns="urn:vim25"><returnval type="Task">%s</returnval></%sResponse>`+envelopeEnd,
		method, task.Value, method)
}

var returnTask = regexp.MustCompile(`<returnval type="Task">([^<]+)</returnval>`)
var faultString = regexp.MustCompile(`<faultstring>([^<]*)</faultstring>`)

// innerTaskResult turns vcsim's answer to a replayed task call into the outer task's result.
func innerTaskResult(rec *httptest.ResponseRecorder) (types.AnyType, types.BaseMethodFault) {
	body := rec.Body.Bytes()
	if m := returnTask.FindSubmatch(body); m != nil {
		ref := types.ManagedObjectReference{Type: "Task", Value: string(m[1])}
		if t, ok := simulator.Map.Get(ref).(*simulator.Task); ok {
			if t.Info.Error != nil {
				return nil, t.Info.Error.Fault
			}
			return t.Info.Result, nil
		}
	}
	msg := "lab: delayed call failed"
	if m := faultString.FindSubmatch(body); m != nil {
		msg = string(m[1])
	}
	return nil, &types.SystemError{Reason: msg}
}

// serveUpload applies upload faults to PUT /folder/... (and /nfc/...) requests: upload-fail answers Status
// without storing anything; upload-cut reads AfterBytes of the body, then drops the connection.
func (l *lab) serveUpload(mux http.Handler, w http.ResponseWriter, r *http.Request) {
	f := l.faults.takeUpload(r.URL.Path)
	if f == nil {
		mux.ServeHTTP(w, r)
		return
	}
	l.applyUploadFault(f, w, r)
}

func (l *lab) applyUploadFault(f *downloadFault, w http.ResponseWriter, r *http.Request) {
	if f.Mode == "upload-fail" {
		http.Error(w, fmt.Sprintf("lab: injected HTTP %d", f.Status), f.Status)
		return
	}
	_, _ = io.CopyN(ioutil.Discard, r.Body, f.AfterBytes)
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			_ = conn.Close()
			return
		}
	}
	panic(http.ErrAbortHandler)
}

// serveDownload applies download faults to GET /folder/... requests.
func (l *lab) serveDownload(mux http.Handler, w http.ResponseWriter, r *http.Request) {
	serve := func(w http.ResponseWriter) {
		if !l.serveDeltaFlat(w, r, strings.TrimPrefix(r.URL.Path, "/folder/")) {
			mux.ServeHTTP(w, r)
		}
	}
	f := l.faults.takeDownload(r.URL.Path)
	if f == nil {
		serve(w)
		return
	}
	if f.Mode == "fail" {
		http.Error(w, fmt.Sprintf("lab: injected HTTP %d", f.Status), f.Status)
		return
	}
	// the clear that releases a stall is any clear after the fault was taken, even one that comes
	// before the body reaches AfterBytes (a slow reader): so the channel is the one of now
	serve(&faultyWriter{ResponseWriter: w, left: f.AfterBytes, fault: f, cleared: l.faults.clearedCh(), req: r})
}

// faultyWriter passes AfterBytes bytes of a body, then stalls (until cleared) or cuts the connection.
type faultyWriter struct {
	http.ResponseWriter
	left    int64
	fault   *downloadFault
	cleared <-chan struct{}
	req     *http.Request
	done    bool
}

func (fw *faultyWriter) Write(p []byte) (int, error) {
	if fw.done || int64(len(p)) <= fw.left {
		fw.left -= int64(len(p))
		return fw.ResponseWriter.Write(p)
	}
	n, err := fw.ResponseWriter.Write(p[:fw.left])
	if err != nil {
		return n, err
	}
	fw.left = 0
	if fl, ok := fw.ResponseWriter.(http.Flusher); ok {
		fl.Flush()
	}
	if fw.fault.Mode == "stall" {
		select {
		case <-fw.cleared:
			fw.done = true
			m, err := fw.ResponseWriter.Write(p[n:])
			return n + m, err
		case <-fw.req.Context().Done():
		}
	}
	panic(http.ErrAbortHandler) // closes the connection mid-body
}

// setTools simulates VMware Tools in a guest: running with a green heartbeat `after` a power-on
// (if the VM is still on by then), not running and gray when it is powered off.
func (l *lab) setTools(ref types.ManagedObjectReference, on bool, after time.Duration) {
	time.Sleep(after)
	vm := vmObject(ref)
	if vm == nil {
		return
	}
	simulator.Map.WithLock(vm, func() {
		if on && vm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn {
			return
		}
		status, running, beat := types.VirtualMachineToolsStatusToolsNotRunning, "guestToolsNotRunning",
			types.ManagedEntityStatusGray
		if on {
			status, running, beat = types.VirtualMachineToolsStatusToolsOk, "guestToolsRunning",
				types.ManagedEntityStatusGreen
		}
		vm.Guest.ToolsStatus, vm.Guest.ToolsRunningStatus = status, running
		vm.GuestHeartbeatStatus = beat
		vm.Summary.QuickStats.GuestHeartbeatStatus = beat
	})
}
