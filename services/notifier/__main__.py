"""The notifier: deadline watchdogs, snapshot clean-up on failure, alerts (pipeline issue)."""

from shared.runtime import Context, Parts, main


async def wire(ctx: Context) -> Parts:
    return Parts()


if __name__ == "__main__":
    main("notifier", wire)
