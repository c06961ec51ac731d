"""The scheduler: turns job schedules into `vbm.job.requested` events (see docs/design.md, Scheduling)."""

from functools import partial

from services.scheduler.confbackup import ConfigBackupLoop
from services.scheduler.planner import Planner
from services.scheduler.service import SchedulerLoop
from services.scheduler.upkeep import audit_prune_loop
from shared.contracts import JOBS_CHANGED_SUBJECT
from shared.runtime.service import Context, Parts, main


async def wire(ctx: Context) -> Parts:
    planner = Planner(ctx.sessions, ctx.clock)
    loop = SchedulerLoop(planner, ctx.relay.kick, ctx.stop)
    await ctx.bus.nc.subscribe(JOBS_CHANGED_SUBJECT, cb=loop.on_jobs_changed)
    return Parts(tasks=[loop.run, ConfigBackupLoop(ctx).run, partial(audit_prune_loop, ctx)])


if __name__ == "__main__":
    main("scheduler", wire)
