"""The mover: reads snapshot disks and writes restore points to the repository (pipeline issue)."""

from shared.runtime import Context, Parts, main


async def wire(ctx: Context) -> Parts:
    return Parts()


if __name__ == "__main__":
    main("mover", wire)
