"""`spartan schedule`: research after the close and paper trading before it, on the exchange calendar.

``params/schedule.yaml`` (`load_schedule`) names the exchange and three jobs: ``research`` a
number of minutes after every session close, ``trade`` (one paper-trading cycle per strategy)
before it, and ``index`` (the dashboard) after the jobs it follows. `run_scheduler` runs them
from a persistent job store on a clock; cron can run them instead (`crontab`, `run_due`). Every
run is locked, logged, recorded in ``reports/schedule.json`` and alerted when it fails; a
failed run never stops the scheduler.

The modules, each building only on those listed before it:

``settings``  the schedule file and its strict model;
``clock``     the wall and test clocks, shared time helpers, stopping on SIGTERM/SIGINT;
``trigger``   `SessionTrigger`: fire times from the exchange calendar's session closes;
``jobs``      the job functions users' files name (``research_lib.scheduler:research_job``,
              ``:trade_job``, ``:index_job``) and the configured jobs with their triggers;
``record``    running one job: its lock, the record, the log lines and the alert;
``loop``      the job store, missed runs and the scheduler's loop (`run_scheduler`);
``cron``      the crontab and ``--run-due``.
"""

from research_lib._io import lock_path
from research_lib.scheduler.clock import Clock, FakeClock, SchedulerStopped, WallClock
from research_lib.scheduler.cron import CRON_WINDOW_SECONDS, crontab, run_due
from research_lib.scheduler.jobs import JobFailed, JobSkipped, index_job, next_runs, research_job, trade_job
from research_lib.scheduler.loop import (FAKE_STORE_FILE, LATE_SECONDS, STORE_FILE, SessionScheduler, run_scheduler,
                                         split_due)
from research_lib.scheduler.record import HISTORY_LENGTH, STATUS_FILE
from research_lib.scheduler.settings import (JOB_IDS, IndexJob, Jobs, ResearchJob, ScheduleConfig, TradeJob,
                                             load_schedule)
from research_lib.scheduler.trigger import SessionTrigger

__all__ = ["CRON_WINDOW_SECONDS", "FAKE_STORE_FILE", "HISTORY_LENGTH", "JOB_IDS", "LATE_SECONDS", "STATUS_FILE",
           "STORE_FILE", "Clock", "FakeClock", "IndexJob", "JobFailed", "JobSkipped", "Jobs", "ResearchJob",
           "ScheduleConfig", "SchedulerStopped", "SessionScheduler", "SessionTrigger", "TradeJob", "WallClock",
           "crontab", "index_job", "load_schedule", "lock_path", "next_runs", "research_job", "run_due",
           "run_scheduler", "split_due", "trade_job"]
