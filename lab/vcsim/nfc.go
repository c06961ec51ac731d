package main

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"fmt"
	"hash/adler32"
	"html"
	"io"
	"io/ioutil"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// ImportVApp and NFC uploads. vcsim creates the VM and its lease, but its NFC handler discards
// what is uploaded. The lab remembers, per lease, which datastore file each NFC URL stands for
// (as vcsim names them: the base name of the device's backing file) and decodes an uploaded
// streamOptimized VMDK into the disk: a sparse flat file (only the grains sent are written, so
// it stays thin) and a monolithic flat descriptor, which RegisterVM then reads like any other.

var (
	leaseRef   = regexp.MustCompile(`<returnval type="HttpNfcLease">([^<]+)</returnval>`)
	vmPathName = regexp.MustCompile(`<vmPathName>([^<]*)</vmPathName>`)
)

type nfcImports struct {
	mu     sync.Mutex
	leases map[string]map[string]string // lease id -> NFC file name -> local .vmdk path
}

func (l *lab) importVApp(mux http.Handler, w http.ResponseWriter, r *http.Request, body []byte, call soapCall) {
	rec := httptest.NewRecorder()
	l.forwardSOAP(mux, rec, r, body, call)
	if m := leaseRef.FindSubmatch(rec.Body.Bytes()); m != nil {
		files := map[string]string{}
		if p := vmPathName.FindSubmatch(body); p != nil {
			want := html.UnescapeString(string(p[1]))
			for _, e := range simulator.Map.All("VirtualMachine") {
				vm, ok := e.(*simulator.VirtualMachine)
				if !ok || vm.Config == nil || vm.Config.Files.VmPathName != want {
					continue
				}
				for _, d := range vm.Config.Hardware.Device {
					if disk, ok := d.(*types.VirtualDisk); ok {
						if b, ok := disk.Backing.(types.BaseVirtualDeviceFileBackingInfo); ok {
							name := b.GetVirtualDeviceFileBackingInfo().FileName
							files[path.Base(name)] = l.localPath(name)
						}
					}
				}
			}
		}
		l.nfc.mu.Lock()
		l.nfc.leases[string(m[1])] = files
		l.nfc.mu.Unlock()
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

// serveNFC takes PUT /nfc/<lease>/<file> of a lease the lab knows; anything else goes to vcsim.
func (l *lab) serveNFC(mux http.Handler, w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/nfc/"), "/")
	var target string
	if len(parts) == 2 && (r.Method == http.MethodPut || r.Method == http.MethodPost) {
		l.nfc.mu.Lock()
		target = l.nfc.leases[parts[0]][parts[1]]
		l.nfc.mu.Unlock()
	}
	if target == "" {
		mux.ServeHTTP(w, r)
		return
	}
	if f := l.faults.takeUpload(r.URL.Path); f != nil {
		l.applyUploadFault(f, w, r)
		return
	}
	start := time.Now()
	n, err := writeStreamOptimized(r.Body, target)
	if err != nil {
		log.Printf("nfc PUT %s: %s", target, err)
		http.Error(w, "lab: "+err.Error(), http.StatusBadRequest)
		return
	}
	log.Printf("nfc PUT %s: %d grains written in %s", target, n, time.Since(start))
	w.WriteHeader(http.StatusOK)
}

const sector = 512

// writeStreamOptimized decodes a streamOptimized VMDK (VMware Virtual Disk Format 5.0: a sparse
// header with compressed grains and markers) into <name>-flat.vmdk and the descriptor <name>.vmdk.
func writeStreamOptimized(body io.Reader, vmdk string) (int, error) {
	head := make([]byte, sector)
	if _, err := io.ReadFull(body, head); err != nil {
		return 0, fmt.Errorf("reading the header: %w", err)
	}
	le := binary.LittleEndian
	if le.Uint32(head[0:]) != 0x564d444b {
		return 0, fmt.Errorf("not a sparse VMDK (magic %08x)", le.Uint32(head[0:]))
	}
	flags := le.Uint32(head[8:])
	if flags&(1<<16) == 0 || flags&(1<<17) == 0 || le.Uint16(head[77:]) != 1 {
		return 0, fmt.Errorf("not streamOptimized (flags %08x, compression %d)", flags, le.Uint16(head[77:]))
	}
	capacity := int64(le.Uint64(head[12:])) * sector
	grain := int64(le.Uint64(head[20:])) * sector
	overhead := int64(le.Uint64(head[64:]))
	if _, err := io.CopyN(ioutil.Discard, body, (overhead-1)*sector); err != nil {
		return 0, fmt.Errorf("reading the descriptor: %w", err)
	}
	flatName := strings.TrimSuffix(vmdk, ".vmdk") + "-flat.vmdk"
	flat, err := os.Create(flatName)
	if err != nil {
		return 0, err
	}
	defer flat.Close()
	if err = flat.Truncate(capacity); err != nil {
		return 0, err
	}
	grains := 0
	buf := make([]byte, sector)
	plain := make([]byte, grain)
	src := bytes.NewReader(nil)
	var zr io.ReadCloser
	for {
		if _, err = io.ReadFull(body, buf[:sector]); err != nil {
			return grains, fmt.Errorf("reading a marker after %d grains: %w", grains, err)
		}
		value, size := le.Uint64(buf[0:]), int64(le.Uint32(buf[8:]))
		if size == 0 { // a metadata marker: value is its length in sectors
			kind := le.Uint32(buf[12:])
			if kind == 0 {
				break // end of stream
			}
			if _, err = io.CopyN(ioutil.Discard, body, int64(value)*sector); err != nil {
				return grains, fmt.Errorf("reading metadata of type %d: %w", kind, err)
			}
			continue
		}
		record := (12 + size + sector - 1) / sector * sector
		if int64(len(buf)) < record {
			buf = append(buf[:sector], make([]byte, record-sector)...)
		}
		if _, err = io.ReadFull(body, buf[sector:record]); err != nil {
			return grains, fmt.Errorf("reading grain at sector %d: %w", value, err)
		}
		data, err := inflateGrain(buf[12:12+size], plain, src, &zr)
		if err != nil {
			return grains, fmt.Errorf("grain at sector %d: %w", value, err)
		}
		offset := int64(value) * sector
		if int64(len(data)) > grain || offset >= capacity {
			return grains, fmt.Errorf("grain at sector %d (%d bytes) is outside the disk", value, len(data))
		}
		if offset+int64(len(data)) > capacity {
			data = data[:capacity-offset]
		}
		if _, err = flat.WriteAt(data, offset); err != nil {
			return grains, err
		}
		grains++
	}
	_, _ = io.Copy(ioutil.Discard, body)
	return grains, writeDescriptor(vmdk, capacity, path.Base(flatName), "", 1, "60 00 c2 9b 00 00 00 00-00 00 00 00 00 00 00 01", true)
}

// inflateGrain decodes one grain's zlib stream into plain. Streams of stored deflate blocks (what
// vbm sends) are copied directly and their Adler-32 checked; anything else goes through zlib.
func inflateGrain(z, plain []byte, src *bytes.Reader, zr *io.ReadCloser) ([]byte, error) {
	if len(z) >= 6 && z[0] == 0x78 && z[2]&0x06 == 0 {
		n, pos := 0, 2
		for {
			if pos+5 > len(z) || z[pos]&0x06 != 0 {
				break // not (only) stored blocks: let zlib decide
			}
			final := z[pos]&1 == 1
			ln := int(binary.LittleEndian.Uint16(z[pos+1:]))
			if ^uint16(ln) != binary.LittleEndian.Uint16(z[pos+3:]) || pos+5+ln > len(z) || n+ln > len(plain) {
				return nil, fmt.Errorf("a stored block is damaged")
			}
			copy(plain[n:], z[pos+5:pos+5+ln])
			n, pos = n+ln, pos+5+ln
			if final {
				if pos+4 != len(z) || binary.BigEndian.Uint32(z[pos:]) != adler32.Checksum(plain[:n]) {
					return nil, fmt.Errorf("the Adler-32 of a grain does not match")
				}
				return plain[:n], nil
			}
		}
	}
	src.Reset(z)
	var err error
	if *zr == nil {
		*zr, err = zlib.NewReader(src)
	} else {
		err = (*zr).(zlib.Resetter).Reset(src, nil)
	}
	if err != nil {
		return nil, err
	}
	n, err := io.ReadFull(*zr, plain)
	if err != nil && err != io.ErrUnexpectedEOF {
		return nil, err
	}
	return plain[:n], nil
}
