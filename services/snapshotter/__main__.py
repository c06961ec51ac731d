"""The snapshotter: creates and removes backup snapshots in vCenter (filled by the pipeline issue)."""

from shared.runtime import Context, Parts, main


async def wire(ctx: Context) -> Parts:
    return Parts()


if __name__ == "__main__":
    main("snapshotter", wire)
