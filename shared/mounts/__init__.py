"""The NFS/CIFS mount manager (docs/design.md, "Mounts"): shares vbm mounts under
`<data_dir>/mounts/<name>` (model), the state of a mount point and the guard against writing
under an unmounted one (probe), mounting and unmounting (manager) and "test connection" with
user-space clients (connect)."""
