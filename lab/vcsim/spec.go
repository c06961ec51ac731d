package main

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// The lab spec: lab/launcher.py's dataclasses as JSON (also the body of POST /lab/vms, where sizes
// may be written "64M" and tags "category:tag", as in a spec file).

// DiskSpec is one disk of a VM.
type DiskSpec struct {
	Size          int64  `json:"size"`
	Seed          int64  `json:"seed"`
	Layout        string `json:"layout"`
	Thick         bool   `json:"thick"`         // eager: the descriptor does not say ddb.thinProvisioned
	Mode          string `json:"mode"`          // persistent | independent_persistent | independent_nonpersistent
	Kind          string `json:"kind"`          // flat | rdm
	Compatibility string `json:"compatibility"` // rdm: virtualMode | physicalMode
	Datastore     string `json:"datastore"`     // "" = the VM's
}

// TagRef names a tag by its category.
type TagRef struct {
	Category string `json:"category"`
	Name     string `json:"name"`
}

type VMSpec struct {
	Name         string     `json:"name"`
	Disks        []DiskSpec `json:"disks"`
	CBT          bool       `json:"cbt"`
	PowerOn      *bool      `json:"power_on"` // absent = true
	Folder       string     `json:"folder"`   // "prod/web" under the datacenter's vm folder
	Host         string     `json:"host"`     // "" = DC0_H0
	ResourcePool string     `json:"resource_pool"`
	Datastore    string     `json:"datastore"` // "" = the lab's first datastore
	Tags         []TagRef   `json:"tags"`
	QuiesceFails bool       `json:"quiesce_fails"`
}

type DatastoreSpec struct {
	Name          string  `json:"name"`
	LatencyMs     float64 `json:"latency_ms"`
	BandwidthMbps float64 `json:"bandwidth_mbps"`
}

type CategorySpec struct {
	Name            string   `json:"name"`
	Description     string   `json:"description"`
	Cardinality     string   `json:"cardinality"` // SINGLE | MULTIPLE
	AssociableTypes []string `json:"associable_types"`
	Tags            []string `json:"tags"`
}

type LabSpec struct {
	VMs         []VMSpec `json:"vms"`
	CBTMaxAreas int      `json:"cbt_max_areas"`
	Username    string   `json:"username"`
	Password    string   `json:"password"`
	// ToolsBootSeconds > 0: VMware Tools are simulated in every VM: that long after a power-on,
	// tools run and the guest heartbeat turns green (as a booted guest); gray again when off.
	ToolsBootSeconds float64         `json:"tools_boot_seconds"`
	Datastores       []DatastoreSpec `json:"datastores"` // empty = LocalDS_0
	TagCategories    []CategorySpec  `json:"tag_categories"`
}

var sizeRe = regexp.MustCompile(`^\s*(\d+)\s*([KMGT]?)(?:I?B)?\s*$`)

// parseSize reads 65536, "65536", "64K", "64M", "1G" (binary units).
func parseSize(raw json.RawMessage) (int64, error) {
	var n int64
	if err := json.Unmarshal(raw, &n); err == nil {
		return n, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return 0, fmt.Errorf("size must be a number of bytes or a string such as \"64M\"")
	}
	m := sizeRe.FindStringSubmatch(strings.ToUpper(s))
	if m == nil {
		return 0, fmt.Errorf("bad size %q (e.g. 64M, 1G, 5123K or bytes)", s)
	}
	v, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("bad size %q", s)
	}
	shift := map[string]uint{"": 0, "K": 10, "M": 20, "G": 30, "T": 40}[m[2]]
	return v << shift, nil
}

func (d *DiskSpec) UnmarshalJSON(b []byte) error {
	type plain DiskSpec
	var aux struct {
		plain
		Size json.RawMessage `json:"size"`
	}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	*d = DiskSpec(aux.plain)
	if len(aux.Size) == 0 {
		return fmt.Errorf("size is required")
	}
	n, err := parseSize(aux.Size)
	if err != nil {
		return err
	}
	d.Size = n
	return nil
}

func (t *TagRef) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		i := strings.Index(s, ":")
		if i <= 0 || i == len(s)-1 {
			return fmt.Errorf("tag %q is not \"category:tag\"", s)
		}
		t.Category, t.Name = s[:i], s[i+1:]
		return nil
	}
	type plain TagRef
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return fmt.Errorf("a tag is \"category:tag\" or {\"category\", \"name\"}")
	}
	*t = TagRef(p)
	return nil
}

// normalize checks a disk spec and fills its defaults.
func (d *DiskSpec) normalize() error {
	if d.Size <= 0 || d.Size%1024 != 0 {
		return fmt.Errorf("size: disk size %d is not a positive multiple of 1024", d.Size)
	}
	switch d.Layout {
	case "":
		d.Layout = "mixed"
	case "mixed", "zero", "random":
	default:
		return fmt.Errorf("layout: unknown disk layout %q", d.Layout)
	}
	switch d.Kind {
	case "":
		d.Kind = "flat"
	case "flat", "rdm":
	default:
		return fmt.Errorf("kind: unknown disk kind %q (flat or rdm)", d.Kind)
	}
	if d.Kind == "rdm" {
		switch d.Compatibility {
		case "":
			d.Compatibility = "virtualMode"
		case "virtualMode", "physicalMode":
		default:
			return fmt.Errorf("compatibility: %q is not virtualMode or physicalMode", d.Compatibility)
		}
	} else if d.Compatibility != "" {
		return fmt.Errorf("compatibility: only for kind rdm")
	}
	switch d.Mode {
	case "":
		d.Mode = "persistent"
	case "persistent", "independent_persistent", "independent_nonpersistent":
	default:
		return fmt.Errorf("mode: unknown disk mode %q", d.Mode)
	}
	if d.Compatibility == "physicalMode" {
		// disk modes do not apply to a physical RDM: vSphere shows it independent_persistent
		if d.Mode == "independent_nonpersistent" {
			return fmt.Errorf("mode: a physicalMode RDM cannot be independent_nonpersistent")
		}
		d.Mode = "independent_persistent"
	}
	return nil
}

func (d *DiskSpec) independent() bool { return strings.HasPrefix(d.Mode, "independent") }

// validateName refuses names vSphere paths cannot carry as the lab lays them out.
func validateName(what, name string) error {
	if strings.TrimSpace(name) == "" || strings.ContainsAny(name, "/[]\\\x00") || name != strings.TrimSpace(name) {
		return fmt.Errorf("invalid %s name %q", what, name)
	}
	return nil
}

func (v *VMSpec) powerOn() bool { return v.PowerOn == nil || *v.PowerOn }

// normalize checks a VM spec against the lab (datastores, tags) and fills defaults.
func (v *VMSpec) normalize(l *lab) error {
	if strings.TrimSpace(v.Name) == "" || strings.ContainsAny(v.Name, "/[]") {
		return fmt.Errorf("invalid VM name %q", v.Name)
	}
	if v.Datastore == "" {
		v.Datastore = l.datastores[0].name
	}
	if l.datastore(v.Datastore) == nil {
		return fmt.Errorf("datastore: no datastore %q in the lab", v.Datastore)
	}
	for i := range v.Disks {
		d := &v.Disks[i]
		if err := d.normalize(); err != nil {
			return fmt.Errorf("disks[%d].%s", i, err)
		}
		if d.Datastore == "" {
			d.Datastore = v.Datastore
		}
		if l.datastore(d.Datastore) == nil {
			return fmt.Errorf("disks[%d].datastore: no datastore %q in the lab", i, d.Datastore)
		}
	}
	if v.Folder != "" {
		for _, part := range strings.Split(strings.Trim(v.Folder, "/"), "/") {
			if err := validateName("folder", part); err != nil {
				return fmt.Errorf("folder: %s", err)
			}
		}
	}
	if v.ResourcePool != "" {
		if err := validateName("resource pool", v.ResourcePool); err != nil {
			return fmt.Errorf("resource_pool: %s", err)
		}
	}
	for i, t := range v.Tags {
		if l.tags.find(t) == "" {
			return fmt.Errorf("tags[%d]: no tag %q in category %q (declare it in tag_categories)", i, t.Name, t.Category)
		}
	}
	return nil
}

func (s *LabSpec) normalize() error {
	if s.Username == "" {
		s.Username = "user"
	}
	if s.Password == "" {
		s.Password = "pass"
	}
	if len(s.Datastores) == 0 {
		s.Datastores = []DatastoreSpec{{Name: "LocalDS_0"}}
	}
	seen := map[string]bool{}
	for i, ds := range s.Datastores {
		if err := validateName("datastore", ds.Name); err != nil {
			return fmt.Errorf("datastores[%d].name: %s", i, err)
		}
		if seen[ds.Name] {
			return fmt.Errorf("datastores[%d].name: %q twice", i, ds.Name)
		}
		seen[ds.Name] = true
	}
	cats := map[string]bool{}
	for i, c := range s.TagCategories {
		if strings.TrimSpace(c.Name) == "" || cats[c.Name] {
			return fmt.Errorf("tag_categories[%d].name: empty or repeated (%q)", i, c.Name)
		}
		cats[c.Name] = true
		switch c.Cardinality {
		case "":
			s.TagCategories[i].Cardinality = "MULTIPLE"
		case "SINGLE", "MULTIPLE":
		default:
			return fmt.Errorf("tag_categories[%d].cardinality: %q is not SINGLE or MULTIPLE", i, c.Cardinality)
		}
	}
	names := map[string]bool{}
	for i, vm := range s.VMs {
		if names[vm.Name] {
			return fmt.Errorf("vms[%d].name: %q twice", i, vm.Name)
		}
		names[vm.Name] = true
	}
	return nil
}
