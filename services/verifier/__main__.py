"""The verifier: checks restore points after each backup and on schedule (pipeline issue)."""

from shared.runtime import Context, Parts, main


async def wire(ctx: Context) -> Parts:
    return Parts()


if __name__ == "__main__":
    main("verifier", wire)
