"""An SFTP server for the tests (asyncssh's server, the OpenSSH extensions included), as its own
process: `python -m tests.plugins.sftp_server --port P --root DIR --host-key F --client-key F.pub`.

The SFTP subsystem is chrooted to DIR; only the given public key logs in, as any user name."""

from __future__ import annotations

import argparse
import asyncio

import asyncssh


async def serve(args: argparse.Namespace) -> None:
    root = args.root

    def sftp(chan: asyncssh.SSHServerChannel) -> asyncssh.SFTPServer:
        return asyncssh.SFTPServer(chan, chroot=root.encode())

    await asyncssh.listen(
        "127.0.0.1",
        args.port,
        server_host_keys=[args.host_key],
        authorized_client_keys=args.client_key,
        sftp_factory=sftp,
        allow_scp=False,
    )
    print(f"sftp server on 127.0.0.1:{args.port}, root {root}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--host-key", required=True)
    parser.add_argument("--client-key", required=True)
    asyncio.run(serve(parser.parse_args()))
