// Command vcsim is the vbm lab: govmomi's vCenter simulator extended with real disk
// content, CBT (QueryChangedDiskAreas), delta disks under snapshots and HTTP fault injection.
//
// Build (offline, GOPATH mode):
//
//	GOPATH=/usr/share/gocode GO111MODULE=off go build -o vcsim ./lab/vcsim
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/ioutil"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/vmware/govmomi/simulator"
)

func main() {
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	specPath := flag.String("spec", "", "JSON lab spec file")
	dataDir := flag.String("dir", "", "directory for the datastore (created)")
	port := flag.Int("port", 0, "TCP port on 127.0.0.1 (0 = free port)")
	watchStdin := flag.Bool("watch-stdin", true, "exit when stdin reaches EOF")
	flag.Parse()

	if *specPath == "" || *dataDir == "" {
		log.Fatal("usage: vcsim -spec FILE -dir DIR [-port N]")
	}
	raw, err := ioutil.ReadFile(*specPath)
	if err != nil {
		log.Fatalf("read spec: %s", err)
	}
	var spec LabSpec
	if err = json.Unmarshal(raw, &spec); err != nil {
		log.Fatalf("parse spec: %s", err)
	}
	if err = spec.normalize(); err != nil {
		log.Fatalf("lab: spec: %s", err)
	}

	parent := os.Getppid()
	lab, err := newLab(&spec, *dataDir)
	if err != nil {
		log.Fatalf("lab: %s", err)
	}
	if err = lab.serve(*port); err != nil {
		log.Fatalf("serve: %s", err)
	}
	out, _ := json.Marshal(lab.inventory())
	fmt.Println(string(out))
	_ = os.Stdout.Sync()

	done := make(chan string, 3)
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
		done <- (<-sig).String()
	}()
	go func() {
		for range time.Tick(300 * time.Millisecond) {
			if os.Getppid() != parent {
				done <- "parent died"
				return
			}
		}
	}()
	if *watchStdin {
		go func() {
			_, _ = io.Copy(ioutil.Discard, os.Stdin)
			done <- "stdin closed"
		}()
	}
	log.Printf("exiting: %s", <-done)
	lab.shutdown()
}

// lab is the whole extended simulator.
type lab struct {
	spec       *LabSpec
	model      *simulator.Model
	datastores []*labDatastore // the spec's; the first is the default
	dsName     string          // the first datastore's name and directory
	dsDir      string
	dcName     string
	listener   net.Listener
	server     *http.Server
	addr       string
	vmsMu      sync.RWMutex
	vms        []*labVM
	creating   sync.Mutex
	placer     placer
	disks      *diskStore
	faults     *faultStore
	conns      *connTracker
	nfc        nfcImports
	tags       *tagStore
	requests   *requestLog
	snapAcct   *snapAccounting
	removals   sync.Map // VM moref -> *sync.Mutex: snapshot removals on a VM, one at a time
	otherIO    sync.Map // datastore name -> *dsIO, for datastores clients added
}

func newLab(spec *LabSpec, dir string) (*lab, error) {
	datastores, err := newDatastores(spec, dir)
	if err != nil {
		return nil, err
	}
	l := &lab{spec: spec, datastores: datastores, dsName: datastores[0].name, dsDir: datastores[0].dir,
		dcName: "DC0", disks: newDiskStore(spec.CBTMaxAreas), faults: newFaultStore(), conns: newConnTracker(),
		nfc: nfcImports{leases: map[string]map[string]string{}}, tags: newTagStore(spec.Username, spec.Password),
		requests: newRequestLog(10000), snapAcct: newSnapAccounting()}
	m := simulator.VPX()
	m.Machine = 0   // the lab defines its own VMs
	m.Datastore = 0 // and its own datastore directory
	if err = m.Create(); err != nil {
		return nil, err
	}
	l.model = m
	m.Service.Listen = &url.URL{Host: "127.0.0.1:0", User: url.UserPassword(spec.Username, spec.Password)}
	if err = l.buildInventory(context.Background()); err != nil {
		return nil, err
	}
	simulator.Map.AddHandler(&hooks{lab: l})
	return l, nil
}

// serve starts the simulator's mux behind the lab middleware on 127.0.0.1:port.
func (l *lab) serve(port int) error {
	inner := l.model.Service.NewServer()
	mux := l.model.Service.ServeMux
	inner.Close() // only its mux is used: the lab serves it on its own listener

	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return err
	}
	l.listener = ln
	l.addr = ln.Addr().String()
	simulator.Map.SessionManager().ServiceHostName = l.addr
	l.server = &http.Server{Handler: l.middleware(mux), ConnState: l.conns.track}
	go func() { _ = l.server.Serve(ln) }()
	return nil
}

func (l *lab) shutdown() {
	l.faults.clear()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = l.server.Shutdown(ctx)
}

func (l *lab) inventory() map[string]interface{} {
	list := l.vmList()
	vms := make([]interface{}, 0, len(list))
	for _, vm := range list {
		vms = append(vms, vm.inventory(l))
	}
	return map[string]interface{}{
		"url":            "http://" + l.addr,
		"sdk_url":        "http://" + l.addr + "/sdk",
		"host":           "127.0.0.1",
		"port":           l.listener.Addr().(*net.TCPAddr).Port,
		"username":       l.spec.Username,
		"password":       l.spec.Password,
		"datacenter":     l.dcName,
		"datastore":      l.dsName,
		"datastore_dir":  l.dsDir,
		"datastores":     l.datastoresInventory(),
		"tag_categories": l.tagsInventory(),
		"cbt_max_areas":  l.spec.CBTMaxAreas,
		"pid":            os.Getpid(),
		"vms":            vms,
	}
}
