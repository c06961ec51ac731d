"""Restore as a new VM: check the target, upload the disks and files, register, power on.

Steps (phases of the `restores` row, see docs/design.md "Restore"):

1. checking: the restore point loads from its repository; the target resolves in vCenter
   (datacenter, datastore, folder, resource pool, network) and no VM has the new name; the
   datastore has room for the disks written in full; the folder `[ds] <name>/` is created (it
   must not exist). From here on, what was created is recorded in the row *before* the next
   step, so a crash or a failure can always remove it.
2. uploading: per disk, the flat image streamed from the repository (every chunk verified)
   with one HTTP PUT to `<name>[_N]-flat.vmdk`, then its descriptor pointing at it; then the
   `.nvram` and the `.vmx`, rewritten for the new VM (name, disk and NVRAM files, no UUIDs or
   generated MACs, CBT off, NICs on the chosen network). A cut upload is retried from the start
   of that file (an HTTP upload cannot resume).
3. registering: `RegisterVM_Task` into the folder and resource pool; the NICs are connected to
   the chosen network through the API as well.
4. powering_on, when asked.

Any failure or a cancel removes what was made (the VM if registered, else the folder) and ends
the restore `failed` (with the reason) or `cancelled`; a redelivered request (the mover died)
removes the previous attempt's leftovers and starts over. Every write to the row is fenced by
the attempt's generation, so a mover that was given up on cannot overwrite a newer attempt.
"""
